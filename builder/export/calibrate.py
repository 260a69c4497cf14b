"""Thresholds and metrics, on what production computes: the runtime's scores of the validation split (whole texts),
and an embedding guard's benign validation sentences as its int8 encoder reads them in context."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from guard_sdk.bundle import (
    HEAD_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    LabelMetrics,
    create_session,
    pool_sentences,
    sentence_spans,
)

from ..train.embedding import head_scores
from .onnx import TOKEN_OUTPUT

if TYPE_CHECKING:
    from .bundle import ExportConfig

__all__ = [
    "calibrate_threshold",
    "label_metrics",
    "label_thresholds",
    "sentence_scores",
    "sentence_threshold",
    "text_sentence_scores",
]

logger = logging.getLogger("builder.export.calibrate")


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


def label_metrics(scores: np.ndarray, truth: np.ndarray, threshold: float) -> LabelMetrics:
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


def sentence_scores(bundle: Path, texts: list[str], max_length: int) -> np.ndarray:
    """Head scores of every sentence of these (normalised) texts' first windows, pooled from the int8 encoder's
    token embeddings as the runtime pools them; one row per sentence."""
    labels = _head(bundle)[1].shape[0]
    return np.concatenate(
        [np.zeros((0, labels)), *(scores for scores, _ in text_sentence_scores(bundle, texts, max_length))]
    )


def text_sentence_scores(
    bundle: Path, texts: list[str], max_length: int
) -> list[tuple[np.ndarray, list[tuple[int, int]]]]:
    """``sentence_scores`` per text: its sentences' head scores (one row each; none for a text of one short
    sentence) and their spans in the text."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(bundle / TOKENIZER_FILE))
    tokenizer.enable_truncation(max_length)
    session = create_session(bundle / MODEL_FILE, device="cpu", threads=os.cpu_count() or 1)
    weight, bias = _head(bundle)
    out: list[tuple[np.ndarray, list[tuple[int, int]]]] = []
    for text in texts:
        if not (spans := sentence_spans(text)):
            out.append((np.zeros((0, bias.shape[0])), []))
            continue
        encoding = tokenizer.encode(text)
        feeds = {
            "input_ids": np.asarray([encoding.ids], dtype=np.int64),
            "attention_mask": np.asarray([encoding.attention_mask], dtype=np.int64),
            "token_type_ids": np.asarray([encoding.type_ids], dtype=np.int64),
        }
        (tokens,) = session.run([TOKEN_OUTPUT], {i.name: feeds[i.name] for i in session.get_inputs()})
        pooled, held = pool_sentences(tokens[0], encoding.offsets, (0, len(text)), spans)
        out.append((head_scores(pooled, weight, bias), held))
    return out


def _head(bundle: Path) -> tuple[np.ndarray, np.ndarray]:
    params = np.load(bundle / HEAD_FILE)
    return params["weight"], params["bias"]


def sentence_threshold(scores: np.ndarray, threshold: float, config: ExportConfig, labels: int) -> float:
    """The lowest threshold flagging at most ``sentence_flag_rate / labels`` of these benign sentences' scores, and
    never below the label's whole-text ``threshold``."""
    if scores.size < 1 / (config.sentence_flag_rate / labels):
        # Too few benign sentences to place the rate: a sentence is judged as a whole text would be.
        logger.warning("%d benign validation sentences: sentence thresholds = the labels' thresholds", scores.size)
        return threshold
    allowed = int(np.floor(scores.size * config.sentence_flag_rate / labels))
    highest = np.sort(scores)[::-1]
    return float(min(1.0, max(threshold, np.nextafter(highest[allowed], 1.0))))


def label_thresholds(
    scores: np.ndarray, targets: np.ndarray, relevant: np.ndarray, config: ExportConfig
) -> list[float]:
    """Each label's threshold on the runtime's validation ``scores`` (rows x labels; ``relevant``: the rows each label
    is judged on), by ``config.calibration``."""
    if config.threshold is not None:
        return [config.threshold] * targets.shape[1]
    benign = ~targets.any(axis=1)
    if config.benign_flag_rate is not None:
        # Negatives are only the texts that violate nothing (another label's violations do not count against this
        # one), and an equal share of the budget per label keeps their union within it.
        calibrated = relevant & (benign[:, None] | targets)
        rate: float | None = config.benign_flag_rate / targets.shape[1]
    else:
        calibrated, rate = relevant, config.target_fpr
    thresholds = [
        calibrate_threshold(scores[calibrated[:, j], j], targets[calibrated[:, j], j], rate)
        for j in range(targets.shape[1])
    ]
    return thresholds
