"""Search-based model merging (UniGuard, ``builder.train.merge``) on the default pack's content-safety data.

    python -m benchmarks.merge --name merge_distinct_seeds            # results/merge/merge_distinct_seeds.{json,md}
    python -m benchmarks.merge --same-seed --work .cache/methods/merge --name merge_same_seed
    [--policies hate,violence,sexual,self-harm] [--per-task 600] [--learning-rate 1e-4] [--max-evals 40] [--donor RUN]

Cuts one binary task per policy out of ``guard-build pack --data-only``'s content-safety file (``binary_tasks``:
half positives, a quarter other policies' positives, a quarter unlabeled texts), keeps 20 % of each task as a *test*
split that nothing trains, searches or calibrates on, fine-tunes one single-policy model per task (1 epoch, 1 thread),
and merges them with each method (coefficients searched on the runs' validation splits). Reported:

- per policy, on its test split: AUPRC and best-threshold F1 of its single model vs each merged model (torch, fp32);
  F1 at the calibrated threshold of the exported bundles (int8 runtime), singles vs the merged one chosen by
  validation objective;
- OpenAI Moderation AUPRC (max over the policies' labels) of the N single bundles together vs the one merged bundle;
- merge + search time; latency of one check, N single bundles (N model runs) vs the merged bundle (one).
- with ``--donor RUN`` (default: ``.cache/methods/multitask``, else the newest ``.cache/methods/run-multitask-*``
  when one exists), each method again with that run's encoder merged in as a donor.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._common import (
    EVAL_DIR,
    RESULTS,
    ROOT,
    TRAIN_DIR,
    Engine,
    log,
    machine_info,
    markdown_table,
    time_interleaved,
    write_json,
)

METHODS = ("linear", "task_arithmetic", "ties")
DEFAULT_DONOR = ROOT / ".cache" / "methods" / "multitask"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", default="hate,violence,sexual,self-harm")
    parser.add_argument("--per-task", type=int, default=600)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--max-evals", type=int, default=40)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--donor", type=Path, help=f"a run merged in as a donor (default: {DEFAULT_DONOR} if present)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "methods" / "merge")
    parser.add_argument("--out", type=Path, default=RESULTS / "merge")
    parser.add_argument("--name", default="merge", help="file name stem of the results")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--same-seed",
        action="store_true",
        help="train every policy with --seed (same head initialisation) instead of seed + i",
    )
    return parser.parse_args(argv)


def _info_file(run: Path) -> Path:
    from builder.train.run import TrainingRun

    return TrainingRun(run).info_file


def _finished(run: Path) -> bool:
    return _info_file(run).is_file()


def _default_donor() -> Path | None:
    """``.cache/methods/multitask``, else the newest finished ``run-multitask-*`` of ``benchmarks/multitask.py``."""
    if _finished(DEFAULT_DONOR):
        return DEFAULT_DONOR
    runs = [run for run in DEFAULT_DONOR.parent.glob("run-multitask-*") if _finished(run)]
    return max(runs, key=lambda run: _info_file(run).stat().st_mtime) if runs else None


def _torch_scores(model_dir: Path, texts: list[str], max_length: int) -> Any:
    import numpy as np
    from transformers import AutoTokenizer

    from builder.export.parity import torch_logits
    from guard_sdk import normalize

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    logits = torch_logits(model_dir, "classifier")
    out = []
    for start in range(0, len(texts), 32):
        batch = tokenizer(
            [normalize(t).text for t in texts[start : start + 32]],
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="np",
        )
        out.append(logits(batch))
    return np.concatenate(out)


def _quality(truth: Sequence[bool], scores: Sequence[float]) -> dict[str, float]:
    import numpy as np
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y, s = np.asarray(truth, bool), np.asarray(scores, float)
    precision, recall, _ = precision_recall_curve(y, s)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return {"auprc": round(float(average_precision_score(y, s)), 4), "best_f1": round(float(f1.max()), 4)}


def _f1_at(truth: Sequence[bool], flagged: Sequence[bool]) -> float:
    tp = sum(t and f for t, f in zip(truth, flagged))
    fp = sum(f and not t for t, f in zip(truth, flagged))
    fn = sum(t and not f for t, f in zip(truth, flagged))
    return round(2 * tp / (2 * tp + fp + fn), 4) if tp else 0.0


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    from builder.data.dataset import load_jsonl
    from builder.export import ExportConfig, export_bundle
    from builder.recipes.pack import CONTENT_SAFETY_LABELS, PackConfig, pack_datasets
    from builder.train.classifier import TrainConfig, train
    from builder.train.merge import MergeConfig, SearchConfig, merge_runs
    from builder.train.multitask import binary_tasks, task_dataset
    from builder.train.run import TrainingRun
    from guard_sdk import Guard
    from guard_sdk.bundle import MANIFEST_NAME

    from .accuracy import load_set

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    policies = args.policies.split(",")
    work = args.work
    data = work / "data" / "content-safety.jsonl"
    if not data.is_file():
        log("merge: writing the pack's training files")
        pack_datasets(PackConfig(seed_sets=TRAIN_DIR, seed=args.seed), work / "data")
    dataset = load_jsonl(data, list(CONTENT_SAFETY_LABELS))
    tasks = binary_tasks(
        dataset, {p: CONTENT_SAFETY_LABELS[p] for p in policies}, per_task=args.per_task, seed=args.seed
    )

    singles: dict[str, Path] = {}
    tests: dict[str, Any] = {}
    train_seconds: dict[str, float] = {}
    for i, task in enumerate(tasks):
        trainval, test = task_dataset(task).split(0.2, args.seed)
        tests[task.name] = test
        run = work / "single" / task.name.replace("/", "_")
        if not _finished(run):
            log(f"merge: training the single-policy model {task.name} ({len(trainval.examples)} rows)")
            train(
                trainval,
                run,
                TrainConfig(
                    epochs=args.epochs,
                    learning_rate=args.learning_rate,
                    threads=args.threads,
                    # Each policy its own seed: with one seed every head starts from the same random row, barely
                    # moves in one epoch, and every task vector writes "positive" along that one direction.
                    seed=args.seed if args.same_seed else args.seed + i,
                    label_descriptions={task.name: CONTENT_SAFETY_LABELS[task.name]},
                ),
            )
        singles[task.name] = run
        train_seconds[task.name] = TrainingRun(run).info().train_seconds

    donor = args.donor or _default_donor()
    variants: list[tuple[str, str, list[Path]]] = [(m, m, []) for m in args.methods.split(",")]
    if donor is not None:
        variants += [(f"{m}+donor", m, [donor]) for m in args.methods.split(",")]
    merges: dict[str, Any] = {}
    for name, method, donors in variants:
        out = work / "merged" / name
        if not (out / "merge.json").is_file():
            log(f"merge: {name}")
            merge_runs(
                out,
                MergeConfig(
                    tasks=list(singles.values()),
                    donors=donors,
                    method=method,  # type: ignore[arg-type]
                    search=SearchConfig(max_evals=args.max_evals, seed=args.seed),
                    labels_from=data,
                    threads=args.threads,
                    overwrite=True,
                ),
            )
        report = json.loads((out / "merge.json").read_text())
        merges[name] = {"run": out, "report": report}

    # Per-policy quality on the test splits, fp32 torch: every single model and every merged model.
    max_length = 128
    per_policy: dict[str, dict[str, Any]] = {}
    for name, run in singles.items():
        test = tests[name]
        truth = [name in ex.labels for ex in test.examples]
        texts = [ex.text for ex in test.examples]
        row: dict[str, Any] = {"test_rows": len(texts), "test_positives": sum(truth)}
        row["single"] = _quality(truth, _torch_scores(run / "model", texts, max_length)[:, 0])
        for merge_name, merged in merges.items():
            labels = merged["report"]["info"]["label_names"]
            scores = _torch_scores(merged["run"] / "model", texts, max_length)[:, labels.index(name)]
            row[merge_name] = _quality(truth, scores)
        per_policy[name] = row

    # Bundles: every single model, and the merged model with the best validation objective.
    chosen = max(merges, key=lambda m: merges[m]["report"]["summary"]["objective"])
    bundles = work / "bundles"
    loose = {"min_int8_agreement": 0.9, "overwrite": True}
    single_bundles = []
    for name, run in singles.items():
        folder = bundles / run.name
        if not (folder / MANIFEST_NAME).is_file():
            export_bundle(run, folder, ExportConfig(name=run.name, **loose))
        single_bundles.append(folder)
    merged_bundle = bundles / f"merged-{chosen}"
    if not (merged_bundle / MANIFEST_NAME).is_file():
        export_bundle(
            merges[chosen]["run"], merged_bundle, ExportConfig(name=f"merged-{chosen.replace('+', '-')}", **loose)
        )

    singles_guard = Guard(single_bundles, device="cpu", threads=args.threads)
    merged_guard = Guard(merged_bundle, device="cpu", threads=args.threads)
    for name in singles:
        test = tests[name]
        truth = [name in ex.labels for ex in test.examples]
        texts = [ex.text for ex in test.examples]
        for key, guard in (("single_bundle_f1", singles_guard), ("merged_bundle_f1", merged_guard)):
            flagged = [next(s.flagged for s in result.scores if s.label == name) for result in guard.check_batch(texts)]
            per_policy[name][key] = _f1_at(truth, flagged)

    rows = load_set(EVAL_DIR / "openai_moderation")
    moderation: dict[str, Any] = {"rows": len(rows), "positives": sum(r.unsafe for r in rows)}
    unsafe = [r.unsafe for r in rows]
    for key, guard in (("singles", singles_guard), ("merged", merged_guard)):
        per_label: dict[str, list[float]] = {p: [] for p in policies}
        for start in range(0, len(rows), 64):
            for result in guard.check_batch([r.text for r in rows[start : start + 64]]):
                for s in result.scores:
                    if s.label in per_label:
                        per_label[s.label].append(s.score)
        moderation[key] = _quality(unsafe, [max(t) for t in zip(*per_label.values())])["auprc"]
        # Each label alone against every unsafe row: which labels carry the signal, which drown the max.
        moderation[f"{key}_per_label"] = {p: _quality(unsafe, v)["auprc"] for p, v in per_label.items()}

    texts = [r.text for r in rows[::7][:64]]
    engines = [
        Engine(f"{len(single_bundles)} single bundles", lambda i: singles_guard.check(texts[i % len(texts)])),
        Engine("merged bundle", lambda i: merged_guard.check(texts[i % len(texts)])),
    ]
    latency = time_interleaved(engines, warmup=5, min_reps=100, max_reps=300, budget_s=20)

    result = {
        "policies": policies,
        "per_task": args.per_task,
        "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "threads": args.threads,
        "training_seeds": "same" if args.same_seed else "seed + i",
        "head_cosines": _head_cosines(list(singles.values())),
        "donor": str(donor) if donor else None,
        "single_train_seconds": train_seconds,
        "merges": {
            name: {
                "method": m["report"]["summary"]["method"],
                "coefficients": list(m["report"]["summary"]["coefficients"].values()),
                "density": m["report"]["summary"]["density"],
                "validation_objective": m["report"]["summary"]["objective"],
                "validation_label_f1": m["report"]["points"][m["report"]["best"]]["label_f1"],
                "validation_single_f1": m["report"]["single_f1"],
                "evaluations": m["report"]["summary"]["evaluations"],
                "seconds": m["report"]["seconds"],
                "points": m["report"]["points"],
            }
            for name, m in merges.items()
        },
        "chosen": chosen,
        "per_policy_test": per_policy,
        "openai_moderation_auprc": moderation,
        "latency_ms": {name: stats for name, stats in latency.items()},
        "machine": machine_info([args.threads]),
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{args.name}.json", result)
    (args.out / f"{args.name}.md").write_text(markdown(result) + "\n")
    print(markdown(result))
    return result


def _head_cosines(runs: list[Path]) -> list[list[float]]:
    """Cosine similarity of the single models' head rows: near 1 means they all read one direction."""
    import torch
    from safetensors.torch import load_file

    rows = torch.stack([load_file(run / "model" / "model.safetensors")["classifier.weight"][0] for run in runs])
    rows = rows / rows.norm(dim=1, keepdim=True)
    return [[round(float(c), 4) for c in row] for row in rows @ rows.T]


def markdown(result: dict[str, Any]) -> str:
    merges = result["merges"]
    lines = [
        f"# Model merging: {len(result['policies'])} content-safety policies ({', '.join(result['policies'])})",
        "",
        (
            f"Single-policy models: all-MiniLM-L6-v2, {result['epochs']:g} epoch, {result['per_task']} rows per task "
            f"(20 % test, then 15 % validation), lr {result['learning_rate']:g}, {result['threads']} thread(s). "
            f"Training seeds: {result.get('training_seeds', 'same')}; largest cosine between two heads "
            f"{_largest_off_diagonal(result['head_cosines']):.4f}. Donor: {result['donor'] or 'none'}."
        ),
        "",
        "## Per policy, test split (fp32 torch; AUPRC / best-threshold F1)",
        "",
    ]
    header = ["policy", "test rows (pos)", "single", *merges]
    body = []
    for name, row in result["per_policy_test"].items():
        cells = [f"{row[k]['auprc']:.3f} / {row[k]['best_f1']:.3f}" for k in ["single", *merges]]
        body.append([name, f"{row['test_rows']} ({row['test_positives']})", *cells])
    mean = ["**mean**", ""]
    for key in ["single", *merges]:
        rows = result["per_policy_test"].values()
        auprc = sum(r[key]["auprc"] for r in rows) / len(rows)
        f1 = sum(r[key]["best_f1"] for r in rows) / len(rows)
        mean.append(f"{auprc:.3f} / {f1:.3f}")
    lines += [markdown_table(header, [*body, mean]), ""]
    lines += [
        "## Merges (search on the runs' validation splits)",
        "",
        markdown_table(
            [
                "merge",
                "validation mean F1 (singles)",
                f"coefficients ({', '.join([*result['per_policy_test'], *(['donor'] if result['donor'] else [])])})",
                "density",
                "points",
                "merge + search s",
            ],
            [
                [
                    name,
                    f"{m['validation_objective']:.3f} ({_mean_of(m['validation_single_f1']):.3f})",
                    ", ".join(f"{c:g}" for c in m["coefficients"]),
                    m["density"],
                    m["evaluations"],
                    m["seconds"],
                ]
                for name, m in merges.items()
            ],
        ),
        "",
        f"## Bundles: N singles vs the merged one (`{result['chosen']}`, best validation objective)",
        "",
    ]
    latency = result["latency_ms"]
    names = list(latency)
    lines.append(
        markdown_table(
            ["", names[0], names[1]],
            [
                [
                    "test F1 at the calibrated thresholds (mean)",
                    _mean(result, "single_bundle_f1"),
                    _mean(result, "merged_bundle_f1"),
                ],
                [
                    "OpenAI Moderation AUPRC (max over the policies)",
                    result["openai_moderation_auprc"]["singles"],
                    result["openai_moderation_auprc"]["merged"],
                ],
                *(
                    [
                        f"  {label} score alone",
                        result["openai_moderation_auprc"]["singles_per_label"][label],
                        result["openai_moderation_auprc"]["merged_per_label"][label],
                    ]
                    for label in result["policies"]
                ),
                ["check latency p50 / p95 ms", _latency(latency[names[0]]), _latency(latency[names[1]])],
            ],
        )
    )
    lines += ["", f"Whole run {result['seconds']:.0f} s (cached training runs are reused)."]
    return "\n".join(lines)


def _largest_off_diagonal(matrix: list[list[float]]) -> float:
    return max(c for i, row in enumerate(matrix) for j, c in enumerate(row) if i != j)


def _mean_of(values: dict[str, float]) -> float:
    return sum(values.values()) / len(values)


def _mean(result: dict[str, Any], key: str) -> float:
    rows = result["per_policy_test"].values()
    return round(sum(r[key] for r in rows) / len(rows), 4)


def _latency(stats: Any) -> str:
    data = stats if isinstance(stats, dict) else stats.__dict__
    return f"{data['p50']:.2f} / {data['p95']:.2f}"


if __name__ == "__main__":
    main()
