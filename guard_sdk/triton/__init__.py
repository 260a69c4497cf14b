"""Guard models on NVIDIA Triton Inference Server; tokenisation stays with the client.

    from guard_sdk import Guard
    from guard_sdk.triton import TritonBackend
    guard = Guard("bundles/demo", backend=TritonBackend("http://triton:8000"))   # needs guard-sdk[triton]

Server side, either
- ``python -m guard_sdk.triton serve --bundle DIR``: the bundle's model as a PyTriton model (Triton's HTTP/gRPC
  front end, dynamic batching and metrics around guard_sdk's ONNX Runtime session), in an environment with
  ``nvidia-pytriton``; or
- ``guard triton-repo --bundle DIR --out REPO`` (``write_model_repository``): a model repository for Triton's ONNX
  Runtime backend, for a full Triton deployment (``tritonserver --model-repository=REPO``).

Both serve the model under the name ``TritonBackend`` looks for, and say which model file it is (its sha256).
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._client import TritonBackend
    from ._repository import write_model_repository

__all__ = ["TritonBackend", "write_model_repository"]

_LAZY = {"TritonBackend": "._client", "write_model_repository": "._repository"}

if not TYPE_CHECKING:  # loaded on first use, as guard_sdk's own names: numpy and pydantic come with them

    def __getattr__(name: str) -> object:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, __name__), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
