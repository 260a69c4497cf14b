"""Errors the builder raises on purpose; all derive from BuilderError."""

from __future__ import annotations

from pathlib import Path

__all__ = ["BuilderError", "DatasetError", "ParityError"]


class BuilderError(Exception):
    """Root of the builder's errors."""


class DatasetError(BuilderError):
    """A training file is unusable; ``line`` is 1-based when the problem is on one line."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")


class ParityError(BuilderError):
    """The exported ONNX model disagrees with the torch model beyond the tolerance; no bundle was written."""
