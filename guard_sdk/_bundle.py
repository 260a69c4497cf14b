"""The guard bundle: the one contract between the builder and the runtime.

A bundle is a folder::

    guard.json        the manifest below (schema_version 1)
    model.onnx        the classifier, int8 by default; outputs one logit per label
    model.fp32.onnx   optional full-precision copy
    tokenizer.json    a `tokenizers` tokenizer
    head.npz          embedding guards only: the linear head (below)

Every file except guard.json is listed in ``files`` with its sha256, and the runtime refuses a bundle whose files
are missing or differ. Scores are ``sigmoid(logit)`` per label for both problem types: ``binary`` has one label,
``multi_label`` several independent ones.

A multi-task guard (``builder.multitask``) gives every label an ``instruction``: its model has one output and reads
``(instruction, window)`` as a sentence pair, so the runtime runs it once per label. Labels have instructions all or
none.

An embedding guard (``builder.embedding``: a sentence encoder and a linear head per label) also names its head in
``model.embedding``: ``model.onnx`` then has a second output, the sentence embedding, and ``head.npz`` holds the
head's ``weight`` (dimension x labels) and ``bias``. The runtime applies the head itself, so bundles whose encoders
are identical (same ``encoder_sha256``, e.g. the two guards of the default pack) share one encoder run per window.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ._errors import BundleIntegrityError, BundleNotFoundError, ManifestError

__all__ = [
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "BundleManifest",
    "EmbeddingSpec",
    "GuardBundle",
    "LabelSpec",
    "ModelSpec",
    "TokenizerSpec",
]

MANIFEST_NAME = "guard.json"
SCHEMA_VERSION = 1

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class LabelSpec(_Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_./-]+$")]
    description: str = ""
    threshold: Probability = 0.5
    # Left out of guard.json when unset, so runtimes that predate multi-task guards still read plain bundles.
    instruction: str | None = Field(None, exclude_if=lambda value: value is None)
    """Multi-task guards only: the policy text paired with every window when scoring this label."""


class EmbeddingSpec(_Strict):
    """An embedding guard's parts: the runtime computes ``sigmoid(embedding @ weight + bias)`` itself."""

    output: Annotated[str, Field(min_length=1)] = "sentence_embedding"
    """The model output that holds the sentence embedding (the first output stays the logits)."""
    head_file: Annotated[str, Field(min_length=1)] = "head.npz"
    encoder_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    """Identity of the int8 encoder without its head: bundles that share it share one encoder run per window."""


class ModelSpec(_Strict):
    file: str = "model.onnx"
    precision: Literal["int8", "fp32"] = "int8"
    fp32_file: str | None = None
    # Left out of guard.json when unset, as ``instruction``: plain bundles read as before.
    embedding: EmbeddingSpec | None = Field(default=None, exclude_if=lambda value: value is None)


class TokenizerSpec(_Strict):
    file: str = "tokenizer.json"
    max_length: Annotated[int, Field(ge=8, le=8192)]
    # Tokens shared by two consecutive windows, so a phrase cut by one window boundary is whole in the next.
    stride: Annotated[int, Field(ge=0)]

    @model_validator(mode="after")
    def _stride_leaves_room(self) -> TokenizerSpec:
        if self.stride >= self.max_length // 2:
            raise ValueError(f"stride ({self.stride}) must be less than half of max_length ({self.max_length})")
        return self


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
    base_model: str
    training_data_sha256: str | None = None
    training: dict[str, object] = {}
    metrics: dict[str, object] = {}
    files: dict[str, Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]]
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
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class GuardBundle:
    """A bundle folder whose manifest parsed and whose files matched their hashes."""

    def __init__(self, path: Path, manifest: BundleManifest) -> None:
        self.path = path
        self.manifest = manifest

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> GuardBundle:
        folder = Path(path)
        if not folder.is_dir():
            raise BundleNotFoundError(folder, "no such folder")
        manifest_path = folder / MANIFEST_NAME
        if not manifest_path.is_file():
            raise BundleNotFoundError(folder, f"{MANIFEST_NAME} is missing")
        manifest = read_manifest(manifest_path)
        for name, expected in manifest.files.items():
            file = folder / name
            if not file.is_file():
                raise BundleNotFoundError(folder, f"{name} is listed in {MANIFEST_NAME} but missing")
            if verify and file_sha256(file) != expected:
                raise BundleIntegrityError(
                    folder, f"{name} does not match its sha256 in {MANIFEST_NAME}: the file was changed or damaged"
                )
        return cls(folder, manifest)

    def file(self, name: str) -> Path:
        return self.path / name

    def model_path(self, precision: Literal["int8", "fp32"] | None = None) -> Path:
        spec = self.manifest.model
        if precision is None or precision == spec.precision:
            return self.file(spec.file)
        if precision == "fp32" and spec.fp32_file:
            return self.file(spec.fp32_file)
        raise BundleNotFoundError(self.path, f"has no {precision} model (it ships {spec.precision})")

    def __repr__(self) -> str:
        return f"GuardBundle({self.manifest.id!r}, path={str(self.path)!r})"


def read_manifest(path: Path) -> BundleManifest:
    folder = path.parent
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(folder, f"{path.name} is not readable JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ManifestError(folder, f"{path.name} must hold a JSON object")
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
        raise ManifestError(folder, f"{path.name} is invalid:\n{exc}") from exc
