"""ONNX Runtime sessions: provider choice, thread settings, one shared session per model and settings; and
``ExecutionOptions``, how a Guard runs its models."""

from __future__ import annotations

import hashlib
import logging
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ._errors import ProviderUnavailableError, RuntimeNotInstalledError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    import numpy as np
    import onnxruntime

    from ._bundle import GuardBundle

__all__ = [
    "Device",
    "ExecutionOptions",
    "ModelBackend",
    "ModelSession",
    "Precision",
    "bundle_session",
    "create_session",
    "run_full_window",
]

logger = logging.getLogger("guard_sdk")

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["int8", "fp32"]


@dataclass(frozen=True, slots=True)
class ExecutionOptions:
    """How a Guard runs its models (``Guard(execution=...)``): speed and batch behaviour; which bundles run, and on
    which device and how many threads, are ``Guard``'s own arguments. Measurements: benchmarks/README.md."""

    spin: bool = False
    """Let ONNX Runtime's intra-op threads spin between the steps of a check instead of sleeping (they stop when it
    returns). Faster on a host the guard has to itself; beside other busy threads the spinning ones compete with them
    and the tail grows. Nothing to spin where a session has one thread (``threads=1``, or threads split between
    models run side by side): ``IneffectiveOptionWarning``."""
    precision: Precision | None = None
    """``"int8"`` or ``"fp32"``; default: what each bundle's manifest names (an fp32 copy must ship in the bundle)."""
    windows_per_call: int = 32
    """Most windows in one ONNX Runtime call. Windows of similar length share a call; fewer per call waste less on
    padding when texts of different lengths are checked together."""
    batch_invariant: bool = True
    """Give every text of a ``check_batch`` (or of a micro-batch) exactly the result ``check`` gives it. Dynamic int8
    picks its activation scales per call, so in shared calls a text's scores move with the other texts (enough to flip
    decisions near a threshold): an int8 model then runs one text per call. ``False`` shares calls across texts for
    throughput and accepts that drift. fp32 masks padding and is invariant either way."""
    models_side_by_side: bool = True
    """On CPU, run guards on different models at the same time, each model's session getting ``threads`` divided by
    their number (at least 1), instead of one after the other with all ``threads`` each: small inputs use two threads
    poorly and two models side by side well. Guards on one shared encoder run it once either way."""

    def __post_init__(self) -> None:
        for name in ("spin", "batch_invariant", "models_side_by_side"):
            if not isinstance(getattr(self, name), bool):  # a truthy string such as "no" would otherwise mean True
                raise TypeError(f"{name} must be True or False, got {type(getattr(self, name)).__name__}")
        if self.precision not in (None, "int8", "fp32"):
            raise ValueError(f"precision must be 'int8', 'fp32' or None, got {self.precision!r}")
        if isinstance(self.windows_per_call, bool) or not isinstance(self.windows_per_call, int):
            raise TypeError(f"windows_per_call must be an int, got {type(self.windows_per_call).__name__}")
        if self.windows_per_call < 1:
            raise ValueError(f"windows_per_call must be at least 1, got {self.windows_per_call}")


class ModelSession(Protocol):
    """What a Guard uses of an ONNX Runtime ``InferenceSession``: a backend's sessions run the model elsewhere."""

    def run(self, output_names: Sequence[str], input_feed: Mapping[str, np.ndarray]) -> list[np.ndarray]: ...
    def get_inputs(self) -> Sequence[Any]: ...  # each with ``name`` and ``shape``, as ONNX Runtime's NodeArg
    def get_outputs(self) -> Sequence[Any]: ...
    def get_providers(self) -> list[str]: ...


class ModelBackend(Protocol):
    """Where a Guard's models run instead of in-process (``Guard(backend=...)``), e.g. ``guard_sdk.triton``'s
    ``TritonBackend``. The Guard still reads each bundle here (manifest, tokenizer, heads) and tokenizes here."""

    def open(self, bundle: GuardBundle, model: Path, sha256: str) -> ModelSession:
        """A session on ``bundle``'s model file ``model`` (with that ``sha256``) as the backend serves it. Raises
        ``ModelMismatchError`` when what it serves is not that model, or cannot read a window of the bundle's
        ``max_length``; ``BackendError`` when the backend fails."""
        ...


_PROVIDERS: dict[str, list[str]] = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}

# ONNX Runtime's CPU SkipLayerNormalization kernel is slower than the Add + LayerNormalization it replaces (165 vs
# 35 us on one 64x384 window with onnxruntime 1.32). Bundles are exported without it; this keeps the session from
# fusing the pair again at load (benchmarks/README.md, "Levers"). On CUDA the fused kernel is the fast one.
_UNFUSED: dict[str, list[str]] = {"cpu": ["SkipLayerNormFusion"], "cuda": []}

# Weak values: a session lives as long as some Guard uses it, and is shared while it does. Keyed by the sha256 of
# the model bytes it was made from, so bundles in different folders share it and a changed file never reuses it.
_sessions: weakref.WeakValueDictionary[tuple[str, str, int, int, bool], onnxruntime.InferenceSession] = (
    weakref.WeakValueDictionary()
)
_lock = threading.Lock()
# (model sha256, window length) that ran once in this process: the next Guard on them skips the run.
_full_windows: set[tuple[str, int]] = set()


def import_onnxruntime() -> Any:  # the module; it ships no type information
    # Imported on first use: it costs hundreds of milliseconds and `import guard_sdk` must stay cheap.
    try:
        import onnxruntime
    except ImportError as exc:
        raise RuntimeNotInstalledError() from exc
    return onnxruntime


def resolve_device(device: Device) -> str:
    ort = import_onnxruntime()
    available = ort.get_available_providers()
    if device == "auto":
        return "cuda" if "CUDAExecutionProvider" in available else "cpu"
    if device not in _PROVIDERS:
        raise ProviderUnavailableError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'")
    if _PROVIDERS[device][0] not in available:
        raise ProviderUnavailableError(
            f"device {device!r} needs {_PROVIDERS[device][0]}, which this ONNX Runtime build lacks "
            f"(it has {available}); install guard-sdk[gpu] on a machine with CUDA, or use device='cpu'"
        )
    return device


def create_session(
    model: Path, *, device: str, threads: int, inter_op_threads: int = 1, spin: bool = False
) -> onnxruntime.InferenceSession:
    """One InferenceSession per (model bytes, device, threads, spin), shared by every Guard: ``run`` is thread-safe.
    The file is read once, and the session made from the bytes read."""
    data = model.read_bytes()
    return _shared_session(
        hashlib.sha256(data).hexdigest(), lambda: data, model.name, device, threads, inter_op_threads, spin
    )


def bundle_session(
    bundle: GuardBundle, name: str, *, device: str, threads: int, spin: bool = False
) -> onnxruntime.InferenceSession:
    """``create_session`` on the bundle's model file ``name``: the session of its sha256 in the manifest if one
    exists, else one made from the file's bytes once they match it (``GuardBundle.read``)."""
    return _shared_session(bundle.manifest.files[name], lambda: bundle.read(name), name, device, threads, 1, spin)


def _shared_session(
    sha256: str, read: Callable[[], bytes], name: str, device: str, threads: int, inter_op_threads: int, spin: bool
) -> onnxruntime.InferenceSession:
    key = (sha256, device, threads, inter_op_threads, spin)
    with _lock:
        session = _sessions.get(key)
        if session is not None:
            return session
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle pool threads that spin steal the cores from the app, other sessions (one per bundle) and other
        # processes, so by default they sleep; `spin` lets them spin between a run's steps only
        # (force_spinning_stop), for a host the guard has to itself: it saves a thread wake-up per step, but the
        # tail grows beside another busy engine (benchmarks/README.md, "Levers" and "spinning threads").
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if spin:
            options.add_session_config_entry("session.force_spinning_stop", "1")
        # The bytes live only until the session holds its own copy of the model.
        session = ort.InferenceSession(
            read(), sess_options=options, providers=_PROVIDERS[device], disabled_optimizers=_UNFUSED[device]
        )
        active = session.get_providers()
        if active[0] != _PROVIDERS[device][0]:
            # onnxruntime-gpu falls back to CPU silently when CUDA cannot start; say it loudly instead.
            raise ProviderUnavailableError(
                f"{_PROVIDERS[device][0]} failed to start for {name} (active providers: {active}); "
                "check the CUDA and cuDNN libraries, or use device='cpu'"
            )
        logger.debug("loaded %s on %s with %d threads%s", name, active[0], threads, " (spinning)" if spin else "")
        _sessions[key] = session
        return session


def run_full_window(
    bundle: GuardBundle, name: str, session: onnxruntime.InferenceSession, device: str, length: int
) -> None:
    """Run one window of ``length`` tokens through the bundle's model ``name``, once per process and model: a window
    longer than the model's position table fails here, at load, not in the first long text. Raises what ONNX
    Runtime raises.

    On CUDA it runs on a CPU session of the same model: where a model looks its positions up, the CUDA Gather kernel
    gives zeros for rows past the table instead of failing.
    """
    key = (bundle.manifest.files[name], length)
    if key in _full_windows:
        return
    import numpy as np  # loaded already by whoever loads a model

    if device != "cpu":
        session = bundle_session(bundle, name, device="cpu", threads=1)
    ids = np.zeros((1, length), dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": ids}
    quiet = import_onnxruntime().RunOptions()
    quiet.log_severity_level = 4  # a failure is raised to the caller, not also logged to stderr
    session.run([session.get_outputs()[0].name], {i.name: feeds[i.name] for i in session.get_inputs()}, quiet)
    with _lock:
        _full_windows.add(key)
