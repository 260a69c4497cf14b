"""Micro-batching: checks submitted at the same time from many threads and tasks share ONNX Runtime calls.

One worker thread per `Guard` takes every job waiting in the queue (up to ``max_texts`` texts) and checks them in one
``check_batch`` call. A job that arrives alone is checked at once; when several arrive together the worker waits up to
``max_wait_ms`` for the rest of the burst. Under load, jobs that arrive while a batch runs form the next batch, so
batches grow with the load and a lone caller pays no waiting.

Batching pays off where one call costs much more than one text (a GPU). On a CPU the work per text stays the same and
texts of different lengths pad each other: with many callers on a small CPU it cut throughput, less so with fewer
``ExecutionOptions.windows_per_call`` (benchmarks/README.md, "Middleware"). Leave it off on small CPUs. An int8 model
shares calls only with ``ExecutionOptions(batch_invariant=False)``: by default it runs one text per call, so that
batching never changes a text's scores (and ``Guard`` warns that it shares nothing). Jobs of different stages run
different bundles, so a batch is checked one stage at a time.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._errors import InputError

if TYPE_CHECKING:
    from concurrent.futures import Future

    from ._context import Context
    from ._result import CheckResult, Stage

    # Guard.check_batch: (texts, *, stage, contexts) -> one result per text.
    CheckBatch = Callable[..., list[CheckResult]]

__all__ = ["BatchingOptions", "MicroBatcher"]


@dataclass(frozen=True, slots=True)
class BatchingOptions:
    max_texts: int = 32
    """Most texts in one batch; a single job with more texts is checked alone."""
    max_wait_ms: float = 2.0
    """How long a batch that already holds several jobs waits for more; a lone job never waits."""
    idle_exit_s: float = 10.0
    """The worker thread ends after this long without work and restarts on the next job."""

    def __post_init__(self) -> None:
        if self.max_texts < 1:
            raise ValueError(f"max_texts must be at least 1, got {self.max_texts}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must not be negative, got {self.max_wait_ms}")


@dataclass(slots=True)
class _Job:
    texts: Sequence[str]
    stage: Stage
    contexts: Sequence[Context | None]
    future: Future[list[CheckResult]]
    submitted: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Coalesces concurrent jobs into bounded batches for one ``check_batch`` function."""

    def __init__(self, check_batch: CheckBatch, options: BatchingOptions | None = None) -> None:
        self._check_batch = check_batch
        self.options = options or BatchingOptions()
        self._pending: deque[_Job] = deque()
        self._wakeup = threading.Condition()
        self._worker: threading.Thread | None = None
        # Counters for monitoring and benchmarks; written by the worker thread only.
        self.batches = 0
        self.texts = 0
        self.largest_batch = 0

    def submit(
        self, texts: Sequence[str], stage: Stage = "input", contexts: Sequence[Context | None] | None = None
    ) -> Future[list[CheckResult]]:
        """Queue texts (and one context or None per text) for checking; the future holds one result per text, in
        order.

        Cancelling the future before its batch starts drops the job.
        """
        # Imported here, not with the module: `BatchingOptions` is public and must not bring concurrent.futures.
        from concurrent.futures import Future

        texts = list(texts)
        job = _Job(texts, stage, list(contexts) if contexts is not None else [None] * len(texts), Future())
        with self._wakeup:
            self._pending.append(job)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="guard-sdk-batcher", daemon=True)
                self._worker.start()
            self._wakeup.notify()
        return job.future

    def _work(self) -> None:
        while True:
            jobs = self._next_batch()
            if jobs is None:
                return
            self._run(jobs)

    def _next_batch(self) -> list[_Job] | None:
        """The jobs of the next batch, or None when the worker has been idle long enough to end."""
        options = self.options
        with self._wakeup:
            while not self._pending:
                if not self._wakeup.wait(timeout=options.idle_exit_s) and not self._pending:
                    self._worker = None
                    return None
            jobs = [self._pending.popleft()]
            size = len(jobs[0].texts)
            deadline = jobs[0].submitted + options.max_wait_ms / 1000.0
            while size < options.max_texts:
                if self._pending:
                    if size + len(self._pending[0].texts) > options.max_texts:
                        break
                    job = self._pending.popleft()
                    jobs.append(job)
                    size += len(job.texts)
                    continue
                remaining = deadline - time.perf_counter()
                # A lone job goes at once: waiting only pays off in a burst.
                if len(jobs) == 1 or remaining <= 0 or not self._wakeup.wait(timeout=remaining):
                    break
        return jobs

    def _run(self, jobs: list[_Job]) -> None:
        # A job cancelled while queued (its caller timed out) is dropped, not checked.
        self._check([job for job in jobs if job.future.set_running_or_notify_cancel()])

    def _check(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        if len(stages := list(dict.fromkeys(job.stage for job in jobs))) > 1:
            for stage in stages:
                self._check([job for job in jobs if job.stage == stage])
            return
        texts = [text for job in jobs for text in job.texts]
        try:
            results = self._check_batch(
                texts, stage=stages[0], contexts=[context for job in jobs for context in job.contexts]
            )
        except InputError as exc:
            if len(jobs) == 1:
                jobs[0].future.set_exception(exc)
                return
            # One caller's bad text must not fail the others: check each job on its own.
            for job in jobs:
                self._check([job])
            return
        except Exception as exc:  # noqa: BLE001 - every waiting caller must hear about the failure
            for job in jobs:
                job.future.set_exception(exc)
            return
        done = time.perf_counter()
        self.batches += 1
        self.texts += len(results)
        self.largest_batch = max(self.largest_batch, len(results))
        start = 0
        for job in jobs:
            part = results[start : start + len(job.texts)]
            start += len(job.texts)
            # A caller's latency includes its time in the queue.
            latency_ms = (done - job.submitted) * 1000.0
            job.future.set_result([r.model_copy(update={"stage": job.stage, "latency_ms": latency_ms}) for r in part])
