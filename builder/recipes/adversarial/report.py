"""How a round's model is measured (the holdout and extra eval sets, decided at thresholds calibrated on the run's
own validation split), and the reports a run writes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from ...data.dataset import iter_text_rows
from ...errors import DatasetError
from ...export.calibrate import calibrate_threshold
from ...export.parity import torch_scorer
from ...llm.client import LLMUsage
from ...train.run import ModelKind, TrainingRun
from .bandit import ArmState
from .operators import content_words


class EvalSet(BaseModel):
    """An extra set every round is measured on (never trained on): JSONL rows with ``text`` and either ``label``
    (``unsafe``/``safe``, the shared/eval format) or ``labels`` (the training format); ``split`` keeps only rows
    whose ``meta.split`` is that value."""

    name: str
    path: Path
    split: str | None = None

    @classmethod
    def parse(cls, spec: str) -> EvalSet:
        """``NAME=PATH`` or ``NAME=PATH:SPLIT``."""
        name, sep, rest = spec.partition("=")
        if not sep or not name or not rest:
            raise ValueError(f"an eval set is NAME=PATH or NAME=PATH:SPLIT, got {spec!r}")
        path, _, split = rest.partition(":")
        return cls(name=name, path=Path(path), split=split or None)

    def load(self) -> tuple[list[str], np.ndarray]:
        if not self.path.is_file():
            raise DatasetError(self.path, "no such file (eval set)")
        texts: list[str] = []
        truth: list[bool] = []
        for row in iter_text_rows(self.path):
            meta = row.get("meta")
            if self.split is not None and (meta.get("split") if isinstance(meta, dict) else None) != self.split:
                continue
            texts.append(row["text"])
            truth.append(row["label"] == "unsafe" if "label" in row else bool(row.get("labels")))
        if not texts:
            raise DatasetError(self.path, f"holds no rows{f' of split {self.split!r}' if self.split else ''}")
        return texts, np.asarray(truth, dtype=bool)


class SetMetrics(BaseModel):
    rows: int
    positives: int
    auprc: float | None
    accuracy: float
    precision: float
    recall: float
    f1: float
    fpr: float | None


class RoundReport(BaseModel):
    round: int
    arms: list[ArmState]
    """Posteriors after this round's pulls (before the discount that precedes the next round); their ``pulls`` and
    ``rewards`` count every round so far."""
    pulls: dict[str, int]
    """This round's pulls per arm."""
    posterior_means: dict[str, float]
    mean_reward: float | None
    candidates: int
    """Pulls whose operator produced a text."""
    verified: int
    dropped: dict[str, int]
    hard: int
    added: int
    added_by_label: dict[str, int]
    train_examples: int
    thresholds: dict[str, float]
    holdout: SetMetrics
    eval: dict[str, SetMetrics]
    train_seconds: float
    adversarial_seconds: float
    """Proposing, verifying and scoring this round's candidates (0 for round 0)."""
    llm_requests: int


class AdversarialReport(BaseModel):
    policy: str
    model: str
    model_kind: ModelKind
    data_sha256: str
    rounds: list[RoundReport]
    final_run: str
    """The last round's training run: export it with ``guard-build export --run``."""
    llm_usage: LLMUsage
    llm_invocations: list[LLMUsage]
    seconds: float
    """This invocation's wall time (a resumed run counts only its own)."""
    config: dict[str, Any]


# -- scoring and metrics ---------------------------------------------------------------------------------------------


class ScoredRun:
    """A round's trained model: scores, the decision at thresholds calibrated on its own validation split (as
    export calibrates the bundle's), and its trigger words."""

    def __init__(self, run_dir: Path) -> None:
        run = TrainingRun(run_dir)
        self.labels = run.info().label_names
        self.score_fn = torch_scorer(run_dir)
        validation = run.validation(self.labels)
        scores = self.score_fn([ex.text for ex in validation.examples])
        truth = np.asarray(validation.targets(), dtype=bool)
        self.thresholds = np.asarray([calibrate_threshold(scores[:, j], truth[:, j]) for j in range(len(self.labels))])

    def decide(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per text: the highest label score, whether any label reached its threshold, and the margin (how far the
        text is from the decision boundary, in the units of the deciding label's score)."""
        scores = self.score_fn(texts) if texts else np.zeros((0, len(self.labels)))
        excess = scores - self.thresholds
        return scores.max(axis=1), (excess >= 0).any(axis=1), np.abs(excess.max(axis=1))

    def trigger_words(self, text: str, k: int = 3) -> list[str]:
        """The source's words that the model, reading each alone, finds most violating."""
        words = content_words(text)
        if not words:
            return []
        scores = self.score_fn(words).max(axis=1)
        return [words[i] for i in np.argsort(-scores, kind="stable")[:k]]


def measure_run(run_dir: str | Path, eval_sets: Sequence[EvalSet]) -> dict[str, SetMetrics]:
    """Metrics of any training run on ``eval_sets``, decided as the rounds decide (torch scores, any label at its
    threshold calibrated on the run's validation split): e.g. the same data trained with other seeds, to see how
    much of a round-to-round difference is the split's noise."""
    return measure(ScoredRun(Path(run_dir)), [(s.name, *s.load()) for s in eval_sets])


def measure(model: ScoredRun, sets: Sequence[tuple[str, list[str], np.ndarray]]) -> dict[str, SetMetrics]:
    measured: dict[str, SetMetrics] = {}
    for name, texts, truth in sets:
        scores, flagged, _ = model.decide(texts)
        measured[name] = _metrics(truth, scores, flagged)
    return measured


def _metrics(truth: np.ndarray, scores: np.ndarray, flagged: np.ndarray) -> SetMetrics:
    from sklearn.metrics import average_precision_score

    tp, fp = int((flagged & truth).sum()), int((flagged & ~truth).sum())
    fn, tn = int((~flagged & truth).sum()), int((~flagged & ~truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    both = bool(truth.any() and (~truth).any())
    return SetMetrics(
        rows=len(truth),
        positives=int(truth.sum()),
        auprc=round(float(average_precision_score(truth, scores)), 4) if both else None,
        accuracy=round((tp + tn) / len(truth), 4),
        precision=round(precision, 4),
        recall=round(recall, 4),
        f1=round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0,
        fpr=round(fp / (fp + tn), 4) if fp + tn else None,
    )


def render_report(report: AdversarialReport) -> str:
    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    names = list(report.rounds[0].eval) if report.rounds else []
    header = ["round", "pulls", "mean reward", "added", "train rows", "holdout AUPRC", "holdout acc", "holdout FPR"]
    header += [f"{name} {m}" for name in names for m in ("AUPRC", "acc", "FPR")]
    lines = [
        f"# Adversarial rounds: {report.policy}",
        "",
        f"Generator and judge: `{report.model}`; model: {report.model_kind}; {len(report.rounds) - 1} round(s) after round 0.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in report.rounds:
        cells = [
            r.round, sum(r.pulls.values()), fmt(r.mean_reward), r.added, r.train_examples,
            fmt(r.holdout.auprc), fmt(r.holdout.accuracy), fmt(r.holdout.fpr),
        ]  # fmt: skip
        cells += [fmt(v) for name in names for v in (r.eval[name].auprc, r.eval[name].accuracy, r.eval[name].fpr)]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", "## Arms (posterior mean after each round; pulls)", ""]
    operators = [a.operator for a in report.rounds[-1].arms] if len(report.rounds) > 1 else []
    lines += ["| round | " + " | ".join(operators) + " |", "|---|" + "---|" * len(operators)]
    for r in report.rounds[1:]:
        lines.append(
            f"| {r.round} | " + " | ".join(f"{r.posterior_means[o]:.2f} ({r.pulls[o]})" for o in operators) + " |"
        )
    lines += ["", "## Per round", ""]
    for r in report.rounds[1:]:
        lines.append(
            f"- round {r.round}: {r.candidates} candidates, {r.verified} verified, dropped {r.dropped or 'none'}, "
            f"{r.hard} hard, {r.added} added {r.added_by_label}; adversarial {r.adversarial_seconds:.0f} s "
            f"({r.llm_requests} LLM requests), training {r.train_seconds:.0f} s"
        )
    usage = report.llm_usage
    lines += [
        "",
        (
            f"LLM: {usage.requests} requests, {usage.cache_hits} cache hits, {usage.unusable_replies} unusable "
            f"replies, {usage.request_seconds:.0f} s of requests over {len(report.llm_invocations)} invocation(s)."
        ),
        "",
    ]
    return "\n".join(lines)
