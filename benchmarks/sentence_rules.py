"""Which rule for scoring sentences finds a payload behind benign text without flagging more benign text (issue #25).

    python -m benchmarks.sentence_rules [--pack DIR] [--per-set 200] [--name sentence_rules]

For every text (the probe payloads of ``benchmarks.attacks`` that the pack flags alone, behind each benign preamble
and before it; the benign sets of ``benchmarks.attacks``; the pack's own benign validation texts) and every label of
the pack's two text guards, three scores: the whole text's, as ``check`` reads it without sentence views; and, for
each of its sentences, the sentence pooled from the encoder's run over the text (``sentences_in_context``, the
shipped view, first window, as export calibrates it) and the sentence checked as a text of its own (``sentences``).

A rule scores each sentence from those two (in context; alone; their geometric mean, minimum or maximum) and flags
a text when its whole text is over the label's threshold or a sentence's rule score is over the rule's threshold for
that label. Each rule's thresholds are placed as export places the shipped sentence threshold: the lowest that flags
at most ``rate`` / labels of the guard's benign validation sentences (never below the whole-text threshold), at
several rates. Nothing here is fitted to the benign sets or the probes; the table is the trade each rule offers.
Writes ``<name>.json`` and ``<name>.md`` under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._common import RESULTS, markdown_table, training_run, write_results
from .attacks import PAYLOADS, PREAMBLES, benign_sets

if TYPE_CHECKING:
    from guard_sdk import Guard, GuardBundle

GUARDS = ["content-safety", "prompt-injection"]
RATES = [0.0025, 0.005, 0.01, 0.02, 0.04]
# Sentence score from (in context, alone).
RULES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "in context": lambda ctx, alone: ctx,
    "alone": lambda ctx, alone: alone,
    "geometric mean": lambda ctx, alone: np.sqrt(np.clip(ctx, 0, 1) * np.clip(alone, 0, 1)),
    "minimum": np.minimum,
    "maximum (either view)": np.maximum,
}


@dataclass
class Scored:
    """One text: its whole-text scores (labels,) and its sentences' scores in context and alone (sentences, labels)."""

    whole: np.ndarray
    in_context: np.ndarray
    alone: np.ndarray


def score_texts(whole_text: Guard, texts: Sequence[str]) -> list[Scored]:
    """Every label of ``whole_text``'s bundles (the pack's text guards, sentence views off), in their order."""
    from builder.export.calibrate import text_sentence_scores

    whole = np.asarray([[s.score for s in r.scores] for r in whole_text.check_batch(list(texts))])
    per_guard = [text_sentence_scores(b.path, list(texts), b.manifest.tokenizer.max_length) for b in whole_text.bundles]
    in_context = [np.concatenate([scores[i][0] for scores in per_guard], axis=1) for i in range(len(texts))]
    spans = per_guard[0]
    sentences = [text[a:b] for text, (_, held) in zip(texts, spans) for a, b in held]
    alone_all = [[s.score for s in r.scores] for r in whole_text.check_batch(sentences)] if sentences else []
    out, k = [], 0
    for i, (_, held) in enumerate(spans):
        alone = np.asarray(alone_all[k : k + len(held)]).reshape(len(held), whole.shape[1])
        out.append(Scored(whole[i], in_context[i], alone))
        k += len(held)
    return out


def validation_benign(bundle: GuardBundle) -> list[str]:
    """The benign rows of the validation split the pack's export calibrated ``bundle`` on."""
    from builder.data.dataset import iter_text_rows

    return [row["text"] for row in iter_text_rows(training_run(bundle) / "validation.jsonl") if not row.get("labels")]


def thresholds(
    rule: Callable[[np.ndarray, np.ndarray], np.ndarray],
    validation: dict[str, list[Scored]],
    label_guard: np.ndarray,
    whole_thresholds: np.ndarray,
    rate: float,
) -> np.ndarray:
    """Per label: the lowest threshold flagging at most ``rate`` / (its guard's labels) of its guard's benign
    validation sentences, never below the whole-text threshold (as ``builder.export.calibrate.sentence_threshold``)."""
    out = whole_thresholds.copy()
    for g, guard in enumerate(GUARDS):
        scores = np.concatenate([rule(s.in_context, s.alone) for s in validation[guard] if len(s.alone)])
        labels = np.flatnonzero(label_guard == g)
        for j in labels:
            highest = np.sort(scores[:, j])[::-1]
            allowed = int(np.floor(highest.size * rate / labels.size))
            out[j] = min(1.0, max(whole_thresholds[j], float(np.nextafter(highest[allowed], 1.0))))
    return out


def flag_rate(
    texts: list[Scored],
    whole_thresholds: np.ndarray,
    rule: Callable[[np.ndarray, np.ndarray], np.ndarray],
    sentence_thresholds: np.ndarray,
    labels: np.ndarray,
) -> float:
    """Share of texts flagged on ``labels`` (a mask) by the whole text or a sentence under ``rule``."""
    flagged = 0
    for s in texts:
        hit = (s.whole >= whole_thresholds) & labels
        if len(s.alone):
            hit |= (rule(s.in_context, s.alone) >= sentence_thresholds).any(axis=0) & labels
        flagged += bool(hit.any())
    return round(flagged / max(1, len(texts)), 3)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from guard_sdk import Guard, ScanOptions, default_pack_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pack", type=Path, default=None, help="pack folder (default: guard_sdk.default_pack_dir())")
    parser.add_argument("--per-set", type=int, default=200, help="benign texts per set")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="sentence_rules")
    args = parser.parse_args(argv)
    pack = args.pack or default_pack_dir()

    whole_text = Guard(
        [pack / g for g in GUARDS], threads=2, scan=ScanOptions(sentences_in_context=False, decode=False)
    )
    labels = [(g, label) for g, b in enumerate(whole_text.bundles) for label in b.manifest.labels]
    label_guard = np.asarray([g for g, _ in labels])
    whole_thresholds = np.asarray([label.threshold for _, label in labels])
    shipped = np.asarray([label.sentence_threshold or label.threshold for _, label in labels])
    probes = [p for p, r in zip(PAYLOADS, whole_text.check_batch(PAYLOADS)) if r.flagged]
    sets: dict[str, list[str]] = {
        "payload behind a preamble": [f"{pre} {p}" for pre in PREAMBLES for p in probes],
        "payload before the same text": [f"{p} {pre}" for pre in PREAMBLES for p in probes],
        **benign_sets(random.Random(0), args.per_set),
    }
    scored = {name: score_texts(whole_text, texts) for name, texts in sets.items()}
    validation = {g: score_texts(whole_text, validation_benign(b)) for g, b in zip(GUARDS, whole_text.bundles)}
    every_label = np.ones(len(labels), dtype=bool)

    columns = [*sets, *(f"{g} validation (benign)" for g in GUARDS)]

    def row(rule: Callable[[np.ndarray, np.ndarray], np.ndarray], sentence_thresholds: np.ndarray) -> list[float]:
        rates = [flag_rate(scored[name], whole_thresholds, rule, sentence_thresholds, every_label) for name in sets]
        # A guard's validation rows are benign for that guard only (the other guard's violations may be among them).
        return rates + [
            flag_rate(validation[guard], whole_thresholds, rule, sentence_thresholds, label_guard == g)
            for g, guard in enumerate(GUARDS)
        ]

    results: dict[str, list[float]] = {
        "whole text only": row(RULES["in context"], np.full(len(labels), np.inf)),
        "in context, shipped thresholds": row(RULES["in context"], shipped),
    }
    for name, rule in RULES.items():
        for rate in RATES:
            results[f"{name} @ {rate:g}"] = row(rule, thresholds(rule, validation, label_guard, whole_thresholds, rate))
    out = {
        "pack": str(pack),
        "probes flagged alone": f"{len(probes)}/{len(PAYLOADS)}",
        "columns": columns,
        "rows": results,
    }
    table = markdown_table(["rule @ sentence flag rate", *columns], [[k, *v] for k, v in results.items()])
    write_results(args.out, args.name, out, table + "\n")
    return out


if __name__ == "__main__":
    main()
