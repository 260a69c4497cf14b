"""A Triton model repository for a bundle's ONNX model, served by Triton's ONNX Runtime backend."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .._bundle import GuardBundle
from .._runtime import Precision, bundle_session
from ._model import SHA256_PARAMETER, Tensor, check_model_name, default_model_name, model_tensors, served_file

__all__ = ["write_model_repository"]


def write_model_repository(
    bundle: str | os.PathLike[str] | GuardBundle,
    repository: str | os.PathLike[str],
    *,
    model_name: str | None = None,
    precision: Precision | None = None,
    max_batch_size: int = 64,
    dynamic_batching: bool = True,
    preferred_batch_size: int | None = None,
    max_queue_delay_us: int = 500,
    instances: int = 1,
    gpu: bool = False,
) -> Path:
    """Write ``repository/<model_name>/config.pbtxt`` and ``1/model.onnx`` for the bundle's model (the manifest's
    precision, or ``precision``) and return that model folder.

    ``model_name`` defaults to the name ``TritonBackend`` looks for (``<bundle name>-<16 digits of the model's
    sha256>``); the config also carries the whole sha256 as the parameter ``guard_model_sha256``, which the client
    checks. Rows of a batch are windows: ``max_batch_size`` should be at least the client's
    ``ExecutionOptions.windows_per_call`` (the client splits larger calls). Dynamic batching merges concurrent
    requests into one run (waiting up to ``max_queue_delay_us`` for ``preferred_batch_size`` rows); on an int8
    model that moves a text's scores with the other requests' (dynamic quantization picks its scales per run), so
    a deployment that must score int8 exactly as in-process turns it off (``dynamic_batching=False``: each request,
    one text's windows, runs alone) or serves the fp32 model.
    """
    if not isinstance(bundle, GuardBundle):
        bundle = GuardBundle.load(Path(bundle))
    for name, value, low, high in (
        ("max_batch_size", max_batch_size, 1, 4096),
        ("instances", instances, 1, 256),
        ("max_queue_delay_us", max_queue_delay_us, 0, 10_000_000),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{name} must be an int from {low:,} to {high:,}, got {value!r}")
    preferred = max_batch_size if preferred_batch_size is None else preferred_batch_size
    if isinstance(preferred, bool) or not isinstance(preferred, int) or not 1 <= preferred <= max_batch_size:
        raise ValueError(f"preferred_batch_size must be an int from 1 to max_batch_size, got {preferred!r}")
    model, sha256 = served_file(bundle, precision)
    name = check_model_name(model_name or default_model_name(bundle, sha256))
    inputs, outputs = model_tensors(bundle, bundle_session(bundle, model, device="cpu", threads=1))
    target = Path(repository) / name
    if target.exists():
        raise FileExistsError(f"{target} exists already; remove it to write the model again")
    config = _config(
        name,
        inputs,
        outputs,
        max_batch_size=max_batch_size,
        batching=dynamic_batching,
        preferred=preferred,
        delay_us=max_queue_delay_us,
        instances=instances,
        kind="KIND_GPU" if gpu else "KIND_CPU",
        parameters={SHA256_PARAMETER: sha256, "guard_bundle": bundle.manifest.id},
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed: Triton polling the repository never sees half a model.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        (staging / "1").mkdir()
        # The bytes checked against the manifest as they were read, not a copy of whatever the file holds by now.
        (staging / "1" / "model.onnx").write_bytes(bundle.read(model))
        (staging / "config.pbtxt").write_text(config, encoding="utf-8")
        staging.chmod(0o755)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _config(
    name: str,
    inputs: list[Tensor],
    outputs: list[Tensor],
    *,
    max_batch_size: int,
    batching: bool,
    preferred: int,
    delay_us: int,
    instances: int,
    kind: str,
    parameters: dict[str, str],
) -> str:
    """config.pbtxt (protobuf text format of Triton's ModelConfig)."""

    def tensors(field: str, items: list[Tensor]) -> list[str]:
        lines = [f"{field} ["]
        for i, tensor in enumerate(items):
            dims = ", ".join(str(d) for d in tensor.dims)
            comma = "," if i < len(items) - 1 else ""
            lines += [
                "  {",
                f"    name: {_quote(tensor.name)}",
                f"    data_type: TYPE_{tensor.datatype}",
                f"    dims: [ {dims} ]",
                "  }" + comma,
            ]
        return [*lines, "]"]

    lines = [
        f"name: {_quote(name)}",
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch_size}",
        *tensors("input", inputs),
        *tensors("output", outputs),
    ]
    if batching:
        lines += [
            "dynamic_batching {",
            f"  preferred_batch_size: [ {preferred} ]",
            f"  max_queue_delay_microseconds: {delay_us}",
            "}",
        ]
    lines += [
        "instance_group [",
        "  {",
        f"    count: {instances}",
        f"    kind: {kind}",
        "  }",
        "]",
    ]
    for key, value in parameters.items():
        lines += ["parameters {", f"  key: {_quote(key)}", f"  value: {{ string_value: {_quote(value)} }}", "}"]
    return "\n".join(lines) + "\n"


def _quote(value: str) -> str:
    """A protobuf text-format string."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise ValueError(f"{value!r} holds control characters; it cannot be a name in config.pbtxt")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
