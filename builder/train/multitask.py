"""One multi-task guard for many policies, each example paired with its policy's instruction.

MultiTaskGuard's recipe: the encoder reads ``(instruction, text)`` as a sentence pair and answers one question,
"does this text violate this instruction?". Trained on many policies at once, it learns to read instructions, so a
policy it never saw can be checked with its instruction alone (zero-shot, ``guard-build instruct``) or after a short
fine-tune on a few examples.

The bundle of a multi-task guard lists one label per policy, each with its ``instruction``; the model has one
output, and the runtime runs it once per label with that label's instruction (``guard_sdk`` reads the pair).

Data comes as :class:`PolicyTask` objects: a name, an instruction and binary examples. :func:`binary_tasks` cuts
them out of any multi-label dataset (e.g. the default pack's), with hard negatives from the other labels' positives,
so a task learns *its* policy and not "anything harmful".
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, Field

from ..data.dataset import LabeledDataset, LabeledExample
from ..data.policy import Policy

if TYPE_CHECKING:
    from guard_sdk.bundle import BundleManifest

__all__ = [
    "VIOLATES",
    "PolicyTask",
    "binary_tasks",
    "instruct_bundle",
    "multitask_dataset",
    "policy_instruction",
    "task_dataset",
    "task_instruction",
]

VIOLATES = "violates"
"""The multi-task model's one output: does the text violate the instruction it is paired with."""


class PolicyTask(BaseModel):
    """One policy as a binary task: ``examples`` carry ``labels == [name]`` (violates) or ``[]`` (complies)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_./-]+$")
    instruction: str = Field(min_length=1)
    examples: list[LabeledExample]


def task_instruction(name: str, violates: str | Sequence[str]) -> str:
    """The one instruction format every task is trained and checked with (short: it shares the window with text)."""
    rules = [violates] if isinstance(violates, str) else violates
    return f"{name}: flag a message that is " + "; or ".join(rule.strip().rstrip(".") for rule in rules)


def policy_instruction(policy: Policy) -> str:
    """A policy's task instruction: what violates it, in its own words."""
    return task_instruction(policy.name, policy.violates)


def binary_tasks(
    dataset: LabeledDataset,
    instructions: Mapping[str, str],
    *,
    per_task: int = 600,
    seed: int = 13,
) -> list[PolicyTask]:
    """One task per label of a multi-label dataset, at most ``per_task`` examples each, up to half of them positives.

    Negatives are half other labels' positives (hard negatives: harmful, but not under *this* policy) and half
    texts with no label; a label with few positives gets more negatives, not fewer examples. Labels without an
    instruction are left out.
    """
    rng = random.Random(seed)
    unlabeled = [ex for ex in dataset.examples if not ex.labels]
    tasks = []
    for name in dataset.label_names:
        if name not in instructions:
            continue
        positives = [ex for ex in dataset.examples if name in ex.labels]
        others = [ex for ex in dataset.examples if ex.labels and name not in ex.labels]
        if not positives:
            raise ValueError(f"label {name!r} has no positive example to learn from")
        chosen = _sample(positives, per_task // 2, rng)
        hard = _sample(others, (per_task - len(chosen)) // 2, rng)
        easy = _sample(unlabeled, per_task - len(chosen) - len(hard), rng)
        examples = [_relabeled(ex, [name]) for ex in chosen] + [_relabeled(ex, []) for ex in hard + easy]
        rng.shuffle(examples)
        tasks.append(PolicyTask(name=name, instruction=instructions[name], examples=examples))
    return tasks


def task_dataset(task: PolicyTask) -> LabeledDataset:
    """A task alone, as a binary dataset: what a single-policy guard trains on."""
    return LabeledDataset(label_names=[task.name], examples=task.examples, sha256=_sha256([task]))


def multitask_dataset(tasks: Sequence[PolicyTask]) -> LabeledDataset:
    """Every task's examples paired with its instruction (``instruction`` and ``task`` fields), one label: violates."""
    examples = [
        LabeledExample.model_validate(
            {
                "text": ex.text,
                "labels": [VIOLATES] if ex.labels else [],
                "instruction": task.instruction,
                "task": task.name,
            }
        )
        for task in tasks
        for ex in task.examples
    ]
    random.Random(0).shuffle(examples)
    return LabeledDataset(label_names=[VIOLATES], examples=examples, sha256=_sha256(tasks))


def _sample(rows: list[LabeledExample], count: int, rng: random.Random) -> list[LabeledExample]:
    return rng.sample(rows, min(count, len(rows)))


def _relabeled(example: LabeledExample, labels: list[str]) -> LabeledExample:
    return LabeledExample(**{**example.model_dump(), "labels": labels})


def _sha256(tasks: Sequence[PolicyTask]) -> str:
    digest = hashlib.sha256()
    for task in tasks:
        digest.update(json.dumps([task.name, task.instruction]).encode())
        for ex in task.examples:
            digest.update(json.dumps([ex.text, ex.labels]).encode())
    return digest.hexdigest()


def instruct_bundle(
    bundle: str | Path,
    policies: Sequence[Policy],
    out: str | Path,
    *,
    name: str | None = None,
    version: str = "0.1.0",
    max_length: int | None = None,
    overwrite: bool = False,
) -> BundleManifest:
    """Zero-shot: a bundle that checks ``policies`` with a multi-task guard's model and their instructions alone.

    Model and tokenizer are copied from ``bundle`` unchanged. ``max_length`` widens the window (instruction + text)
    for a policy whose instruction is long: the encoder reads up to its position table (512 tokens for MiniLM)
    whatever length it was trained at. A policy whose seeds are labeled on both sides gets the threshold that best
    separates them; otherwise it takes the median of the multi-task bundle's calibrated thresholds. Either way the
    manifest says how each threshold was chosen.
    """
    from guard_sdk import BundleError, Guard, GuardBundle
    from guard_sdk.bundle import BundleMetrics, LabelSpec, file_sha256, write_manifest

    from ..errors import BuilderError
    from ..export.bundle import staged_bundle
    from ..export.calibrate import calibrate_threshold

    source = GuardBundle.load(bundle)
    if source.manifest.labels[0].instruction is None:
        raise BuilderError(f"{source.path} is not a multi-task guard: its labels have no instructions")
    if not policies:
        raise BuilderError("instruct_bundle needs at least one policy")
    if name is None and len(policies) > 1:
        raise BuilderError("name the bundle of several policies")
    fallback = float(np.median([label.threshold for label in source.manifest.labels]))
    labels = [
        LabelSpec(name=p.name, description=p.description, instruction=policy_instruction(p), threshold=fallback)
        for p in policies
    ]
    with staged_bundle(Path(out), overwrite=overwrite) as staging:
        for file in source.manifest.files:
            shutil.copyfile(source.file(file), staging / file)
        tokenizer = source.manifest.tokenizer
        if max_length is not None:
            tokenizer = tokenizer.model_copy(update={"max_length": max_length})
        update = {"labels": labels, "problem_type": _problem_type(labels), "tokenizer": tokenizer}
        draft = source.manifest.model_copy(update=update)
        write_manifest(staging, draft)
        try:
            guard = Guard(staging, device="cpu")
        # E.g. an instruction too long for the window, or a max_length past the encoder's position table (the runtime
        # runs one full window at load). Name the source, not staging.
        except BundleError as exc:
            raise BuilderError(f"{source.manifest.id} cannot check these policies: {exc.message}") from None
        calibration: dict[str, str] = {}
        for j, policy in enumerate(policies):
            seeds = [(seed.text, seed.label == "violates") for seed in policy.seeds if seed.label]
            truth = np.asarray([flag for _, flag in seeds], dtype=bool)
            if truth.all() or not truth.any():
                calibration[policy.name] = f"median of {source.manifest.id}'s thresholds (no seeds on both sides)"
                continue
            scores = np.asarray([r.scores[j].score for r in guard.check_batch([text for text, _ in seeds])])
            labels[j] = labels[j].model_copy(update={"threshold": calibrate_threshold(scores, truth, None)})
            calibration[policy.name] = f"max F1 on {len(seeds)} labeled seeds"
        del guard
        manifest = draft.model_copy(
            update={
                "name": name or policies[0].name,
                "version": version,
                "description": f"zero-shot from {source.manifest.id}",
                "labels": labels,
                "training": source.manifest.training.model_copy(update={"zero_shot_from": source.manifest.id}),
                "metrics": BundleMetrics(calibration=calibration),
                "files": {file: file_sha256(staging / file) for file in source.manifest.files},
            }
        )
        write_manifest(staging, manifest)
    return manifest


def _problem_type(labels: Sequence[object]) -> Literal["binary", "multi_label"]:
    return "binary" if len(labels) == 1 else "multi_label"
