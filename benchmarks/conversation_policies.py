"""Conversation policies (``input: conversation``) on held-out conversations the builder never sees.

    python -m benchmarks.conversation_policies [--epochs 15] [--threads 2] [--policies a,b]

For each conversation policy of ``examples/policies/`` with ``heldout/<name>.jsonl`` (40 conversations written by the
engineers, 20 violating; in more than half of them the same latest turn appears once violating and once allowed),
three guards are fine-tuned from MiniLM (``builder.train.classifier``) on the policy's labeled seeds alone and
exported to int8 bundles:

- ``conversation``: the seeds as conversation rows: the guard reads (earlier turns, latest turn);
- ``conversation+swap``: the same, plus each violating seed's latest turn after an allowed seed's earlier turns (in
  turn), labeled allowed (paraphrase-free augmentation: it assumes a violating follow-up is harmless after a conversation
  that gave it nothing to follow up on);
- ``latest-turn``: the baseline, the seeds' latest turns alone: a text guard that never sees the earlier turns.

Reported per policy and method: held-out AUPRC on all 40, and on the paired conversations alone (where the latest
turn cannot decide: a guard that ignores the earlier turns scores both alike). Writes
``results/conversation_policies/conversation_policies.{json,md}``; runs and bundles (GBs of checkpoints) are kept only
with ``--work``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from builder.data.dataset import LabeledExample, load_jsonl, write_jsonl
from builder.data.policy import Policy, load_policy

from ._common import RESULTS, ROOT, log, machine_info, markdown_table, write_json

POLICIES = ROOT / "examples" / "policies"
OUT = RESULTS / "conversation_policies"
METHODS = ("conversation", "conversation+swap", "latest-turn")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="keep runs and bundles here (default: a temporary folder)")
    parser.add_argument("--policies", help="comma-separated policy names (default: every conversation policy)")
    parser.add_argument("--epochs", type=float, default=15.0)
    parser.add_argument("--context-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=13)
    return parser.parse_args(argv)


def training_rows(policy: Policy, method: str) -> list[LabeledExample]:
    rows = policy.seed_examples()
    if method == "latest-turn":
        return [row.model_copy(update={"context": None}) for row in rows]
    if method == "conversation+swap":
        violating = [row for row in rows if row.labels]
        allowed = [row.context for row in rows if not row.labels and row.context]
        rows += [
            LabeledExample(text=v.text, labels=[], context=allowed[i % len(allowed)])
            for i, v in enumerate(violating)
            if allowed
        ]
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="conversation-policies-") as scratch:
        return _measure(args, args.work or Path(scratch))


def _measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from sklearn.metrics import average_precision_score

    from builder.export import ExportConfig, export_bundle
    from builder.train.classifier import TrainConfig, train
    from guard_sdk import Guard

    paths = sorted(p for p in POLICIES.glob("*.yaml") if (POLICIES / "heldout" / f"{p.stem}.jsonl").is_file())
    policies = [policy for policy in map(load_policy, paths) if policy.input == "conversation"]
    if args.policies:
        policies = [p for p in policies if p.name in args.policies.split(",")]
    results: dict[str, Any] = {}
    for policy in policies:
        heldout = load_jsonl(POLICIES / "heldout" / f"{policy.name}.jsonl", [policy.name]).examples
        contexts = [[m.model_dump() for m in ex.context or []] for ex in heldout]
        seen = {(row.text, str(row.context)) for row in policy.seed_examples()}
        if leaked := [ex.text for ex in heldout if (ex.text, str(ex.context)) in seen]:
            raise SystemExit(f"{policy.name}: held-out conversations among the seeds: {leaked}")
        truth = [bool(ex.labels) for ex in heldout]
        sides: dict[str, set[bool]] = {}
        for ex, flag in zip(heldout, truth, strict=True):
            sides.setdefault(ex.text, set()).add(flag)
        paired = [i for i, ex in enumerate(heldout) if len(sides[ex.text]) == 2]
        results[policy.name] = {"heldout": len(heldout), "paired": len(paired), "seeds": len(policy.seed_examples())}
        for index, method in enumerate(METHODS):
            work = root / policy.name / method
            rows = training_rows(policy, method)
            work.mkdir(parents=True, exist_ok=True)
            write_jsonl(work / "train.jsonl", rows)
            started = time.perf_counter()
            config = TrainConfig(
                epochs=args.epochs,
                max_length=2 * args.context_tokens,
                context_tokens=args.context_tokens,
                learning_rate=1e-4,
                threads=args.threads,
                seed=args.seed + index,
            )
            train(load_jsonl(work / "train.jsonl", [policy.name]), work / "run", config)
            # A handful of validation rows: the drift gates would measure noise; AUPRC needs no threshold.
            export = ExportConfig(
                name=policy.name, version="0.0.0", max_int8_diff=1.0, max_int8_mean_diff=1.0, min_int8_agreement=0.0
            )
            export_bundle(work / "run", work / "bundle", export)
            seconds = time.perf_counter() - started
            guard = Guard(work / "bundle", device="cpu", threads=args.threads)
            reads_context = method != "latest-turn"
            checked = guard.check_batch([ex.text for ex in heldout], contexts=contexts if reads_context else None)
            scores = [result.score(policy.name).score for result in checked]
            results[policy.name][method] = {
                "rows": len(rows),
                "auprc": round(float(average_precision_score(truth, scores)), 3),
                "auprc_paired": round(
                    float(average_precision_score([truth[i] for i in paired], [scores[i] for i in paired])), 3
                ),
                "build_seconds": round(seconds, 1),
            }
            log(f"{policy.name} {method}: {results[policy.name][method]}")
    payload = {"machine": machine_info([args.threads]), "config": vars(args), "results": results}
    write_json(OUT / "conversation_policies.json", payload)
    (OUT / "conversation_policies.md").write_text(render(results) + "\n")
    print(render(results))
    return payload


def render(results: dict[str, Any]) -> str:
    rows = [
        [name, method, r[method]["rows"], r[method]["auprc"], r[method]["auprc_paired"], r[method]["build_seconds"]]
        for name, r in results.items()
        for method in METHODS
        if method in r
    ]
    means = [
        ["mean", method, None, *(round(sum(r[method][k] for r in results.values()) / len(results), 3)
                                 for k in ("auprc", "auprc_paired")), None]
        for method in METHODS
        if results and all(method in r for r in results.values())
    ]  # fmt: skip
    header = ["policy", "method", "training rows", "held-out AUPRC (40)", "AUPRC, paired only", "build s"]
    return markdown_table(header, rows + means)


if __name__ == "__main__":
    main()
