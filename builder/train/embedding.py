"""An embedding guard: the sentence embedding of the base model and a linear head per label.

Why: fine-tuning the whole encoder on seed sets learns their sources' styles; the sentence embedding of
all-MiniLM-L6-v2 was trained on a billion sentence pairs and keeps what a text *means*, and generalises better on
sets nobody trained on (benchmarks/README.md, "Default pack").

The training run (``builder.train.run``) holds the sentence-transformers model and ``head.npz``; ``builder.export``
turns it into an ordinary bundle, the head appended to the ONNX graph (``builder.export.onnx.append_linear_head``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from guard_sdk import normalize

from ..data.dataset import LabeledDataset
from ..errors import BuilderError
from .run import RunConfig, TrainingInfo, sentence_encoder, start_run

if TYPE_CHECKING:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from torch import nn

__all__ = ["EmbeddingGuardConfig", "embed_texts", "fit_heads", "train_embedding_guard", "train_sentence_model"]

logger = logging.getLogger("builder.train.embedding")


class EmbeddingGuardConfig(RunConfig):
    regularization: float = Field(1.0, gt=0)
    """Inverse L2 strength (scikit-learn's C) of each label's logistic regression."""
    encode_batch_size: int = Field(64, ge=1)
    """Texts per encoding batch (the triplet fine-tuning has its own)."""
    triplet_epochs: float = Field(0.0, ge=0)
    """First fine-tune the embedding with a batch-hard soft-margin triplet loss, one class per label combination (the
    multi-class variant of "Lightweight Safety Guardrails Using Fine-tuned BERT Embeddings"); 0 keeps the base
    embedding as it is."""
    triplet_batch_size: int = Field(32, ge=4)
    learning_rate: float = Field(2e-5, gt=0)
    progress: bool = True
    embedding_cache: Path | None = None
    """An .npz keeping the base encoder's embeddings between runs (``embed_texts``); it must belong to one base model
    and ``max_length``. Not used with ``triplet_epochs``."""


def train_embedding_guard(
    dataset: LabeledDataset,
    out_dir: str | Path,
    config: EmbeddingGuardConfig | None = None,
    *,
    validation: LabeledDataset | None = None,
) -> TrainingInfo:
    """Embed every training text once, fit one balanced logistic regression per label, save model and head. With
    ``validation``, every row of ``dataset`` trains and those rows validate (``start_run``)."""

    config = config or EmbeddingGuardConfig()
    if dataset.instructions() is not None:
        raise ValueError(
            "the embedding guard does not read instructions: train multi-task data with builder.train.classifier"
        )
    if any(ex.context is not None for ex in dataset.examples):
        raise BuilderError(
            "exchange data or conversation data (rows with a context) needs head=classifier: the embedding guard reads "
            "one text, not a (context, text) pair"
        )
    run, train_set, validation_set = start_run(dataset, out_dir, config, validation)

    encoder = sentence_encoder(config.base_model, config.max_length)
    started = time.perf_counter()
    if config.triplet_epochs:
        _fine_tune_with_triplets(encoder, train_set, run.folder / "triplet", config)
    # A fine-tuned encoder's embeddings are not the base encoder's: they are never cached.
    cache = None if config.triplet_epochs else config.embedding_cache
    embeddings = embed_texts(
        encoder, [ex.text for ex in train_set.examples], config.encode_batch_size, config.progress, cache
    )
    targets = np.asarray(train_set.targets(), dtype=bool)
    for j, name in enumerate(dataset.label_names):
        if targets[:, j].all() or not targets[:, j].any():
            raise ValueError(f"label {name!r} needs positive and negative training examples")
    weight, bias = fit_heads(embeddings, targets, config.regularization)
    seconds = time.perf_counter() - started

    encoder.save(str(run.model_dir))
    np.savez(run.head_file, weight=weight, bias=bias)
    info = TrainingInfo.of_run(
        dataset,
        (train_set, validation_set),
        config,
        steps=0,
        examples_per_second=round(len(train_set.examples) / seconds, 2),
        train_seconds=round(seconds, 1),
        final_loss=None,
        epochs=config.triplet_epochs,
        model_kind="embedding",
    )
    run.finish(info)
    logger.info("embedding guard: %d examples in %.0f s", len(train_set.examples), seconds)
    return info


def embed_texts(
    encoder: SentenceTransformer, texts: list[str], batch_size: int, progress: bool, cache: Path | None = None
) -> np.ndarray:
    """Sentence embeddings of the normalised texts; with ``cache`` (an .npz), texts embedded before are read from it
    and the new ones added to it."""
    normalized = [normalize(text).text for text in texts]
    keys = [hashlib.sha256(text.encode()).hexdigest() for text in normalized]
    known: dict[str, np.ndarray] = {}
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as stored:
            known = dict(zip(stored["keys"].tolist(), stored["vectors"]))
    missing = sorted({key: text for key, text in zip(keys, normalized) if key not in known}.items())
    if missing:
        vectors = encoder.encode(
            [text for _, text in missing], batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True
        )
        known.update(zip((key for key, _ in missing), vectors))
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            partial = cache.with_suffix(".partial.npz")
            np.savez(partial, keys=np.asarray(list(known)), vectors=np.stack(list(known.values())))
            partial.replace(cache)
    return np.stack([known[key] for key in keys]) if keys else np.zeros((0, 0), dtype=np.float32)


def fit_heads(
    embeddings: np.ndarray, targets: np.ndarray, regularization: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """One balanced logistic regression per label (column of ``targets``): the head's ``weight`` and ``bias``."""
    from sklearn.linear_model import LogisticRegression

    weight = np.zeros((embeddings.shape[1], targets.shape[1]), dtype=np.float32)
    bias = np.zeros(targets.shape[1], dtype=np.float32)
    for j in range(targets.shape[1]):
        # Balanced: rare labels (self-harm has ~70 rows among 10k) would otherwise never reach a useful score.
        head = LogisticRegression(C=regularization, class_weight="balanced", max_iter=2000)
        head.fit(embeddings, targets[:, j])
        weight[:, j], bias[j] = head.coef_[0], head.intercept_[0]
    return weight, bias


def head_scores(embeddings: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The head's probabilities, one column per label, as the runtime applies it to sentence embeddings."""
    return 1.0 / (1.0 + np.exp(-(embeddings @ weight + bias)))


def _fine_tune_with_triplets(
    encoder: SentenceTransformer, train_set: LabeledDataset, out: Path, config: EmbeddingGuardConfig
) -> None:
    """Pull texts with the same labels together and push the others apart; resumes from ``out``'s checkpoints."""
    from datasets import Dataset
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import BatchHardSoftMarginTripletLoss

    combinations = sorted({tuple(sorted(ex.labels)) for ex in train_set.examples})
    data = Dataset.from_dict(
        {
            "text": [normalize(ex.text).text for ex in train_set.examples],
            "label": [combinations.index(tuple(sorted(ex.labels))) for ex in train_set.examples],
        }
    )
    train_sentence_model(
        encoder, data, BatchHardSoftMarginTripletLoss(encoder), out, epochs=config.triplet_epochs,
        batch_size=config.triplet_batch_size, learning_rate=config.learning_rate, seed=config.seed,
        progress=config.progress,
        # Every batch holds several texts of each class it draws from: a triplet needs an anchor and a positive.
        batch_sampler=BatchSamplers.GROUP_BY_LABEL,
    )  # fmt: skip


def train_sentence_model(
    model: SentenceTransformer,
    data: Dataset,
    loss: nn.Module,
    out: Path,
    *,
    epochs: float,
    batch_size: int,
    learning_rate: float,
    seed: int,
    progress: bool,
    **arguments: Any,
) -> None:
    """sentence-transformers' trainer on the CPU with the builder's settings; resumes from ``out``'s checkpoints."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    args = SentenceTransformerTrainingArguments(
        output_dir=str(out),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_ratio=0.1,
        seed=seed,
        save_strategy="steps",
        save_steps=100,
        save_total_limit=1,
        logging_steps=20,
        report_to=[],
        use_cpu=True,
        disable_tqdm=not progress,
        **arguments,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss)
    trainer.train(resume_from_checkpoint=True if any(out.glob("checkpoint-*")) else None)
