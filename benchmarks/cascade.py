"""A two-stage cascade: a small bundle clears obviously benign text, the full bundle scores only the rest.

    python -m benchmarks.cascade --first .cache/benchmarks/students/L2/bundle --full .cache/demo/bundle \
        --validation .cache/demo/run/validation.jsonl

The clearing threshold is set on the validation split (never on the evaluation sets): the highest first-stage score
under which no validation text that the full bundle flags would be cleared, times ``--margin``. The evaluation sets
then show what it costs: how many texts still go to the full bundle, how many of the full bundle's flags the cascade
loses, and the resulting mean latency (first-stage time + share forwarded × full time, both measured here).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._common import EVAL_DIR, RESULTS, Engine, log, markdown_table, time_interleaved, write_json
from .accuracy import load_set, metrics


def scores_and_flags(guard: Any, texts: Sequence[str]) -> tuple[list[float], list[bool]]:
    scores, flags = [], []
    for start in range(0, len(texts), 64):
        for r in guard.check_batch(list(texts[start : start + 64])):
            # Each label against its own threshold: a text is as suspicious as its closest call.
            scores.append(max(s.score / s.threshold for s in r.scores))
            flags.append(r.flagged)
    return scores, flags


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--first", type=Path, required=True, help="the small first-stage bundle (same labels)")
    parser.add_argument("--full", type=Path, required=True, help="the full bundle")
    parser.add_argument(
        "--validation", type=Path, required=True, help="JSONL with 'text' to set the clearing threshold on"
    )
    parser.add_argument("--margin", type=float, default=0.8, help="safety factor below the lowest needed score")
    parser.add_argument("--eval-dir", type=Path, default=EVAL_DIR)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from builder.data.dataset import read_texts
    from guard_sdk import Guard

    first, full = (
        Guard(args.first, device="cpu", threads=args.threads),
        Guard(args.full, device="cpu", threads=args.threads),
    )
    if first.labels != full.labels:
        raise SystemExit(f"the stages must have the same labels: {first.labels} vs {full.labels}")
    validation = read_texts(args.validation)
    v_first, _ = scores_and_flags(first, validation)
    _, v_full_flags = scores_and_flags(full, validation)
    needed = [s for s, f in zip(v_first, v_full_flags) if f]
    clear_below = (min(needed) if needed else 1.0) * args.margin
    log(f"cascade: clear texts whose first-stage score/threshold < {clear_below:.3f}")

    sets: dict[str, Any] = {}
    all_texts: list[str] = []
    for folder in sorted(p for p in args.eval_dir.iterdir() if (p / "data.jsonl").is_file()):
        rows = load_set(folder, args.limit)
        texts = [r.text for r in rows]
        all_texts += texts
        s1, _ = scores_and_flags(first, texts)
        s2, f2 = scores_and_flags(full, texts)
        forwarded = [s >= clear_below for s in s1]
        cascade_scores = [b if fwd else a * clear_below for a, b, fwd in zip(s1, s2, forwarded)]
        cascade_flags = [f and fwd for f, fwd in zip(f2, forwarded)]
        truth = [r.unsafe for r in rows]
        sets[folder.name] = {
            "forwarded_share": round(sum(forwarded) / len(rows), 4),
            "full_flags_lost": sum(f and not fwd for f, fwd in zip(f2, forwarded)),
            "full_flags": sum(f2),
            "full": metrics(truth, s2, f2),
            "cascade": metrics(truth, cascade_scores, cascade_flags),
        }
    # Mean cost per text: time both stages on the same texts, round-robin.
    sample = all_texts[:: max(1, len(all_texts) // 64)][:64]
    stats = time_interleaved(
        [
            Engine("first", lambda i: first.check(sample[i % len(sample)])),
            Engine("full", lambda i: full.check(sample[i % len(sample)])),
        ],
        warmup=3,
        min_reps=64,
        max_reps=192,
        budget_s=5.0,
    )
    share = sum(s["forwarded_share"] * s["full"]["rows"] for s in sets.values()) / sum(
        s["full"]["rows"] for s in sets.values()
    )
    result = {
        "first": first.bundles[0].manifest.id,
        "full": full.bundles[0].manifest.id,
        "clear_below_score_over_threshold": round(clear_below, 4),
        "sets": sets,
        "mean_ms": {
            "first": stats["first"].mean,
            "full": stats["full"].mean,
            "cascade": round(stats["first"].mean + share * stats["full"].mean, 3),
        },
        "forwarded_share_all_sets": round(share, 4),
    }
    write_json(args.out / "cascade.json", result)
    text = markdown(result)
    (args.out / "cascade.md").write_text(text + "\n")
    print(text)
    return result


def markdown(r: dict[str, Any]) -> str:
    ms = r["mean_ms"]
    return "\n".join(
        [
            f"# Cascade: {r['first']} first, {r['full']} for the rest",
            "",
            (
                f"Cleared when the first stage's max score/threshold < {r['clear_below_score_over_threshold']} "
                f"(set on validation). Forwarded to the full bundle: {r['forwarded_share_all_sets']:.1%} of all "
                f"evaluation texts. Mean ms per check: first {ms['first']:.2f}, full {ms['full']:.2f}, cascade "
                f"{ms['cascade']:.2f} ({ms['cascade'] / ms['full']:.2f}× the full bundle)."
            ),
            "",
            markdown_table(
                [
                    "set",
                    "forwarded",
                    "full flags lost",
                    "full AUPRC",
                    "cascade AUPRC",
                    "full F1",
                    "cascade F1",
                    "full FPR",
                    "cascade FPR",
                ],
                [
                    [
                        name,
                        f"{s['forwarded_share']:.1%}",
                        f"{s['full_flags_lost']} / {s['full_flags']}",
                        s["full"]["auprc"],
                        s["cascade"]["auprc"],
                        s["full"]["f1"],
                        s["cascade"]["f1"],
                        s["full"]["fpr"],
                        s["cascade"]["fpr"],
                    ]
                    for name, s in r["sets"].items()
                ],
            ),
        ]
    )


if __name__ == "__main__":
    main()
