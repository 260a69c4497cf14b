"""Text normalisation that defeats cheap evasion while remembering where every character came from.

Applied by the runtime before tokenizing and by the builder before training, so both see the same text:
- NFKC folds compatibility forms (fullwidth letters, mathematical alphanumerics, ligatures) to plain ones;
- zero-width and bidirectional control characters are removed;
- in a word that mixes Latin with Cyrillic or Greek letters, look-alike letters become Latin ("pаssword" with a
  Cyrillic "а" becomes "password"); words written wholly in another script are left alone.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["NormalizedText", "normalize"]

_INVISIBLE = frozenset(
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e"
    "\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\u206a\u206b\u206c\u206d\u206e\u206f"
    "\u3164\ufeff\uffa0"
)

# Cyrillic and Greek letters that render like Latin ones (Unicode confusables, the unambiguous subset).
_CONFUSABLES = str.maketrans(
    "АВЕКМНОРСТХаеорсухіјѕԁӏΑΒΕΖΗΙΚΜΝΟΡΤΥΧοντ",
    "ABEKMHOPCTXaeopcyxijsdlABEZHIKMNOPTYXovt",
)
_MIXED_WORD = re.compile(r"\w*[A-Za-z]\w*")
_NON_LATIN_LOOKALIKE = re.compile("[" + "АВЕКМНОРСТХаеорсухіјѕԁӏΑΒΕΖΗΙΚΜΝΟΡΤΥΧοντ" + "]")


@dataclass(frozen=True, slots=True)
class NormalizedText:
    """``text`` after normalisation; ``origin[i]`` is the index in the original of ``text[i]``."""

    text: str
    origin: list[int] | None  # None: identical to the original

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
        and _INVISIBLE.isdisjoint(text)
        and not _NON_LATIN_LOOKALIKE.search(text)
    ):
        return NormalizedText(text, None)
    pieces: list[str] = []
    origin: list[int] = []
    start = 0
    # A base character and the combining marks after it are normalised together so NFKC can compose them.
    for end in range(1, len(text) + 1):
        if end < len(text) and unicodedata.combining(text[end]):
            continue
        segment = "".join(ch for ch in text[start:end] if ch not in _INVISIBLE)
        if segment:
            folded = unicodedata.normalize("NFKC", segment)
            pieces.append(folded)
            origin.extend([start] * len(folded))
        start = end
    normalized = "".join(pieces)
    if _NON_LATIN_LOOKALIKE.search(normalized):
        # Translation is one character for one character, so `origin` stays aligned.
        normalized = _MIXED_WORD.sub(_fold_mixed_word, normalized)
    if normalized == text:
        return NormalizedText(text, None)
    return NormalizedText(normalized, origin)


def _fold_mixed_word(match: re.Match[str]) -> str:
    word = match.group(0)
    return word.translate(_CONFUSABLES) if _NON_LATIN_LOOKALIKE.search(word) else word
