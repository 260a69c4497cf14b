"""The exception tree of guard_sdk.

    GuardError
    ├── RuntimeNotInstalledError      no ONNX Runtime build is installed
    ├── ProviderUnavailableError      the requested execution provider (e.g. CUDA) is not usable
    ├── BundleError                   a bundle cannot be used
    │   ├── BundleNotFoundError       the folder or one of its files is missing
    │   ├── ManifestError             guard.json is unreadable, invalid or of an unknown schema version
    │   ├── BundleIntegrityError      a file's sha256 differs from the manifest
    │   └── ModelMismatchError        the ONNX model does not fit the manifest (labels, inputs)
    └── InputError                    a text we refuse to check
        ├── InputTypeError            not a str (also a TypeError)
        └── TextTooLongError          longer than the guard's max_chars (also a ValueError)

Catching ``GuardError`` catches everything this package raises on purpose.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "BundleError",
    "BundleIntegrityError",
    "BundleNotFoundError",
    "GuardError",
    "InputError",
    "InputTypeError",
    "ManifestError",
    "ModelMismatchError",
    "ProviderUnavailableError",
    "RuntimeNotInstalledError",
    "TextTooLongError",
]


class GuardError(Exception):
    """Root of every error guard_sdk raises on purpose."""


class RuntimeNotInstalledError(GuardError, ImportError):
    def __init__(self) -> None:
        super().__init__(
            "No ONNX Runtime is installed. Install exactly one of: "
            "'pip install guard-sdk[cpu]' (onnxruntime) or 'pip install guard-sdk[gpu]' (onnxruntime-gpu)."
        )


class ProviderUnavailableError(GuardError):
    """The caller asked for a device whose execution provider this ONNX Runtime build cannot use."""


class BundleError(GuardError):
    """A guard bundle cannot be loaded. ``path`` is the bundle folder."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = Path(path)
        super().__init__(f"guard bundle {self.path}: {message}")


class BundleNotFoundError(BundleError):
    pass


class ManifestError(BundleError):
    pass


class BundleIntegrityError(BundleError):
    pass


class ModelMismatchError(BundleError):
    pass


class InputError(GuardError):
    """A text we refuse to check."""


class InputTypeError(InputError, TypeError):
    pass


class TextTooLongError(InputError, ValueError):
    def __init__(self, length: int, limit: int) -> None:
        self.length = length
        self.limit = limit
        super().__init__(
            f"text has {length:,} characters, more than this guard's limit of {limit:,}; "
            "split it, or raise the limit with Guard(..., max_chars=N)"
        )
