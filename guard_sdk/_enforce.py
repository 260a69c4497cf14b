"""Enforcement shared by the OpenAI wrapper and the decorators: run a check, decide, act on a violation, log.

A check here covers several texts at once (every untrusted message of a request, or every choice of a response).
An output check carries the request its texts answer (``context``), for guards that judge an answer in context; in an
input check, each text of a message carries the conversation before it (``Piece.context``), for guards that read
conversations.
Its ``Decision`` records what was checked, what was found and what was done. What is done on a violation is the
``on_fail`` action:

- ``"raise"`` (default): raise ``GuardViolation`` carrying the results;
- ``"refuse"``: the caller gets a well-formed answer of the usual type whose text is ``refusal``;
- ``"monitor"``: allow, log and attach the results;
- a callable ``(GuardViolation) -> str | None``: return a refusal text, return None to allow, or raise.

Fail-closed: a check that fails or times out counts as a violation. ``fail_open=True`` allows the call and logs the
failure when the check failed (an error), never when it timed out: lateness is what load produces, and another
caller's load (or the attacker's own) must not let a text through unchecked. A timed-out check is cancelled (it stops
at its next model call) and blocks. Bad input (a text over ``max_chars`` or ``max_tokens``, a message of no known
shape) always raises.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypedDict

from pydantic import BaseModel, ConfigDict

from ._errors import GuardTimeoutError, GuardViolation, InputError
from ._result import CheckResult, Stage

if TYPE_CHECKING:
    from concurrent.futures import Future

    from ._context import Context
    from ._guard import Guard

__all__ = [
    "Action",
    "Decision",
    "EnforceOptions",
    "Enforcer",
    "InputMode",
    "MediaMode",
    "OnFail",
    "Piece",
    "SourcedResult",
    "WrapOptions",
]

logger = logging.getLogger("guard_sdk")

Action = Literal["allow", "monitor", "refuse", "raise"]
OnFail = Literal["raise", "refuse", "monitor"] | Callable[[GuardViolation], "str | None"]
InputMode = Literal["parallel", "sequential"]
MediaMode = Literal["allow", "refuse"]
DEFAULT_REFUSAL = "Sorry, I can't help with that."


class SourcedResult(CheckResult):
    """A ``CheckResult`` and where its text came from, e.g. ``messages[2].content`` or ``choices[0].message.content``."""

    source: str


class Decision(BaseModel):
    """One enforcement decision: everything one check looked at, what it found and what was done."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    stage: Stage
    action: Action
    results: list[SourcedResult]
    latency_ms: float
    """Wall time of the check as the caller waited for it, queueing included."""
    refusal: str | None = None
    """The text that replaces the blocked one when ``action == "refuse"``."""

    @property
    def blocked(self) -> bool:
        return self.action in ("refuse", "raise")

    @property
    def violations(self) -> list[SourcedResult]:
        return [result for result in self.results if result.flagged]

    @property
    def top(self) -> tuple[str | None, float | None]:
        """The label (policy) and score that weigh most: the highest-scoring flagged label, else the highest one."""
        scores = [s for r in self.violations for s in r.scores if s.flagged] or [
            s for r in self.results for s in r.scores
        ]
        best = max(scores, key=lambda s: s.score, default=None)
        return (best.label, best.score) if best else (None, None)

    def log_fields(self) -> dict[str, object]:
        policy, score = self.top
        return {
            "stage": self.stage,
            "action": self.action,
            "policy": policy,
            "score": None if score is None else round(score, 4),
            "latency_ms": round(self.latency_ms, 2),
            "texts": len(self.results),
            "flagged": [r.source for r in self.violations if r.status != "error"],
            "errors": [f"{r.source}: {r.error}" for r in self.results if r.status == "error"],
            "skipped_non_text": [r.source for r in self.results if r.status == "skipped_non_text"],
        }


@dataclass(frozen=True, slots=True)
class Piece:
    """One text to check and where it came from; ``text=None`` marks a part that is not text (image, audio, file).
    ``context``: what the text follows (the turns before its message), when it is not the check's own context."""

    source: str
    text: str | None
    context: Context | None = None


class EnforceOptions(TypedDict, total=False):
    """What to do on a violation, and how long to wait; shared by ``guard.wrap`` and ``guarded``."""

    on_fail: OnFail
    refusal: str
    fail_open: bool
    timeout: float | None
    stream_chunk_chars: int
    stream_context_chars: int
    on_decision: Callable[[Decision], None] | None


class WrapOptions(EnforceOptions, total=False):
    """Options of ``guard.wrap(client, ...)``."""

    input_mode: InputMode
    check_system: bool
    media: MediaMode


class Enforcer:
    """Runs checks for one guarded client or function and applies its on-fail action.

    Args:
        guard: the Guard that checks.
        on_fail: ``"raise"``, ``"refuse"``, ``"monitor"`` or a callable (see the module docstring).
        refusal: the text of a refusal.
        fail_open: allow (and log) when a check fails with an error, instead of blocking. A check that times out
            blocks regardless (see the module docstring).
        timeout: seconds to wait for a check, queueing included; a late check is cancelled and blocks. None waits
            forever.
        stream_chunk_chars: check a stream each time this many new characters arrived.
        stream_context_chars: characters before the new ones that each stream window repeats, so a violation split
            across chunks is seen whole.
        on_decision: called with every ``Decision``, e.g. to count them in a metrics system.
    """

    def __init__(
        self,
        guard: Guard,
        *,
        on_fail: OnFail = "raise",
        refusal: str = DEFAULT_REFUSAL,
        fail_open: bool = False,
        timeout: float | None = 5.0,
        stream_chunk_chars: int = 200,
        stream_context_chars: int = 200,
        on_decision: Callable[[Decision], None] | None = None,
    ) -> None:
        if not callable(on_fail) and on_fail not in ("raise", "refuse", "monitor"):
            raise ValueError(f"on_fail must be 'raise', 'refuse', 'monitor' or a callable, got {on_fail!r}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive or None, got {timeout}")
        if stream_chunk_chars < 1 or stream_context_chars < 0:
            raise ValueError(
                f"stream_chunk_chars must be >= 1 and stream_context_chars >= 0, "
                f"got {stream_chunk_chars} and {stream_context_chars}"
            )
        self.guard = guard
        self.on_fail = on_fail
        self.refusal = refusal
        self.fail_open = fail_open
        self.timeout = timeout
        self.stream_chunk_chars = stream_chunk_chars
        self.stream_context_chars = stream_context_chars
        self.on_decision = on_decision

    def start(self, pieces: Sequence[Piece], stage: Stage, context: Context | None = None) -> PendingCheck:
        """Start checking in the background; ``PendingCheck.wait``/``.await_`` turn it into a Decision.

        ``context``: what every piece answers (the request, or the conversation's messages; see ``Guard.check``),
        for the pieces without a context of their own.
        """
        texts = [piece.text for piece in pieces if piece.text is not None]
        # Only for guards that read them: a long history beside every text would make a small check a large one.
        contexts = (
            [piece.context if piece.context is not None else context for piece in pieces if piece.text is not None]
            if self.guard._reads_context(stage)
            else None
        )
        future = self.guard.submit(texts, stage=stage, contexts=contexts) if texts else None
        return PendingCheck(self, list(pieces), stage, future, time.perf_counter())

    def check(self, pieces: Sequence[Piece], stage: Stage, context: Context | None = None) -> Decision:
        return self.start(pieces, stage, context).wait()

    async def acheck(self, pieces: Sequence[Piece], stage: Stage, context: Context | None = None) -> Decision:
        return await self.start(pieces, stage, context).wait_async()

    def _decide(
        self, pieces: list[Piece], stage: Stage, checked: list[CheckResult] | BaseException, started: float
    ) -> Decision:
        latency_ms = (time.perf_counter() - started) * 1000.0
        results = _attach_sources(pieces, stage, checked, latency_ms)
        fail_open = self.fail_open and not _late(checked)
        blocking = [r for r in results if r.flagged and not (fail_open and r.status == "error")]
        if not blocking:
            return self._report(Decision(stage=stage, action="allow", results=results, latency_ms=latency_ms))
        violation = GuardViolation(stage, results)
        if isinstance(checked, BaseException):
            violation.__cause__ = checked
        if self.on_fail == "raise":
            self._report(Decision(stage=stage, action="raise", results=results, latency_ms=latency_ms))
            raise violation
        refusal: str | None
        if not callable(self.on_fail):
            refusal = self.refusal if self.on_fail == "refuse" else None
        else:
            try:
                refusal = self.on_fail(violation)
            except BaseException:
                self._report(Decision(stage=stage, action="raise", results=results, latency_ms=latency_ms))
                raise
            if refusal is not None and not isinstance(refusal, str):
                raise TypeError(f"an on_fail callback returns a refusal str or None, got {type(refusal).__name__}")
        action: Action = "monitor" if refusal is None else "refuse"
        return self._report(
            Decision(stage=stage, action=action, results=results, latency_ms=latency_ms, refusal=refusal)
        )

    def _report(self, decision: Decision) -> Decision:
        fields = decision.log_fields()
        troubled = decision.action != "allow" or fields["errors"]
        logger.log(
            logging.WARNING if troubled else logging.DEBUG,
            "guard %s %s: policy=%s score=%s latency_ms=%.1f texts=%d%s",
            decision.stage,
            decision.action,
            fields["policy"],
            fields["score"],
            decision.latency_ms,
            len(decision.results),
            f" errors={fields['errors']}" if fields["errors"] else "",
            extra={"guard_decision": fields},
        )
        if self.on_decision is not None:
            self.on_decision(decision)
        return decision


class PendingCheck:
    """A check running in the background (see ``Enforcer.start``)."""

    def __init__(
        self,
        enforcer: Enforcer,
        pieces: list[Piece],
        stage: Stage,
        future: Future[list[CheckResult]] | None,
        started: float,
    ) -> None:
        self._enforcer = enforcer
        self._pieces = pieces
        self._stage = stage
        self._future = future
        self._started = started

    def wait(self) -> Decision:
        """Block until the check is done (or timed out) and decide; raises ``GuardViolation`` for ``"raise"``."""
        checked: list[CheckResult] | BaseException
        if self._future is None:
            checked = []
        else:
            # Imported here (asyncio too, in wait_async), not with the module: the future has loaded it already,
            # and together they cost ~25 ms of import to whoever only needs this module's names.
            from concurrent.futures import TimeoutError as FutureTimeoutError

            try:
                checked = self._future.result(timeout=self._enforcer.timeout)
            except FutureTimeoutError:
                self._future.cancel()
                checked = GuardTimeoutError(self._enforcer.timeout or 0.0)
            except InputError:
                raise
            except Exception as exc:  # noqa: BLE001 - a failed check is a decision (fail-closed or open), not a crash
                checked = exc
        return self._enforcer._decide(self._pieces, self._stage, checked, self._started)

    async def wait_async(self) -> Decision:
        import asyncio  # loaded already: this runs in an event loop

        checked: list[CheckResult] | BaseException
        if self._future is None:
            checked = []
        else:
            try:
                checked = await asyncio.wait_for(asyncio.wrap_future(self._future), self._enforcer.timeout)
            except (asyncio.TimeoutError, TimeoutError):
                checked = GuardTimeoutError(self._enforcer.timeout or 0.0)
            except InputError:
                raise
            except Exception as exc:  # noqa: BLE001
                checked = exc
        return self._enforcer._decide(self._pieces, self._stage, checked, self._started)

    def cancel(self) -> None:
        if self._future is not None:
            self._future.cancel()


def _late(checked: list[CheckResult] | BaseException) -> bool:
    """Whether a check timed out or was given up on: not a failure of the check, so not one fail_open allows."""
    if not isinstance(checked, BaseException):
        return False
    from concurrent.futures import CancelledError  # loaded already: only a check run on a future fails

    return isinstance(checked, (GuardTimeoutError, CancelledError))


def _attach_sources(
    pieces: list[Piece], stage: Stage, checked: list[CheckResult] | BaseException, latency_ms: float
) -> list[SourcedResult]:
    results: list[SourcedResult] = []
    texts = iter(checked) if isinstance(checked, list) else None
    for piece in pieces:
        if piece.text is None:
            results.append(
                SourcedResult(stage=stage, status="skipped_non_text", scores=[], latency_ms=0.0, source=piece.source)
            )
        elif texts is None:
            error = f"{type(checked).__name__}: {checked}"
            results.append(
                SourcedResult(
                    stage=stage, status="error", scores=[], latency_ms=latency_ms, error=error, source=piece.source
                )
            )
        else:
            result = next(texts)
            results.append(SourcedResult(**dict(result), source=piece.source))
    return results
