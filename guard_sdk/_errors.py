"""The exception tree of guard_sdk.

    GuardError
    ├── RuntimeNotInstalledError      no ONNX Runtime build is installed
    ├── ExtraNotInstalledError        a feature's optional dependency is missing (also an ImportError)
    ├── ProviderUnavailableError      the requested execution provider (e.g. CUDA) is not usable
    ├── BundleError                   a bundle cannot be used
    │   ├── BundleNotFoundError       the folder or one of its files is missing
    │   ├── ManifestError             guard.json is unreadable, invalid or of an unknown schema version
    │   ├── BundleIntegrityError      a file differs from its sha256, guard.json from its pin, a file is a link
    │   │                             or is not listed in guard.json
    │   └── ModelMismatchError        the ONNX model does not fit the manifest (labels, inputs, max_length)
    ├── InputError                    a text we refuse to check
    │   ├── InputTypeError            not a str, or a message of no known shape (also a TypeError)
    │   ├── InputEncodingError        a str that is not valid Unicode: a lone surrogate (also a ValueError)
    │   └── TextTooLongError          over the guard's max_chars or max_tokens (also a ValueError)
    ├── UnsupportedClientError        guard.wrap() got a client it cannot guard (also a TypeError)
    ├── BackendError                  the server that runs the models (Guard(backend=...)) failed: unreachable,
    │   │                             timed out, model not ready, or an error in the run
    ├── GuardTimeoutError             a check did not finish in time (also a TimeoutError)
    └── GuardViolation                a guarded call was blocked; ``results`` says why

Catching ``GuardError`` catches everything this package raises on purpose.

Warnings (``warnings.warn``, never raised):

    IneffectiveOptionWarning          a Guard option or bundle setting that does nothing in this combination (also a
                                      UserWarning)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from ._enforce import SourcedResult
    from ._result import Stage

__all__ = [
    "BackendError",
    "BundleError",
    "BundleIntegrityError",
    "BundleNotFoundError",
    "ExtraNotInstalledError",
    "GuardError",
    "GuardTimeoutError",
    "GuardViolation",
    "IneffectiveOptionWarning",
    "InputEncodingError",
    "InputError",
    "InputTypeError",
    "ManifestError",
    "ModelMismatchError",
    "ProviderUnavailableError",
    "RuntimeNotInstalledError",
    "TextTooLongError",
    "UnsupportedClientError",
]


class GuardError(Exception):
    """Root of every error guard_sdk raises on purpose."""


class RuntimeNotInstalledError(GuardError, ImportError):
    def __init__(self) -> None:
        super().__init__(
            "No ONNX Runtime is installed. Install exactly one of: "
            "'pip install guard-sdk[cpu]' (onnxruntime) or 'pip install guard-sdk[gpu]' (onnxruntime-gpu)."
        )


class ExtraNotInstalledError(GuardError, ImportError):
    """``feature`` needs ``package``, which the ``guard-sdk[extra]`` extra installs."""

    def __init__(self, feature: str, package: str, extra: str) -> None:
        self.extra = extra
        super().__init__(
            f"{feature} needs {package}, which is not installed: pip install 'guard-sdk[{extra}]'", name=package
        )


class ProviderUnavailableError(GuardError):
    """The caller asked for a device whose execution provider this ONNX Runtime build cannot use."""


class BundleError(GuardError):
    """A guard bundle cannot be loaded. ``path`` is the bundle folder."""

    def __init__(self, path: str | Path, message: str) -> None:
        from pathlib import Path  # here, not at the top: `import guard_sdk` loads this module and stays cheap

        self.path = Path(path)
        self.message = message
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


class InputEncodingError(InputError, ValueError):
    """A str holding a lone surrogate (U+D800-U+DFFF), as ``surrogateescape`` decoding leaves: not valid Unicode,
    so neither the tokenizer nor a UTF-8 request body can carry it."""

    def __init__(self, index: int, char: str) -> None:
        self.index = index
        super().__init__(
            f"text is not valid Unicode: a lone surrogate U+{ord(char):04X} at index {index:,}; decode the input "
            "with errors='replace' (or fix its source) before checking it"
        )


class TextTooLongError(InputError, ValueError):
    """A text (or its context, ``what``) over the guard's ``max_chars`` (``unit`` ``"characters"``, or
    ``"normalized characters"`` when NFKC made it longer) or over its ``max_tokens`` work budget (``"tokens"``, which
    a text's context counts against too); ``length`` and ``limit`` are in that unit."""

    def __init__(
        self,
        length: int,
        limit: int,
        unit: Literal["characters", "normalized characters", "tokens"] = "characters",
        *,
        what: str = "text",
    ) -> None:
        self.length = length
        self.limit = limit
        self.unit = unit
        option = "max_tokens" if unit == "tokens" else "max_chars"
        super().__init__(
            f"{what} has {length:,} {unit}, more than this guard's limit of {limit:,}; "
            f"split it, or raise the limit with Guard(..., {option}=N)"
        )


class UnsupportedClientError(GuardError, TypeError):
    """``guard.wrap(client)`` got an object it does not know how to guard."""


class BackendError(GuardError):
    """The server that runs a Guard's models (``Guard(backend=...)``) failed: it is unreachable, did not answer in
    time, does not serve the model, or the run failed there. A check that raises it is a failed check: the
    middleware blocks (fail-closed) unless ``fail_open``."""


class GuardTimeoutError(GuardError, TimeoutError):
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(f"guard check did not finish within {timeout:g} s")


class GuardViolation(GuardError):
    """A guarded call was blocked: a text was flagged, or (fail-closed) a check failed.

    ``results`` holds every result of the blocking check, allowed ones included; ``violations`` the blocking ones.
    When a check failed, the error that caused it is also chained as ``__cause__``.
    """

    def __init__(self, stage: Stage, results: Sequence[SourcedResult]) -> None:
        self.stage: Stage = stage
        self.results: list[SourcedResult] = list(results)
        reasons = []
        for result in self.violations:
            if result.status == "error":
                reasons.append(f"{result.source}: check failed ({result.error})")
            else:
                labels = ", ".join(f"{s.label} {s.score:.2f} >= {s.threshold:.2f}" for s in result.violations)
                reasons.append(f"{result.source}: {labels}")
        super().__init__(f"{stage} blocked by guard: " + "; ".join(reasons))

    @property
    def violations(self) -> list[SourcedResult]:
        return [result for result in self.results if result.flagged]


class IneffectiveOptionWarning(UserWarning):
    """A ``Guard`` option that does nothing in the combination given, e.g. ``spin=True`` where every ONNX Runtime
    session runs on one thread, or a bundle's request gate whose guard is not loaded beside it. The Guard works; the
    option costs or promises something it does not deliver."""
