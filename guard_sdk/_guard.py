"""`Guard`: loads bundles once and checks texts with them."""

from __future__ import annotations

import contextvars
import io
import numbers
import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict, TypeVar, cast, overload

import numpy as np
from tokenizers import Encoding, Tokenizer

from ._batching import BatchingOptions, MicroBatcher
from ._bundle import GuardBundle, LabelSpec, read_trust
from ._context import GATE_REQUEST_TOKENS, Context, ContextKind, context_text, last_tokens, validate
from ._errors import (
    IneffectiveOptionWarning,
    InputEncodingError,
    InputError,
    InputTypeError,
    ManifestError,
    ModelMismatchError,
    TextTooLongError,
)
from ._pack import find_default_pack
from ._result import CheckResult, LabelScore, Stage
from ._runtime import (
    Device,
    ExecutionOptions,
    ModelBackend,
    Precision,
    bundle_session,
    resolve_device,
    run_full_window,
)
from ._text import NormalizedText, normalize
from ._views import ScanOptions, View, ViewKind, pool_sentences, sentence_spans, views

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    import openai
    from typing_extensions import Unpack

    from ._enforce import WrapOptions
    from ._work import Ticket
    from .integrations.openai import GuardedAsyncOpenAI, GuardedOpenAI

__all__ = ["Guard"]

BundleSource = str | os.PathLike[str] | GuardBundle
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True, slots=True)
class _Window:
    view: int
    text: int  # the checked text the view belongs to
    ids: list[int]
    type_ids: list[int]
    span: tuple[int, int]  # in the view
    offsets: list[tuple[int, int]]  # each token's span in the view (or in its pair's first text), (0, 0) if special


# Windows of the texts being checked, shared by bundles with the same tokenizer, window, instruction and context
# (what they read of it, how many of its tokens, and the request gate that chose them).
_WindowKey = tuple[str, int, int, str | None, tuple[ContextKind, int] | None, str | None]
_WindowCache = dict[_WindowKey, list[_Window]]
# Sentence embeddings of those windows, and (when pooled) each window's sentences' embeddings with their spans,
# shared by embedding guards with the same encoder (and precision).
_Pooled = list[tuple[np.ndarray, list[tuple[int, int]]]]
_EmbeddingCache = dict[tuple[tuple[str, str] | None, _WindowKey, bool], tuple[np.ndarray, _Pooled | None]]
# Per view and label of one bundle: the best score over the view's windows, and that window's span in the view;
# then the same over the sentences pooled in those windows (None for bundles that do not pool them).
_Scores = tuple[np.ndarray, list[list[tuple[int, int]]]]
_Best = tuple[_Scores, _Scores | None]
# Per context kind the check's bundles read: each checked text's context as that kind renders it, normalised.
_Contexts = dict[ContextKind, list[str]]
_STAGES: tuple[Stage, ...] = ("input", "output")


# A gate guard's judgement of a request: its highest score over threshold, and the window of the label that gave it.
_Judged = tuple[float, tuple[int, int] | None]
# Requests whose judgement a Guard remembers: a stream's, and those of the checks running beside it.
_JUDGED_REQUESTS = 256
# Contexts whose cut to their last tokens a bundle remembers (a request is up to CONTEXT_CHARS characters).
_CUT_CONTEXTS = 64


_K = TypeVar("_K")
_V = TypeVar("_V")


class _Recent(OrderedDict[_K, _V]):
    """The last ``size`` values stored or recalled, least recently used first out; safe across threads. A stream
    checks its answer again for every window, with the same request."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.lock = threading.Lock()

    def recall(self, keys: Sequence[_K]) -> list[_V | None]:
        with self.lock:
            known = [self.get(key) for key in keys]
            for key, value in zip(keys, known):
                if value is not None:
                    self.move_to_end(key)
        return known

    def remember(self, items: Iterable[tuple[_K, _V]]) -> None:
        with self.lock:
            self.update(items)
            while len(self) > self.size:
                self.popitem(last=False)


class _Gate(NamedTuple):
    """A request gate in one check: each text's factor (None without a request), and the request the gated guard
    reads."""

    factors: list[float | None]
    requests: list[str]


def _over_threshold(scores: Sequence[LabelScore]) -> float:
    """The highest score over its threshold (1 for a flagged label; 0 for none)."""
    return max((1.0 if s.flagged else s.score / s.threshold for s in scores), default=0.0)


class _LoadedBundle:
    """One bundle with its ONNX session and a tokenizer set to the bundle's window size."""

    def __init__(
        self,
        bundle: GuardBundle,
        *,
        device: str,
        threads: int,
        spin: bool,
        precision: Precision | None,
        batch_invariant: bool,
        backend: ModelBackend | None = None,
    ):
        manifest = bundle.manifest
        self.bundle = bundle
        self.id = manifest.id
        self.labels: list[LabelSpec] = list(manifest.labels)
        # What an exchange or conversation guard reads of a check's context, and how many of its last tokens.
        self.context: tuple[ContextKind, int] | None = (
            None if manifest.input.kind == "text" else (manifest.input.kind, manifest.input.context_tokens)
        )
        # A gated guard reads the requests its gate chose (Guard._gate), not those an ungated one reads.
        self.gate = gate.guard if (gate := manifest.input.request_gate) else None
        model = bundle.model_file(precision)
        self.session = (
            bundle_session(bundle, model, device=device, threads=threads, spin=spin)
            if backend is None
            # checks that it serves this model, on a window of max_length
            else backend.open(bundle, bundle.file(model), manifest.files[model])
        )
        self.output = self.session.get_outputs()[0].name
        # Dynamic int8 quantizes each activation tensor with one scale per ONNX Runtime call: beside other texts'
        # windows a text's score moves with theirs (benchmarks/README.md). fp32 masks padding and is batch-invariant
        # as it is.
        self.one_text_per_call = batch_invariant and (precision or manifest.model.precision) == "int8"
        self.input_names = [i.name for i in self.session.get_inputs()]
        unknown = [name for name in self.input_names if name not in _MODEL_INPUTS]
        if unknown:
            raise ModelMismatchError(bundle.path, f"model asks for inputs {unknown}; guard_sdk feeds {_MODEL_INPUTS}")
        # A multi-task guard's one output answers for whichever label's instruction the window is paired with.
        self.instructions: list[str | None] = (
            [label.instruction for label in self.labels] if self.labels[0].instruction is not None else [None]
        )
        self.outputs = outputs = 1 if self.instructions[0] is not None else len(self.labels)
        width = self.session.get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != outputs:
            raise ModelMismatchError(
                bundle.path,
                f"guard.json lists {len(self.labels)} labels {[label.name for label in self.labels]}"
                f"{' with instructions (one model output for all)' if self.instructions[0] is not None else ''} "
                f"but the model outputs {width} scores",
            )
        self.head: tuple[np.ndarray, np.ndarray] | None = None
        self.token_output: str | None = None
        self.encoder = _encoder(bundle, precision)
        if embedding := manifest.model.embedding:
            self.head = _load_head(bundle, embedding.head_file, len(self.labels))
            model_outputs = {o.name: o for o in self.session.get_outputs()}
            output = model_outputs.get(embedding.output)
            if output is None:
                raise ModelMismatchError(
                    bundle.path,
                    f"guard.json names model output {embedding.output!r}; the model has {list(model_outputs)}",
                )
            if isinstance(output.shape[-1], int) and output.shape[-1] != self.head[0].shape[0]:
                raise ModelMismatchError(
                    bundle.path,
                    f"the model's {embedding.output} has {output.shape[-1]} dimensions, "
                    f"{embedding.head_file} expects {self.head[0].shape[0]}",
                )
            self.output = embedding.output
            if embedding.token_output is not None:
                tokens = model_outputs.get(embedding.token_output)
                if tokens is None or len(tokens.shape) != 3:
                    raise ModelMismatchError(
                        bundle.path,
                        f"guard.json names token output {embedding.token_output!r}; the model's outputs are "
                        f"{ {name: o.shape for name, o in model_outputs.items()} }",
                    )
                self.token_output = embedding.token_output
        tokenizer = bundle.read(manifest.tokenizer.file)
        try:
            self.tokenizer = Tokenizer.from_buffer(tokenizer)
        except Exception as exc:  # tokenizers raises a bare Exception on a malformed file
            raise ManifestError(bundle.path, f"{manifest.tokenizer.file} is not a valid tokenizer: {exc}") from exc
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.counter = Tokenizer.from_str(self.tokenizer.to_str())  # a text's whole length, for Guard.max_tokens
        self._cuts: _Recent[tuple[str, int], str] = _Recent(_CUT_CONTEXTS)
        spec = manifest.tokenizer
        for label in self.labels:
            if label.instruction is not None:
                room = spec.max_length - len(self.tokenizer.encode(label.instruction, "").ids)
                if room <= 2 * spec.stride:
                    raise ManifestError(
                        bundle.path,
                        f"label {label.name!r}: its instruction leaves {room} of the {spec.max_length} tokens of a "
                        f"window for the text, not more than twice the stride ({spec.stride}); shorten it, or build "
                        "the bundle with a longer max_length or a smaller stride",
                    )
        if self.context is not None:
            room = spec.max_length - self.context[1] - len(self.tokenizer.encode("", "").ids)
            if room <= 2 * spec.stride:
                raise ManifestError(
                    bundle.path,
                    f"input.context_tokens ({self.context[1]}) leaves {room} of the {spec.max_length} tokens of a "
                    f"window for the text, not more than twice the stride ({spec.stride}); lower context_tokens, or "
                    "build the bundle with a longer max_length or a smaller stride",
                )
        # only_second: an instruction or a context (cut to its last tokens first) is never cut by the window; the
        # text is windowed in what it leaves.
        pair = self.instructions[0] is not None or self.context is not None
        strategy = "only_second" if pair else "longest_first"
        self.tokenizer.enable_truncation(spec.max_length, stride=spec.stride, strategy=strategy)
        # Which bundles can share one tokenization of a text.
        self.tokenization_key = (manifest.files[spec.file], spec.max_length, spec.stride)
        if backend is None:  # a backend checks the window on its own side (ModelBackend.open)
            try:
                run_full_window(bundle, model, self.session, device, spec.max_length)
            except Exception as exc:  # ONNX Runtime's errors derive from Exception alone
                reason = " ".join(str(exc).split())[-300:] or type(exc).__name__
                raise ModelMismatchError(
                    bundle.path,
                    f"max_length {spec.max_length} in guard.json does not fit the model: it cannot read a window of "
                    f"{spec.max_length} tokens ({reason})",
                ) from exc

    def best(
        self,
        views: Sequence[View],
        owners: Sequence[int],
        batch_size: int,
        cache: _WindowCache,
        embedded: _EmbeddingCache,
        contexts: _Contexts,
        sentences_in_context: bool,
    ) -> _Best:
        """Per view and label: the highest score over the view's windows, and that window's span in the view; for a
        bundle that pools sentences (``sentences_in_context``), the same over the windows' sentences."""
        tops = []
        spans: list[list[tuple[int, int]]] = [[] for _ in views]
        sentence_best: _Scores | None = None
        for instruction in self.instructions:
            key = (*self.tokenization_key, instruction, self.context, self.gate)
            windows = cache.get(key)
            if windows is None:
                requests = contexts[self.context[0]] if self.context else None
                windows = cache[key] = self.windows(views, owners, instruction, requests)
            if not windows:
                scores = np.zeros((0, self.outputs), dtype=np.float32)
            elif self.head is None:
                scores = _sigmoid(self.run(windows, batch_size))
            else:
                # The encoder runs once per window for every guard on it; each applies its own head.
                pool = sentences_in_context and self.token_output is not None and self.context is None
                encoded = embedded.get((self.encoder, key, pool))
                if encoded is None:
                    encoded = embedded[(self.encoder, key, pool)] = self._embed(views, windows, batch_size, pool)
                vectors, pooled = encoded
                weight, bias = self.head
                scores = _sigmoid(vectors @ weight + bias)
                if pooled is not None:
                    sentence_best = _best_sentences(pooled, windows, weight, bias, len(views))
            top, top_window = _max_per_text(scores, [w.view for w in windows], len(views))
            tops.append(top)
            for i in range(len(views)):
                spans[i] += [windows[w].span for w in top_window[i]]
        return (np.concatenate(tops, axis=1), spans), sentence_best

    def _embed(
        self, views: Sequence[View], windows: Sequence[_Window], batch_size: int, pool: bool
    ) -> tuple[np.ndarray, _Pooled | None]:
        """The windows' sentence embeddings and, with ``pool``, each window's sentences pooled from its tokens."""
        if not pool:
            return self.run(windows, batch_size), None
        vectors, tokens = self.run_with_tokens(windows, batch_size)
        spans: dict[int, list[tuple[int, int]]] = {}
        pooled = []
        for window, window_tokens in zip(windows, tokens):
            if window.view not in spans:
                spans[window.view] = sentence_spans(views[window.view].text)
            pooled.append(pool_sentences(window_tokens, window.offsets, window.span, spans[window.view]))
        return vectors, pooled

    def last_tokens(self, texts: Sequence[str], keep: int) -> list[str]:
        """``last_tokens`` by this bundle's tokenizer, remembered for the ``_CUT_CONTEXTS`` texts cut last: a check
        cuts its context for its budget, its gate and its windows, and a stream does it again for every window."""
        known = self._cuts.recall([(text, keep) for text in texts])
        todo = [i for i, cut in enumerate(known) if cut is None]
        if todo:
            cuts = last_tokens(self.counter, [texts[i] for i in todo], keep)
            self._cuts.remember(((texts[i], keep), cut) for i, cut in zip(todo, cuts))
            for i, cut in zip(todo, cuts):
                known[i] = cut
        return cast(list[str], known)

    def windows(
        self,
        views: Sequence[View],
        owners: Sequence[int],
        instruction: str | None = None,
        contexts: Sequence[str] | None = None,
    ) -> list[_Window]:
        """The windows of every view: the view alone, or paired after its label's instruction or its text's context
        (``contexts``, one per checked text, cut here to the bundle's ``context_tokens``)."""
        inputs: list[str | tuple[str, str]]
        if self.context is not None:
            kept = self.last_tokens(contexts, self.context[1]) if contexts is not None else None
            inputs = [(kept[owner] if kept else "", view.text) for owner, view in zip(owners, views)]
        else:
            inputs = [view.text if instruction is None else (instruction, view.text) for view in views]
        windows: list[_Window] = []
        for index, (owner, encoding) in enumerate(zip(owners, self.tokenizer.encode_batch(inputs))):
            for part in (encoding, *encoding.overflowing):
                windows.append(_Window(index, owner, part.ids, part.type_ids, _char_span(part), part.offsets))
        return windows

    def run(self, windows: Sequence[_Window], batch_size: int) -> np.ndarray:
        """The model's output (logits, or an embedding guard's sentence embedding), one row per window."""
        return self._run(windows, batch_size, None)

    def run_with_tokens(self, windows: Sequence[_Window], batch_size: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """An embedding guard's sentence embeddings, and each window's token embeddings (one row per token)."""
        tokens: list[np.ndarray] = [np.zeros((0, 0), dtype=np.float32)] * len(windows)
        return self._run(windows, batch_size, tokens), tokens

    def _run(self, windows: Sequence[_Window], batch_size: int, tokens: list[np.ndarray] | None) -> np.ndarray:
        """``run``; a ``tokens`` list (one item per window) gets each window's token embeddings."""
        rows: list[np.ndarray] = []
        order: list[int] = []
        names = [self.output] if tokens is None or self.token_output is None else [self.output, self.token_output]
        for chunk in self._chunks(windows, batch_size):
            _stop_if_abandoned()
            width = max(len(windows[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            types = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, i in enumerate(chunk):
                n = len(windows[i].ids)
                ids[row, :n] = windows[i].ids
                types[row, :n] = windows[i].type_ids
                mask[row, :n] = 1
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            output, *token_output = self.session.run(names, {name: feeds[name] for name in self.input_names})
            rows.append(output)
            order += chunk
            if token_output and tokens is not None:
                for row, i in enumerate(chunk):
                    tokens[i] = token_output[0][row, : len(windows[i].ids)]
        out = np.empty((len(windows), rows[0].shape[1]), dtype=np.float32)
        out[order] = np.concatenate(rows)
        return out

    def _chunks(self, windows: Sequence[_Window], batch_size: int) -> Iterator[list[int]]:
        """Window indices per ONNX Runtime call: windows of similar length share a call (little padding), and
        under int8 only windows of the same checked text (of its views) do."""
        groups: dict[int, list[int]] = {}
        for i in sorted(range(len(windows)), key=lambda i: len(windows[i].ids)):
            groups.setdefault(windows[i].text if self.one_text_per_call else 0, []).append(i)
        for group in groups.values():
            chunk: list[int] = []
            for i in group:
                # A sentence padded to its text's full window would cost that window's time again.
                if chunk and (len(chunk) == batch_size or len(windows[i].ids) > 2 * len(windows[chunk[0]].ids)):
                    yield chunk
                    chunk = []
                chunk.append(i)
            if chunk:
                yield chunk


def _encoder(bundle: GuardBundle, precision: Precision | None) -> tuple[str, str] | None:
    """What an embedding guard's model computes: guards with equal encoders share its run."""
    model = bundle.manifest.model
    # The int8 encoders are what encoder_sha256 identifies; an fp32 copy is shared only with fp32 copies.
    return (model.embedding.encoder_sha256, precision or model.precision) if model.embedding else None


def _lanes(bundles: Sequence[GuardBundle], precision: Precision | None, threads: int) -> list[list[int]]:
    """Bundle indices per lane: the lanes of a check run at once, each in its own thread, the bundles of a lane
    one after the other. Bundles on one encoder share a lane (the first runs it, the rest reuse its output)."""
    models: dict[object, list[int]] = {}
    for i, bundle in enumerate(bundles):
        models.setdefault(_encoder(bundle, precision) or i, []).append(i)
    lanes: list[list[int]] = [[] for _ in range(min(threads, len(models)))]
    for n, indices in enumerate(models.values()):
        lanes[n % len(lanes)] += indices
    return lanes


def _best_sentences(
    pooled: _Pooled, windows: Sequence[_Window], weight: np.ndarray, bias: np.ndarray, n_views: int
) -> _Scores:
    """Per view and label: the highest score of a sentence pooled in one of the view's windows (-1 when it has
    none), and that sentence's span in the view."""
    top = np.full((n_views, weight.shape[1]), -1.0, dtype=np.float32)
    spans: list[list[tuple[int, int]]] = [[(0, 0)] * weight.shape[1] for _ in range(n_views)]
    held = [(windows[w].view, span) for w, (_, window_spans) in enumerate(pooled) for span in window_spans]
    if held:
        scores = _sigmoid(np.concatenate([vectors for vectors, _ in pooled]) @ weight + bias)
        best, where = _max_per_text(scores, [view for view, _ in held], n_views)
        for view in {view for view, _ in held}:
            top[view] = best[view]
            spans[view] = [held[w][1] for w in where[view]]
    return top, spans


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    probabilities: np.ndarray = 1.0 / (1.0 + np.exp(-logits))
    return probabilities


def _load_head(bundle: GuardBundle, name: str, labels: int) -> tuple[np.ndarray, np.ndarray]:
    data = bundle.read(name)
    try:
        with io.BytesIO(data) as file:
            arrays = np.load(file, allow_pickle=False)  # an .npz, or a plain array if someone saved one
            weight, bias = (np.asarray(arrays[key], dtype=np.float32) for key in ("weight", "bias"))
    except (OSError, ValueError, KeyError, IndexError) as exc:  # not an .npz, or without weight / bias
        raise ManifestError(bundle.path, f"{name} is not a head file with 'weight' and 'bias' arrays: {exc}") from exc
    if weight.ndim != 2 or weight.shape[1] != labels or bias.shape != (labels,):
        raise ModelMismatchError(
            bundle.path,
            f"{name} holds a head of shape {weight.shape} + {bias.shape}; guard.json lists {labels} labels",
        )
    return weight, bias


def _char_span(encoding: Encoding) -> tuple[int, int]:
    """The window's span in the text: its last sequence (a pair's first one is the instruction), special tokens out."""
    text_sequence = max((s for s in encoding.sequence_ids if s is not None), default=0)
    offsets = [o for o, s in zip(encoding.offsets, encoding.sequence_ids) if s == text_sequence]
    return (offsets[0][0], offsets[-1][1]) if offsets else (0, 0)


class _DeprecatedOptions(TypedDict, total=False):
    """``Guard``'s keywords before ``ExecutionOptions``; each still works, with a ``DeprecationWarning``."""

    spin: bool
    precision: Precision | None
    batch_size: int
    batch_invariant: bool
    parallel: bool


# Old keyword -> its ExecutionOptions field.
_DEPRECATED = {
    "spin": "spin",
    "precision": "precision",
    "batch_size": "windows_per_call",
    "batch_invariant": "batch_invariant",
    "parallel": "models_side_by_side",
}


class Guard:
    """Checks texts against one or more guard bundles.

    Load once and share: construction reads and verifies the bundles and opens one ONNX Runtime session per model,
    reused by every Guard in the process. ``check``, ``check_batch`` and ``acheck`` are safe to call from many
    threads and tasks at once.

    Args:
        bundles: bundle folders (or loaded ``GuardBundle`` objects).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when this ONNX Runtime build has it).
        threads: threads a check may use; default: the machine's core count. One model's session gets them all;
            guards on different models split them (``ExecutionOptions.models_side_by_side``).
        execution: how the models run: thread spinning, precision, windows per ONNX Runtime call, batch
            invariance, models side by side (see ``ExecutionOptions``). Options that do nothing in the combination
            given warn (``IneffectiveOptionWarning``).
        thresholds: per-label overrides of the manifests' thresholds.
        max_chars: longer texts raise ``TextTooLongError`` instead of being checked slowly or cut; so do texts that
            normalisation (NFKC) makes longer than that. A context is read from its end, at most its last
            ``max_chars`` characters (and at most ``guard_sdk.bundle.CONTEXT_CHARS``), never refused for its length.
        max_tokens: the work budget of one text: a text whose views (the text, and its sentences and decoded forms
            when scanned) hold more tokens (counted by each bundle's tokenizer, before any model runs) raises
            ``TextTooLongError`` with ``unit="tokens"``. The default keeps the worst text of ``max_chars`` within a
            few seconds of CPU on a 6-layer MiniLM (benchmarks/README.md); raise it to check longer documents, or
            split them.
        verify: check every file's sha256 against the manifest on load. The files a guard runs (model, tokenizer,
            head) are checked as they are read either way, and used from the bytes checked.
        scan: what a check scores besides the whole text: what encodings in it decode to (on by default), its
            sentences pooled in context (on by default, for bundles built for it) or alone (opt-in), and whether
            text hidden in Unicode tag characters is flagged outright (see ``ScanOptions``). A label reports its
            highest score over all of them, or a sentence's when that is further over its sentence threshold.
        trust: pins of the bundles' manifests, ``name@version`` or ``name`` -> sha256 of guard.json (``guard trust``
            prints them), or the path of a JSON file holding them. Every bundle must be pinned and match, else
            ``BundleIntegrityError``: without a pin, whoever can write a bundle folder can rewrite guard.json
            (thresholds, labels) together with its file hashes.
        batching: coalesce concurrent ``check``/``acheck``/``submit`` calls from many threads and tasks into shared
            batches (``True`` or ``BatchingOptions``); for GPUs, where a call costs more than a text; a lone call
            never waits. On small CPUs padding makes it slower (see ``guard_sdk._batching``), and an int8 model shares
            calls only with ``ExecutionOptions(batch_invariant=False)``.
        backend: run the models on a server instead of in this process, e.g. ``guard_sdk.triton.TritonBackend(url)``;
            the bundles are still read (and verified) here, texts tokenized here, heads applied here, and the server
            must serve exactly each bundle's model file (its sha256), else ``ModelMismatchError``. ``device`` is
            then ``"remote"`` and ``threads`` only splits this side's work. A failing server raises
            ``BackendError`` from the check.

    ``spin``, ``precision``, ``batch_size``, ``batch_invariant`` and ``parallel`` are deprecated keywords for
    ``ExecutionOptions``' ``spin``, ``precision``, ``windows_per_call``, ``batch_invariant`` and
    ``models_side_by_side``.
    """

    def __init__(
        self,
        bundles: BundleSource | Iterable[BundleSource],
        *,
        device: Device = "auto",
        threads: int | None = None,
        execution: ExecutionOptions | None = None,
        thresholds: Mapping[str, float] | None = None,
        max_chars: int = 200_000,
        max_tokens: int = 8_192,
        verify: bool = True,
        trust: Mapping[str, str] | str | os.PathLike[str] | None = None,
        batching: bool | BatchingOptions = False,
        scan: ScanOptions | None = None,
        backend: ModelBackend | None = None,
        **deprecated: Unpack[_DeprecatedOptions],
    ) -> None:
        sources = [bundles] if isinstance(bundles, (str, os.PathLike, GuardBundle)) else list(bundles)
        if not sources:
            raise ValueError("Guard needs at least one bundle")
        execution = _execution_options(execution, deprecated)
        overrides = dict(thresholds or {})
        for label, value in overrides.items():
            # A NaN threshold would never flag (comparisons with NaN are False, this range check too), a negative
            # one always.
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
                raise ValueError(f"thresholds[{label!r}] must be a number from 0 to 1, got {value!r}")
        self.device = resolve_device(device) if backend is None else "remote"
        self.threads = threads or os.cpu_count() or 1
        self.execution = execution
        for name, limit in (("max_chars", max_chars), ("max_tokens", max_tokens)):
            if isinstance(limit, bool) or not isinstance(limit, int):
                raise TypeError(f"{name} must be an int, got {type(limit).__name__}")
            if limit < 1:
                raise ValueError(f"{name} must be at least 1, got {limit}")
        self.max_chars = max_chars
        self.max_tokens = max_tokens
        self.scan = scan or ScanOptions()
        pins = read_trust(trust) if trust is not None else None
        loaded = []
        for source in sources:
            if not isinstance(source, GuardBundle):
                source = GuardBundle.load(Path(source), verify=verify, trust=pins)
            elif pins is not None:
                source.check_trust(pins)
            loaded.append(source)
        # A check at a stage runs only the bundles that take part in it, and splits the threads among their lanes. A
        # GPU runs one model at a time anyway.
        # Remote models too: their lanes wait on the network side by side.
        side_by_side = execution.models_side_by_side and self.device in ("cpu", "remote")
        precision = execution.precision
        self._stage_lanes: dict[Stage, list[list[int]]] = {}
        for stage in _STAGES:
            indices = [i for i, bundle in enumerate(loaded) if stage in bundle.manifest.stages]
            lanes = _lanes([loaded[i] for i in indices], precision, self.threads) if side_by_side else [indices]
            self._stage_lanes[stage] = [[indices[i] for i in lane] for lane in lanes if lane]
        session_threads = [
            max(1, self.threads // max(len(self._stage_lanes[stage]) for stage in bundle.manifest.stages))
            for bundle in loaded
        ]
        self._bundles = [
            _LoadedBundle(
                bundle,
                device=self.device,
                threads=threads,
                spin=execution.spin,
                precision=precision,
                batch_invariant=execution.batch_invariant,
                backend=backend,
            )
            for bundle, threads in zip(loaded, session_threads)
        ]
        known = {label.name for b in self._bundles for label in b.labels}
        if unknown := sorted(set(overrides) - known):
            raise ValueError(f"thresholds given for unknown labels {unknown}; labels are {sorted(known)}")
        self._lock = threading.Lock()
        self._checks_running = 0
        # The gate guards' judgements of recent requests (Guard._gate): a stream checks its answer many times, each
        # with the same request.
        self._judged_requests: _Recent[tuple[int, str], _Judged] = _Recent(_JUDGED_REQUESTS)
        self._thresholds = [
            [float(overrides.get(label.name, label.threshold)) for label in b.labels] for b in self._bundles
        ]
        # An override moves a label's whole-text threshold; a sentence never needs less than its whole text.
        self._sentence_thresholds = [
            [max(t, label.sentence_threshold or 0.0) for t, label in zip(thresholds, b.labels)]
            for thresholds, b in zip(self._thresholds, self._bundles)
        ]
        self._batcher = (
            MicroBatcher(self.check_batch, batching if isinstance(batching, BatchingOptions) else None)
            if batching
            else None
        )
        self._gates = self._find_gates()
        self._warn_ineffective(max(session_threads), device if backend is not None else None)

    def _find_gates(self) -> list[int | None]:
        """Per bundle: the index of its request gate's text guard here (``input.request_gate``), or None. A gate
        that is not loaded does nothing, and says so."""
        names = {b.bundle.manifest.name: i for i, b in enumerate(self._bundles)}
        found: list[int | None] = []
        for b in self._bundles:
            index = None if b.gate is None else names.get(b.gate)
            found.append(index)
            if b.gate is None:
                continue
            if index is None:
                _warn(
                    f"{b.id} judges an answer by {b.gate}'s judgement of its request (input.request_gate), but "
                    f"no bundle named {b.gate!r} is loaded: its answers are judged without it; load {b.gate} "
                    "in the same Guard"
                )
            elif (kind := self._bundles[index].context) is not None:
                raise ManifestError(
                    b.bundle.path, f"input.request_gate names {b.gate!r}, which reads {kind[0]}: name a text guard"
                )
        return found

    def _warn_ineffective(self, most_threads: int, device_beside_backend: Device | None) -> None:
        """Warn about options that do nothing with these bundles, device, threads and backend."""
        if device_beside_backend is not None:
            unused = [f"device={device_beside_backend!r}"] if device_beside_backend != "auto" else []
            unused += ["spin=True"] if self.execution.spin else []
            if unused:
                _warn(f"{' and '.join(unused)} do nothing with a backend: the models run on its server")
            return
        if self.execution.spin and most_threads == 1:
            split = "" if self.threads == 1 else f" (threads={self.threads} split between models run side by side)"
            _warn(
                f"spin=True does nothing: every ONNX Runtime session of this Guard runs on one thread{split}, so no "
                "thread waits to spin; give it more threads, or set models_side_by_side=False"
            )
        if self._batcher and all(b.one_text_per_call for b in self._bundles):
            _warn(
                "batching shares no ONNX Runtime call here: with batch_invariant=True an int8 model runs one text per "
                "call, so batched callers only wait for each other; set ExecutionOptions(batch_invariant=False) to "
                "share calls (scores then move with the batch), or leave batching off"
            )

    @property
    def bundles(self) -> list[GuardBundle]:
        return [b.bundle for b in self._bundles]

    @property
    def labels(self) -> list[str]:
        return [label.name for b in self._bundles for label in b.labels]

    @property
    def providers(self) -> list[str]:
        """The execution provider each bundle's session actually runs on."""
        return [b.session.get_providers()[0] for b in self._bundles]

    def warmup(self) -> None:
        """Run each model once at a short and at a full-window length so the first real check is not slow."""
        warm: set[int] = set()
        for stage, lanes in self._stage_lanes.items():
            if indices := {i for lane in lanes for i in lane} - warm:
                self.check_batch(["warm up", "warm up " * 200], stage=stage, contexts=["warm up", None])
                warm |= indices

    @property
    def batching(self) -> BatchingOptions | None:
        return self._batcher.options if self._batcher else None

    def check(self, text: str, *, stage: Stage = "input", context: Context | None = None) -> CheckResult:
        """Check one text at ``stage`` with the bundles that take part in it.

        ``context``: what the text answers or follows, for guards that read it (``input.kind`` ``exchange`` or
        ``conversation``): the request (str) or the conversation's messages, earlier turns first (see
        ``guard_sdk._context``); e.g. ``check(answer, stage="output", context=request)``. Guards that read text
        alone ignore it, and without it those that read a context judge the text alone. A check at a stage no bundle
        takes part in returns ``status="checked"`` with no scores.
        """
        if self._batcher and not _large([text]):
            return self._batcher.submit([text], stage, [context]).result()[0]
        return self.check_batch([text], stage=stage, contexts=[context])[0]

    async def acheck(self, text: str, *, stage: Stage = "input", context: Context | None = None) -> CheckResult:
        import asyncio  # loaded already: this runs in an event loop (not imported with the module, to save ~20 ms)

        # ONNX Runtime releases the GIL, so a worker thread keeps the event loop free while the model runs.
        return (await asyncio.wrap_future(self.submit([text], stage=stage, contexts=[context])))[0]

    def submit(
        self, texts: Sequence[str], *, stage: Stage = "input", contexts: Sequence[Context | None] | None = None
    ) -> Future[list[CheckResult]]:
        """Start checking texts in the background: through the micro-batcher with ``batching``, else on a thread.

        Returns a ``concurrent.futures.Future`` of one result per text; wait with a timeout, or
        ``asyncio.wrap_future`` it. Cancelling it before the check starts skips the check; without batching,
        cancelling a running check stops it at its next ONNX Runtime call and its future raises ``CancelledError``.
        Large checks run on workers of their own, so they queue behind each other, not in front of small ones
        (``guard_sdk._work``); they skip the micro-batcher. ``contexts``: as in ``check_batch``.
        """
        if isinstance(texts, str):
            raise InputTypeError("submit takes a sequence of texts, not a single str")
        texts = list(texts)
        contexts = _context_list(contexts, len(texts))
        if self._batcher and not _large(texts):
            return self._batcher.submit(texts, stage, contexts)
        from ._work import start  # not imported with the module: it brings concurrent.futures

        return start(self.check_batch, texts, stage, contexts)

    def check_batch(
        self, texts: Sequence[str], *, stage: Stage = "input", contexts: Sequence[Context | None] | None = None
    ) -> list[CheckResult]:
        """Check many texts at once; each result's latency is that of the whole batch.

        The texts share tokenization and, with an fp32 model or ``ExecutionOptions(batch_invariant=False)``, ONNX
        Runtime calls; by default every text gets exactly the result ``check`` gives it. ``contexts``: one
        context (or None) per text, as ``check``'s ``context``.
        """
        if isinstance(texts, str):
            raise InputTypeError("check_batch takes a sequence of texts, not a single str; use check(text)")
        if stage not in _STAGES:
            raise ValueError(f"stage must be 'input' or 'output', got {stage!r}")
        return self._check(texts, stage, _context_list(contexts, len(texts)), self._stage_lanes[stage])

    def _check(
        self, texts: Sequence[str], stage: Stage, contexts: Sequence[Context | None], lanes: list[list[int]]
    ) -> list[CheckResult]:
        """``check_batch`` with the bundles of ``lanes``."""
        started = time.perf_counter()
        normalized = [self._prepare(text) for text in texts]
        active = sorted(i for lane in lanes for i in lane)
        rendered = self._contexts(contexts, {c[0] for i in active if (c := self._bundles[i].context)}, len(texts))
        scanned: list[View] = []
        owners: list[int] = []
        first_view: list[int] = []
        for i, prepared in enumerate(normalized):
            first_view.append(len(scanned))
            text_views = views(prepared, self.scan)
            scanned += text_views
            owners += [i] * len(text_views)
        first_view.append(len(scanned))
        self._admit(scanned, owners, rendered, active)
        gates = self._gate(texts, rendered.get("exchange"), active)
        best = self._best(scanned, owners, rendered, lanes, {b: gate.requests for b, gate in gates.items()})
        latency_ms = (time.perf_counter() - started) * 1000.0
        results = []
        for i, text in enumerate(texts):
            notes = list(normalized[i].notes)
            if first_view[i] == first_view[i + 1]:
                results.append(
                    CheckResult(stage=stage, status="empty", scores=[], latency_ms=latency_ms, normalized=notes)
                )
                continue
            label_scores = []
            for b in active:
                loaded, ((top, top_span), sentences) = self._bundles[b], best[b]
                views_of_text = slice(first_view[i], first_view[i + 1])
                for j, label in enumerate(loaded.labels):
                    v = first_view[i] + int(np.argmax(top[views_of_text, j]))
                    score, threshold, span = float(top[v, j]), self._thresholds[b][j], top_span[v][j]
                    kind: ViewKind = scanned[v].kind
                    if sentences is not None:
                        # A label reports the sentence instead when it is further over (or less under) its threshold.
                        s_top, s_span = sentences
                        s = first_view[i] + int(np.argmax(s_top[views_of_text, j]))
                        s_threshold = self._sentence_thresholds[b][j]
                        if s_top[s, j] >= 0 and s_top[s, j] - s_threshold > score - threshold:
                            v, score, threshold, span = s, float(s_top[s, j]), s_threshold, s_span[s][j]
                            kind = "sentence"
                    gate = gates[b].factors[i] if b in gates else None
                    score *= 1.0 if gate is None else gate
                    label_scores.append(
                        LabelScore(
                            label=label.name,
                            score=score,
                            threshold=threshold,
                            flagged=score >= threshold,
                            bundle=loaded.id,
                            window=self._window(normalized[i], scanned[v], span, len(text)),
                            view=kind,
                            gate=gate,
                        )
                    )
            if self.scan.flag_hidden_text and normalized[i].hidden:
                label_scores.append(
                    LabelScore(
                        label="hidden_text",
                        score=1.0,
                        threshold=0.5,
                        flagged=True,
                        bundle="guard_sdk",
                        window=normalized[i].hidden_span,
                        view="hidden",
                    )
                )
            results.append(
                CheckResult(stage=stage, status="checked", scores=label_scores, latency_ms=latency_ms, normalized=notes)
            )
        return results

    def _gate(self, texts: Sequence[str], requests: list[str] | None, active: list[int]) -> dict[int, _Gate]:
        """Per gated bundle of this check: each text's gate factor (``guard_sdk._bundle``; None for a text without a
        request) and the request its guard reads. The gate guard judges the request's last ``GATE_REQUEST_TOKENS``
        tokens and the answer, as an input check would. The gated guard reads the whole request when it fits its
        ``context_tokens``, else the part of it the gate guard scored highest (a sentence, or a window) cut to them:
        filler before or after an ask would push it out of the last tokens, or dilute it."""
        gates: dict[int, _Gate] = {}
        for b in active:
            gate, context = self._gates[b], self._bundles[b].context
            if gate is None or context is None or requests is None:
                continue
            read = self._bundles[gate].last_tokens(requests, GATE_REQUEST_TOKENS)
            asked = [i for i, request in enumerate(read) if request]
            on_request = self._judge_requests(gate, [read[i] for i in asked])
            on_answer = self._check([texts[i] for i in asked], "input", [None] * len(asked), [[gate]]) if asked else []
            factors: list[float | None] = [None] * len(texts)
            chosen = list(requests)
            kept = self._bundles[b].last_tokens(requests, context[1])
            for (ratio, top), answer, i in zip(on_request, on_answer, asked):
                factors[i] = min(1.0, max(ratio, _over_threshold(answer.scores)))
                if kept[i] != requests[i] and top is not None:
                    chosen[i] = self._bundles[b].last_tokens([read[i][slice(*top)]], context[1])[0]
            gates[b] = _Gate(factors, chosen)
        return gates

    def _judge_requests(self, gate: int, requests: list[str]) -> list[_Judged]:
        """The gate guard's judgement of each request (an input check of it): its highest score over threshold, and
        the window of the label that gave it (None when no label scored); remembered for the ``_JUDGED_REQUESTS``
        requests judged or asked for last."""
        known = self._judged_requests.recall([(gate, request) for request in requests])
        todo = [k for k, judged in enumerate(known) if judged is None]
        results = self._check([requests[k] for k in todo], "input", [None] * len(todo), [[gate]]) if todo else []
        for k, result in zip(todo, results):
            scores = [s for s in result.scores if s.view != "hidden"]  # a hidden text's window is not a sentence
            top = max(scores, key=lambda s: _over_threshold([s]), default=None)
            known[k] = (_over_threshold(result.scores), None if top is None else top.window)
        self._judged_requests.remember(((gate, requests[k]), cast(_Judged, known[k])) for k in todo)
        return cast(list[_Judged], known)

    def _reads_context(self, stage: Stage) -> bool:
        """Whether a guard of this check's stage reads its context (an exchange or conversation guard)."""
        return any(self._bundles[i].context is not None for lane in self._stage_lanes[stage] for i in lane)

    def _contexts(self, contexts: Sequence[Context | None], kinds: set[ContextKind], n_texts: int) -> _Contexts:
        """Per kind the check's guards read: what each text's guards read of its context (``context_text``, at most
        ``max_chars``), normalised (``""`` for none). Every context is type-checked, read or not."""
        for i, context in enumerate(contexts):
            validate(context, "context" if n_texts == 1 else f"contexts[{i}]")
        return {
            kind: [
                self._prepare(context_text(context, kind)[-self.max_chars :], "context").text if context else ""
                for context in contexts
            ]
            for kind in sorted(kinds)
        }

    @staticmethod
    def _window(text: NormalizedText, view: View, span: tuple[int, int], length: int) -> tuple[int, int]:
        """A window of a view, in offsets of the text as given."""
        if view.kind == "hidden":
            return text.hidden_span
        return text.span_in_original(*view.span_in_normalized(*span), length)

    def _admit(self, scanned: Sequence[View], owners: Sequence[int], contexts: _Contexts, active: list[int]) -> None:
        """Refuse a text whose views and context are over the token budget before any model runs on them; move a
        submitted check too large for its workers to the large ones. A context counts with the tokens its guards
        keep of it (its last ``context_tokens``): a long conversation is not a long text."""
        keeps = {
            kind: max(c[1] for b in active if (c := self._bundles[b].context) is not None and c[0] == kind)
            for kind in contexts
        }
        what = "text with its context" if any(any(rendered) for rendered in contexts.values()) else "text"
        tokens = 0
        for loaded in {self._bundles[b].tokenization_key[0]: self._bundles[b] for b in active}.values():
            inputs = [view.text for view in scanned]
            input_owners = list(owners)
            for kind, rendered in contexts.items():
                kept = loaded.last_tokens(rendered, keeps[kind])
                inputs += [context for context in kept if context]
                input_owners += [owner for owner, context in enumerate(kept) if context]
            # Rust, without offsets, and without holding the interpreter lock.
            per_text: dict[int, int] = {}
            for owner, encoding in zip(
                input_owners, loaded.counter.encode_batch_fast(inputs, add_special_tokens=False)
            ):
                per_text[owner] = per_text.get(owner, 0) + len(encoding)
            if per_text and max(per_text.values()) > self.max_tokens:
                raise TextTooLongError(max(per_text.values()), self.max_tokens, unit="tokens", what=what)
            tokens = max(tokens, sum(per_text.values()))
        if (ticket := _submitted.get()) is not None:
            ticket.admit(tokens)

    def _best(
        self,
        scanned: Sequence[View],
        owners: Sequence[int],
        contexts: _Contexts,
        lanes: list[list[int]],
        gated: dict[int, list[str]],
    ) -> dict[int, _Best]:
        """Per bundle of ``lanes``: each view's best score per label, and the window (in the view) that gave it.
        ``gated``: per gated bundle, the requests it reads (``_gate``) instead of ``contexts``."""
        encoded: _WindowCache = {}
        embedded: _EmbeddingCache = {}

        def lane(indices: list[int]) -> list[tuple[int, _Best]]:
            return [
                (
                    i,
                    self._bundles[i].best(
                        scanned,
                        owners,
                        self.execution.windows_per_call,
                        encoded,
                        embedded,
                        {**contexts, "exchange": gated[i]} if i in gated else contexts,
                        self.scan.sentences_in_context,
                    ),
                )
                for i in indices
            ]

        if not lanes:
            return {}
        first, *others = lanes
        with self._lock:
            self._checks_running += 1
            # Other checks running on this Guard keep the cores busy already: handing lanes to more threads would
            # only add hand-offs (fewer checks/s with many callers: benchmarks/README.md).
            alone = self._checks_running == 1
        try:
            if not others or not scanned or not alone:
                done = [item for indices in lanes for item in lane(indices)]
            else:
                # In this check's context: a lane stops when the check is abandoned (_stop_if_abandoned).
                context = contextvars.copy_context()
                pending = [(indices, _lane_threads().submit(context.run, lane, indices)) for indices in others]
                done = lane(first)
                for indices, future in pending:
                    # A lane no worker has started yet (all busy with other checks' lanes) runs here, not waiting.
                    done += lane(indices) if future.cancel() else future.result()
        finally:
            with self._lock:
                self._checks_running -= 1
        return dict(done)

    @classmethod
    def default(cls, *, build: bool = True, **options: Any) -> Guard:
        """The default pack: ``content-safety`` and ``prompt-injection`` for inputs, ``answer-safety`` for answers
        (pass the request: ``check(answer, stage="output", context=request)``).

        Found in ``$GUARD_SDK_PACK_DIR`` when set, else in the installed ``guard-sdk-pack`` (``pip install
        guard-sdk[pack]``) of the pack version this runtime expects, else in ``guard_sdk.default_pack_dir()``. When it is
        in none and ``build`` is set, ``guard-build pack`` builds it first (once; needs the ``builder`` extra and the
        seed sets). ``options`` are ``Guard``'s own (device, threads, thresholds, ...).
        """
        return cls(find_default_pack(build=build).bundles, **options)

    def _prepare(self, text: object, what: str = "text") -> NormalizedText:
        if not isinstance(text, str):
            raise InputTypeError(f"a guard checks str, got {type(text).__name__}")
        if len(text) > self.max_chars:
            raise TextTooLongError(len(text), self.max_chars, what=what)
        if not text.isascii():
            try:  # a lone surrogate: a str can hold one, UTF-8 (the tokenizer's input) cannot
                text.encode("utf-8")  # in C, ~4x faster than searching for one with a regex
            except UnicodeEncodeError as exc:
                raise InputEncodingError(exc.start, text[exc.start]) from None
        normalized = normalize(text)
        # NFKC can make one character many ("\ufdfa" is 18): bound what the tokenizer is given, too.
        if len(normalized.text) > self.max_chars:
            raise TextTooLongError(len(normalized.text), self.max_chars, unit="normalized characters", what=what)
        return normalized

    @overload
    def wrap(self, client: openai.OpenAI, **options: Unpack[WrapOptions]) -> GuardedOpenAI: ...
    @overload
    def wrap(self, client: openai.AsyncOpenAI, **options: Unpack[WrapOptions]) -> GuardedAsyncOpenAI: ...
    def wrap(
        self, client: openai.OpenAI | openai.AsyncOpenAI, **options: Unpack[WrapOptions]
    ) -> GuardedOpenAI | GuardedAsyncOpenAI:
        """An OpenAI client whose ``chat.completions.create`` and ``responses.create`` are guarded.

        Same call shapes and return types as the client's own. Options: see ``guard_sdk.WrapOptions``.
        """
        from .integrations.openai import wrap

        return wrap(client, self, **options)

    def __repr__(self) -> str:
        spin = ", spin=True" if self.execution.spin else ""
        return f"Guard({[b.id for b in self._bundles]}, device={self.device!r}, threads={self.threads}{spin})"


_executors: dict[str, ThreadPoolExecutor] = {}
_executors_lock = threading.Lock()


def _executor(name: str, workers: int | None = None) -> ThreadPoolExecutor:
    """A thread pool shared by every Guard (ONNX Runtime releases the GIL), started on first use."""
    with _executors_lock:
        if name not in _executors:
            from concurrent.futures import ThreadPoolExecutor  # not imported with the module, to keep it cheap

            workers = workers or min(32, (os.cpu_count() or 1) + 4)
            _executors[name] = ThreadPoolExecutor(workers, thread_name_prefix=name)
        return _executors[name]


def _lane_threads() -> ThreadPoolExecutor:
    """A check's parallel lanes. Apart from the checks' own pools (``_work``): a check running there waits on its
    lanes."""
    return _executor("guard-lane")


# The check this thread runs for ``Guard.submit``, if any: whether its caller gave up, which workers it may use.
_submitted: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar("guard_sdk_submitted", default=None)


def _stop_if_abandoned() -> None:
    """Stop a submitted check whose caller gave up on it (a timeout, ``Future.cancel``, a cancelled task)."""
    if (ticket := _submitted.get()) is not None and ticket.abandoned.is_set():
        from concurrent.futures import CancelledError  # loaded already: only a submitted check has a ticket

        raise CancelledError("the check's caller gave up on it")


def _large(texts: Sequence[object]) -> bool:
    """Whether a check is large by its characters (tokens are not counted yet): it skips the micro-batcher and the
    workers of small checks. Contexts do not count: a guard reads their last tokens (``guard_sdk._context``)."""
    from ._work import SMALL_CHARS

    return sum(len(text) for text in texts if isinstance(text, str)) > SMALL_CHARS


def _context_list(contexts: Sequence[Context | None] | None, n_texts: int) -> list[Context | None]:
    """One context (or None) per text, checked for shape: the contexts themselves are type-checked when rendered."""
    if contexts is None:
        return [None] * n_texts
    if isinstance(contexts, (str, bytes, Mapping)) or not isinstance(contexts, Sequence):
        raise InputTypeError(
            f"contexts must be a sequence of one context (or None) per text, got {type(contexts).__name__}"
        )
    if len(contexts) != n_texts:
        raise InputError(f"contexts holds {len(contexts)} items for {n_texts} texts: give one (or None) per text")
    return list(contexts)


def _max_per_text(scores: np.ndarray, owners: list[int], n_texts: int) -> tuple[np.ndarray, np.ndarray]:
    """Per text and label: the highest score over the text's windows, and which window had it."""
    best = np.full((n_texts, scores.shape[1]), -1.0, dtype=np.float32)
    best_window = np.zeros((n_texts, scores.shape[1]), dtype=np.int64)
    for w, owner in enumerate(owners):
        better = scores[w] > best[owner]
        best[owner, better] = scores[w, better]
        best_window[owner, better] = w
    return best, best_window


def _execution_options(execution: ExecutionOptions | None, deprecated: Mapping[str, object]) -> ExecutionOptions:
    """``execution``, or the deprecated keywords given instead of it (with a ``DeprecationWarning``)."""
    if unknown := sorted(set(deprecated) - set(_DEPRECATED)):
        raise TypeError(f"Guard() got an unexpected keyword argument {unknown[0]!r}")
    if not deprecated:
        return execution or ExecutionOptions()
    if execution is not None:
        raise TypeError(f"give execution= or its deprecated keywords {sorted(deprecated)}, not both")
    fields = {_DEPRECATED[name]: value for name, value in deprecated.items()}
    warnings.warn(
        f"Guard({', '.join(f'{name}=' for name in deprecated)}) is deprecated: use "
        f"Guard(execution=ExecutionOptions({', '.join(f'{field}=' for field in fields)}))",
        DeprecationWarning,
        stacklevel=3,  # the caller of Guard()
    )
    return ExecutionOptions(**fields)  # type: ignore[arg-type]  # checked by ExecutionOptions itself


def _warn(message: str) -> None:
    warnings.warn(message, IneffectiveOptionWarning, stacklevel=4)  # the caller of Guard()
