"""``TritonBackend``: a Guard's model runs on a Triton Inference Server, through ``tritonclient``."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._bundle import GuardBundle
from .._errors import BackendError, ExtraNotInstalledError, ModelMismatchError
from ._model import SHA256_PARAMETER, check_model_name, default_model_name

__all__ = ["TritonBackend"]

_SCHEMES = {"http": ("http", False), "https": ("http", True), "grpc": ("grpc", False), "grpcs": ("grpc", True)}
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True, slots=True)
class _Arg:
    """A model input or output, as ONNX Runtime's NodeArg shows it: ``None`` for a dimension of any size."""

    name: str
    shape: list[int | None]
    type: str


class TritonBackend:
    """Runs a Guard's models on a Triton Inference Server: ``Guard(bundles, backend=TritonBackend(url))``.

    The Guard reads and verifies each bundle here, tokenizes here and applies embedding heads here; the server
    runs the ONNX model on the windows' token ids. The server must serve each bundle's model file itself: its
    model config's ``guard_model_sha256`` parameter (``write_model_repository`` writes it), or else its name
    (``<bundle name>-<16 digits>``, as ``python -m guard_sdk.triton serve`` names it), must match the file's sha256
    in guard.json, or the Guard refuses it with ``ModelMismatchError``.

    Args:
        url: the server: ``http://host:8000`` (``host:8000`` alone means http), ``https://...``, ``grpc://host:8001``
            or ``grpcs://...``. gRPC needs ``tritonclient[grpc]``.
        model_name: the Triton model to use for a Guard of one bundle, or bundle name -> model name; default:
            ``<bundle name>-<first 16 digits of the model file's sha256>``.
        timeout: seconds for connecting and for each request; a server that does not answer in time raises
            ``BackendError``.
        verify_model: refuse a model whose config and name do not carry its sha256 (a repository written by hand).
            Off, the Guard only checks that its inputs and outputs fit the bundle.

    Calls from many threads each use a client of their own (tritonclient's are not thread-safe). Rows of one
    request are a text's windows: a model's ``max_batch_size`` below ``ExecutionOptions.windows_per_call`` splits
    them over several requests (which, for an int8 model, can move scores slightly).
    """

    def __init__(
        self,
        url: str,
        *,
        model_name: str | Mapping[str, str] | None = None,
        timeout: float = 10.0,
        verify_model: bool = True,
    ) -> None:
        scheme, _, address = url.rpartition("://") if "://" in url else ("http", "", url)
        if scheme not in _SCHEMES or not address or any(c in address for c in "?#@ "):
            raise ValueError(
                f"Triton url must look like http://host:port (or https, grpc, grpcs; a path for http), got {url!r}"
            )
        self.url = url
        self.protocol, self._ssl = _SCHEMES[scheme]
        if self.protocol == "grpc" and "/" in address:
            raise ValueError(f"a gRPC url has no path, got {url!r}")
        self._address = address
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
            raise ValueError(f"timeout must be seconds, more than 0 and at most 3600, got {timeout!r}")
        self.timeout = float(timeout)
        if isinstance(model_name, str):
            check_model_name(model_name)
        elif model_name is not None:
            for name in model_name.values():
                check_model_name(name)
        self.model_name = model_name
        self.verify_model = verify_model
        try:
            if self.protocol == "http":
                import tritonclient.http as module
            else:
                import tritonclient.grpc as module
            from tritonclient.utils import InferenceServerException
        except (ImportError, RuntimeError) as exc:  # tritonclient.grpc raises RuntimeError without grpcio
            raise ExtraNotInstalledError("TritonBackend", f"tritonclient[{self.protocol}]", "triton") from exc
        self._module: Any = module
        self._server_error: type[Exception] = InferenceServerException
        # One client per thread (tritonclient's are not thread-safe, and the http one's gevent sockets belong to
        # the thread that made them); a thread's client goes with the thread, closed by its __del__.
        self._local = threading.local()
        self._clients: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._opened: set[str] = set()

    def open(self, bundle: GuardBundle, model: Path, sha256: str) -> _TritonSession:
        """A session on the server's copy of ``model`` (``Guard`` calls it for each bundle)."""
        name = self._name(bundle, sha256)
        where = f"Triton at {self.url}"
        try:
            live = self._call("is_server_live")
        except BackendError as exc:
            raise BackendError(f"{where} is unreachable: {exc.__cause__ or exc}") from exc.__cause__
        if not live:
            raise BackendError(f"{where} is not live")
        if not self._call("is_model_ready", name):
            ready = self._ready_models()
            listed = "" if ready is None else f" (ready there: {ready})"
            raise BackendError(
                f"model {name!r} is not ready on {where}{listed}; serve bundle {bundle.manifest.id} with "
                f"`python -m guard_sdk.triton serve --bundle {bundle.path}` or "
                "`guard triton-repo`, or name the model with TritonBackend(model_name=...)"
            )
        metadata = self._call("get_model_metadata", name, as_json=True)
        config = self._call("get_model_config", name, as_json=True)
        config = config.get("config", config)  # gRPC wraps it
        self._verify(bundle, name, sha256, config)
        batch = int(config.get("max_batch_size", 0))
        if batch < 1:
            raise ModelMismatchError(bundle.path, f"{where} serves {name!r} without batching (max_batch_size 0)")
        inputs = [self._arg(item) for item in metadata.get("inputs", [])]
        outputs = [self._arg(item) for item in metadata.get("outputs", [])]
        wrong = [f"{a.name} ({a.type})" for a in inputs if a.name not in _MODEL_INPUTS or a.type != "INT64"]
        if wrong or not inputs or not outputs:
            raise ModelMismatchError(
                bundle.path,
                f"{name!r} on {where} takes inputs {[f'{a.name} ({a.type})' for a in inputs]} and gives "
                f"{[a.name for a in outputs]}; a guard model takes INT64 {list(_MODEL_INPUTS)} and has outputs",
            )
        session = _TritonSession(self, name, inputs, outputs, batch)
        length = bundle.manifest.tokenizer.max_length
        if name not in self._opened:
            # Fails here, not on the first long text, when the model cannot read a window of max_length.
            ids = np.zeros((1, length), dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": ids}
            try:
                session.run([outputs[0].name], {a.name: feeds[a.name] for a in inputs})
            except BackendError as exc:
                if not isinstance(exc.__cause__, self._server_error):
                    raise
                raise ModelMismatchError(
                    bundle.path,
                    f"{name!r} on {where} cannot read a window of max_length {length} tokens: {exc.__cause__}",
                ) from exc
            with self._lock:
                self._opened.add(name)
        return session

    def _name(self, bundle: GuardBundle, sha256: str) -> str:
        if isinstance(self.model_name, str):
            return self.model_name
        if self.model_name is not None and bundle.manifest.name in self.model_name:
            return self.model_name[bundle.manifest.name]
        return default_model_name(bundle, sha256)

    def _verify(self, bundle: GuardBundle, name: str, sha256: str, config: Mapping[str, Any]) -> None:
        parameter = config.get("parameters", {}).get(SHA256_PARAMETER, {}).get("string_value")
        if parameter is not None:
            if parameter != sha256:
                raise ModelMismatchError(
                    bundle.path,
                    f"Triton at {self.url} serves {name!r} from a model file with sha256 {parameter}, not the "
                    f"bundle's model file (sha256 {sha256})",
                )
            return
        suffix = name.rpartition("-")[2]
        if len(suffix) == 16 and all(c in "0123456789abcdef" for c in suffix):
            if not sha256.startswith(suffix):
                raise ModelMismatchError(
                    bundle.path,
                    f"Triton at {self.url} serves {name!r}, named for a model file whose sha256 starts {suffix}; "
                    f"this bundle's has sha256 {sha256}",
                )
            return
        if self.verify_model:
            raise ModelMismatchError(
                bundle.path,
                f"cannot tell which model file {name!r} on Triton at {self.url} was made from: its config has no "
                f"{SHA256_PARAMETER!r} parameter and its name no sha256; write the repository with "
                "`guard triton-repo`, or pass TritonBackend(verify_model=False)",
            )

    def _arg(self, item: Mapping[str, Any]) -> _Arg:
        shape = [int(d) for d in item.get("shape", [])]  # gRPC's JSON gives int64 as strings
        return _Arg(str(item.get("name")), [d if d >= 0 else None for d in shape], str(item.get("datatype")))

    def _ready_models(self) -> list[str] | None:
        try:
            index = self._call("get_model_repository_index", as_json=True)
        except BackendError:  # e.g. PyTriton restricts the repository API to its own token
            return None
        models = index.get("models", []) if isinstance(index, dict) else index
        return sorted(m["name"] for m in models if m.get("state") == "READY")

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "http":
                client = self._module.InferenceServerClient(
                    self._address, connection_timeout=self.timeout, network_timeout=self.timeout, ssl=self._ssl
                )
            else:
                client = self._module.InferenceServerClient(self._address, ssl=self._ssl)
            self._local.client = client
            with self._lock:
                self._clients.add(client)
        return client

    def _call(self, method: str, *args: Any, as_json: bool = False, **options: Any) -> Any:
        """One tritonclient call; every failure becomes a ``BackendError`` (its cause the original error)."""
        if self.protocol == "grpc":
            options["client_timeout"] = self.timeout
        if as_json and self.protocol == "grpc":
            options["as_json"] = True
        try:
            return getattr(self._client(), method)(*args, **options)
        except Exception as exc:  # the server's errors, and the transport's (refused, reset, timed out, ...)
            raise BackendError(f"Triton at {self.url}: {method} failed: {_reason(exc)}") from exc

    def close(self) -> None:
        """Close the connections of every thread's client."""
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.close()

    def __repr__(self) -> str:
        return f"TritonBackend({self.url!r})"


class _TritonSession:
    """A model served by Triton, used as a Guard uses an ONNX Runtime session."""

    def __init__(self, backend: TritonBackend, name: str, inputs: list[_Arg], outputs: list[_Arg], batch: int):
        self._backend = backend
        self.name = name
        self._inputs = inputs
        self._outputs = outputs
        self._batch = batch

    def get_inputs(self) -> list[_Arg]:
        return list(self._inputs)

    def get_outputs(self) -> list[_Arg]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return [f"Triton {self._backend.url}"]

    def run(self, output_names: Sequence[str], input_feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        rows = len(next(iter(input_feed.values())))
        if rows <= self._batch:
            return self._infer(output_names, input_feed)
        parts = [
            self._infer(output_names, {k: v[start : start + self._batch] for k, v in input_feed.items()})
            for start in range(0, rows, self._batch)
        ]
        return [np.concatenate([part[i] for part in parts]) for i in range(len(output_names))]

    def _infer(self, output_names: Sequence[str], input_feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        module = self._backend._module
        inputs = []
        for name, array in input_feed.items():
            tensor = module.InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(np.ascontiguousarray(array, dtype=np.int64))
            inputs.append(tensor)
        outputs = [module.InferRequestedOutput(name) for name in output_names]
        result = self._backend._call("infer", self.name, inputs, outputs=outputs)
        arrays = [result.as_numpy(name) for name in output_names]
        if any(a is None or len(a) != len(next(iter(input_feed.values()))) for a in arrays):
            raise BackendError(f"Triton at {self._backend.url}: {self.name!r} answered without {list(output_names)}")
        return arrays


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[-300:]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
