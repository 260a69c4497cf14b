"""Errors the builder raises on purpose; all derive from BuilderError."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "BuilderError",
    "CacheWriteError",
    "DatasetError",
    "LLMAuthenticationError",
    "LLMConnectionError",
    "LLMError",
    "LLMOutputError",
    "LLMServerError",
    "ParityError",
    "PolicyError",
]


class BuilderError(Exception):
    """Root of the builder's errors."""


class DatasetError(BuilderError):
    """A data file (training rows, JSONL texts) is unusable; ``line`` is 1-based when the problem is on one line."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")


class ParityError(BuilderError):
    """The exported ONNX model disagrees with the torch model beyond the tolerance; no bundle was written."""


class LLMError(BuilderError):
    """The LLM endpoint failed, or kept returning unusable output."""


class LLMServerError(LLMError):
    """The embedded llama.cpp server could not be started."""


class LLMConnectionError(LLMError):
    """The LLM endpoint could not be reached (refused, DNS, timeout) after the client's retries."""


class LLMAuthenticationError(LLMError):
    """The LLM endpoint refused the API key (HTTP 401/403)."""


class LLMOutputError(LLMError):
    """The model kept replying with text that is not the requested JSON, even after the repair turns."""


class CacheWriteError(BuilderError):
    """A cache or checkpoint file could not be written (disk full, read-only folder); nothing partial was left."""


class PolicyError(BuilderError):
    """A policy file is unusable; ``line`` is 1-based when the problem is at one place in the YAML."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")
