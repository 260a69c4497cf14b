"""The guard bundle: the one contract between the builder and the runtime.

A bundle is a folder::

    guard.json        the manifest below (schema_version 1)
    model.onnx        the classifier, int8 by default; outputs one logit per label
    model.fp32.onnx   optional full-precision copy
    tokenizer.json    a `tokenizers` tokenizer
    head.npz          embedding guards only: the linear head (below)

Every file except guard.json is listed in ``files`` with its sha256, under a plain relative name inside the folder,
and the runtime refuses a bundle whose files are missing, differ, are links or are not listed. It reads each file it
uses once, checks those bytes and runs them, so a file swapped after the check is refused, not used. guard.json itself is
covered only when the loader's caller pins its sha256 (``GuardBundle.load(sha256=...)``, ``Guard(trust=...)``):
otherwise whoever can write the folder can rewrite the manifest and its hashes together.

Scores are ``sigmoid(logit)`` per label for both problem types: ``binary`` has one label, ``multi_label`` several
independent ones.

A multi-task guard (``builder.train.multitask``) gives every label an ``instruction``: its model has one output and reads
``(instruction, window)`` as a sentence pair, so the runtime runs it once per label. Labels have instructions all or
none.

An embedding guard (``builder.train.embedding``: a sentence encoder and a linear head per label) also names its head in
``model.embedding``: ``model.onnx`` then has a second output, the sentence embedding, and ``head.npz`` holds the
head's ``weight`` (dimension x labels) and ``bias``. The runtime applies the head itself, so bundles whose encoders
are identical (same ``encoder_sha256``, e.g. the two guards of the default pack) share one encoder run per window.
When it also names ``token_output`` (the token embeddings), the runtime pools every sentence of a window from them
and judges it at its label's ``sentence_threshold`` (``guard_sdk.bundle.pool_sentences``).

``input`` says what a guard reads (``InputSpec``): ``text``, one text alone (a message, a document, an answer; every
bundle that does not say otherwise); ``exchange``, an answer together with the request it answers, as the sentence
pair ``(request, answer)``; ``conversation``, the latest turn with the earlier turns rendered one per line as
``{role}: {content}``, as the pair ``(earlier turns, latest turn)``. The context (request or earlier turns) keeps its
last ``context_tokens`` tokens, and the checked text is windowed in what is left of ``max_length``; a check without
one pairs ``("", text)``. ``stages`` names the checks a bundle takes part in (``input``, ``output``): an ``exchange``
guard judges answers, so it takes part in output checks only. A multi-task guard reads ``text``. Both are left out of
guard.json at their defaults, so runtimes that predate them read plain bundles.

An ``exchange`` guard may name a ``request_gate`` (``RequestGate``): a text guard, loaded in the same ``Guard``,
whose judgement says whether the request (or the answer itself) is harmful. A check with a request scales each of
the exchange guard's scores by that judgement: the gate guard's highest score over threshold, on the request (its
last ``GATE_REQUEST_TOKENS`` tokens) and on the answer, capped at 1. A request longer than ``context_tokens`` is read
by the exchange guard as the part of it the gate guard scored highest (a sentence or a window), so benign text
around an ask neither cuts it away nor dilutes it. The exchange guard tells compliance from refusal; the gate,
trained on far more requests, tells which requests are harmful. A factor never exceeds 1, so the exchange guard's
threshold, calibrated without the gate, holds; a check without a request is not gated.

``training`` (``TrainingRecord``) and ``metrics`` (``BundleMetrics``) record how the bundle was made and how it scored
on its validation split; the runtime never acts on them. Their known fields are typed, and fields they do not know are
kept, so records of older and newer builders load alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from ._errors import BundleIntegrityError, BundleNotFoundError, ManifestError
from ._result import Stage

__all__ = [
    "FP32_MODEL_FILE",
    "HEAD_FILE",
    "MANIFEST_NAME",
    "MODEL_FILE",
    "SCHEMA_VERSION",
    "TOKENIZER_FILE",
    "BundleManifest",
    "BundleMetrics",
    "EmbeddingSpec",
    "GuardBundle",
    "InputSpec",
    "LabelMetrics",
    "LabelSpec",
    "ModelSpec",
    "ParityReport",
    "RequestGate",
    "TokenizerSpec",
    "TrainingRecord",
    "file_sha256",
    "read_trust",
    "write_manifest",
]

MANIFEST_NAME = "guard.json"
SCHEMA_VERSION = 1
# The files' default names; a manifest may name others.
MODEL_FILE = "model.onnx"
FP32_MODEL_FILE = "model.fp32.onnx"
TOKENIZER_FILE = "tokenizer.json"
HEAD_FILE = "head.npz"

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]

# Names of plain files and folders joined by "/": no absolute path, "." or ".." segment, empty segment, hidden name,
# backslash, drive letter or control character. Checked before the filesystem is touched, so a manifest can neither
# make the loader read a file outside its folder nor learn from an error whether such a file exists.
_FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*")
# A manifest is a few kB; reading one far larger is an attack on memory, not a bundle.
_MAX_MANIFEST_BYTES = 16 << 20


def _plain_file_name(name: str) -> str:
    if len(name) > 1024 or not _FILE_NAME.fullmatch(name):
        raise ValueError(
            "must name a file inside the bundle folder: a relative path of names made of letters, digits, '_', '-' "
            "and '.' (not first), joined by '/'"
        )
    if name == MANIFEST_NAME:
        raise ValueError(f"{MANIFEST_NAME} cannot list itself")
    return name


BundleFile = Annotated[str, AfterValidator(_plain_file_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class LabelSpec(_Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_./-]+$")]
    description: str = ""
    threshold: Probability = 0.5
    # Left out of guard.json when unset, so runtimes that predate multi-task guards still read plain bundles.
    instruction: str | None = Field(None, exclude_if=lambda value: value is None)
    """Multi-task guards only: the policy text paired with every window when scoring this label."""
    sentence_threshold: Probability | None = Field(None, exclude_if=lambda value: value is None)
    """Embedding guards with ``model.embedding.token_output``: the threshold of one sentence's score, pooled from its
    tokens as the encoder read them in their window. A sentence says less than its whole text, so it needs more
    evidence: never below ``threshold``."""


class EmbeddingSpec(_Strict):
    """An embedding guard's parts: the runtime computes ``sigmoid(embedding @ weight + bias)`` itself."""

    output: Annotated[str, Field(min_length=1)] = "sentence_embedding"
    """The model output that holds the sentence embedding (the first output stays the logits)."""
    head_file: BundleFile = HEAD_FILE
    encoder_sha256: Sha256
    """Identity of the int8 encoder without its head: bundles that share it share one encoder run per window."""
    token_output: Annotated[str, Field(min_length=1)] | None = Field(None, exclude_if=lambda value: value is None)
    """The model output holding every token's embedding (batch x tokens x dimension). The runtime pools each sentence
    of a window from it and scores it with the head, so a short payload in benign text is not averaged away, at no
    extra model run (``ScanOptions.sentences_in_context``). Left out of guard.json when unset."""


class ModelSpec(_Strict):
    file: BundleFile = MODEL_FILE
    precision: Literal["int8", "fp32"] = "int8"
    fp32_file: BundleFile | None = None
    # Left out of guard.json when unset, as ``instruction``: plain bundles read as before.
    embedding: EmbeddingSpec | None = Field(default=None, exclude_if=lambda value: value is None)


class TokenizerSpec(_Strict):
    file: BundleFile = TOKENIZER_FILE
    max_length: Annotated[int, Field(ge=8, le=8192)]
    # Tokens shared by two consecutive windows, so a phrase cut by one window boundary is whole in the next.
    stride: Annotated[int, Field(ge=0)]

    @model_validator(mode="after")
    def _stride_leaves_room(self) -> TokenizerSpec:
        if self.stride >= self.max_length // 2:
            raise ValueError(f"stride ({self.stride}) must be less than half of max_length ({self.max_length})")
        return self


class _Record(BaseModel):
    # Records for people and tools, not acted on by the runtime: fields this version does not know are kept (and
    # written back), not refused, and an unset field is left out of guard.json.
    model_config = ConfigDict(extra="allow", frozen=True, defer_build=True)


def _unset(value: object) -> bool:
    return value is None


class TrainingRecord(_Record):
    """How the bundle's model was trained (``builder``'s run info, without what the manifest says elsewhere)."""

    head: str = "classifier"
    """``classifier`` (a fine-tuned sequence classifier) or ``embedding`` (a sentence encoder and a linear head)."""
    problem_type: str | None = Field(default=None, exclude_if=_unset)
    max_length: int | None = Field(default=None, exclude_if=_unset)
    train_examples: int | None = Field(default=None, exclude_if=_unset)
    validation_examples: int | None = Field(default=None, exclude_if=_unset)
    seed: int | None = Field(default=None, exclude_if=_unset)
    epochs: float | None = Field(default=None, exclude_if=_unset)
    steps: int | None = Field(default=None, exclude_if=_unset)
    examples_per_second: float | None = Field(default=None, exclude_if=_unset)
    train_seconds: float | None = Field(default=None, exclude_if=_unset)
    final_loss: float | None = Field(default=None, exclude_if=_unset)
    num_layers: int | None = Field(default=None, exclude_if=_unset)
    """Encoder layers, when the builder cut the base model (a distilled student)."""
    merge: dict[str, Any] | None = Field(default=None, exclude_if=_unset)
    """A merged run's method, coefficients and sources (``builder.train.merge``)."""
    zero_shot_from: str | None = Field(default=None, exclude_if=_unset)
    """A zero-shot bundle: the multi-task guard (``name@version``) whose model it checks new instructions with."""


class LabelMetrics(_Record):
    """One label on the validation split, at its threshold, as the runtime scores it."""

    threshold: float
    precision: float
    recall: float
    f1: float
    fpr: float
    auprc: float | None
    positives: int
    negatives: int


class ParityReport(_Record):
    """How far the ONNX models' scores are from the trained model's on the validation split."""

    examples: int
    fp32_max_abs_diff: float
    int8_max_abs_diff: float
    int8_mean_abs_diff: float
    fp32_decision_agreement: float
    int8_decision_agreement: float


class BundleMetrics(_Record):
    """How the bundle scored on its validation split and how its thresholds were set."""

    validation: dict[str, LabelMetrics] | None = Field(default=None, exclude_if=_unset)
    """Per label."""
    calibration: str | dict[str, str] | None = Field(default=None, exclude_if=_unset)
    """How the thresholds were set (e.g. ``benign_flag_rate=0.04``), or per label for a zero-shot bundle."""
    sentence_calibration: str | None = Field(default=None, exclude_if=_unset)
    benign_flagged: float | None = Field(default=None, exclude_if=_unset)
    """Share of the validation texts that violate nothing flagged by some label."""
    parity: ParityReport | None = Field(default=None, exclude_if=_unset)


InputKind = Literal["text", "exchange", "conversation"]
_ALL_STAGES: list[Stage] = ["input", "output"]


class RequestGate(_Strict):
    """An exchange guard's gate: the text guard whose judgement of the request and answer scales its scores."""

    guard: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    """The gate guard's ``name``: a bundle that reads ``text``, loaded in the same ``Guard``."""


class InputSpec(_Strict):
    """What a guard reads: one text, or a text paired with its context (see the module docstring)."""

    kind: InputKind = "text"
    context_tokens: Annotated[int, Field(ge=8, le=8192)] = 96
    """``exchange`` and ``conversation``: the context's last tokens kept (the ask usually ends a request)."""
    request_gate: RequestGate | None = Field(default=None, exclude_if=lambda value: value is None)
    """``exchange`` only: the gate (see the module docstring). Left out of guard.json when unset."""


class BundleManifest(_Strict):
    schema_version: int
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    version: Annotated[str, Field(min_length=1)]
    description: str = ""
    problem_type: Literal["binary", "multi_label"]
    labels: Annotated[list[LabelSpec], Field(min_length=1)]
    # A factory, not a ModelSpec() instance: building one at import would build the model's validator then.
    model: ModelSpec = Field(default_factory=ModelSpec)
    tokenizer: TokenizerSpec
    # Left out of guard.json at their defaults, as ``instruction``: plain bundles read as before.
    input: InputSpec = Field(default_factory=InputSpec, exclude_if=lambda value: value == InputSpec())
    stages: Annotated[list[Stage], Field(min_length=1)] = Field(
        default_factory=lambda: list(_ALL_STAGES), exclude_if=lambda value: value == _ALL_STAGES
    )
    """The checks (``Guard.check(..., stage=...)``) the bundle takes part in."""
    base_model: str
    training_data_sha256: str | None = None
    training: TrainingRecord = Field(default_factory=lambda: TrainingRecord())
    metrics: BundleMetrics = Field(default_factory=lambda: BundleMetrics())
    files: dict[BundleFile, Sha256]
    created_at: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> BundleManifest:
        names = [label.name for label in self.labels]
        if len(set(names)) != len(names):
            raise ValueError(f"label names must be unique, got {names}")
        if self.problem_type == "binary" and len(names) != 1:
            raise ValueError(f"a binary bundle has exactly one label, got {len(names)}")
        if len({label.instruction is None for label in self.labels}) > 1:
            raise ValueError("either every label has an instruction (a multi-task guard) or none has")
        if self.model.embedding and self.labels[0].instruction is not None:
            raise ValueError("a multi-task guard (labels with instructions) has no embedding head")
        pooled = self.model.embedding is not None and self.model.embedding.token_output is not None
        without = [label.name for label in self.labels if label.sentence_threshold is None]
        if pooled and without:
            raise ValueError(
                f"model.embedding.token_output is set, so every label needs a sentence_threshold: {without}"
            )
        if not pooled and len(without) < len(self.labels):
            raise ValueError("sentence_threshold needs an embedding guard with model.embedding.token_output")
        if low := [
            l.name for l in self.labels if l.sentence_threshold is not None and l.sentence_threshold < l.threshold
        ]:
            raise ValueError(f"a sentence_threshold is never below its label's threshold: {low}")
        if self.input.kind != "text" and self.labels[0].instruction is not None:
            raise ValueError(f"a multi-task guard (labels with instructions) reads text, not {self.input.kind!r}")
        if len(set(self.stages)) != len(self.stages):
            raise ValueError(f"stages must be unique, got {self.stages}")
        if self.input.request_gate is not None and self.input.kind != "exchange":
            raise ValueError(f"input.request_gate gates an exchange guard's answers, not a {self.input.kind!r} guard")
        if self.input.request_gate is not None and self.input.request_gate.guard == self.name:
            raise ValueError(f"input.request_gate names the guard itself ({self.name!r}): name a text guard")
        if self.input.kind == "exchange" and self.stages != ["output"]:
            raise ValueError(f"an exchange guard judges answers: its stages are ['output'], got {self.stages}")
        if self.input.kind != "text" and self.input.context_tokens >= self.tokenizer.max_length:
            raise ValueError(
                f"input.context_tokens ({self.input.context_tokens}) leaves no room in a window of max_length "
                f"({self.tokenizer.max_length}) for the text"
            )
        needed = [self.model.file, self.tokenizer.file]
        needed += [self.model.fp32_file] if self.model.fp32_file else []
        needed += [self.model.embedding.head_file] if self.model.embedding else []
        unlisted = [f for f in needed if f not in self.files]
        if unlisted:
            raise ValueError(f"files {unlisted} are used but have no sha256 in 'files'")
        return self

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, as ``files`` in guard.json lists it."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: str | os.PathLike[str], manifest: BundleManifest) -> str:
    """Write ``manifest`` as ``folder``'s guard.json, replacing it at once (a reader sees the old file or the new
    one), and return the sha256 of the bytes written: the pin ``Guard(trust=...)`` takes."""
    data = manifest.model_dump_json(indent=2).encode("utf-8")
    target = Path(folder) / MANIFEST_NAME
    partial = target.with_name(f".{MANIFEST_NAME}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)  # a bundle holds only listed files: never leave this one behind
    return hashlib.sha256(data).hexdigest()


class GuardBundle:
    """A bundle folder whose manifest parsed and whose files matched their hashes.

    ``manifest_sha256`` is the sha256 of the guard.json bytes that were parsed: the value a caller pins.
    """

    def __init__(self, path: Path, manifest: BundleManifest, manifest_sha256: str) -> None:
        self.path = path
        self.manifest = manifest
        self.manifest_sha256 = manifest_sha256

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        verify: bool = True,
        sha256: str | None = None,
        trust: Mapping[str, str] | None = None,
    ) -> GuardBundle:
        """Read the bundle folder at ``path`` and check it.

        Args:
            verify: check every listed file against its sha256 now (names, links and unlisted files are checked
                anyway). Either way, the files a Guard uses are hashed again as ``read`` reads them.
            sha256: the sha256 guard.json must have (``guard trust`` prints it); another manifest is refused before
                it is parsed.
            trust: pins of many bundles (see ``read_trust``): guard.json must have the sha256 pinned for its
                ``name@version``, else for its ``name``; a bundle pinned under neither is refused.
        """
        folder = Path(path)
        if not folder.is_dir():
            raise BundleNotFoundError(folder, "no such folder")
        # One read: the bytes hashed are the bytes parsed, so the manifest cannot change between the two.
        data = _read_manifest(folder)
        digest = hashlib.sha256(data).hexdigest()
        if sha256 is not None:
            _check_pin(folder, digest, _sha256_pin(sha256, "the pinned sha256"), "pinned")
        bundle = cls(folder, parse_manifest(data, folder), digest)
        if trust is not None:
            bundle.check_trust(trust)
        files = {name: _regular_file(folder, name) for name in bundle.manifest.files}
        if unlisted := _unlisted_files(folder, bundle.manifest.files):
            shown = ", ".join(repr(name) for name in unlisted[:10])
            more = f" and {len(unlisted) - 10} more" if len(unlisted) > 10 else ""
            raise BundleIntegrityError(
                folder,
                f"holds files that {MANIFEST_NAME} does not list: {shown}{more}; a bundle holds exactly the files its "
                "manifest lists",
            )
        for name, file in files.items():
            if verify and file_sha256(file) != bundle.manifest.files[name]:
                raise _changed(folder, name)
        return bundle

    def read(self, name: str) -> bytes:
        """The bytes of the listed file ``name``, read once and checked against its sha256, whether or not the
        bundle was loaded with ``verify``. The runtime uses these bytes and never opens the file again, so a file
        swapped after ``load`` is refused (``BundleIntegrityError``) instead of run."""
        if name not in self.manifest.files:
            raise BundleIntegrityError(self.path, f"{name} is not listed in {MANIFEST_NAME}")
        path = _regular_file(self.path, name)
        try:
            # No link followed and nothing but a regular file read, should the name be swapped since the check above.
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
        except OSError as exc:
            raise BundleIntegrityError(self.path, f"{name} is not readable: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise BundleIntegrityError(self.path, f"{name} is not a regular file")
            data = file.read()
        if hashlib.sha256(data).hexdigest() != self.manifest.files[name]:
            raise _changed(self.path, name)
        return data

    def check_trust(self, trust: Mapping[str, str]) -> None:
        """Refuse this bundle unless ``trust`` pins its guard.json's sha256 under ``name@version`` or ``name``."""
        manifest = self.manifest
        key = manifest.id if manifest.id in trust else manifest.name
        if key not in trust:
            raise BundleIntegrityError(
                self.path,
                f"{manifest.id} is not pinned: the trust has no entry for {manifest.id!r} or {manifest.name!r} "
                "(`guard trust FOLDER` prints the pin of a bundle you trust)",
            )
        pin = _sha256_pin(trust[key], f"the pin for {key!r}")
        _check_pin(self.path, self.manifest_sha256, pin, f"pinned for {key!r}")

    def file(self, name: str) -> Path:
        return self.path / name

    def model_file(self, precision: Literal["int8", "fp32"] | None = None) -> str:
        """The listed name of the model file for ``precision`` (default: the manifest's)."""
        spec = self.manifest.model
        if precision is None or precision == spec.precision:
            return spec.file
        if precision == "fp32" and spec.fp32_file:
            return spec.fp32_file
        raise BundleNotFoundError(self.path, f"has no {precision} model (it ships {spec.precision})")

    def model_path(self, precision: Literal["int8", "fp32"] | None = None) -> Path:
        return self.file(self.model_file(precision))

    def __repr__(self) -> str:
        return f"GuardBundle({self.manifest.id!r}, path={str(self.path)!r})"


def read_trust(trust: Mapping[str, str] | str | os.PathLike[str]) -> dict[str, str]:
    """Pins of bundle manifests, ``name@version`` or ``name`` -> sha256 of guard.json, checked: a mapping, or the
    path of a JSON file holding one (what ``guard trust`` prints)."""
    where = "trust"
    pins: object = trust
    if isinstance(trust, (str, os.PathLike)):
        where = f"trust file {os.fspath(trust)}"
        try:
            pins = json.loads(Path(trust).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{where} is not readable JSON: {exc}") from exc
    if not isinstance(pins, Mapping):
        raise TypeError(f"{where} must map bundle names (or name@version) to sha256 digests, got {type(pins).__name__}")
    checked = {}
    for key, value in pins.items():
        if not isinstance(key, str) or not _TRUST_KEY.fullmatch(key):
            raise ValueError(f"{where}: {key!r} is not a bundle name or name@version")
        checked[key] = _sha256_pin(value, f"{where}: {key!r}")
    return checked


_TRUST_KEY = re.compile(r"[A-Za-z0-9_.-]+(?:@\S+)?")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _sha256_pin(value: object, what: str) -> str:
    pin = value.lower() if isinstance(value, str) else ""
    if not _SHA256.fullmatch(pin):
        raise ValueError(f"{what} must be a sha256 (64 hex digits), got {value!r}")
    return pin


def _check_pin(folder: Path, digest: str, pin: str, how: str) -> None:
    if digest != pin:
        raise BundleIntegrityError(
            folder, f"{MANIFEST_NAME} has sha256 {digest}, not {pin} as {how}: this is not the manifest that was pinned"
        )


def _changed(folder: Path, name: str) -> BundleIntegrityError:
    return BundleIntegrityError(
        folder, f"{name} does not match its sha256 in {MANIFEST_NAME}: the file was changed or damaged"
    )


def _regular_file(folder: Path, name: str) -> Path:
    """``folder/name``, if it is a regular file and neither it nor a folder on the way is a link: with the name's
    own checks, every file the bundle reads is inside its folder."""
    path = folder
    for part in name.split("/"):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            raise BundleNotFoundError(
                folder,
                f"{name} is missing" if name == MANIFEST_NAME else f"{name} is listed in {MANIFEST_NAME} but missing",
            ) from None
        if stat.S_ISLNK(mode):
            raise BundleIntegrityError(folder, f"{name} is a symbolic link; a bundle holds its files itself")
    if not stat.S_ISREG(mode):
        raise BundleIntegrityError(folder, f"{name} is not a regular file")
    return path


def _unlisted_files(folder: Path, listed: Mapping[str, str]) -> list[str]:
    """Everything in the folder that is neither guard.json, a listed file nor a folder on the way to one; a folder
    that holds no listed file is named, not entered."""
    parents = {"/".join(parts[:i]) for parts in (name.split("/") for name in listed) for i in range(1, len(parts))}
    found = []
    pending = [""]
    while pending:
        prefix = pending.pop()
        with os.scandir(folder / prefix) as entries:
            for entry in entries:
                name = prefix + entry.name
                if name in parents and entry.is_dir(follow_symlinks=False):
                    pending.append(name + "/")
                elif name != MANIFEST_NAME and name not in listed and name not in parents:
                    found.append(name + ("/" if entry.is_dir(follow_symlinks=False) else ""))
    return sorted(found)


def _read_manifest(folder: Path) -> bytes:
    path = _regular_file(folder, MANIFEST_NAME)
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ManifestError(folder, f"{MANIFEST_NAME} is not readable: {exc.strerror}") from exc
    if len(data) > _MAX_MANIFEST_BYTES:
        raise ManifestError(
            folder, f"{MANIFEST_NAME} is larger than {_MAX_MANIFEST_BYTES >> 20} MiB; a manifest has a few kB"
        )
    return data


class _DuplicateKeyError(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # JSON readers disagree on which of two equal keys counts: one reading of the manifest only.
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(repr(key))
        result[key] = value
    return result


def parse_manifest(data: bytes, folder: Path) -> BundleManifest:
    """The manifest in ``data`` (guard.json's bytes); errors name the bundle ``folder``."""
    try:
        raw = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
    except _DuplicateKeyError as exc:
        raise ManifestError(folder, f"{MANIFEST_NAME} has the key {exc} twice in one object") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(folder, f"{MANIFEST_NAME} is not readable JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ManifestError(folder, f"{MANIFEST_NAME} must hold a JSON object")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ManifestError(
            folder,
            f"unknown manifest schema_version {version!r}; this guard_sdk reads version {SCHEMA_VERSION} "
            "(upgrade guard_sdk, or rebuild the bundle)",
        )
    try:
        return BundleManifest.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(folder, f"{MANIFEST_NAME} is invalid:\n{exc}") from exc
