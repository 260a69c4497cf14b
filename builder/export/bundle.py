"""Stage 7: a trained checkpoint becomes a guard bundle.

optimum exports the checkpoint to ONNX and fuses its graph (attention, GELU, LayerNorm), onnxruntime quantizes the
weights to int8, and a parity gate compares torch, ONNX fp32 and ONNX int8 on the validation split: past the
tolerances no bundle is written. Thresholds are calibrated on the validation split scored by the runtime itself
(same normalisation and windows as production), and the manifest records them with metrics and file hashes. An
embedding guard's model also outputs its token embeddings, and each label gets a sentence threshold, calibrated on
the sentences of the benign validation texts as the int8 encoder reads them in context
(``guard_sdk.pool_sentences``). A run trained on exchange data is scored on its (request, answer) pairs throughout,
and its bundle reads input ``exchange`` and takes part in output checks only.
The bundle is assembled in a hidden staging folder and renamed into place, so a half-written bundle never exists.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from guard_sdk import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    BundleManifest,
    EmbeddingSpec,
    Guard,
    InputSpec,
    LabelSpec,
    ModelSpec,
    ScanOptions,
    Stage,
    TokenizerSpec,
    file_sha256,
    normalize,
)

from ..data.dataset import LabeledDataset, load_jsonl
from ..errors import BuilderError, ParityError
from ..train.classifier import HEAD_FILE, MODEL_DIR, TRAINING_INFO, VALIDATION_FILE, Head, TrainingInfo, tokenize

__all__ = [
    "ExportConfig",
    "LabelMetrics",
    "ParityReport",
    "append_linear_head",
    "calibrate_threshold",
    "encoder_sha256",
    "export_bundle",
    "export_fused_fp32",
    "quantize_int8",
    "staged_bundle",
    "torch_scorer",
]

logger = logging.getLogger("builder.export.bundle")

MODEL_FILE = "model.onnx"
FP32_FILE = "model.fp32.onnx"
TOKENIZER_FILE = "tokenizer.json"
HEAD_NODE = "guard_head.MatMul"
EMBEDDING_OUTPUT = "sentence_embedding"
TOKEN_OUTPUT = "token_embeddings"


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
    benign_flag_rate: float | None = Field(None, gt=0, lt=1)
    """Calibrate so that at most this share of the validation texts that violate nothing is flagged by any label:
    each label gets an equal part of it as its false-positive rate on those texts (instead of maximising F1)."""
    sentence_flag_rate: float = Field(0.01, gt=0, lt=1)
    """Embedding guards: the share of the benign validation texts' sentences (pooled in context) that the labels'
    sentence thresholds may flag together, an equal part per label; never below the label's own threshold."""
    extra_files: dict[str, Path] = {}
    """Files copied into the bundle under these names (e.g. ATTRIBUTION.md) and listed with their sha256."""
    stages: Annotated[list[Stage], Field(min_length=1)] | None = None
    """The checks the bundle takes part in; default: input and output, and output alone for a guard trained on
    exchange data (which judges answers)."""
    overwrite: bool = False

    @model_validator(mode="after")
    def _one_calibration(self) -> ExportConfig:
        if self.target_fpr is not None and self.benign_flag_rate is not None:
            raise ValueError("give target_fpr or benign_flag_rate, not both: each sets the thresholds")
        return self

    @property
    def calibration(self) -> str:
        """How the thresholds are set, as recorded in the manifest's metrics."""
        if self.target_fpr is not None:
            return f"target_fpr={self.target_fpr}"
        if self.benign_flag_rate is not None:
            return f"benign_flag_rate={self.benign_flag_rate}"
        return "max_f1"


class ParityReport(BaseModel):
    examples: int
    fp32_max_abs_diff: float
    int8_max_abs_diff: float
    int8_mean_abs_diff: float
    fp32_decision_agreement: float
    int8_decision_agreement: float


class LabelMetrics(BaseModel):
    threshold: float
    precision: float
    recall: float
    f1: float
    fpr: float
    auprc: float | None
    positives: int
    negatives: int


def export_bundle(train_dir: str | Path, out: str | Path, config: ExportConfig) -> BundleManifest:
    """Export ``train_dir`` (the output folder of ``builder.train.train``) as a bundle folder at ``out``."""
    train_dir, out = Path(train_dir), Path(out)
    model_dir = train_dir / MODEL_DIR
    info_file = model_dir / TRAINING_INFO
    if not info_file.is_file():
        raise BuilderError(f"{train_dir} is not a finished training run: {MODEL_DIR}/{TRAINING_INFO} is missing")
    info = TrainingInfo.model_validate_json(info_file.read_text())
    if info.context_tokens is not None and config.stages not in (None, ["output"]):
        raise BuilderError(
            f"{train_dir} was trained on exchange data: its guard judges answers, in output checks only "
            f"(stages ['output']), not {config.stages}"
        )
    validation = load_jsonl(train_dir / VALIDATION_FILE, info.label_names)
    try:
        contexts = validation.contexts()
    except ValueError as exc:
        raise BuilderError(f"{train_dir / VALIDATION_FILE}: {exc}") from None
    if (contexts is None) != (info.context_tokens is None):
        trained = "exchange data (with contexts)" if info.context_tokens is not None else "texts without contexts"
        raise BuilderError(f"{train_dir / VALIDATION_FILE} does not match its run, which was trained on {trained}")
    with staged_bundle(out, overwrite=config.overwrite) as staging:
        manifest = _build(model_dir, info, validation, staging, config)
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
    model_dir: Path, info: TrainingInfo, validation: LabeledDataset, staging: Path, config: ExportConfig
) -> BundleManifest:
    fp32 = export_fused_fp32(model_dir, staging / "onnx", head=info.head)
    quantize_int8(fp32, staging / MODEL_FILE, per_channel=config.per_channel)
    _write_plain_tokenizer(staging / "onnx" / TOKENIZER_FILE, staging / TOKENIZER_FILE)
    embedding = None
    if info.head == "embedding":
        # The runtime applies the head itself, so guards on one encoder share its run (guard_sdk._bundle).
        shutil.copyfile(model_dir / HEAD_FILE, staging / HEAD_FILE)
        embedding = EmbeddingSpec(
            output=EMBEDDING_OUTPUT,
            head_file=HEAD_FILE,
            encoder_sha256=encoder_sha256(staging / MODEL_FILE),
            token_output=TOKEN_OUTPUT,
        )
    if config.keep_fp32:
        shutil.copyfile(fp32, staging / FP32_FILE)
    for name, source in config.extra_files.items():
        shutil.copyfile(source, staging / name)

    texts = [normalize(ex.text).text for ex in validation.examples]
    contexts = validation.contexts()
    requests = None if contexts is None else [normalize(context).text for context in contexts]
    torch_scores, fp32_scores, int8_scores = _score_three_ways(
        model_dir,
        info.head,
        fp32,
        staging / MODEL_FILE,
        texts,
        validation.instructions(),
        info.max_length,
        requests,
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
                f"{VALIDATION_FILE} has rows of tasks {unknown} that the run was not trained on (its tasks: {names})"
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
    draft = _manifest(info, config, labels, stride, staging, embedding, metrics={})
    (staging / MANIFEST_NAME).write_text(draft.model_dump_json(indent=2))
    # Calibrate on what production will compute: the runtime's own normalisation, windows and int8 model (which
    # `check_batch` runs one text per call, as `check` does); whole texts here, their sentences below.
    runtime = Guard(staging, device="cpu", scan=ScanOptions(sentences_in_context=False))
    checked = runtime.check_batch(texts, stage=draft.stages[0], contexts=requests)
    runtime_scores = np.asarray([[s.score for s in r.scores] for r in checked], dtype=np.float64)
    del runtime

    benign = ~targets.any(axis=1)
    if config.benign_flag_rate is not None:
        # Negatives are only the texts that violate nothing (another label's violations do not count against this
        # one), and an equal share of the budget per label keeps their union within it.
        calibrated = relevant & (benign[:, None] | targets)
        rate: float | None = config.benign_flag_rate / len(labels)
    else:
        calibrated, rate = relevant, config.target_fpr
    thresholds = [
        calibrate_threshold(runtime_scores[calibrated[:, j], j], targets[calibrated[:, j], j], rate)
        for j in range(len(labels))
    ]
    # The torch/ONNX scores have one column per label, or one (violates) judged at each row's task's threshold.
    row_thresholds = np.asarray(thresholds)[tasks][:, None] if info.instructions else np.asarray(thresholds)
    parity = _parity(torch_scores, fp32_scores, int8_scores, row_thresholds)
    logger.info("parity: %s", parity.model_dump())
    problems = []
    if parity.fp32_max_abs_diff > config.max_fp32_diff:
        problems.append(f"fp32 max |Δprob| {parity.fp32_max_abs_diff:.2e} > {config.max_fp32_diff:.2e}")
    if parity.int8_max_abs_diff > config.max_int8_diff:
        problems.append(f"int8 max |Δprob| {parity.int8_max_abs_diff:.4f} > {config.max_int8_diff:.4f}")
    if parity.int8_mean_abs_diff > config.max_int8_mean_diff:
        problems.append(f"int8 mean |Δprob| {parity.int8_mean_abs_diff:.4f} > {config.max_int8_mean_diff:.4f}")
    if parity.int8_decision_agreement < config.min_int8_agreement:
        problems.append(
            f"int8 decision agreement {parity.int8_decision_agreement:.3f} < {config.min_int8_agreement:.3f}"
        )
    if problems:
        raise ParityError(
            "the ONNX model does not match the torch model on the validation split ("
            + "; ".join(problems)
            + f"; {parity.examples} examples). No bundle was written. Loosen the tolerances in ExportConfig only "
            "if you accept that drift, or ship fp32 (keep_fp32)."
        )

    labels = [label.model_copy(update={"threshold": t}) for label, t in zip(labels, thresholds)]
    if embedding:
        sentence_scores = _sentence_scores(staging, [text for text, ok in zip(texts, benign) if ok], info.max_length)
        labels = [
            label.model_copy(
                update={"sentence_threshold": _sentence_threshold(sentence_scores[:, j], t, config, len(labels))}
            )
            for j, (label, t) in enumerate(zip(labels, thresholds))
        ]
    metrics = {
        "validation": {
            name: _label_metrics(
                runtime_scores[relevant[:, j], j], targets[relevant[:, j], j], thresholds[j]
            ).model_dump()
            for j, name in enumerate(names)
        },
        "calibration": config.calibration,
        **({"sentence_calibration": f"sentence_flag_rate={config.sentence_flag_rate}"} if embedding else {}),
        # Share of the validation texts that violate nothing flagged by some label (each row on its own labels).
        "benign_flagged": round(float(((runtime_scores >= row_thresholds) & relevant).any(axis=1)[benign].mean()), 4)
        if benign.any()
        else None,
        "parity": parity.model_dump(),
    }
    manifest = _manifest(info, config, labels, stride, staging, embedding, metrics)
    (staging / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2))
    return manifest


def _sentence_scores(bundle: Path, texts: list[str], max_length: int) -> np.ndarray:
    """Head scores of every sentence of these (normalised) texts' first windows, pooled from the int8 encoder's
    token embeddings as the runtime pools them; one row per sentence."""
    from tokenizers import Tokenizer

    from guard_sdk import pool_sentences, sentence_spans
    from guard_sdk._runtime import create_session

    tokenizer = Tokenizer.from_file(str(bundle / TOKENIZER_FILE))
    tokenizer.enable_truncation(max_length)
    session = create_session(bundle / MODEL_FILE, device="cpu", threads=os.cpu_count() or 1)
    params = np.load(bundle / HEAD_FILE)
    rows = [np.zeros((0, params["bias"].shape[0]))]
    for text in texts:
        if not (spans := sentence_spans(text)):
            continue
        encoding = tokenizer.encode(text)
        feeds = {
            "input_ids": np.asarray([encoding.ids], dtype=np.int64),
            "attention_mask": np.asarray([encoding.attention_mask], dtype=np.int64),
            "token_type_ids": np.asarray([encoding.type_ids], dtype=np.int64),
        }
        (tokens,) = session.run([TOKEN_OUTPUT], {i.name: feeds[i.name] for i in session.get_inputs()})
        pooled, _ = pool_sentences(tokens[0], encoding.offsets, (0, len(text)), spans)
        rows.append(1.0 / (1.0 + np.exp(-(pooled @ params["weight"] + params["bias"]))))
    return np.concatenate(rows)


def _sentence_threshold(scores: np.ndarray, threshold: float, config: ExportConfig, labels: int) -> float:
    """The lowest threshold flagging at most ``sentence_flag_rate / labels`` of these benign sentences' scores, and
    never below the label's whole-text ``threshold``."""
    if scores.size < 1 / (config.sentence_flag_rate / labels):
        # Too few benign sentences to place the rate: a sentence is judged as a whole text would be.
        logger.warning("%d benign validation sentences: sentence thresholds = the labels' thresholds", scores.size)
        return threshold
    allowed = int(np.floor(scores.size * config.sentence_flag_rate / labels))
    highest = np.sort(scores)[::-1]
    return float(min(1.0, max(threshold, np.nextafter(highest[allowed], 1.0))))


def export_fused_fp32(model_dir: Path, folder: Path, head: Head = "classifier") -> Path:
    """Export a checkpoint with optimum and fuse its graph; returns the fused fp32 ONNX file.

    ``head="embedding"``: ``model_dir`` is a sentence-transformers folder with ``head.npz`` beside it (an embedding
    guard, ``builder.train.embedding``); optimum exports its sentence embedding and the linear head is appended.
    """
    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import OptimizationConfig

    if head == "embedding":
        main_export(
            str(model_dir),
            output=folder,
            task="feature-extraction",
            library_name="sentence_transformers",
            device="cpu",
        )
        append_linear_head(folder / "model.onnx", model_dir / HEAD_FILE)
    else:
        main_export(str(model_dir), output=folder, task="text-classification", device="cpu")
    # Level 2 fuses attention, GELU and LayerNorm: measured ~20 % faster after int8 than the plain export. Not the
    # residual Add into LayerNorm: ONNX Runtime's CPU SkipLayerNormalization kernel is ~5x slower than the two ops
    # (guard_sdk._runtime, which also keeps the session from re-fusing them at load).
    ORTOptimizer.from_pretrained(folder).optimize(
        OptimizationConfig(
            optimization_level=2,
            optimize_for_gpu=False,
            disable_skip_layer_norm_fusion=True,
            disable_bias_skip_layer_norm_fusion=True,
        ),
        save_dir=folder,
    )
    return folder / "model_optimized.onnx"


def append_linear_head(onnx_file: Path, head_file: Path) -> None:
    """Make the graph's outputs ``logits = sentence_embedding @ weight + bias``, the sentence embedding and the token
    embeddings."""
    import onnx
    from onnx import helper, numpy_helper

    params = np.load(head_file)
    model = onnx.load(str(onnx_file))
    graph = model.graph
    graph.initializer.extend(
        [
            numpy_helper.from_array(params["weight"].astype(np.float32), "guard_head.weight"),
            numpy_helper.from_array(params["bias"].astype(np.float32), "guard_head.bias"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("MatMul", [EMBEDDING_OUTPUT, "guard_head.weight"], ["guard_head.matmul"], name=HEAD_NODE),
            helper.make_node("Add", ["guard_head.matmul", "guard_head.bias"], ["logits"], name="guard_head.Add"),
        ]
    )
    # The logits come first (what every runtime reads); the sentence embedding second, for guards that share it;
    # the token embeddings third, for pooling each sentence of a window (guard_sdk.pool_sentences).
    outputs = {output.name: output for output in graph.output}
    del graph.output[:]
    labels = int(params["bias"].shape[0])
    graph.output.append(helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch_size", labels]))
    graph.output.extend([outputs[EMBEDDING_OUTPUT], outputs[TOKEN_OUTPUT]])
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_file))


def quantize_int8(source: Path, target: Path, *, per_channel: bool) -> None:
    """Dynamic int8 weights (activations quantized at run time), as shipped in ``model.onnx``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # DefaultTensorType: shape inference cannot type the outputs of the fused (com.microsoft) attention nodes.
    # An appended linear head stays fp32: it is tiny, and its steep logistic weights turn int8 rounding of 384
    # weights into probability jumps of 0.25 (measured on the default pack), for no speed gain.
    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        nodes_to_exclude=[HEAD_NODE],
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def encoder_sha256(onnx_file: Path) -> str:
    """sha256 of an embedding guard's graph without its head: equal for guards whose encoders compute the same."""
    import hashlib

    import onnx

    model = onnx.load(str(onnx_file))
    graph = model.graph
    for field, head in (
        (graph.node, [n for n in graph.node if n.name.startswith("guard_head.")]),
        (graph.initializer, [i for i in graph.initializer if i.name.startswith("guard_head.")]),
        (graph.output, [o for o in graph.output if o.name != EMBEDDING_OUTPUT]),
        (graph.value_info, [v for v in graph.value_info if v.name.startswith("guard_head.")]),
    ):
        for item in head:
            field.remove(item)
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def _write_plain_tokenizer(source: Path, target: Path) -> None:
    """The runtime sets truncation (windows) and padding itself; the shipped file carries neither."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(source))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    tokenizer.save(str(target))


def _score_three_ways(
    model_dir: Path,
    head: Head,
    fp32: Path,
    int8: Path,
    texts: list[str],
    instructions: list[str] | None,
    max_length: int,
    contexts: list[str] | None = None,
    context_tokens: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sigmoid scores of torch, ONNX fp32 and ONNX int8 on identical token ids (of each text, or of each text paired
    after its instruction or its context)."""
    from transformers import AutoTokenizer

    from guard_sdk._runtime import create_session

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    reference = _torch_logits(model_dir, head)
    # The runtime's own session settings: graph fusions move int8 scores a little, and parity is about what ships.
    sessions = [create_session(path, device="cpu", threads=os.cpu_count() or 1) for path in (fp32, int8)]
    results: list[list[np.ndarray]] = [[], [], []]
    for start in range(0, len(texts), 32):
        batch = tokenize(
            tokenizer,
            texts[start : start + 32],
            instructions[start : start + 32] if instructions else None,
            max_length,
            contexts=contexts[start : start + 32] if contexts is not None else None,
            context_tokens=context_tokens,
            padding=True,
            return_tensors="np",
        )
        results[0].append(reference(batch))
        # ONNX one text per call, unpadded, as `Guard.check` runs it: dynamic int8 picks one activation scale per
        # call, so a text scored beside others moves with them (up to 0.19 in probability on the default pack).
        for row, length in enumerate(batch["attention_mask"].sum(axis=1)):
            for i, session in enumerate(sessions, start=1):
                feeds = {
                    inp.name: batch[inp.name][row : row + 1, :length].astype(np.int64) for inp in session.get_inputs()
                }
                results[i].append(session.run(None, feeds)[0])
    torch_s, fp32_s, int8_s = (1.0 / (1.0 + np.exp(-np.concatenate(r).astype(np.float64))) for r in results)
    return torch_s, fp32_s, int8_s


def _torch_logits(model_dir: Path, head: Head) -> Callable[[Mapping[str, np.ndarray]], np.ndarray]:
    """The trained model in torch, as a function of a tokenized batch: the reference the ONNX files must match."""
    import torch

    if head == "embedding":
        from sentence_transformers import SentenceTransformer

        encoder = SentenceTransformer(str(model_dir), device="cpu").eval()
        params = np.load(model_dir / HEAD_FILE)

        def embedding_logits(batch: Mapping[str, np.ndarray]) -> np.ndarray:
            with torch.inference_mode():
                features = encoder({k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()})
            return features["sentence_embedding"].numpy() @ params["weight"] + params["bias"]

        return embedding_logits

    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()

    def classifier_logits(batch: Mapping[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return model(**{k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}).logits.numpy()

    return classifier_logits


def torch_scorer(train_dir: str | Path, *, batch_size: int = 32) -> Callable[[Sequence[str]], np.ndarray]:
    """The torch model of a finished training run as a function of texts: sigmoid scores, one row per text and one
    column per label. Texts are normalised like the runtime's and truncated to the run's window (no sliding windows:
    a cheap reference for builder stages that need the model's opinion before a bundle exists, such as
    ``builder.recipes.adversarial``); a run trained on exchange data judges each text as an answer alone, as the runtime does
    without a request. Loads the model once."""
    from transformers import AutoTokenizer

    model_dir = Path(train_dir) / MODEL_DIR
    info_file = model_dir / TRAINING_INFO
    if not info_file.is_file():
        raise BuilderError(f"{train_dir} is not a finished training run: {MODEL_DIR}/{TRAINING_INFO} is missing")
    info = TrainingInfo.model_validate_json(info_file.read_text())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    logits = _torch_logits(model_dir, info.head)

    def score(texts: Sequence[str]) -> np.ndarray:
        parts = [np.zeros((0, len(info.label_names)))]
        for start in range(0, len(texts), batch_size):
            chunk = [normalize(text).text for text in texts[start : start + batch_size]]
            batch = tokenize(
                tokenizer,
                chunk,
                None,
                info.max_length,
                contexts=None if info.context_tokens is None else [""] * len(chunk),
                context_tokens=info.context_tokens,
                padding=True,
                return_tensors="np",
            )
            parts.append(logits(batch))
        return 1.0 / (1.0 + np.exp(-np.concatenate(parts).astype(np.float64)))

    return score


def _parity(torch_s: np.ndarray, fp32_s: np.ndarray, int8_s: np.ndarray, thresholds: np.ndarray) -> ParityReport:
    decisions = torch_s >= thresholds
    return ParityReport(
        examples=len(torch_s),
        fp32_max_abs_diff=float(np.abs(fp32_s - torch_s).max()),
        int8_max_abs_diff=float(np.abs(int8_s - torch_s).max()),
        int8_mean_abs_diff=float(np.abs(int8_s - torch_s).mean()),
        fp32_decision_agreement=float(((fp32_s >= thresholds) == decisions).mean()),
        int8_decision_agreement=float(((int8_s >= thresholds) == decisions).mean()),
    )


def calibrate_threshold(scores: np.ndarray, truth: np.ndarray, target_fpr: float | None = None) -> float:
    """The threshold with the best F1 (or the lowest one within ``target_fpr``) on validation; 0.5 without both classes."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    scores, truth = np.asarray(scores, dtype=np.float64), np.asarray(truth, dtype=bool)

    if truth.all() or not truth.any():
        logger.warning("validation has only one class for a label: keeping threshold 0.5")
        return 0.5
    if target_fpr is not None:
        fpr, _, thresholds = roc_curve(truth, scores)
        allowed = thresholds[(fpr <= target_fpr) & np.isfinite(thresholds)]
        return float(np.clip(allowed.min(), 0.0, 1.0)) if allowed.size else 1.0
    precision, recall, thresholds = precision_recall_curve(truth, scores)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    best = float(thresholds[int(np.argmax(f1))])
    # The best F1 holds from the next lower score up to `best`: take the middle of that gap, not its edge, so a
    # violation scoring a little under the weakest validation positive is still caught.
    below = scores[scores < best]
    return (best + float(below.max())) / 2 if below.size else best


def _label_metrics(scores: np.ndarray, truth: np.ndarray, threshold: float) -> LabelMetrics:
    from sklearn.metrics import average_precision_score

    flagged = scores >= threshold
    tp = int((flagged & truth).sum())
    fp = int((flagged & ~truth).sum())
    fn = int((~flagged & truth).sum())
    negatives = int((~truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return LabelMetrics(
        threshold=round(threshold, 6),
        precision=round(precision, 4),
        recall=round(recall, 4),
        f1=round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0,
        fpr=round(fp / negatives, 4) if negatives else 0.0,
        auprc=round(float(average_precision_score(truth, scores)), 4) if truth.any() and not truth.all() else None,
        positives=int(truth.sum()),
        negatives=negatives,
    )


def _manifest(
    info: TrainingInfo,
    config: ExportConfig,
    labels: list[LabelSpec],
    stride: int,
    folder: Path,
    embedding: EmbeddingSpec | None,
    metrics: dict[str, object],
) -> BundleManifest:
    files = {MODEL_FILE, TOKENIZER_FILE, *config.extra_files} | ({FP32_FILE} if config.keep_fp32 else set())
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
            fp32_file=FP32_FILE if config.keep_fp32 else None,
            embedding=embedding,
        ),
        tokenizer=TokenizerSpec(file=TOKENIZER_FILE, max_length=info.max_length, stride=stride),
        input=InputSpec()
        if info.context_tokens is None
        else InputSpec(kind="exchange", context_tokens=info.context_tokens),
        stages=config.stages or (["input", "output"] if info.context_tokens is None else ["output"]),
        base_model=info.base_model,
        training_data_sha256=info.data_sha256,
        training=info.model_dump(
            exclude={"label_names", "label_descriptions", "base_model", "data_sha256", "instructions", "context_tokens"}
        ),
        metrics=metrics,
        files={name: file_sha256(folder / name) for name in sorted(files)},
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
