"""Distil the base sentence encoder into a shallower student that keeps its embedding.

A check's cost is the encoder's, and all-MiniLM-L6-v2 has six layers (costs: benchmarks/README.md). Cutting layers and
fine-tuning the cut model as a classifier loses most of what the sentence embedding knew (benchmarks/README.md,
"Levers"); distillation instead trains the student to reproduce the teacher's embedding of each text (mean squared
error, as sentence-transformers' model-distillation recipe), on unlabeled texts from the guard's own domain. The student
starts from evenly spaced teacher layers (the first and the last kept), so it begins close. Any embedding guard then
trains on it as on the base model (``train --head embedding --base-model STUDENT``, or ``pack --base-model``); export
needs nothing new: it is a smaller BERT.

The output folder is a sentence-transformers model (``model/``) with ``distill.json``: the layers kept, the texts,
and the mean cosine between student and teacher embeddings on held-out texts before and after training.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from guard_sdk import normalize

from .._files import write_atomic
from ..errors import BuilderError
from .embedding import train_sentence_model
from .run import TrainingRun, base_model_path, sentence_encoder

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["DistillConfig", "DistillInfo", "distill_encoder", "student_layers"]

logger = logging.getLogger("builder.train.distill")

INFO_FILE = "distill.json"
MIN_TEXTS = 50


class DistillConfig(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)  # field docstrings: guard-build's help

    base_model: str | None = None
    """The teacher (default: all-MiniLM-L6-v2 from PyPI); the student is cut from it."""
    num_layers: int = Field(3, ge=1)
    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    max_length: int = Field(128, ge=16, le=512)
    max_texts: int | None = Field(None, ge=1)
    """Train on a seeded sample of this many distinct texts (teacher encoding and training scale with it)."""
    validation_texts: int = Field(500, ge=10)
    """Texts held out to measure how close the student's embedding is to the teacher's (at most a fifth)."""
    seed: int = 13
    threads: int | None = None
    progress: bool = True


class DistillInfo(BaseModel):
    base_model: str
    num_layers: int
    kept_layers: list[int]
    """The teacher's layers the student started from (0-based)."""
    texts: int
    epochs: float
    cosine_before: float
    """Mean cosine of student and teacher embeddings on the held-out texts, before training (the cut model)."""
    cosine_after: float
    train_seconds: float


def student_layers(teacher_layers: int, num_layers: int) -> list[int]:
    """Evenly spaced teacher layers from the first to the last (the last shaped the embedding to match)."""
    if not 1 <= num_layers < teacher_layers:
        raise BuilderError(f"a student needs 1 to {teacher_layers - 1} layers (the teacher has {teacher_layers})")
    return [int(i) for i in np.linspace(0, teacher_layers - 1, num_layers).round()]


def distill_encoder(texts: Sequence[str], out_dir: str | Path, config: DistillConfig | None = None) -> DistillInfo:
    """Train a ``num_layers`` student to reproduce the teacher's sentence embedding of ``texts``; resumes."""
    import torch
    from datasets import Dataset
    from sentence_transformers.sentence_transformer.losses import MSELoss

    config = config or DistillConfig()
    out = Path(out_dir)
    info_file = out / INFO_FILE
    if info_file.is_file():
        return DistillInfo.model_validate_json(info_file.read_text())
    if config.threads:
        torch.set_num_threads(config.threads)
    unique = list(dict.fromkeys(normalize(text).text for text in texts if text.strip()))
    if len(unique) < MIN_TEXTS:
        raise BuilderError(f"distillation needs at least {MIN_TEXTS} distinct texts, got {len(unique)}")
    random.Random(config.seed).shuffle(unique)
    held = min(config.validation_texts, len(unique) // 5)
    held_out, train_texts = unique[:held], unique[held:][: config.max_texts]

    base = base_model_path(config.base_model)
    teacher = sentence_encoder(base, config.max_length)
    student = sentence_encoder(base, config.max_length)
    bert = student[0].auto_model
    kept = student_layers(bert.config.num_hidden_layers, config.num_layers)
    bert.encoder.layer = torch.nn.ModuleList([bert.encoder.layer[i] for i in kept])
    bert.config.num_hidden_layers = config.num_layers

    started = time.perf_counter()
    target = _encode(teacher, held_out, config)
    before = _mean_cosine(_encode(student, held_out, config), target)
    labels = _encode(teacher, train_texts, config)
    data = Dataset.from_dict({"text": train_texts, "label": labels.tolist()})
    train_sentence_model(
        student, data, MSELoss(student), out / "checkpoints", epochs=config.epochs, batch_size=config.batch_size,
        learning_rate=config.learning_rate, seed=config.seed, progress=config.progress,
    )  # fmt: skip
    after = _mean_cosine(_encode(student, held_out, config), target)

    student.save(str(out / TrainingRun.MODEL_DIR))
    info = DistillInfo(
        base_model=base,
        num_layers=config.num_layers,
        kept_layers=kept,
        texts=len(train_texts),
        epochs=config.epochs,
        cosine_before=round(before, 4),
        cosine_after=round(after, 4),
        train_seconds=round(time.perf_counter() - started, 1),
    )
    write_atomic(info_file, json.dumps(info.model_dump(), indent=2) + "\n", what="distillation record")
    logger.info("student of %d layers: cosine to the teacher %.3f -> %.3f", config.num_layers, before, after)
    return info


def _encode(model: SentenceTransformer, texts: Sequence[str], config: DistillConfig) -> np.ndarray:
    return model.encode(list(texts), batch_size=config.batch_size, convert_to_numpy=True, show_progress_bar=False)


def _mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).mean())
