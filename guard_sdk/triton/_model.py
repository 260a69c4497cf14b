"""What the Triton server side and the client agree on: a bundle model's name there, how the server says which
model file it serves, and the model's tensors in Triton's terms."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .._bundle import GuardBundle
from .._errors import ModelMismatchError
from .._runtime import Precision

__all__ = ["SHA256_PARAMETER", "Tensor", "check_model_name", "default_model_name", "model_tensors", "served_file"]

SHA256_PARAMETER = "guard_model_sha256"
"""The model config parameter holding the sha256 of the ONNX file a Triton model serves (written by
``write_model_repository``); a PyTriton model carries the sha256's first 16 digits in its name instead."""

_TRITON_TYPES = {
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(float)": "FP32",
    "tensor(float16)": "FP16",
}
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


@dataclass(frozen=True, slots=True)
class Tensor:
    """A model input or output as Triton describes it: ``dims`` without the batch dimension, ``-1`` where any size
    goes."""

    name: str
    datatype: str
    dims: tuple[int, ...]


def served_file(bundle: GuardBundle, precision: Precision | None = None) -> tuple[str, str]:
    """The name of the bundle's model file for ``precision`` (default: the manifest's) and its sha256 from
    guard.json."""
    model = bundle.model_file(precision)
    return model, bundle.manifest.files[model]


def default_model_name(bundle: GuardBundle, sha256: str) -> str:
    """The name a bundle's model is served under unless told otherwise: the bundle's name and the first 16 digits
    of the model file's sha256, so that a client finds exactly the model its bundle holds."""
    return f"{bundle.manifest.name}-{sha256[:16]}"


def check_model_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"a Triton model name is 1-128 letters, digits, '_', '.' or '-'; got {name!r}")
    return name


def model_tensors(bundle: GuardBundle, session: Any) -> tuple[list[Tensor], list[Tensor]]:
    """The inputs and outputs of an ONNX Runtime session on ``bundle``'s model, for a batched Triton model (the
    first dimension is the batch)."""

    def tensors(args: Any) -> list[Tensor]:
        found = []
        for arg in args:
            if arg.type not in _TRITON_TYPES:
                raise ModelMismatchError(
                    bundle.path, f"model tensor {arg.name!r} has type {arg.type}, not one of {sorted(_TRITON_TYPES)}"
                )
            dims = tuple(d if isinstance(d, int) and d > 0 else -1 for d in arg.shape[1:])
            found.append(Tensor(arg.name, _TRITON_TYPES[arg.type], dims))
        return found

    return tensors(session.get_inputs()), tensors(session.get_outputs())
