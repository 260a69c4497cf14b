"""Fine-tune a small encoder for sequence classification on a labeled dataset.

The training run (``builder.train.run``) holds a Hugging Face checkpoint (safetensors). A killed run resumes from its
last ``checkpoint-*`` folder.

Exchange data (rows with a ``context``: the request each answer answers) trains a guard that reads the pair
``(request, answer)``, as the runtime pairs them: the request cut to its last
``context_tokens`` tokens, the answer truncated to what is left of ``max_length``. Conversation data (rows whose
``context`` is the list of earlier turns) trains one that reads ``(earlier turns, latest turn)`` the same way, the turns
rendered one per line as ``{role}: {content}``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pydantic import Field

from guard_sdk import normalize
from guard_sdk.bundle import ContextKind

from ..data.dataset import LabeledDataset
from ..errors import BuilderError
from .run import RunConfig, TrainingInfo, base_model_path, start_run, tokenize

__all__ = ["TrainConfig", "train"]

logger = logging.getLogger("builder.train.classifier")


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
    """Exchange data: the request's last tokens kept before each answer; conversation data: the earlier turns' last
    tokens kept before each latest turn. At most half of ``max_length``."""


def _context(dataset: LabeledDataset, config: RunConfig, context_tokens: int) -> tuple[ContextKind, int] | None:
    """What the guard reads besides its text (exchange or conversation data: rows with a context) and how many of
    its last tokens, None for other data; refuses data and settings a guard cannot be built from."""
    try:
        kind = dataset.context_kind()
    except ValueError as exc:
        raise BuilderError(str(exc)) from None
    if kind is None:
        return None
    if dataset.instructions() is not None:
        raise BuilderError("rows have both an instruction and a context: a multi-task guard reads text alone")
    if context_tokens > config.max_length // 2:
        raise BuilderError(
            f"context_tokens ({context_tokens}) must leave at least half of max_length ({config.max_length}) to the "
            f"text: raise max_length (to {2 * context_tokens} or more) or lower context_tokens"
        )
    return kind, context_tokens


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
    context = _context(dataset, config, config.context_tokens)
    context_tokens = None if context is None else context[1]
    base = base_model_path(config.base_model)
    run, train_set, validation_set = start_run(dataset, out_dir, config)
    out = run.folder
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
        encoded = tokenize(
            tokenizer,
            texts,
            part.instructions(),
            config.max_length,
            contexts=part.rendered_contexts(),
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
    trainer.save_model(str(run.model_dir))

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
        **({"context_kind": context[0]} if context else {}),
    )
    run.finish(info)
    return info
