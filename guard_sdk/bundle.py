"""The bundle contract, for whoever writes bundles (our ``builder``, or your own exporter).

A bundle is a folder: ``guard.json`` (``BundleManifest``, written with ``write_manifest``) beside the files it lists
with their sha256 (``file_sha256``); the format is described in README.md ("The guard bundle") and in
``guard_sdk._bundle``. Beside the manifest's models, this module holds what a builder must compute exactly as the
runtime does, so that what it calibrates and checks is what ships: the ONNX Runtime session settings
(``create_session``), what a guard reads of a context for its input kind (``context_text``: ``render``'s text, its
last ``CONTEXT_CHARS`` characters) and how that is cut to its last tokens (``last_tokens``; a request gate's guard
reads ``GATE_REQUEST_TOKENS`` of a request), and how sentences are found and pooled from a window's token embeddings
(``sentence_spans``, ``pool_sentences``); and the names of the default pack's wheel (``PACK_DISTRIBUTION``,
``PACK_PACKAGE``, ``PACK_REPORT``).

Apps that only check texts need none of it: ``guard_sdk.Guard`` and ``guard_sdk.GuardBundle`` load bundles.
"""

from ._bundle import (
    FP32_MODEL_FILE,
    HEAD_FILE,
    MANIFEST_NAME,
    MODEL_FILE,
    SCHEMA_VERSION,
    TOKENIZER_FILE,
    BundleManifest,
    BundleMetrics,
    EmbeddingSpec,
    GuardBundle,
    InputSpec,
    LabelMetrics,
    LabelSpec,
    ModelSpec,
    ParityReport,
    RequestGate,
    TokenizerSpec,
    TrainingRecord,
    file_sha256,
    write_manifest,
)
from ._context import CONTEXT_CHARS, GATE_REQUEST_TOKENS, ContextKind, context_text, last_tokens, render
from ._pack import PACK_DISTRIBUTION, PACK_PACKAGE, PACK_REPORT
from ._runtime import create_session
from ._views import pool_sentences, sentence_spans

__all__ = [
    "CONTEXT_CHARS",
    "FP32_MODEL_FILE",
    "GATE_REQUEST_TOKENS",
    "HEAD_FILE",
    "MANIFEST_NAME",
    "MODEL_FILE",
    "PACK_DISTRIBUTION",
    "PACK_PACKAGE",
    "PACK_REPORT",
    "SCHEMA_VERSION",
    "TOKENIZER_FILE",
    "BundleManifest",
    "BundleMetrics",
    "ContextKind",
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
    "context_text",
    "create_session",
    "file_sha256",
    "last_tokens",
    "pool_sentences",
    "render",
    "sentence_spans",
    "write_manifest",
]
