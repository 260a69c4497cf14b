"""The server side: bundles' ONNX models served as PyTriton models (Triton's HTTP/gRPC front end, dynamic batching
and metrics around guard_sdk's own ONNX Runtime session). Needs ``nvidia-pytriton``, which pins numpy<2: it runs in
an environment of its own (``scripts/setup.sh`` makes ``.venv-triton``)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import sysconfig
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import numpy as np

from .._bundle import GuardBundle
from .._errors import ExtraNotInstalledError
from .._runtime import Precision, bundle_session, resolve_device
from ._model import default_model_name, model_tensors, served_file

__all__ = ["ServeOptions", "serve"]

logger = logging.getLogger("guard_sdk")


@dataclass(frozen=True, slots=True)
class ServeOptions:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    precisions: tuple[Precision | Literal["all"] | None, ...] = (None,)
    """Each bundle's model in each of these precisions, under a name of its own: ``None`` the manifest's, ``"all"``
    every model file the bundle ships (int8 and its fp32 copy)."""
    device: str = "auto"
    threads: int | None = None
    """ONNX Runtime threads per model; default: the machine's cores."""
    instances: int = 1
    """Model instances: requests run on that many threads at once."""
    max_batch_size: int = 64
    max_queue_delay_us: int = 500
    share_int8_calls: bool = False
    """Run the requests Triton batched together in one ONNX Runtime call on int8 models too. Off, each request of
    an int8 model runs alone: dynamic quantization picks its scales per call, so a text's scores would move with
    the other requests' (fp32 requests of one width always share a call; padding is masked)."""


class _Model:
    """The infer function of one instance: Triton hands it the requests it batched."""

    def __init__(self, session: Any, inputs: list[str], outputs: list[str], max_length: int, share: bool) -> None:
        self._session = session
        self._inputs = inputs
        self._outputs = outputs
        self._max_length = max_length
        self._share = share

    def __call__(self, requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        feeds = []
        for request in requests:
            feed = {name: np.asarray(request[name], dtype=np.int64) for name in self._inputs}
            shape = feed[self._inputs[0]].shape
            if len(shape) != 2 or any(array.shape != shape for array in feed.values()):
                raise ValueError(f"inputs {self._inputs} must share one shape [windows, tokens]")
            if not 0 < shape[1] <= self._max_length:
                raise ValueError(
                    f"windows have 1 to {self._max_length} tokens (the bundle's max_length); got {shape[1]}"
                )
            feeds.append(feed)
        if not self._share:
            return [dict(zip(self._outputs, self._session.run(self._outputs, feed))) for feed in feeds]
        # Triton batches only requests of one shape together (no ragged batching), so they concatenate as they are.
        answers: list[dict[str, np.ndarray]] = [{} for _ in feeds]
        by_width: dict[int, list[int]] = {}
        for i, feed in enumerate(feeds):
            by_width.setdefault(feed[self._inputs[0]].shape[1], []).append(i)
        for members in by_width.values():
            joined = {name: np.concatenate([feeds[i][name] for i in members]) for name in self._inputs}
            results = self._session.run(self._outputs, joined)
            start = 0
            for i in members:
                rows = len(feeds[i][self._inputs[0]])
                answers[i] = {name: result[start : start + rows] for name, result in zip(self._outputs, results)}
                start += rows
        return answers


def serve(
    bundles: Sequence[str | os.PathLike[str]],
    options: ServeOptions = ServeOptions(),
    *,
    on_ready: Callable[[list[str]], None] | None = None,
) -> None:
    """Serve each bundle's model under its default name (see ``TritonBackend``) until SIGINT or SIGTERM;
    ``on_ready`` gets the model names once all are loaded."""
    try:
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig
    except ImportError as exc:
        raise ExtraNotInstalledError("python -m guard_sdk.triton serve", "nvidia-pytriton", "triton-server") from exc
    _own_libpython_first()
    device = resolve_device(options.device)  # type: ignore[arg-type]  # checked by resolve_device
    config = TritonConfig(
        http_address=options.host,
        http_port=options.http_port,
        grpc_address=options.host,
        grpc_port=options.grpc_port,
        metrics_address=options.host,
        metrics_port=options.metrics_port,
        exit_timeout_secs=5,
    )
    names = []
    with Triton(config=config) as triton:
        for folder in bundles:
            bundle = GuardBundle.load(Path(folder))
            for precision in _precisions(bundle, options.precisions):
                model, sha256 = served_file(bundle, precision)
                session = bundle_session(bundle, model, device=device, threads=options.threads or os.cpu_count() or 1)
                inputs, outputs = model_tensors(bundle, session)
                int8 = precision == "int8"
                share = options.share_int8_calls or not int8
                input_names, output_names = [t.name for t in inputs], [t.name for t in outputs]
                length = bundle.manifest.tokenizer.max_length
                name = default_model_name(bundle, sha256)
                triton.bind(
                    model_name=name,
                    infer_func=[
                        _Model(session, input_names, output_names, length, share) for _ in range(options.instances)
                    ],
                    inputs=[Tensor(name=t.name, dtype=np.int64, shape=t.dims) for t in inputs],
                    outputs=[Tensor(name=t.name, dtype=np.float32, shape=t.dims) for t in outputs],
                    config=ModelConfig(
                        max_batch_size=options.max_batch_size,
                        batcher=DynamicBatcher(
                            max_queue_delay_microseconds=options.max_queue_delay_us,
                            preferred_batch_size=[options.max_batch_size],
                        ),
                    ),
                    strict=True,
                )
                names.append(name)
                logger.info("serving %s (%s, %s) as %s", bundle.manifest.id, model, sha256[:16], name)
        if on_ready is not None:
            on_ready(names)
        previous = signal.signal(signal.SIGTERM, _interrupt)  # stop Triton and its workers, not just this process
        try:
            triton.serve()
        finally:
            signal.signal(signal.SIGTERM, previous)


def _precisions(bundle: GuardBundle, wanted: Sequence[Precision | Literal["all"] | None]) -> list[Precision]:
    model = bundle.manifest.model
    shipped: list[Precision] = [model.precision] + (["fp32"] if model.fp32_file and model.precision != "fp32" else [])
    found: list[Precision] = []
    for precision in wanted:
        found += shipped if precision == "all" else [precision or model.precision]
    return list(dict.fromkeys(found))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _own_libpython_first() -> None:
    """Triton's Python-backend stub embeds libpython of this Python's minor version, found by the dynamic loader:
    a system copy of an older patch release (Debian's 3.11.2 under a 3.11.7 interpreter) breaks this interpreter's
    standard library in the stub (``'_thread.RLock' object has no attribute '_recursion_count'``). Put this
    interpreter's own library first."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and (Path(libdir) / f"libpython{sys.version_info.major}.{sys.version_info.minor}.so.1.0").exists():
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, os.environ.get("LD_LIBRARY_PATH")]))
