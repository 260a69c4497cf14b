"""Text normalisation that defeats cheap evasion while remembering where every character came from.

Applied by the runtime before tokenizing and by the builder before training, so both see the same text:
- NFKC folds compatibility forms (fullwidth letters, mathematical alphanumerics, ligatures) to plain ones;
- zero-width, bidirectional control and other invisible format characters are removed;
- Unicode tag characters (U+E0000-U+E007F) are removed too, but an LLM reads them as the ASCII letters they shadow,
  so that hidden text is decoded and kept (``NormalizedText.hidden``) for the guard to scan;
- in a word that mixes Latin with Cyrillic or Greek letters, look-alike letters become Latin ("pаssword" with a
  Cyrillic "а" becomes "password"); words written wholly in another script are left alone.

Every step is one pass over the text: no step may backtrack on hostile input.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

__all__ = ["NormalizationNote", "NormalizedText", "normalize"]

NormalizationNote = Literal["unicode_normalized", "invisible_removed", "hidden_text", "lookalikes_folded"]
"""What normalisation changed: NFKC changed characters (compatibility forms, composition), invisible characters were
removed, text hidden in Unicode tag characters was decoded, Cyrillic/Greek look-alike letters were folded to Latin."""

# Characters that render as nothing: every format character (category Cf: zero-width, bidirectional controls, soft
# hyphen, tag characters, ...), the Hangul and Mongolian fillers, the combining grapheme joiner and the supplementary
# variation selectors (used to smuggle bytes). One character class, so finding them is one C-speed scan.
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u115f\u1160\u17b4\u17b5\u180e"
    "\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\u3164\ufeff\ufff9-\ufffb\uffa0"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f\U000e0100-\U000e01ef]"
)
_TAG_BASE = 0xE0000
_BLACK_FLAG = "\U0001f3f4"  # subdivision flags (England, Scotland, Wales) spell their region in tag characters
_CANCEL_TAG = "\U000e007f"

# Cyrillic and Greek letters that render like Latin ones (Unicode confusables, the unambiguous subset).
_LOOKALIKES = "АВЕКМНОРСТХаеорсухіјѕԁӏΑΒΕΖΗΙΚΜΝΟΡΤΥΧοντ"
_CONFUSABLES = str.maketrans(_LOOKALIKES, "ABEKMHOPCTXaeopcyxijsdlABEZHIKMNOPTYXovt")
_NON_LATIN_LOOKALIKE = re.compile(f"[{_LOOKALIKES}]")
# Words, found one after the other: `\w+` cannot backtrack into a quadratic scan as `\w*[A-Za-z]\w*` did.
_WORD = re.compile(r"\w+")
_LATIN = re.compile(r"[A-Za-z]")
# Runs of whitespace and the word after them: NFKC is applied per run, only to runs that are not already normal.
_CHUNK = re.compile(r"\s*\S+|\s+")
_NOTE_ORDER: tuple[NormalizationNote, ...] = (
    "unicode_normalized",
    "invisible_removed",
    "hidden_text",
    "lookalikes_folded",
)


@dataclass(frozen=True, slots=True)
class NormalizedText:
    """``text`` after normalisation; ``origin[i]`` is the index in the original of ``text[i]``."""

    text: str
    origin: list[int] | None  # None: identical to the original
    notes: tuple[NormalizationNote, ...] = ()
    hidden: str = ""
    """Text spelled in Unicode tag characters, decoded to the ASCII it shadows (empty when there was none)."""
    hidden_span: tuple[int, int] = (0, 0)
    """Where, in the original, the first and last of those tag characters were."""

    def span_in_original(self, start: int, end: int, original_length: int) -> tuple[int, int]:
        """Map a [start, end) span of the normalised text back onto the original text."""
        if self.origin is None:
            return start, end
        if start >= len(self.origin):
            return original_length, original_length
        last = self.origin[end - 1] + 1 if end > start else self.origin[start]
        return self.origin[start], last


def normalize(text: str) -> NormalizedText:
    if text.isascii() or (
        unicodedata.is_normalized("NFKC", text)
        and not _INVISIBLE.search(text)
        and not _NON_LATIN_LOOKALIKE.search(text)
    ):
        return NormalizedText(text, None)
    notes: set[NormalizationNote] = set()
    visible, where, hidden, hidden_span = _strip_invisible(text)
    if where is not None:
        notes.add("invisible_removed")
    pieces: list[str] = []
    origin: list[int] = []
    for chunk in _CHUNK.finditer(visible):
        part, at = chunk.group(), chunk.start()
        if unicodedata.is_normalized("NFKC", part):
            pieces.append(part)
            origin.extend(range(at, at + len(part)))
            continue
        notes.add("unicode_normalized")
        # A base character and the combining marks after it are normalised together so NFKC can compose them.
        start = 0
        for end in range(1, len(part) + 1):
            if end < len(part) and unicodedata.combining(part[end]):
                continue
            folded = unicodedata.normalize("NFKC", part[start:end])
            pieces.append(folded)
            origin.extend([at + start] * len(folded))
            start = end
    normalized = "".join(pieces)
    if _NON_LATIN_LOOKALIKE.search(normalized):
        # Translation is one character for one character, so `origin` stays aligned.
        folded_words = _WORD.sub(_fold_mixed_word, normalized)
        if folded_words != normalized:
            notes.add("lookalikes_folded")
            normalized = folded_words
    if hidden:
        notes.add("hidden_text")
    if normalized == text:
        return NormalizedText(text, None)
    if where is not None:
        origin = [where[i] for i in origin]
    return NormalizedText(
        normalized, origin, tuple(n for n in _NOTE_ORDER if n in notes), hidden, hidden_span or (0, 0)
    )


def _strip_invisible(text: str) -> tuple[str, list[int] | None, str, tuple[int, int] | None]:
    """``text`` without invisible characters, where each kept character was (None: nothing removed), the text its
    tag characters spell and where they were."""
    if not _INVISIBLE.search(text):
        return text, None, "", None
    parts: list[str] = []
    where: list[int] = []
    hidden: list[str] = []
    span: tuple[int, int] | None = None
    last = 0
    in_flag = False
    for match in _INVISIBLE.finditer(text):
        i = match.start()
        if i > last:
            parts.append(text[last:i])
            where.extend(range(last, i))
            in_flag = text[i - 1] == _BLACK_FLAG
        last = i + 1
        code = ord(text[i]) - _TAG_BASE
        if not 0 <= code < 0x80:
            continue
        if in_flag:  # an emoji subdivision flag, closed by the cancel tag
            in_flag = text[i] != _CANCEL_TAG
        elif 0x20 <= code < 0x7F:
            hidden.append(chr(code))
            span = (span[0] if span else i, i + 1)
    parts.append(text[last:])
    where.extend(range(last, len(text)))
    return "".join(parts), where, "".join(hidden), span


def _fold_mixed_word(match: re.Match[str]) -> str:
    word = match.group(0)
    return word.translate(_CONFUSABLES) if _LATIN.search(word) and _NON_LATIN_LOOKALIKE.search(word) else word
