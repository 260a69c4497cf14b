"""Labeled training data: JSONL rows of ``{"text": str, "labels": [str, ...]}``.

``labels`` lists the labels a text violates; an empty list marks a compliant text. Other keys (source, cell,
verdict, ...) are kept as provenance and ignored by training.

Exchange data (a guard that judges an answer together with the request it answers) gives every row a ``context``:
the request, and ``""`` for an answer judged alone. Its ``text`` is the answer.

Conversation data (a guard that judges the latest turn in the light of the earlier ones) gives every row a ``context``
that is a list of messages, ``{"role": str, "content": str | null}``, earlier turns first (``[]`` for a first turn).
Its ``text`` is the latest turn.

Unlabeled texts (a corpus, distillation texts, an eval set) are JSONL rows with a ``"text"`` too; ``iter_text_rows``
reads them streaming, one bounded line at a time.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from guard_sdk import normalize
from guard_sdk.bundle import ContextKind, context_text

from ..errors import DatasetError

__all__ = [
    "MAX_LINE_BYTES",
    "ContextMessage",
    "LabeledDataset",
    "LabeledExample",
    "iter_text_rows",
    "load_jsonl",
    "read_texts",
    "write_jsonl",
]

MAX_LINE_BYTES = 1 << 20
"""The longest JSONL line the text readers take: far above any text a guard reads, and what bounds one row's memory."""


class ContextMessage(BaseModel):
    """One earlier turn of a conversation row's ``context``, as the runtime reads a message."""

    model_config = ConfigDict(extra="forbid")

    role: str = Field(min_length=1)
    content: str | None


class LabeledExample(BaseModel):
    model_config = ConfigDict(extra="allow")

    text: str = Field(min_length=1)
    labels: list[str]
    # Left out of written rows when unset, so plain data reads and writes as before.
    context: str | list[ContextMessage] | None = Field(None, exclude_if=lambda value: value is None)
    """Exchange data: the request the text answers (``""`` for an answer alone). Conversation data: the turns before
    the text, earlier first (``[]`` for a first turn)."""


class LabeledDataset(BaseModel):
    label_names: list[str]
    examples: list[LabeledExample]
    sha256: str

    def targets(self) -> list[list[float]]:
        """One 0/1 row per example, one column per label name."""
        return [[1.0 if name in ex.labels else 0.0 for name in self.label_names] for ex in self.examples]

    def instructions(self) -> list[str] | None:
        """Multi-task data (``builder.train.multitask``): each example's ``instruction``, paired with its text; else None."""
        values = [(ex.model_extra or {}).get("instruction") for ex in self.examples]
        if all(value is None for value in values):
            return None
        if not all(isinstance(value, str) and value.strip() for value in values):
            raise ValueError("some examples have an instruction and some do not: multi-task data needs one on each")
        return [str(value) for value in values]

    def context_kind(self) -> ContextKind | None:
        """``exchange`` when every example's context is a str (a request), ``conversation`` when every one is a list
        of messages, None when no example has one; mixed data is refused."""
        values = [ex.context for ex in self.examples]
        if all(value is None for value in values):
            return None
        if any(value is None for value in values):
            raise ValueError(
                'some examples have a context and some do not: exchange data needs one on each ("" for an answer '
                "judged alone), conversation data a list of messages on each ([] for a first turn)"
            )
        requests = sum(isinstance(value, str) for value in values)
        if 0 < requests < len(values):
            raise ValueError(
                f"{requests} examples have a str context (a request: exchange data) and {len(values) - requests} a "
                "list of messages (a conversation): a guard reads one kind of context, give the same on every row"
            )
        return "exchange" if requests else "conversation"

    def contexts(self) -> list[str | list[dict[str, Any]]] | None:
        """Each example's ``context`` as given (a request, or its conversation's messages as dicts); None for data
        without contexts."""
        if self.context_kind() is None:
            return None
        return [
            ex.context if isinstance(ex.context, str) else [message.model_dump() for message in ex.context or []]
            for ex in self.examples
        ]

    def rendered_contexts(self) -> list[str] | None:
        """Each example's context as the runtime reads it, paired before its text: rendered for the data's kind
        (``guard_sdk.bundle.context_text``) and normalised; None for data without contexts."""
        kind, contexts = self.context_kind(), self.contexts()
        if kind is None or contexts is None:
            return None
        # As the runtime: an empty context (no request, no earlier turn) reads as "".
        return [normalize(context_text(context, kind)).text if context else "" for context in contexts]

    def tasks(self) -> dict[str, str]:
        """Multi-task data: task name -> instruction (sorted by name), from each example's ``task`` and
        ``instruction``; {} for plain data."""
        instructions = self.instructions()
        if instructions is None:
            return {}
        tasks: dict[str, str] = {}
        for ex, instruction in zip(self.examples, instructions):
            name = (ex.model_extra or {}).get("task")
            if not isinstance(name, str) or not name:
                raise ValueError(f"an example with an instruction has no task name: {ex.text[:60]!r}")
            if tasks.setdefault(name, instruction) != instruction:
                raise ValueError(f"task {name!r} has two instructions")
        return dict(sorted(tasks.items()))

    def split(self, validation_fraction: float, seed: int) -> tuple[LabeledDataset, LabeledDataset]:
        """A seeded split that keeps each label combination's share in both parts."""
        if not 0.0 < validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be between 0 and 1, got {validation_fraction}")
        groups: dict[tuple[str, ...], list[LabeledExample]] = {}
        for ex in self.examples:
            groups.setdefault(tuple(sorted(ex.labels)), []).append(ex)
        rng = random.Random(seed)
        train: list[LabeledExample] = []
        validation: list[LabeledExample] = []
        for key in sorted(groups):
            members = groups[key][:]
            rng.shuffle(members)
            cut = max(1, round(len(members) * validation_fraction)) if len(members) > 1 else 0
            validation += members[:cut]
            train += members[cut:]
        rng.shuffle(train)
        rng.shuffle(validation)
        return self._subset(train), self._subset(validation)

    def _subset(self, examples: list[LabeledExample]) -> LabeledDataset:
        return LabeledDataset(label_names=self.label_names, examples=examples, sha256=self.sha256)


def load_jsonl(path: str | Path, label_names: Sequence[str] | None = None) -> LabeledDataset:
    """Read and validate a training file; errors name the line. Without ``label_names``, labels are those seen."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "no such file")
    raw = path.read_bytes()
    try:
        # "\n" only: a text may hold U+2028 and other characters that str.splitlines() treats as line breaks.
        lines = raw.decode("utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            path, f"is not UTF-8 text ({exc.reason} at byte {exc.start})", line=raw.count(b"\n", 0, exc.start) + 1
        ) from None
    examples: list[LabeledExample] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            examples.append(LabeledExample.model_validate_json(line))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in exc.errors())
            raise DatasetError(path, f"invalid row ({problems})", line=number) from None
        if label_names and (unknown := [label for label in examples[-1].labels if label not in label_names]):
            raise DatasetError(path, f"labels {unknown} are not among {list(label_names)}", line=number)
    if not examples:
        raise DatasetError(path, "holds no examples")
    names = list(label_names) if label_names else sorted({label for ex in examples for label in ex.labels})
    if not names:
        raise DatasetError(path, "no example carries a label: nothing to learn (give positives, or pass label names)")
    return LabeledDataset(label_names=names, examples=examples, sha256=hashlib.sha256(raw).hexdigest())


def write_jsonl(path: str | Path, examples: Sequence[LabeledExample]) -> None:
    with Path(path).open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(ex.model_dump(), ensure_ascii=False) + "\n" for ex in examples)


def iter_text_rows(
    path: str | Path, *, non_str: Literal["raise", "skip"] = "raise", max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL file, each with a ``"text"``, read one line at a time: the caller that stops early
    reads no further. Blank lines are skipped; a row whose text is not a str is an error, or skipped with
    ``non_str="skip"`` (logs hold such rows, a tool call's ``null`` content). Errors are ``DatasetError`` naming the
    line; a line over ``max_line_bytes`` is one too (a wrong file, a minified JSON document, is the likely cause, and
    dropping a row silently would change the data)."""
    path = Path(path)
    try:
        file = path.open("rb")
    except OSError as exc:
        raise DatasetError(path, f"cannot read: {exc.strerror or exc}") from None
    with file:
        number = 0
        while True:
            try:
                # Bytes, split at "\n" only: a text may hold U+2028 and other characters str.splitlines() breaks at.
                raw = file.readline(max_line_bytes + 1)
            except OSError as exc:
                raise DatasetError(path, f"cannot read: {exc.strerror or exc}") from None
            if not raw:
                return
            number += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                raise DatasetError(path, f"line longer than {max_line_bytes} bytes", line=number)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetError(path, f"is not UTF-8 text ({exc.reason} at byte {exc.start})", line=number) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(path, f"invalid JSON ({exc.msg} at column {exc.colno})", line=number) from None
            except RecursionError:
                raise DatasetError(path, "invalid JSON (nested too deeply)", line=number) from None
            if not isinstance(row, dict):
                raise DatasetError(
                    path, f'a row must be a JSON object with a "text", got {type(row).__name__}', line=number
                )
            if "text" not in row:
                raise DatasetError(path, 'a row must have a "text"', line=number)
            if isinstance(row["text"], str):
                yield row
            elif non_str == "raise":
                raise DatasetError(path, f'"text" must be a string, got {type(row["text"]).__name__}', line=number)


def read_texts(path: str | Path, limit: int | None = None) -> list[str]:
    """The ``"text"`` of the rows of a JSONL file (training rows, seed sets, evaluation rows alike), the first
    ``limit`` of them when given; a row without a str text is an error (``iter_text_rows``)."""
    return [row["text"] for row in islice(iter_text_rows(path), limit)]
