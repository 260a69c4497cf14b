"""Files the builder writes: whole or not at all, so a killed run never leaves a half-written one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import CacheWriteError

__all__ = ["write_atomic"]

_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomic(path: Path, text: str, *, what: str = "") -> None:
    """Write through a temporary file in the same folder and rename: readers see all of it or nothing."""
    temporary: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes it private; outputs are ordinary files
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        raise CacheWriteError(f"cannot write {what + ' ' if what else ''}{path}: {exc.strerror or exc}") from exc
