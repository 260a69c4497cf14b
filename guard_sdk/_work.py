"""Where submitted checks run (``Guard.submit``, ``acheck``, the enforcement layer), and how they stop.

Two thread pools shared by every Guard, so that one caller's giant text cannot hold up everyone else's checks:

- small checks (at most ``SMALL_CHARS`` characters and ``SMALL_TOKENS`` tokens in all) run on ``cpu + 4`` workers
  of their own;
- larger ones run on a few workers (half the cores, at least 2): they queue behind each other, never in front of a
  small check. A check is sorted by its characters when submitted, and a small-looking one whose tokens turn out
  too many (Hangul, NFKC expansions) moves to the large workers once counted, before any model runs.

A check's future is a ``CheckFuture``: cancelling it (a waiter's timeout, ``Future.cancel``, an ``asyncio`` task
cancelled while awaiting ``acheck``) skips a check that has not started, and stops a running one at its next ONNX
Runtime call, so abandoned work does not keep the workers busy. Its future then raises ``CancelledError``.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass

from ._context import Context
from ._guard import _executor, _large, _submitted
from ._result import CheckResult, Stage

__all__ = ["SMALL_CHARS", "SMALL_TOKENS", "CheckFuture", "Ticket", "start"]

SMALL_CHARS = 8_192
SMALL_TOKENS = 2_048

CheckBatch = Callable[..., list[CheckResult]]


class CheckFuture(Future[list[CheckResult]]):
    """A submitted check's future; ``cancel`` also stops the check if it is running (it then returns False, as
    for any running future, and the future ends with ``CancelledError``)."""

    def __init__(self) -> None:
        super().__init__()
        self.abandoned = threading.Event()

    def cancel(self) -> bool:
        self.abandoned.set()
        return super().cancel()


class _TooLarge(Exception):
    """A check on the small workers has more tokens than they take."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a running check knows of its submission: whether its caller gave up, how many tokens its workers take."""

    abandoned: threading.Event
    max_tokens: int | None

    def admit(self, tokens: int) -> None:
        if self.max_tokens is not None and tokens > self.max_tokens:
            raise _TooLarge


def start(
    check_batch: CheckBatch, texts: Sequence[str], stage: Stage, contexts: Sequence[Context | None]
) -> CheckFuture:
    """Check texts (each with its context, or None) on the pool their size calls for; the future holds one result
    per text."""
    future = CheckFuture()
    large = _large(texts)
    _pool(large).submit(_run, future, functools.partial(check_batch, texts, stage=stage, contexts=contexts), large)
    return future


def _pool(large: bool) -> ThreadPoolExecutor:
    if large:
        return _executor("guard-large", max(2, (os.cpu_count() or 1) // 2))
    return _executor("guard")


def _run(future: CheckFuture, check: Callable[[], list[CheckResult]], large: bool) -> None:
    # A check moved from the small workers is running already: it only has to see whether it was abandoned.
    if not (future.running() or future.set_running_or_notify_cancel()):
        return
    if future.abandoned.is_set():
        future.set_exception(CancelledError("the check's caller gave up on it"))
        return
    token = _submitted.set(Ticket(future.abandoned, None if large else SMALL_TOKENS))
    try:
        results = check()
    except _TooLarge:
        _pool(True).submit(_run, future, check, True)
    except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
        future.set_exception(exc)
    else:
        future.set_result(results)
    finally:
        _submitted.reset(token)
