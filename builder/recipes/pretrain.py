"""Pretrain the sentence encoder to read policy lines: contrastive (policy line, text) pairs from many tasks.

A guard from a policy's words alone scores a text by the cosine of its sentence embedding to the policy's
``violates`` lines against the ``allowed`` ones; all-MiniLM-L6-v2 was trained on sentence pairs, not on (description,
instance) pairs. Here it is fine-tuned on the task bank of ``builder.recipes.policy_tasks``: each pair is one of a
task's texts and one of its lines, and the loss (in-batch negatives, both directions) asks each text to find its own
task's line among the batch's and each line its text. A batch never holds two pairs of one task: they would be each
other's false negatives. The model stays a bi-encoder (one pass per text), so every embedding guard and the
runtime's bundles take it as they take the base model (``--base-model DIR/model``).

The output folder holds ``model/`` (a sentence-transformers model), ``pretrain.json`` (tasks, pairs, time, the tasks
held out) and, while training, ``checkpoints/`` that a killed run resumes from.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from guard_sdk import normalize

from .._files import write_atomic
from ..errors import BuilderError
from ..train.embedding import train_sentence_model
from ..train.run import TrainingRun, base_model_path, sentence_encoder
from .policy_tasks import PolicyTask

if TYPE_CHECKING:
    from datasets import Dataset
    from sentence_transformers.base.sampler import DefaultBatchSampler

__all__ = ["PretrainConfig", "PretrainInfo", "pretrain_encoder", "training_batches"]

logger = logging.getLogger("builder.recipes.pretrain")

INFO_FILE = "pretrain.json"


class PretrainConfig(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)  # field docstrings: guard-build's help

    base_model: str | None = None
    """The encoder to start from (default: all-MiniLM-L6-v2 from PyPI)."""
    pairs_per_task: int = Field(6, ge=1)
    """(line, text) pairs drawn from each training task (its texts sampled without repeats, its lines in turn)."""
    batch_size: int = Field(32, ge=2)
    """Pairs per batch, each of another task: the in-batch negatives."""
    epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(2e-5, gt=0)
    max_length: int = Field(64, ge=16, le=512)
    heldout_fraction: float = Field(0.2, ge=0, lt=1)
    """Share of each source's tasks kept out of training (whole tasks), to measure zero-shot quality on."""
    seed: int = 13
    threads: int | None = None
    progress: bool = True


class PretrainInfo(BaseModel):
    base_model: str
    training_tasks: int
    pairs: int
    batch_size: int
    max_length: int
    epochs: float
    train_seconds: float
    heldout_tasks: list[str]
    """Names of the tasks kept out of training: zero-shot evaluations must use only these."""


def training_batches(
    tasks: Sequence[PolicyTask], pairs_per_task: int, batch_size: int, seed: int
) -> list[list[tuple[str, str]]]:
    """(text, line) pairs in batches, no two pairs of one task in a batch; seeded, so a resumed run sees the same."""
    rng = random.Random(seed)
    queues: dict[str, list[tuple[str, str]]] = {}
    for task in tasks:
        texts = rng.sample(task.texts, min(pairs_per_task, len(task.texts)))
        lines = rng.sample(task.lines, len(task.lines))
        queues[task.name] = [(normalize(text).text, lines[i % len(lines)]) for i, text in enumerate(texts)]
    batches: list[list[tuple[str, str]]] = []
    while queues:
        # Each round takes one pair from every task that has any left, in a fresh order, cut into batches of even
        # sizes (never a batch of one pair, which has no negative to learn from).
        names = sorted(queues)
        rng.shuffle(names)
        count = -(-len(names) // batch_size)
        for k in range(count):
            batches.append(
                [queues[name].pop() for name in names[k * len(names) // count : (k + 1) * len(names) // count]]
            )
        queues = {name: pairs for name, pairs in queues.items() if pairs}
        if len(queues) < 2:  # a last task's remaining pairs would only meet each other
            break
    rng.shuffle(batches)
    return batches


def pretrain_encoder(
    tasks: Sequence[PolicyTask], out_dir: str | Path, config: PretrainConfig | None = None, heldout: Sequence[str] = ()
) -> PretrainInfo:
    """Fine-tune the encoder on the tasks' (line, text) pairs; writes ``out_dir/model``; resumes a killed run."""
    import torch
    from datasets import Dataset
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesSymmetricRankingLoss

    config = config or PretrainConfig()
    out = Path(out_dir)
    info_file = out / INFO_FILE
    if info_file.is_file():
        return PretrainInfo.model_validate_json(info_file.read_text())
    if len(tasks) < 2:
        raise BuilderError(f"pretraining needs at least 2 tasks (in-batch negatives), got {len(tasks)}")
    if config.threads:
        torch.set_num_threads(config.threads)
    batches = training_batches(tasks, config.pairs_per_task, config.batch_size, config.seed)
    pairs = [pair for batch in batches for pair in batch]
    data = Dataset.from_dict({"text": [text for text, _ in pairs], "line": [line for _, line in pairs]})

    base = base_model_path(config.base_model)
    model = sentence_encoder(base, config.max_length)
    started = time.perf_counter()
    train_sentence_model(
        model, data, MultipleNegativesSymmetricRankingLoss(model), out / "checkpoints", epochs=config.epochs,
        batch_size=config.batch_size, learning_rate=config.learning_rate, seed=config.seed, progress=config.progress,
        batch_sampler=functools.partial(_fixed_batches, sizes=[len(batch) for batch in batches]),
    )  # fmt: skip
    model.save(str(out / TrainingRun.MODEL_DIR))
    info = PretrainInfo(
        base_model=base,
        training_tasks=len(tasks),
        pairs=len(pairs),
        batch_size=config.batch_size,
        max_length=config.max_length,
        epochs=config.epochs,
        train_seconds=round(time.perf_counter() - started, 1),
        heldout_tasks=sorted(heldout),
    )
    write_atomic(info_file, json.dumps(info.model_dump(), indent=2) + "\n", what="pretraining record")
    logger.info("pretrained on %d pairs of %d tasks in %.0f s", len(pairs), len(tasks), info.train_seconds)
    return info


def _fixed_batches(dataset: Dataset, *, sizes: list[int], **arguments: Any) -> DefaultBatchSampler:
    """A batch sampler that yields the dataset's rows in order, cut at ``sizes`` (``training_batches`` grouped them).
    A module-level function: the trainer pickles its arguments into each checkpoint."""
    from sentence_transformers.base.sampler import DefaultBatchSampler

    class FixedBatches(DefaultBatchSampler):
        def __iter__(self) -> Iterator[list[int]]:
            start = 0
            for size in sizes:
                yield list(range(start, start + size))
                start += size

        def __len__(self) -> int:
            return len(sizes)

    return FixedBatches(dataset, **arguments)
