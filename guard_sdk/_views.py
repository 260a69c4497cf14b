"""The views of a text a guard scores: the text itself, its sentences, and what cheap encodings inside it decode to.

A guard's window of a few hundred tokens averages a short payload with the benign text around it, so one benign
sentence before an injection can hide it. Bundles built for it therefore also score each sentence of a window from
the same encoder run, its tokens' embeddings pooled as the encoder read them in their context
(``pool_sentences``, ``ScanOptions.sentences_in_context``, on by default). ``ScanOptions(sentences=True)`` scores each
sentence on its own instead (``"sentence"`` views, a model run each, any bundle); it is opt-in because a sentence read
out of its context is flagged far more often (benchmarks/README.md, "Attacks"). A label's score is its highest over
all views.

Encodings an LLM reads through but a classifier does not are decoded into views of their own: leetspeak
(``1gn0r3`` -> ``ignore``), spaced or dotted letters (``i g n o r e`` -> ``ignore``), base64 runs, and text spelled in
Unicode tag characters (``NormalizedText.hidden``). Every step is a single pass, and the views of a text hold at most
a few times its characters, so the work stays bounded by the text's length.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ._text import NormalizedText

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ScanOptions", "View", "ViewKind", "pool_sentences", "sentence_spans", "views"]

ViewKind = Literal["text", "sentence", "hidden", "leetspeak", "spaced", "base64"]

# A sentence ends after a run of . ! ? followed by whitespace, after a CJK full stop, or at a line break. (The
# whitespace is checked in Python: `[.!?]+(?=\s)` would backtrack through a long run of "!".)
_SENTENCE_END = re.compile(r"[.!?。！？]+|\n+")
_CJK_END = frozenset("。！？\n")
_WORD = re.compile(r"\S+")
# Sentences of fewer words join the next one: a fragment alone says little, and each view costs a model run.
_MIN_WORDS = 3
# Longer sentences are also scored in overlapping word windows, so a payload written without punctuation into a
# long sentence is not averaged away either.
_SPAN_WORDS = 24
_SPAN_STEP = 12

_LEET = str.maketrans("013457@$", "oieastas")
_LEET_CHARS = frozenset("013457@$")
_LEET_WORD = re.compile(r"[A-Za-z0-9@$]+")
_LEET_HINT = re.compile(r"[A-Za-z][0-9@$]|[0-9@$][A-Za-z]")
_MAX_LEET_WORD = 24  # longer runs of letters and digits are identifiers or encodings, not words
_MIN_LEET = 3  # digits for letters, in words of 4+ characters, before a leetspeak view is worth its model run
_LEET_CONTEXT = 300  # characters kept on either side of such a word
_DOTTED = re.compile(r"[A-Za-z](?:[.\-_*][A-Za-z]){3,}")
# Four letters apart: a fixed-width pattern, so the prefilter cannot backtrack.
_SPACED_HINT = re.compile(r"(?<![^\W\d_])[A-Za-z][ .\-_*][A-Za-z][ .\-_*][A-Za-z][ .\-_*][A-Za-z](?![^\W\d_])")
_SEPARATORS = ".-_*"
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_MAX_DECODED = 64  # base64 runs decoded per text


@dataclass(frozen=True, slots=True)
class ScanOptions:
    """What a check scores besides the whole text (``Guard(scan=...)``)."""

    sentences: bool = False
    """Also score every sentence (and overlapping word windows of long ones) as a text of its own, at the label's
    threshold, with any bundle. Costs about one more model run over the text's tokens (they count against
    ``Guard(max_tokens=...)``: a 3,000-word document then needs ~12,000), and flags benign sentences that only read as
    violations out of their context far more often than ``sentences_in_context`` does: off by default."""
    decode: bool = True
    """Also score what leetspeak, letters written apart, base64 runs and Unicode tag characters spell."""
    flag_hidden_text: bool = False
    """Flag any text that spells something in Unicode tag characters (label ``hidden_text``): invisible to people,
    read by LLMs. Subdivision flag emoji, which use tag characters, are not counted."""
    # Last: positional ScanOptions(...) calls written before it keep their meaning.
    sentences_in_context: bool = True
    """Score every sentence of each window as the encoder read it there (its tokens' embeddings pooled, then the
    head), at the label's ``sentence_threshold``: benign text around a short payload cannot dilute it, and a sentence
    keeps its context. Costs no model run. Only bundles built for it take part (embedding guards with
    ``model.embedding.token_output``, e.g. the default pack's text guards); others are unaffected."""

    def __post_init__(self) -> None:
        for name in ("sentences", "decode", "flag_hidden_text", "sentences_in_context"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"ScanOptions.{name} must be True or False, got {type(getattr(self, name)).__name__}")


@dataclass(frozen=True, slots=True)
class View:
    """One text to score, and where its characters are in the normalised text.

    ``origin[i]`` is the normalised index of ``text[i]``; with ``origin`` None, ``text[i]`` is the normalised
    ``offset + i``. A ``hidden`` view has no place in the normalised text: its windows map to ``hidden_span``.
    """

    kind: ViewKind
    text: str
    offset: int = 0
    origin: list[int] | None = None

    def span_in_normalized(self, start: int, end: int) -> tuple[int, int]:
        if self.origin is None:
            return self.offset + start, self.offset + end
        if not self.origin:
            return 0, 0
        start = min(start, len(self.origin) - 1)
        return self.origin[start], self.origin[max(start, end - 1)] + 1


def views(normalized: NormalizedText, options: ScanOptions) -> list[View]:
    """The views of one normalised text that hold more than whitespace, the whole text first."""
    text = normalized.text
    out = [View("text", text)]
    if options.sentences:
        out += [View("sentence", text[start:end], start) for start, end in sentence_spans(text)]
    if options.decode:
        out.append(View("hidden", normalized.hidden))
        out += [view for view in (_leetspeak(text), _spaced(text)) if view is not None]
        out += _base64(text)
    return [view for view in out if view.text.strip()]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) spans of the sentences of ``text`` (fragments joined to the next sentence), and of overlapping
    word windows inside long ones; empty when the text is a single short sentence (its whole-text view covers it)."""
    sentences: list[tuple[int, int]] = []
    start = 0
    ends = [
        m.end()
        for m in _SENTENCE_END.finditer(text)
        if m.end() == len(text) or text[m.end()].isspace() or m.group()[-1] in _CJK_END
    ]
    for end in ends + [len(text)]:
        if end > start and (len(_WORD.findall(text, start, end)) >= _MIN_WORDS or end == len(text)):
            sentences.append((start, end))
            start = end
    spans: list[tuple[int, int]] = []
    for start, end in sentences:
        words = [(m.start(), m.end()) for m in _WORD.finditer(text, start, end)]
        if not words:
            continue
        if len(words) <= _SPAN_WORDS:
            spans.append((words[0][0], words[-1][1]))
            continue
        for first in range(0, len(words) - _SPAN_STEP, _SPAN_STEP):
            last = min(first + _SPAN_WORDS, len(words)) - 1
            spans.append((words[first][0], words[last][1]))
    if len(spans) == 1 and spans[0] == (len(text) - len(text.lstrip()), len(text.rstrip())):
        return []
    return spans


def pool_sentences(
    tokens: np.ndarray,
    offsets: Sequence[tuple[int, int]],
    window: tuple[int, int],
    sentences: Sequence[tuple[int, int]],
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The sentences (``sentence_spans`` of a view) that a window of it holds, each as the unit-length mean of its
    tokens' embeddings in that window, and their spans. ``tokens``: the window's token embeddings, one row per token;
    ``offsets``: each token's [start, end) in the view, empty for special tokens; ``window``: the window's span."""
    import numpy as np  # here: a check has loaded it already, and `CheckResult` alone does not need it

    start, end = window
    held = [(a, b) for a, b in sentences if a < end and b > start]
    if not held:
        return np.zeros((0, tokens.shape[1]), dtype=np.float32), []
    at = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    spans = np.asarray(held, dtype=np.int64)
    member = (at[None, :, 1] > at[None, :, 0]) & (at[None, :, 1] > spans[:, :1]) & (at[None, :, 0] < spans[:, 1:])
    counts = member.sum(axis=1)
    some = counts > 0
    pooled = (member[some].astype(np.float32) @ tokens.astype(np.float32)) / counts[some, None].astype(np.float32)
    # The sentence embedding the head was fitted on is unit length (the encoder's Normalize step).
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return pooled, [span for span, kept in zip(held, some.tolist()) if kept]


def _leetspeak(text: str) -> View | None:
    """Words that mix letters with digits or symbols standing for letters, read as letters, with ``_LEET_CONTEXT``
    characters of text around them: a document with a few such words is not copied whole."""
    if not _LEET_HINT.search(text):
        return None
    evidence = 0
    words: list[tuple[int, int]] = []
    for match in _LEET_WORD.finditer(text):
        word = match.group()
        leet = sum(ch in _LEET_CHARS for ch in word)
        letters = sum(ch.isalpha() for ch in word)
        if leet and letters and len(word) <= _MAX_LEET_WORD:
            words.append(match.span())
            # Short product names (mp3, Q4, 4K) carry one digit; words spelled in leetspeak carry more.
            evidence += leet if letters >= 2 and len(word) >= 4 else 0
    if evidence < _MIN_LEET:
        return None
    regions: list[list[int]] = []
    for start, end in words:
        start, end = max(0, start - _LEET_CONTEXT), min(len(text), end + _LEET_CONTEXT)
        if regions and start <= regions[-1][1]:
            regions[-1][1] = end
        else:
            regions.append([start, end])
    translated = list(text)
    for start, end in words:  # one character for one: offsets stay put
        translated[start:end] = text[start:end].translate(_LEET)
    if len(regions) == 1 and regions[0] == [0, len(text)]:
        return View("leetspeak", "".join(translated))
    pieces: list[str] = []
    origin: list[int] = []
    for start, end in regions:
        pieces.append("".join(translated[start:end]) + " ")
        origin.extend(range(start, end))
        origin.append(end - 1)
    return View("leetspeak", "".join(pieces), origin=origin)


def _spaced(text: str) -> View | None:
    """Letters written apart (``i g n o r e``, ``i.g.n.o.r.e``) joined into words; other text kept."""
    if not _SPACED_HINT.search(text):
        return None
    pieces: list[str] = []
    origin: list[int] = []
    run: list[int] = []  # indices of the single letters of the current spaced run
    joined = 0

    def close_run() -> None:
        nonlocal joined
        if len(run) >= 3:
            joined += len(run) >= 4
            pieces.append("".join(text[i] for i in run) + " ")
            origin.extend(run + [run[-1]])
        else:
            for i in run:
                pieces.append(text[i] + " ")
                origin.extend((i, i))
        run.clear()

    previous_end = -2
    for match in _WORD.finditer(text):
        word, at = match.group(), match.start()
        if len(word) == 1 and word.isalpha():
            if run and at - previous_end > 1:  # a wider gap between letters is a gap between words
                close_run()
            run.append(at)
        else:
            close_run()
            if _DOTTED.fullmatch(word):
                joined += 1
                letters = [at + i for i, ch in enumerate(word) if ch not in _SEPARATORS]
                pieces.append("".join(text[i] for i in letters) + " ")
                origin.extend(letters + [letters[-1]])
            else:
                pieces.append(word + " ")
                origin.extend(range(at, at + len(word)))
                origin.append(at + len(word) - 1)
        previous_end = match.end()
    close_run()
    if not joined:
        return None
    return View("spaced", "".join(pieces), origin=origin)


def _base64(text: str) -> list[View]:
    """Runs of base64 (or its URL-safe form) that decode to readable UTF-8 text."""
    out: list[View] = []
    for match in _BASE64.finditer(text):
        if len(out) == _MAX_DECODED:
            break
        run = match.group().rstrip("=")
        if not any(ch.isdigit() or ch.isupper() for ch in run) or not any(ch.islower() for ch in run):
            continue  # a plain word or identifier, not an encoding
        try:
            raw = base64.b64decode(run + "=" * (-len(run) % 4), altchars=b"-_" if "-" in run or "_" in run else None)
            decoded = raw.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        readable = sum(ch.isprintable() or ch.isspace() for ch in decoded)
        if decoded.strip() and readable >= 0.95 * len(decoded) and any(ch.isalpha() for ch in decoded):
            out.append(View("base64", decoded, origin=[match.start()] * (len(decoded) - 1) + [match.end() - 1]))
    return out
