"""A finished training run becomes a guard bundle.

The ONNX models are written and quantized (``onnx``), the validation split is scored by the runtime itself (same
normalisation, windows and int8 model as production) to calibrate thresholds (``calibrate``), the parity gate
compares torch, ONNX fp32 and ONNX int8 (``parity``), and the manifest records thresholds, metrics and file hashes.
A run trained on exchange data is scored on its (request, answer) pairs throughout, and its bundle reads input
``exchange`` and takes part in output checks only; one trained on conversation data is scored on its (earlier turns,
latest turn) pairs, and its bundle reads input ``conversation`` and checks input by default. The bundle is assembled
in a hidden staging folder and renamed into place, so a half-written bundle never exists.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from guard_sdk import Guard, ScanOptions, Stage, normalize
from guard_sdk.bundle import (
    FP32_MODEL_FILE,
    HEAD_FILE,
    MODEL_FILE,
    SCHEMA_VERSION,
    TOKENIZER_FILE,
    BundleManifest,
    EmbeddingSpec,
    InputSpec,
    LabelSpec,
    ModelSpec,
    RequestGate,
    TokenizerSpec,
    file_sha256,
    write_manifest,
)

from ..data.dataset import LabeledDataset
from ..errors import BuilderError
from ..train.run import TrainingInfo, TrainingRun
from .calibrate import label_metrics, label_thresholds, sentence_scores, sentence_threshold
from .onnx import (
    EMBEDDING_OUTPUT,
    TOKEN_OUTPUT,
    encoder_sha256,
    export_fused_fp32,
    quantize_int8,
    write_plain_tokenizer,
)
from .parity import check_parity, parity_report, score_three_ways

__all__ = ["ExportConfig", "export_bundle", "staged_bundle"]

logger = logging.getLogger("builder.export.bundle")

# Per input kind: a text guard checks both; an exchange guard judges answers; a conversation guard the latest turn.
_DEFAULT_STAGES: dict[str, list[Stage]] = {
    "text": ["input", "output"],
    "exchange": ["output"],
    "conversation": ["input"],
}


class ExportConfig(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)  # field docstrings: guard-build's help

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    version: str = "0.1.0"
    description: str = ""
    per_channel: bool = True
    """Per-channel int8 weights: on MiniLM, 4x smaller max |Δprob| vs torch (0.04 vs 0.16) for ~15 % more latency."""
    keep_fp32: bool = False
    """Also ship the fused fp32 model (4x larger) for ``Guard(precision="fp32")``."""
    stride: int | None = None
    """Tokens shared by consecutive windows of long texts; default a quarter of max_length."""
    max_fp32_diff: float = 1e-3
    """Largest |torch - ONNX fp32| probability allowed: the export itself must be exact."""
    max_int8_diff: float = 0.25
    """Largest |torch - ONNX int8| probability allowed on any one example (catches a broken quantization)."""
    max_int8_mean_diff: float = 0.02
    """Largest mean |torch - ONNX int8| probability allowed (catches drift spread over every example)."""
    min_int8_agreement: float = 0.95
    """Share of validation decisions (at the calibrated thresholds) on which int8 must agree with torch."""
    target_fpr: float | None = Field(None, gt=0, lt=1)
    """Calibrate each threshold to this false-positive rate on validation instead of maximising F1."""
    threshold: float | None = Field(None, gt=0, lt=1)
    """Every label's threshold, as given, instead of one calibrated on the validation rows; those then serve the
    parity gate only, and the manifest records no validation metrics (for a run whose validation rows are its training
    rows, as ``guard-build all`` makes from a policy's words)."""
    benign_flag_rate: float | None = Field(None, gt=0, lt=1)
    """Calibrate so that at most this share of the validation texts that violate nothing is flagged by any label:
    each label gets an equal part of it as its false-positive rate on those texts (instead of maximising F1)."""
    sentence_flag_rate: float = Field(0.01, gt=0, lt=1)
    """Embedding guards: the share of the benign validation texts' sentences (pooled in context) that the labels'
    sentence thresholds may flag together, an equal part per label; never below the label's own threshold."""
    extra_files: dict[str, Path] = {}
    """Files copied into the bundle under these names (e.g. ATTRIBUTION.md) and listed with their sha256."""
    stages: Annotated[list[Stage], Field(min_length=1)] | None = None
    """The checks the bundle takes part in; default: input and output, output alone for a guard trained on exchange
    data (which judges answers), input alone for one trained on conversation data (which judges the latest user
    turn in the light of the earlier ones)."""
    request_gate: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")] | None = None
    """A run trained on exchange data: the text guard (its name) whose judgement of the request and answer scales
    this guard's scores in checks with a request (``guard_sdk.bundle.RequestGate``). Thresholds are calibrated
    without it: a gate only lowers scores."""
    overwrite: bool = False

    @model_validator(mode="after")
    def _one_calibration(self) -> ExportConfig:
        if sum(option is not None for option in (self.target_fpr, self.benign_flag_rate, self.threshold)) > 1:
            raise ValueError("give one of threshold, target_fpr and benign_flag_rate: each sets the thresholds")
        return self

    @property
    def calibration(self) -> str:
        """How the thresholds are set, as recorded in the manifest's metrics."""
        if self.threshold is not None:
            return f"threshold={self.threshold}"
        if self.target_fpr is not None:
            return f"target_fpr={self.target_fpr}"
        if self.benign_flag_rate is not None:
            return f"benign_flag_rate={self.benign_flag_rate}"
        return "max_f1"


def export_bundle(train_dir: str | Path, out: str | Path, config: ExportConfig) -> BundleManifest:
    """Export ``train_dir`` (a finished training run, ``builder.train.run``) as a bundle folder at ``out``."""
    run, out = TrainingRun(train_dir), Path(out)
    info = run.info()
    kind = None if info.context_tokens is None else info.context_kind
    if kind == "exchange" and config.stages not in (None, ["output"]):
        raise BuilderError(
            f"{run.folder} was trained on exchange data: its guard judges answers, in output checks only "
            f"(stages ['output']), not {config.stages}"
        )
    if config.request_gate is not None and kind != "exchange":
        raise BuilderError(
            f"{run.folder} was not trained on exchange data: request_gate gates an answer guard's scores, and this "
            "guard reads no request"
        )
    validation = run.validation(info.label_names)
    try:
        validation_kind = validation.context_kind()
    except ValueError as exc:
        raise BuilderError(f"{run.validation_file}: {exc}") from None
    if validation_kind != kind:
        trained = f"{kind} data (with contexts)" if kind else "texts without contexts"
        raise BuilderError(f"{run.validation_file} does not match its run, which was trained on {trained}")
    with staged_bundle(out, overwrite=config.overwrite) as staging:
        manifest = _build(run, info, validation, staging, config)
    logger.info("wrote bundle %s to %s", manifest.id, out)
    return manifest


@contextmanager
def staged_bundle(out: Path, *, overwrite: bool) -> Iterator[Path]:
    """A hidden folder to assemble a bundle in, renamed to ``out`` only when the block finishes without error."""
    if out.exists() and not overwrite:
        raise BuilderError(f"{out} exists; choose another folder or pass overwrite")
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _build(
    run: TrainingRun, info: TrainingInfo, validation: LabeledDataset, staging: Path, config: ExportConfig
) -> BundleManifest:
    fp32 = export_fused_fp32(run.model_dir, staging / "onnx", kind=info.model_kind)
    quantize_int8(fp32, staging / MODEL_FILE, per_channel=config.per_channel)
    write_plain_tokenizer(staging / "onnx" / TOKENIZER_FILE, staging / TOKENIZER_FILE)
    embedding = None
    if info.model_kind == "embedding":
        # The runtime applies the head itself, so guards on one encoder share its run.
        shutil.copyfile(run.head_file, staging / HEAD_FILE)
        embedding = EmbeddingSpec(
            output=EMBEDDING_OUTPUT,
            head_file=HEAD_FILE,
            encoder_sha256=encoder_sha256(staging / MODEL_FILE),
            token_output=TOKEN_OUTPUT,
        )
    if config.keep_fp32:
        shutil.copyfile(fp32, staging / FP32_MODEL_FILE)
    for name, source in config.extra_files.items():
        shutil.copyfile(source, staging / name)

    texts = [normalize(ex.text).text for ex in validation.examples]
    torch_scores, fp32_scores, int8_scores = score_three_ways(
        run.model_dir,
        info.model_kind,
        fp32,
        staging / MODEL_FILE,
        texts,
        validation.instructions(),
        info.max_length,
        validation.rendered_contexts(),
        info.context_tokens,
    )
    shutil.rmtree(staging / "onnx")

    # A quarter of the window, or of what the request leaves of it.
    stride = config.stride if config.stride is not None else (info.max_length - (info.context_tokens or 0)) // 4
    if info.instructions:
        # A multi-task guard: one label per task, each validation row judged on its own task only.
        names = list(info.instructions)
        row_tasks = [(ex.model_extra or {}).get("task") for ex in validation.examples]
        if unknown := sorted({str(task) for task in row_tasks if task not in names}):
            raise BuilderError(
                f"{run.validation_file} has rows of tasks {unknown} that the run was not trained on (its tasks: {names})"
            )
        tasks = [names.index(str(task)) for task in row_tasks]
        relevant = np.arange(len(names))[None, :] == np.asarray(tasks)[:, None]
        targets = relevant & np.asarray(validation.targets(), dtype=bool)
    else:
        names, tasks = info.label_names, []
        targets = np.asarray(validation.targets(), dtype=bool)
        relevant = np.ones_like(targets)
    labels = [
        LabelSpec(
            name=name,
            description=info.label_descriptions.get(name, ""),
            instruction=info.instructions.get(name),
            sentence_threshold=1.0 if embedding else None,  # calibrated below
        )
        for name in names
    ]
    # Without the request gate: its guard is not here, and a gate only lowers scores, so thresholds set without it hold.
    draft = _manifest(info, config.model_copy(update={"request_gate": None}), labels, stride, staging, embedding, {})
    write_manifest(staging, draft)
    # Calibrate on what production will compute: the runtime's own normalisation, windows and int8 model (which
    # `check_batch` runs one text per call, as `check` does); whole texts here, their sentences below.
    runtime = Guard(staging, device="cpu", scan=ScanOptions(sentences_in_context=False))
    checked = runtime.check_batch(texts, stage=draft.stages[0], contexts=validation.contexts())
    runtime_scores = np.asarray([[s.score for s in r.scores] for r in checked], dtype=np.float64)
    del runtime

    benign = ~targets.any(axis=1)
    thresholds = label_thresholds(runtime_scores, targets, relevant, config)
    # The torch/ONNX scores have one column per label, or one (violates) judged at each row's task's threshold.
    row_thresholds = np.asarray(thresholds)[tasks][:, None] if info.instructions else np.asarray(thresholds)
    parity = parity_report(torch_scores, fp32_scores, int8_scores, row_thresholds)
    logger.info("parity: %s", parity.model_dump())
    check_parity(parity, config)

    labels = [label.model_copy(update={"threshold": t}) for label, t in zip(labels, thresholds)]
    if embedding:
        benign_sentences = sentence_scores(staging, [text for text, ok in zip(texts, benign) if ok], info.max_length)
        labels = [
            label.model_copy(
                update={"sentence_threshold": sentence_threshold(benign_sentences[:, j], t, config, len(labels))}
            )
            for j, (label, t) in enumerate(zip(labels, thresholds))
        ]
    metrics: dict[str, object] = {
        "calibration": config.calibration,
        **({"sentence_calibration": f"sentence_flag_rate={config.sentence_flag_rate}"} if embedding else {}),
        "parity": parity.model_dump(),
    }
    if config.threshold is None:  # else the validation rows may be training rows: their metrics would flatter
        metrics["validation"] = {
            name: label_metrics(
                runtime_scores[relevant[:, j], j], targets[relevant[:, j], j], thresholds[j]
            ).model_dump()
            for j, name in enumerate(names)
        }
        # Share of the validation texts that violate nothing flagged by some label (each row on its own labels).
        metrics["benign_flagged"] = (
            round(float(((runtime_scores >= row_thresholds) & relevant).any(axis=1)[benign].mean()), 4)
            if benign.any()
            else None
        )
    manifest = _manifest(info, config, labels, stride, staging, embedding, metrics)
    write_manifest(staging, manifest)
    return manifest


def _manifest(
    info: TrainingInfo,
    config: ExportConfig,
    labels: list[LabelSpec],
    stride: int,
    folder: Path,
    embedding: EmbeddingSpec | None,
    metrics: dict[str, object],
) -> BundleManifest:
    files = {MODEL_FILE, TOKENIZER_FILE, *config.extra_files} | ({FP32_MODEL_FILE} if config.keep_fp32 else set())
    files |= {embedding.head_file} if embedding else set()
    return BundleManifest(
        schema_version=SCHEMA_VERSION,
        name=config.name,
        version=config.version,
        description=config.description,
        problem_type="binary" if len(labels) == 1 else "multi_label",
        labels=labels,
        model=ModelSpec(
            file=MODEL_FILE,
            precision="int8",
            fp32_file=FP32_MODEL_FILE if config.keep_fp32 else None,
            embedding=embedding,
        ),
        tokenizer=TokenizerSpec(file=TOKENIZER_FILE, max_length=info.max_length, stride=stride),
        input=InputSpec()
        if info.context_tokens is None
        else InputSpec(
            kind=info.context_kind,
            context_tokens=info.context_tokens,
            request_gate=None if config.request_gate is None else RequestGate(guard=config.request_gate),
        ),
        stages=config.stages or _DEFAULT_STAGES["text" if info.context_tokens is None else info.context_kind],
        base_model=info.base_model,
        training_data_sha256=info.data_sha256,
        training=info.model_dump(
            exclude={
                "label_names",
                "label_descriptions",
                "base_model",
                "data_sha256",
                "instructions",
                "context_tokens",
                "context_kind",
            }
        ),
        metrics=metrics,
        files={name: file_sha256(folder / name) for name in sorted(files)},
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
