"""The parity gate: the trained model in torch, the ONNX fp32 and the ONNX int8 models score the validation split,
and past ``ExportConfig``'s tolerances no bundle is written. ``torch_scorer`` is the same reference for builder steps
that need the model's opinion before a bundle exists."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from guard_sdk import normalize
from guard_sdk.bundle import (
    ParityReport,
    create_session,
)

from ..errors import ParityError
from ..train.run import ModelKind, TrainingRun, tokenize

if TYPE_CHECKING:
    from .bundle import ExportConfig

__all__ = ["check_parity", "parity_report", "score_three_ways", "torch_logits", "torch_scorer"]

logger = logging.getLogger("builder.export.parity")


def score_three_ways(
    model_dir: Path,
    kind: ModelKind,
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

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    reference = torch_logits(model_dir, kind)
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


def torch_logits(model_dir: Path, kind: ModelKind) -> Callable[[Mapping[str, np.ndarray]], np.ndarray]:
    """The trained model in torch, as a function of a tokenized batch: the reference the ONNX files must match."""
    import torch

    if kind == "embedding":
        from sentence_transformers import SentenceTransformer

        encoder = SentenceTransformer(str(model_dir), device="cpu").eval()
        params = np.load(model_dir / TrainingRun.HEAD_FILE)

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

    run = TrainingRun(train_dir)
    info = run.info()
    tokenizer = AutoTokenizer.from_pretrained(run.model_dir)
    logits = torch_logits(run.model_dir, info.model_kind)

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


def parity_report(torch_s: np.ndarray, fp32_s: np.ndarray, int8_s: np.ndarray, thresholds: np.ndarray) -> ParityReport:
    decisions = torch_s >= thresholds
    return ParityReport(
        examples=len(torch_s),
        fp32_max_abs_diff=float(np.abs(fp32_s - torch_s).max()),
        int8_max_abs_diff=float(np.abs(int8_s - torch_s).max()),
        int8_mean_abs_diff=float(np.abs(int8_s - torch_s).mean()),
        fp32_decision_agreement=float(((fp32_s >= thresholds) == decisions).mean()),
        int8_decision_agreement=float(((int8_s >= thresholds) == decisions).mean()),
    )


def check_parity(parity: ParityReport, config: ExportConfig) -> None:
    """The gate: past any of ``config``'s tolerances, no bundle is written."""
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
