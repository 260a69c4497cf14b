"""Checkpoints of the builder's long runs (the data engine, the adversarial rounds).

A run folder is keyed by a fingerprint of everything that decides its result: the same inputs continue where a
killed run stopped, other inputs start over. ``stages/`` holds the checkpoints: whole results of finished steps,
append-only journals (one line per finished unit of work) and the LLM usage of every invocation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from ._files import write_atomic
from .errors import CacheWriteError
from .llm.client import LLMClient, LLMUsage

__all__ = ["Journal", "RunFolder", "UsageLog", "fingerprint"]

logger = logging.getLogger(__name__)


def fingerprint(inputs: Mapping[str, Any]) -> str:
    """The sha256 of ``inputs`` as sorted JSON: what a run folder is keyed by."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


class Journal:
    """An append-only JSONL checkpoint; a line cut short by a kill is discarded on the next open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[dict[str, Any]] = []
        if path.is_file():
            # Split on "\n" only: JSON may hold U+2028 and other characters that str.splitlines() treats as breaks.
            *complete, cut_short = path.read_text(encoding="utf-8").split("\n")
            for line in complete:
                try:
                    self.entries.append(json.loads(line))
                except ValueError:
                    break
            if cut_short or len(self.entries) < len(complete):
                write_atomic(path, "".join(line + "\n" for line in complete[: len(self.entries)]))

    def append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        try:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise CacheWriteError(f"cannot append to the checkpoint {self.path}: {exc.strerror or exc}") from exc
        self.entries.append(entry)


class UsageLog:
    """The LLM usage of every invocation of a run, rewritten whenever it changes: the requests of an invocation that
    is killed still count in the run's total."""

    _adapter: TypeAdapter[list[LLMUsage]] = TypeAdapter(list[LLMUsage])

    def __init__(self, path: Path) -> None:
        self.path = path
        self.earlier = self._adapter.validate_json(path.read_bytes()) if path.is_file() else []
        self.current = LLMUsage()

    def record(self, current: LLMUsage) -> None:
        self.current = current
        write_atomic(self.path, self._adapter.dump_json(self.invocations).decode())

    @property
    def invocations(self) -> list[LLMUsage]:
        return [*self.earlier, self.current]

    @property
    def total(self) -> LLMUsage:
        return sum(self.earlier, self.current)


class RunFolder:
    """A run's output folder. Opened with another fingerprint than the one it holds, it starts over: ``stages/``,
    the ``folders`` and the ``outputs`` are removed (anything else, such as the LLM cache, is kept)."""

    def __init__(
        self, out: Path, fingerprint: str, *, outputs: Sequence[str] = (), folders: Sequence[str] = ()
    ) -> None:
        self.out = out
        self.stages = out / "stages"
        marker = self.stages / "run.json"
        previous = json.loads(marker.read_text())["fingerprint"] if marker.is_file() else None
        if previous != fingerprint:
            if previous is not None:
                logger.warning("%s holds a run of other inputs or settings: starting over (cache kept)", out)
            for name in ("stages", *folders):
                shutil.rmtree(out / name, ignore_errors=True)
            for name in outputs:
                (out / name).unlink(missing_ok=True)
            write_atomic(marker, json.dumps({"fingerprint": fingerprint}))
        # Temporary files a killed run left behind (its complete files were renamed into place; these never were).
        for stale in self.stages.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    async def stage(self, name: str, kind: Any, compute: Callable[[], Awaitable[Any]]) -> Any:
        """The saved result of step ``name``, or ``compute()``'s, saved."""
        adapter = TypeAdapter(kind)
        path = self.stages / f"{name}.json"
        if path.is_file():
            return adapter.validate_json(path.read_text(encoding="utf-8"))
        value = await compute()
        write_atomic(path, adapter.dump_json(value, indent=2).decode())
        return value

    def save(self, name: str, value: Any) -> None:
        write_atomic(self.stages / f"{name}.json", json.dumps(value, indent=2, ensure_ascii=False))

    def journal(self, name: str) -> Journal:
        return Journal(self.stages / f"{name}.jsonl")

    @contextlib.contextmanager
    def usage(self, llm: LLMClient) -> Iterator[UsageLog]:
        """Record ``llm``'s requests of this invocation beside the earlier invocations', as they happen."""
        log = UsageLog(self.stages / "usage.json")
        log.record(LLMUsage())  # every invocation is counted, even one that sends nothing
        baseline = llm.usage.model_copy()  # the client may have served other work before this run
        llm.on_usage = lambda now: log.record(now - baseline)
        try:
            yield log
        finally:
            llm.on_usage = None
