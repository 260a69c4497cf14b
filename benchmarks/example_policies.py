"""Every ``guard-build`` method on the example policies, measured on held-out texts the builder never sees.

    python -m benchmarks.example_policies [--threads 1] [--adversarial-rounds 1] [--base-url URL --model M]
    python -m benchmarks.example_policies --offline [--threads 2]      # guard-build all with no endpoint: minutes

Data: ``guard-build data`` on each policy of ``examples/policies/`` (the embedded SmolLM2 unless an endpoint is
given; ``--cells`` cells, candidates the judge labels otherwise than intended dropped): the seeds, their paraphrases
and the verified candidates. Held out: ``examples/policies/heldout/<name>.jsonl``, written by the engineers by hand,
independently of every method (no method's output was looked at), and never given to the builder: 40 texts for each
of the first four policies (graded-homework, prompt-injection, salary-disclosure, visa-advice; 20 violating, 20
compliant) and 60 for each of the six later ones (candidate-protected-traits, claim-coverage-ruling,
crypto-investment-advice, housing-steering, kids-romance, prescription-dosing; 30 violating, 30 compliant, at least
20 of those on-topic look-alikes: same domain and words, but allowed), 520 in all.

Methods, all on the same dataset per policy, all through the ``guard-build`` command line:

- ``classifier``: the plain pipeline, one fine-tuned single-policy bundle per policy (each with its own seed);
- ``embedding`` / ``triplet``: the embedding guard, frozen or triplet fine-tuned (``train --head embedding``);
- ``multitask``: one model on every policy's (instruction, text) pairs; one bundle, one label per policy;
- ``pack-zero-shot``: the pack multi-task model (``python -m benchmarks.multitask``) checking the policies by their
  instructions alone, no policy data; ``pack-tuned``: the same model after a short fine-tune on the policies' data;
- ``merged``: the ``classifier`` runs merged by TIES into one multi-label bundle (coefficients searched);
- ``adversarial-0`` / ``adversarial-N``: ``guard-build adversarial`` (embedding head) before and after N rounds,
  measured by its own report on the held-out texts (torch, its calibrated threshold);
- ``all: lines only`` / ``all: lines + seeds``: ``guard-build all`` with no endpoint (no LLM), on the policy without
  its seeds and as written, beside the estimate its report gave; ``lines + retrieved``: the lines and the seed sets'
  texts nearest them, labeled by the lines-only guard (``_lines_and_retrieved``). ``--offline`` runs only these, on
  every policy with held-out texts, conversation policies too (as written only: ``guard-build all`` refuses one
  without seed conversations, and a corpus holds single messages; their held-out conversations are read with their
  earlier turns; ``paired``: the conversations whose latest turn is violating in one and allowed in another).

Reported per policy and method: held-out AUPRC, and F1 / recall / FPR at the bundle's calibrated threshold; the FPR
on the *other* policies' violating held-out texts (a visa guard must not flag salary questions); build seconds; check
latency at 64 tokens for the single bundles together, the multi-task bundle (a model run per policy) and the merged one.
Runs and bundles in ``--work`` are reused. Writes ``results/example_policies/example_policies.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from builder.data.policy import load_policy
from builder.recipes.policy_guard import PolicyGuardConfig, build_policy_guard, read_corpus, retrieve

from . import accuracy
from ._common import (
    RESULTS,
    ROOT,
    TRAIN_DIR,
    Engine,
    corpus,
    log,
    machine_info,
    markdown_table,
    texts_of_length,
    time_interleaved,
    write_json,
)

POLICIES = ROOT / "examples" / "policies"
PACK_MULTITASK = ROOT / ".cache" / "methods"
ZERO_SHOT_MAX_LENGTH = 256
# Tiny datasets (tens of rows) leave 2-8 validation texts: one drifting text moves the mean, and decision agreement
# there is noise (one flip of two is 0.5). The drift gates are loosened, the agreement gate is off; held-out AUPRC,
# which needs no threshold, is what these numbers are for.
EXPORT_GATE = ["--max-int8-diff", "0.35", "--max-int8-mean-diff", "0.05", "--min-int8-agreement", "0"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "examples")
    parser.add_argument("--out", type=Path, default=RESULTS / "example_policies")
    parser.add_argument("--policies", help="comma-separated policy names (default: every one with a held-out file)")
    parser.add_argument("--cells", type=int, default=2, help="guard-build data --cells")
    parser.add_argument("--per-prompt", type=int, default=3, help="guard-build data --per-prompt")
    parser.add_argument("--paraphrases", type=int, default=1, help="guard-build data --paraphrases")
    parser.add_argument("--epochs", type=float, default=10.0, help="fine-tunes (tens of rows: more passes)")
    parser.add_argument("--tune-epochs", type=float, default=3.0, help="pack-tuned: the short fine-tune")
    parser.add_argument("--triplet-epochs", type=float, default=5.0)
    parser.add_argument("--adversarial-rounds", type=int, default=1, help="0 skips the adversarial method")
    parser.add_argument("--candidates", type=int, default=8, help="adversarial pulls per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--offline",
        action="store_true",
        help="only `guard-build all` without an endpoint, from the policy's lines alone and with its seeds "
        "(minutes; writes offline.{json,md})",
    )
    parser.add_argument("--base-url", help="an OpenAI-compatible endpoint for the data engine and the debates")
    parser.add_argument("--model")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    every = sorted(p for p in POLICIES.glob("*.yaml") if (POLICIES / "heldout" / f"{p.stem}.jsonl").is_file())
    if args.policies:
        every = [p for p in every if p.stem in args.policies.split(",")]
    times: dict[str, float] = {}
    if args.offline:
        return _offline(every, args, times)
    # Every method but `guard-build all` reads single messages (conversation policies: --offline, and
    # benchmarks/conversation_policies.py).
    policies = [p for p in every if load_policy(p).input == "message"]
    names = [p.stem for p in policies]
    data = {name: _dataset(policy, args, times) for name, policy in zip(names, policies)}
    heldout = {name: _rows(POLICIES / "heldout" / f"{name}.jsonl") for name in names}
    leaked = {name: _leaks(data[name], heldout) for name in names}
    if any(leaked.values()):
        raise SystemExit(f"held-out texts found in the training data: {leaked}")

    # method -> policy -> (bundle, label)
    bundles: dict[str, dict[str, tuple[Path, str]]] = {}
    runs: dict[str, Path] = {}
    for kind, extra in (
        ("classifier", ["--epochs", str(args.epochs)]),
        ("embedding", ["--head", "embedding"]),
        ("triplet", ["--head", "embedding", "--triplet-epochs", str(args.triplet_epochs)]),
    ):
        bundles[kind] = {}
        for index, name in enumerate(names):
            run = args.work / "runs" / f"{kind}-{name}"
            # A seed per policy: runs meant for merging must not share their heads' initialisation.
            _train(run, ["train", "--data", str(data[name]), "--seed", str(args.seed + index), *extra], args, times)
            bundles[kind][name] = (_export(run, name, args, times), name)
            if kind == "classifier":
                runs[name] = run

    policy_data = [arg for p, n in zip(policies, names) for arg in ("--policy-data", f"{p}={data[n]}")]
    # Runs over several policies are named by the policy set, so a run with other policies is never reused.
    joint = "-".join(name[:4] for name in names)
    run = args.work / "runs" / f"multitask-{joint}"
    _train(run, ["multitask", *policy_data, "--epochs", str(args.epochs), "--seed", str(args.seed)], args, times)
    bundles["multitask"] = _by_label(_export(run, "multitask", args, times), names)

    pack_run, pack_bundle = _pack_multitask()
    if pack_run is not None and pack_bundle is not None:
        out = args.work / "bundles" / f"pack-zero-shot-{joint}"
        if not (out / "guard.json").is_file():
            policy_args = [arg for p in policies for arg in ("--policy", str(p))]
            # The pack model was trained on 128-token windows; these policies' instructions take most of that.
            zero_shot = ["--name", "pack-zero-shot", "--max-length", str(ZERO_SHOT_MAX_LENGTH), "--out", str(out)]
            _build(["instruct", "--bundle", str(pack_bundle), *policy_args, *zero_shot])
        bundles["pack-zero-shot"] = _by_label(out, names)
        run = args.work / "runs" / f"pack-tuned-{joint}"
        tune = ["--base-model", str(pack_run / "model"), "--epochs", str(args.tune_epochs), "--seed", str(args.seed)]
        _train(run, ["multitask", *policy_data, *tune], args, times)
        bundles["pack-tuned"] = _by_label(_export(run, "pack-tuned", args, times), names)
    else:
        log("example_policies: no pack multi-task run in .cache/methods (python -m benchmarks.multitask): skipped")

    run = args.work / "runs" / f"merged-{joint}"
    if not (run / "model").is_dir():
        started = time.perf_counter()
        tasks = [arg for name in names for arg in ("--task", str(runs[name]))]
        _build(["merge", *tasks, "--method", "ties", "--out", str(run), "--threads", str(args.threads), "--overwrite"])
        times["merged_merge"] = round(time.perf_counter() - started, 1)
    bundles["merged"] = _by_label(_export(run, "merged", args, times), names)

    results = _score(bundles, heldout)
    for name, by_kind in _all_without_endpoint(policies, args, times).items():
        results[name].update(by_kind)
    adversarial = _adversarial(policies, data, args, times) if args.adversarial_rounds else {}
    for kind, by_policy in adversarial.items():
        for name, metrics in by_policy.items():
            results.setdefault(name, {})[kind] = metrics

    result = {
        "machine": machine_info(),
        "config": {k: str(v) for k, v in vars(args).items()},
        "training_rows": {name: _counts(_rows(path)) for name, path in data.items()},
        "heldout_rows": {name: _counts(rows) for name, rows in heldout.items()},
        "heldout": results,
        "build_seconds": times,
        "latency_64_tokens_ms": _latency(bundles, args.threads),
    }
    write_json(args.out / "example_policies.json", result)
    (args.out / "example_policies.md").write_text(_markdown(result) + "\n")
    print(_markdown(result))
    return result


def _offline(policy_files: Sequence[Path], args: argparse.Namespace, times: dict[str, float]) -> dict[str, Any]:
    """The ``guard-build all`` methods alone (``--offline``): ``offline.{json,md}``."""
    heldout = {path.stem: _rows(POLICIES / "heldout" / f"{path.stem}.jsonl") for path in policy_files}
    result = {
        "machine": machine_info(),
        "config": {k: str(v) for k, v in vars(args).items()},
        "heldout_rows": {name: _counts(rows) for name, rows in heldout.items()},
        "heldout": _all_without_endpoint(policy_files, args, times),
        "build_seconds": times,
    }
    write_json(args.out / "offline.json", result)
    (args.out / "offline.md").write_text(_offline_markdown(result) + "\n")
    print(_offline_markdown(result))
    return result


def _all_without_endpoint(
    policy_files: Sequence[Path], args: argparse.Namespace, times: dict[str, float]
) -> dict[str, dict[str, Any]]:
    """``guard-build all`` with no endpoint on each policy as written ("lines + seeds") and, for a message policy,
    without its seeds ("lines only"; and with retrieved texts, ``_lines_and_retrieved``), scored on the held-out
    texts (conversations with their earlier turns) beside the estimate its report gave."""
    policies = {path.stem: load_policy(path) for path in policy_files}
    messages = {name: path for name, path in zip(policies, policy_files) if policies[name].input == "message"}
    bundles: dict[str, dict[str, tuple[Path, str]]] = {LINES: {}, RETRIEVED: {}, SEEDED: {}}
    corpus = read_corpus(TRAIN_DIR, PolicyGuardConfig().corpus_limit) if messages else []
    for name, path in zip(policies, policy_files):
        if name in messages:
            lines_only = args.work / "offline" / f"{name}-lines.yaml"
            lines_only.parent.mkdir(parents=True, exist_ok=True)
            lines_only.write_text(
                yaml.safe_dump(policies[name].model_copy(update={"seeds": []}).model_dump(mode="json"))
            )
            bundles[LINES][name] = (_build_all(lines_only, args.work / "offline" / f"{name}-lines", args, times), name)
            retrieved = _lines_and_retrieved(lines_only, bundles[LINES][name][0], corpus, args, times)
            bundles[RETRIEVED][name] = (retrieved, name)
        bundles[SEEDED][name] = (_build_all(path, args.work / "offline" / f"{name}-seeds", args, times), name)
    heldout = {name: _rows(POLICIES / "heldout" / f"{name}.jsonl") for name in policies}
    results = _score({kind: {n: b for n, b in by.items() if n in messages} for kind, by in bundles.items()},
                     {name: rows for name, rows in heldout.items() if name in messages})  # fmt: skip
    for name in sorted(policies.keys() - messages.keys()):
        results[name] = {SEEDED: _score_conversations(bundles[SEEDED][name][0], name, heldout[name])}
    for name, by_kind in results.items():
        for kind, metrics in by_kind.items():
            report = json.loads((Path(f"{bundles[kind][name][0]}.work") / "report.json").read_text())
            metrics["report_estimate_auprc"] = report["estimate_auprc"]
            metrics["report_warnings"] = len(report["warnings"])
    return results


LINES, RETRIEVED, SEEDED = "all: lines only", "lines + retrieved, labeled by the lines' guard", "all: lines + seeds"


def _lines_and_retrieved(
    lines_only: Path, lines_guard: Path, corpus: Sequence[str], args: argparse.Namespace, times: dict[str, float]
) -> Path:
    """The policy's lines and the ``--retrieve`` seed-set texts nearest them (``retrieve``), each labeled by the
    lines-only guard's decision: a zero-shot model labeling real candidates, as issue #27 item 2 proposes, built as
    ``guard-build all`` builds with an endpoint's rows (``build_policy_guard``). ``guard-build`` does not offer it
    (its own guesses made guards worse in exploration); this measures that on every policy."""
    from builder.data.dataset import LabeledDataset, LabeledExample
    from builder.export import ExportConfig
    from builder.train.embedding import EmbeddingGuardConfig
    from guard_sdk import Guard

    policy = load_policy(lines_only)
    out = args.work / "offline" / f"{policy.name}-retrieved"
    seconds = Path(f"{out}.seconds")
    if not (out / "guard.json").is_file() or not seconds.is_file():
        started = time.perf_counter()
        config = PolicyGuardConfig(seed=args.seed, threads=args.threads, progress=False)
        cache = args.work / "offline" / "corpus-embeddings.npz"
        texts = retrieve(policy, corpus, config.retrieve, EmbeddingGuardConfig(progress=False, embedding_cache=cache))
        judged = Guard(lines_guard, device="cpu").check_batch(texts)
        rows = [LabeledExample(text=t, labels=[policy.name] if r.flagged else []) for t, r in zip(texts, judged)]
        data = LabeledDataset(label_names=[policy.name], examples=rows, sha256="")
        export = ExportConfig(name=policy.name, description=policy.description)
        log(
            f"example_policies: {policy.name} + {len(rows)} retrieved texts, {sum(bool(r.labels) for r in rows)} violating"
        )
        build_policy_guard(
            policy, out, Path(f"{out}.work"), dataset=data, retrieved=texts, config=config, export=export
        )
        seconds.write_text(f"{time.perf_counter() - started:.1f}\n")
    times[out.name] = float(seconds.read_text())
    return out


def _build_all(policy: Path, out: Path, args: argparse.Namespace, times: dict[str, float]) -> Path:
    """``guard-build all`` into ``out`` unless it is there; its build seconds are kept beside it for later runs."""
    seconds = Path(f"{out}.seconds")
    if not (out / "guard.json").is_file() or not seconds.is_file():
        started = time.perf_counter()
        _build(["all", str(policy), "--out", str(out), "--seed", str(args.seed), "--threads", str(args.threads)]
               + ["--overwrite", "--no-progress"])  # fmt: skip
        seconds.write_text(f"{time.perf_counter() - started:.1f}\n")
    times[out.name] = float(seconds.read_text())
    return out


def _score_conversations(bundle: Path, name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A conversation guard on its held-out conversations, each latest turn read after its earlier turns; ``paired``:
    the conversations whose latest turn is violating in one and allowed in another (only the earlier turns decide)."""
    from guard_sdk import Guard

    checked = Guard(bundle, device="cpu").check_batch([r["text"] for r in rows], contexts=[r["context"] for r in rows])
    scores = [next(s for s in result.scores if s.label == name) for result in checked]
    truth = [bool(r["labels"]) for r in rows]
    metrics = accuracy.metrics(truth, [s.score for s in scores], [s.flagged for s in scores])
    sides: dict[str, set[bool]] = {}
    for row, flag in zip(rows, truth, strict=True):
        sides.setdefault(row["text"], set()).add(flag)
    paired = [i for i, row in enumerate(rows) if len(sides[row["text"]]) == 2]
    in_pairs = accuracy.metrics(
        [truth[i] for i in paired], [scores[i].score for i in paired], [scores[i].flagged for i in paired]
    )
    return {**{k: metrics[k] for k in ("auprc", "f1", "precision", "recall", "fpr")}, "auprc_paired": in_pairs["auprc"]}


def _offline_markdown(result: dict[str, Any]) -> str:
    heldout = result["heldout"]
    rows = []
    for kind in (LINES, RETRIEVED, SEEDED):
        measured = {name: by_kind[kind] for name, by_kind in heldout.items() if kind in by_kind}
        means = [
            [m["auprc"] for m in measured.values() if ("auprc_paired" in m) == conversations]
            for conversations in (False, True)
        ]
        rows.append(
            [kind]
            + [_offline_cell(measured.get(name)) for name in heldout]
            + [round(sum(auprcs) / len(auprcs), 3) if auprcs else None for auprcs in means]
        )
    return (
        "Held-out AUPRC / F1 / FPR at the bundle's threshold (the report's cross-validated AUPRC estimate; "
        "conversation policies: [AUPRC on the paired conversations]), `guard-build all` with no endpoint:\n"
        + markdown_table(
            ["method", *heldout, "mean AUPRC, message policies", "mean AUPRC, conversation policies"], rows
        )
        + "\n\nBuild seconds: "
        + ", ".join(f"{k} {v}" for k, v in result["build_seconds"].items())
    )


def _offline_cell(m: dict[str, Any] | None) -> str:
    if m is None:
        return "–"
    paired = f" [{m['auprc_paired']}]" if "auprc_paired" in m else ""
    return f"{m['auprc']} / {m['f1']} / {m['fpr']} ({m['report_estimate_auprc']}){paired}"


def _build(argv: list[str]) -> None:
    from builder.cli import main as guard_build

    log("guard-build " + " ".join(argv))
    if guard_build(argv) != 0:
        raise SystemExit(f"guard-build {argv[0]} failed (its error is above)")


def _dataset(policy: Path, args: argparse.Namespace, times: dict[str, float]) -> Path:
    out = args.work / f"{policy.stem}-data"
    if not (out / "dataset.jsonl").is_file():
        endpoint = ["--base-url", args.base_url, "--model", args.model] if args.base_url else []
        budget = [
            "--cells",
            str(args.cells),
            "--per-prompt",
            str(args.per_prompt),
            "--paraphrases",
            str(args.paraphrases),
        ]
        _build(["data", str(policy), "--out", str(out), *budget, "--on-mismatch", "drop"]
               + ["--seed", str(args.seed), "--no-progress", *endpoint])  # fmt: skip
    sheet = json.loads((out / "datasheet.json").read_text())
    times[f"data_{policy.stem}"] = round(sum(stage["seconds"] for stage in sheet["throughput"].values()), 1)
    return out / "dataset.jsonl"


def _train(run: Path, argv: list[str], args: argparse.Namespace, times: dict[str, float]) -> None:
    from builder.train.run import TrainingRun

    if not TrainingRun(run).finished:
        _build([*argv, "--out", str(run), "--threads", str(args.threads)])
    times[f"{run.name}_train"] = TrainingRun(run).info().train_seconds


def _export(run: Path, name: str, args: argparse.Namespace, times: dict[str, float]) -> Path:
    bundle = args.work / "bundles" / run.name
    if not (bundle / "guard.json").is_file():
        started = time.perf_counter()
        _build(["export", "--run", str(run), "--out", str(bundle), "--name", name, "--overwrite", *EXPORT_GATE])
        times[f"{run.name}_export"] = round(time.perf_counter() - started, 1)
    return bundle


def _by_label(bundle: Path, names: Sequence[str]) -> dict[str, tuple[Path, str]]:
    return {name: (bundle, name) for name in names}


def _pack_multitask() -> tuple[Path | None, Path | None]:
    """The pack multi-task run and bundle that ``benchmarks.multitask`` left, newest first."""
    runs = sorted(PACK_MULTITASK.glob("run-multitask-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for run in runs:
        bundle = PACK_MULTITASK / "bundles" / run.name.removeprefix("run-")
        if (run / "model").is_dir() and (bundle / "guard.json").is_file():
            return run, bundle
    return None, None


def _rows(path: Path) -> list[dict[str, Any]]:
    from builder.data.dataset import iter_text_rows

    return list(iter_text_rows(path))


def _leaks(dataset: Path, heldout: dict[str, list[dict[str, Any]]]) -> list[str]:
    seen = {_key(row["text"]) for row in _rows(dataset)}
    return [row["text"] for rows in heldout.values() for row in rows if _key(row["text"]) in seen]


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def _counts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    return {"rows": len(rows), "violating": sum(bool(row["labels"]) for row in rows)}


def _score(
    bundles: dict[str, dict[str, tuple[Path, str]]], heldout: dict[str, list[dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    """Every policy's label on every held-out text: its own 40 as the held-out set, the other policies' violating
    texts as extra negatives (``cross_fpr``)."""
    from guard_sdk import Guard

    texts = [row["text"] for rows in heldout.values() for row in rows]
    scored: dict[Path, dict[str, Any]] = {}
    out: dict[str, dict[str, Any]] = {name: {} for name in heldout}
    for kind, by_policy in bundles.items():
        for name, (bundle, label) in by_policy.items():
            if bundle not in scored:
                log(f"example_policies: scoring {len(texts)} held-out texts with {bundle.name}")
                # The Guard is batch-invariant (its default): a method's numbers do not depend on which other texts
                # were scored beside them.
                scored[bundle] = dict(zip(texts, Guard(bundle, device="cpu").check_batch(texts)))
            score = {
                text: next(s for s in result.scores if s.label == label) for text, result in scored[bundle].items()
            }
            own = heldout[name]
            truth = [bool(row["labels"]) for row in own]
            metrics = accuracy.metrics(
                truth, [score[r["text"]].score for r in own], [score[r["text"]].flagged for r in own]
            )
            others = [row["text"] for other, rows in heldout.items() if other != name for row in rows if row["labels"]]
            out[name][kind] = {
                **{k: metrics[k] for k in ("auprc", "f1", "precision", "recall", "fpr")},
                "cross_fpr": round(sum(score[text].flagged for text in others) / len(others), 3) if others else None,
            }
    return out


def _adversarial(
    policies: Sequence[Path], data: dict[str, Path], args: argparse.Namespace, times: dict[str, float]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Round 0 and the last round of ``guard-build adversarial`` per policy, as its report measured them."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for index, policy in enumerate(policies):
        name = policy.stem
        folder = args.work / "runs" / f"adversarial-{name}"
        report_file = folder / "report.json"
        report = json.loads(report_file.read_text()) if report_file.is_file() else None
        if report is None or len(report["rounds"]) <= args.adversarial_rounds:
            endpoint = ["--base-url", args.base_url, "--model", args.model] if args.base_url else []
            _build(["adversarial", str(policy), "--data", str(data[name]), "--out", str(folder)]
                   + ["--rounds", str(args.adversarial_rounds), "--candidates", str(args.candidates)]
                   + ["--eval", f"heldout={POLICIES / 'heldout' / f'{name}.jsonl'}", "--seed", str(args.seed + index)]
                   + ["--threads", str(args.threads), "--no-progress", *endpoint])  # fmt: skip
            report = json.loads(report_file.read_text())
        for entry in (report["rounds"][0], report["rounds"][args.adversarial_rounds]):
            measured = entry["eval"]["heldout"]
            out.setdefault(f"adversarial-{entry['round']}", {})[name] = {
                **{k: measured[k] for k in ("auprc", "f1", "precision", "recall", "fpr")},
                "added": entry["added"],
            }
            times[f"adversarial-{name}_round{entry['round']}"] = round(
                entry["train_seconds"] + entry["adversarial_seconds"], 1
            )
    return out


def _latency(bundles: dict[str, dict[str, tuple[Path, str]]], threads: int | None) -> dict[str, Any]:
    """One check at 64 tokens: the single bundles together vs one multi-task bundle vs one merged bundle."""
    from guard_sdk import Guard

    singles = sorted({bundle for bundle, _ in bundles["classifier"].values()})
    setups = {
        f"{len(singles)} single bundles (classifier)": singles,
        "multi-task (a model run per policy)": [next(iter(bundles["multitask"].values()))[0]],
        "merged (one model run)": [next(iter(bundles["merged"].values()))[0]],
    }
    guards = {kind: Guard(paths, device="cpu", threads=threads) for kind, paths in setups.items()}
    texts = texts_of_length(setups["merged (one model run)"][0] / "tokenizer.json", corpus(100), 64, 50)
    engines = [Engine(kind, lambda i, g=guard: g.check(texts[i % len(texts)])) for kind, guard in guards.items()]
    stats = time_interleaved(engines, warmup=5, min_reps=50, max_reps=200, budget_s=20)
    return {kind: {"labels": len(guards[kind].labels), **vars(s)} for kind, s in stats.items()}


def _markdown(result: dict[str, Any]) -> str:
    kinds = sorted({kind for by_kind in result["heldout"].values() for kind in by_kind}, key=_method_order)
    header = (
        "Held-out texts per policy (40 each, 20 violating), each method at its calibrated threshold: AUPRC / F1 / FPR, "
        "and (bundles) FPR on the other policies' violating held-out texts:"
    )
    parts = [header]
    rows = []
    for kind in kinds:
        cells = [_cell(by_kind.get(kind)) for by_kind in result["heldout"].values()]
        means = [by_kind[kind]["auprc"] for by_kind in result["heldout"].values() if kind in by_kind]
        rows.append([kind, *cells, round(sum(means) / len(means), 3)])
    parts.append(markdown_table(["method", *result["heldout"], "mean AUPRC"], rows))
    rows = [[name, c["rows"], c["violating"]] for name, c in result["training_rows"].items()]
    parts += ["", "Training rows (guard-build data):", markdown_table(["policy", "rows", "violating"], rows)]
    latency = result["latency_64_tokens_ms"]
    rows = [[k, v["labels"], v["p50"], v["p95"]] for k, v in latency.items()]
    parts += ["", "Check latency at 64 tokens (ms):", markdown_table(["guard", "labels", "p50", "p95"], rows)]
    parts += ["", "Build seconds: " + ", ".join(f"{k} {v}" for k, v in result["build_seconds"].items())]
    return "\n".join(parts)


def _cell(m: dict[str, Any] | None) -> str:
    if m is None:
        return "–"
    return " / ".join(str(m[k]) for k in ("auprc", "f1", "fpr", "cross_fpr") if m.get(k) is not None)


def _method_order(kind: str) -> tuple[int, str]:
    order = ["classifier", "embedding", "triplet", "multitask", "pack-zero-shot", "pack-tuned", "merged"]
    return (order.index(kind), kind) if kind in order else (len(order), kind)


if __name__ == "__main__":
    main()
