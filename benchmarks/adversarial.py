"""Adversarial rounds (``builder.recipes.adversarial``) on the default pack's prompt-injection data, round by round.

    python -m benchmarks.adversarial [--rows 2000] [--rounds 3] [--candidates 8] [--work .cache/adversarial]

Writes the pack's training files (``builder.recipes.pack.pack_datasets``) if they are missing, takes a seeded slice of
``prompt-injection.jsonl`` (``--rows``; 0 = all), and runs the rounds with the embedding head and the embedded
SmolLM2 (or the endpoint in OPENAI_BASE_URL / OPENAI_MODEL). Round 0 is the same data without adversarial examples:
the ablation. Every round is measured on the deepset prompt-injection test split and on the held-out benign texts
with trigger words (every row safe: FPR = 1 - accuracy), neither of which is ever trained on. Writes
``results/adversarial/adversarial.json`` and ``adversarial.md``; the run folder resumes when killed.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._common import CACHE, EVAL_DIR, RESULTS, TRAIN_DIR, machine_info, markdown_table, write_json


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000, help="seeded slice of the training file (0: all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=8, help="bandit pulls per round")
    parser.add_argument("--second-round", action="store_true", help="debate a second round on disagreement")
    parser.add_argument("--min-confidence", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--noise-seeds", type=int, nargs="*", default=[14, 15], help="round 0's data retrained with these seeds"
    )
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--work", type=Path, default=CACHE / "adversarial")
    parser.add_argument("--out", type=Path, default=RESULTS / "adversarial")
    args = parser.parse_args(argv)

    from builder.data.dataset import load_jsonl
    from builder.data.policy import load_policy
    from builder.data.verify import DebateConfig
    from builder.recipes.adversarial import AdversarialConfig, EvalSet, measure_run, render_report, run_adversarial
    from builder.recipes.pack import PackConfig, pack_datasets
    from builder.train.embedding import EmbeddingGuardConfig, train_embedding_guard
    from builder.train.run import TrainingRun

    started = time.perf_counter()
    data_dir = args.work / "data"
    if not (data_dir / "prompt-injection.jsonl").is_file():
        pack_datasets(PackConfig(seed_sets=TRAIN_DIR, seed=args.seed), data_dir)
    rows = (data_dir / "prompt-injection.jsonl").read_text(encoding="utf-8").split("\n")
    rows = [row for row in rows if row.strip()]
    if args.rows and args.rows < len(rows):
        rows = random.Random(args.seed).sample(rows, args.rows)
    sliced = args.work / f"prompt-injection-{len(rows)}.jsonl"
    sliced.write_text("".join(row + "\n" for row in rows), encoding="utf-8")

    policy = load_policy(Path(__file__).resolve().parent.parent / "examples" / "policies" / "prompt-injection.yaml")
    config = AdversarialConfig(
        rounds=args.rounds,
        candidates_per_round=args.candidates,
        embedding=EmbeddingGuardConfig(threads=args.threads, progress=False),
        debate=DebateConfig(on_mismatch="drop", min_confidence=args.min_confidence, extra_round=args.second_round),
        seed=args.seed,
        progress=False,
    )
    eval_sets = [
        EvalSet(name="deepset_test", path=EVAL_DIR / "deepset_prompt_injections" / "data.jsonl", split="test"),
        EvalSet(name="benign_trigger_words", path=data_dir / "heldout" / "benign_trigger_words" / "data.jsonl"),
    ]
    report = run_adversarial(sliced, policy, args.work / f"run-{len(rows)}", config=config, eval_sets=eval_sets)
    run = args.work / f"run-{len(rows)}"
    # The noise floor: round 0's very data, other seeds (another internal validation split, so other thresholds).
    noise = {}
    for seed in args.noise_seeds:
        folder = args.work / f"noise-{len(rows)}-seed{seed}"
        if not TrainingRun(folder).finished:
            train_embedding_guard(
                load_jsonl(run / "rounds" / "0" / "train.jsonl"),
                folder,
                EmbeddingGuardConfig(seed=seed, threads=args.threads, progress=False),
            )
        noise[seed] = {
            name: m.model_dump()
            for name, m in measure_run(
                folder, [EvalSet(name="holdout", path=run / "holdout.jsonl"), *eval_sets]
            ).items()
        }
    pulls = [
        json.loads(line)
        for line in (args.work / f"run-{len(rows)}" / "transcripts.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    result = {
        "machine": machine_info([args.threads]),
        "training_rows": len(rows),
        "report": report.model_dump(mode="json"),
        "noise_round0_other_seeds": noise,
        "pulls": [
            {
                "round": p["round"],
                "operator": p["operator"],
                "text": p["candidate"]["text"],
                "intended": p["candidate"]["intended"],
                "verdict": (p["verdict"] or {}).get("verdict"),
                "confidence": (p["verdict"] or {}).get("confidence"),
                "dropped": p["dropped"],
                "score": p["score"],
                "flagged": p["flagged"],
                "reward": p["reward"],
            }
            for p in pulls
        ],
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "adversarial.json", result)
    table = markdown_table(
        ["round", "added", "train rows", "deepset test acc", "deepset test AUPRC", "trigger-words FPR", "holdout AUPRC"]
        + ["adversarial s", "train s", "LLM requests"],
        [
            [
                r.round, r.added, r.train_examples, r.eval["deepset_test"].accuracy, r.eval["deepset_test"].auprc,
                r.eval["benign_trigger_words"].fpr, r.holdout.auprc, r.adversarial_seconds, r.train_seconds,
                r.llm_requests,
            ]
            for r in report.rounds
        ],
    )  # fmt: skip
    noise_table = markdown_table(
        ["round 0 data, seed", "deepset test acc", "deepset test AUPRC", "trigger-words FPR", "holdout AUPRC"],
        [
            [seed, m["deepset_test"]["accuracy"], m["deepset_test"]["auprc"], m["benign_trigger_words"]["fpr"],
             m["holdout"]["auprc"]]
            for seed, m in noise.items()
        ],
    )  # fmt: skip
    (args.out / "adversarial.md").write_text(
        render_report(report)
        + "\n## Against round 0\n\n"
        + table
        + "\n\n## Noise floor: round 0's data retrained with other seeds\n\n"
        + noise_table
        + "\n"
    )
    print(table + "\n\n" + noise_table)
    return result


if __name__ == "__main__":
    main()
