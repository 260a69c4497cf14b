"""Accuracy of any guard bundle on the evaluation sets in ../shared/eval, beside published numbers on the same sets.

    python -m benchmarks.accuracy --bundle .cache/demo/bundle
    python -m benchmarks.accuracy --bundle B --score deepset_prompt_injections=injection --score openai_moderation=max

Each set row has ``label`` (``unsafe``/``safe``) and ``categories``. A set is scored by the highest score among
its chosen labels (``--score SET=max`` takes every label of the loaded bundles, the default; ``SET=a,b`` names
some), and a text counts as flagged when any chosen label reaches its own threshold, as ``Guard`` decides.
Reported per set: AUPRC, ROC-AUC, and at the bundles' thresholds precision, recall, F1, FPR and accuracy; per
category (recall, and AUPRC of that category's positives against every safe row); XSTest false positives by prompt
type; the deepset test split on its own (the split its published accuracy is on).

``--peer NAME`` also scores every set with a guard that installs offline, side by side (``PEERS``; each at its own
decision rule): ``profanity-check`` (``pip install alt-profanity-check``: a TF-IDF linear SVM inside its wheel, the
maintained fork of profanity-check) and ``jailguard`` (``pip install jailguard``: an MLP head on the
all-MiniLM-L6-v2 mean embedding; its ONNX encoder, which it would download, is exported here from the weights the
builder uses).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._common import CACHE, EVAL_DIR, RESULTS, log, machine_info, markdown_table, write_json

# Published results on the same sets (model cards and papers); "metric" names what they report.
PUBLISHED: dict[str, list[tuple[str, str, float]]] = {
    "openai_moderation": [
        ("Llama Guard 7B", "auprc", 0.847),
        ("OpenAI Moderation API", "auprc", 0.856),
        ("ShieldGemma 9B", "auprc", 0.907),
    ],
    "xstest": [
        ("Llama Guard 3 8B", "f1", 0.884),
        ("Llama Guard 3 8B", "fpr", 0.044),
        ("Llama Guard 3 1B", "f1", 0.821),
        ("Llama Guard 3 1B", "fpr", 0.068),
    ],
    "deepset_prompt_injections": [("deberta-v3-base-injection (test split)", "test_accuracy", 0.9914)],
}


@dataclass(frozen=True)
class EvalRow:
    text: str
    unsafe: bool
    categories: tuple[str, ...]
    meta: dict[str, Any]


def load_set(folder: Path, limit: int | None = None) -> list[EvalRow]:
    rows = []
    for line in (folder / "data.jsonl").read_text(encoding="utf-8").split("\n"):
        if line.strip():
            raw = json.loads(line)
            rows.append(
                EvalRow(raw["text"], raw["label"] == "unsafe", tuple(raw.get("categories", [])), raw.get("meta") or {})
            )
    if limit is not None:
        # Keep both classes in a shortened set: every k-th row.
        step = max(1, len(rows) // limit)
        rows = rows[::step][:limit]
    return rows


def parse_score_map(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, labels = item.partition("=")
        if not sep or not name or not labels:
            raise SystemExit(f"--score takes SET=max or SET=label[,label...], got {item!r}")
        out[name] = labels
    return out


def chosen_labels(spec: str, labels: Sequence[str], set_name: str) -> list[str]:
    if spec == "max":
        return list(labels)
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = sorted(set(names) - set(labels))
    if unknown:
        raise SystemExit(
            f"--score {set_name}={spec}: labels {unknown} are not in the bundles (they have {list(labels)})"
        )
    return names


def score_texts(
    guard: Any,
    texts: Sequence[str],
    labels: Sequence[str],
    batch_size: int = 64,
    *,
    stage: str = "input",
    contexts: Sequence[str | None] | None = None,
) -> tuple[list[float], list[bool]]:
    """Per text: the highest score among ``labels`` and whether any of them reached its threshold."""
    scores, flagged = [], []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        context = list(contexts[start : start + batch_size]) if contexts is not None else None
        for result in guard.check_batch(batch, stage=stage, contexts=context):
            chosen = [s for s in result.scores if s.label in labels]
            scores.append(max((s.score for s in chosen), default=0.0))
            flagged.append(any(s.flagged for s in chosen))
    return scores, flagged


PeerScorer = Callable[[list[str]], tuple[list[float], list[bool]]]


def _profanity_check() -> PeerScorer:
    from profanity_check import predict_prob

    def score(texts: list[str]) -> tuple[list[float], list[bool]]:
        probabilities = [float(p) for p in predict_prob(texts)]
        return probabilities, [p >= 0.5 for p in probabilities]  # its `predict` is the SVM's sign: p >= 0.5

    return score


def _jailguard() -> PeerScorer:
    import os

    folder = CACHE / "jailguard"
    encoder = folder / "all-MiniLM-L6-v2.onnx"  # the name it looks for under JAILGUARD_MODEL_DIR
    if not encoder.is_file():
        from optimum.exporters.onnx import main_export

        from builder.train.run import base_model_path

        main_export(
            str(base_model_path(None)),
            output=folder / "export",
            task="feature-extraction",
            library_name="transformers",
            device="cpu",
        )
        (folder / "export" / "model.onnx").replace(encoder)
    os.environ["JAILGUARD_MODEL_DIR"] = str(folder)
    import jailguard

    def score(texts: list[str]) -> tuple[list[float], list[bool]]:
        results = [jailguard.detect(text) for text in texts]
        return [float(r.score) for r in results], [bool(r.is_injection) for r in results]

    return score


# name -> (what to install, loader)
PEERS: dict[str, tuple[str, Callable[[], PeerScorer]]] = {
    "profanity-check": ("alt-profanity-check", _profanity_check),
    "jailguard": ("jailguard", _jailguard),
}


def load_peer(name: str) -> PeerScorer:
    install, loader = PEERS[name]
    try:
        return loader()
    except ImportError as exc:
        raise SystemExit(f"--peer {name} needs `pip install {install}` ({exc})") from exc


def metrics(truth: Sequence[bool], scores: Sequence[float], flagged: Sequence[bool]) -> dict[str, Any]:
    import numpy as np
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, s, f = np.asarray(truth, bool), np.asarray(scores, float), np.asarray(flagged, bool)
    tp, fp = int((f & y).sum()), int((f & ~y).sum())
    fn, tn = int((~f & y).sum()), int((~f & ~y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    both = bool(y.any() and (~y).any())
    return {
        "rows": len(y),
        "positives": int(y.sum()),
        "auprc": round(float(average_precision_score(y, s)), 4) if both else None,
        "roc_auc": round(float(roc_auc_score(y, s)), 4) if both else None,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0,
        "fpr": round(fp / (fp + tn), 4) if fp + tn else None,
        "accuracy": round((tp + tn) / len(y), 4) if len(y) else None,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }


def evaluate_set(
    name: str, rows: Sequence[EvalRow], scores: Sequence[float], flagged: Sequence[bool]
) -> dict[str, Any]:
    truth = [r.unsafe for r in rows]
    out: dict[str, Any] = {"overall": metrics(truth, scores, flagged)}
    safe = [i for i, r in enumerate(rows) if not r.unsafe]
    categories = sorted({c for r in rows for c in r.categories})
    if categories:
        out["categories"] = {}
        for category in categories:
            idx = safe + [i for i, r in enumerate(rows) if category in r.categories]
            m = metrics([rows[i].unsafe for i in idx], [scores[i] for i in idx], [flagged[i] for i in idx])
            out["categories"][category] = {"positives": m["positives"], "recall": m["recall"], "auprc": m["auprc"]}
    types = sorted({str(r.meta["type"]) for r in rows if "type" in r.meta})
    if types:  # XSTest: which kinds of safe prompt are over-flagged
        out["false_positives_by_type"] = {}
        for kind in types:
            idx = [i for i in safe if rows[i].meta.get("type") == kind]
            if idx:
                fps = sum(flagged[i] for i in idx)
                out["false_positives_by_type"][kind] = {
                    "safe_rows": len(idx),
                    "flagged": fps,
                    "fpr": round(fps / len(idx), 4),
                }
    splits = sorted({str(r.meta["split"]) for r in rows if "split" in r.meta})
    if len(splits) > 1:
        out["splits"] = {}
        for split in splits:
            idx = [i for i, r in enumerate(rows) if r.meta.get("split") == split]
            out["splits"][split] = metrics(
                [rows[i].unsafe for i in idx], [scores[i] for i in idx], [flagged[i] for i in idx]
            )
    return out


def published_rows(results: dict[str, Any]) -> list[list[object]]:
    """One row per published number, with ours on the same set and metric beside it."""
    rows = []
    for name, entries in PUBLISHED.items():
        if name not in results:
            continue
        overall = results[name]["overall"]
        for model, metric, value in entries:
            ours = (
                results[name].get("splits", {}).get("test", overall)["accuracy"]
                if metric == "test_accuracy"
                else overall[metric]
            )
            rows.append([name, metric, model, value, ours])
    return rows


def markdown(result: dict[str, Any]) -> str:
    out = [f"# Accuracy: {', '.join(result['bundles'])}", ""]
    out += [
        "Scores: "
        + "; ".join(f"{k} ← {', '.join(v)}" for k, v in result["labels_per_set"].items())
        + ". Flagged = any chosen label at or above its bundle threshold.",
        "",
        "## Overall",
        "",
        markdown_table(
            ["set", "rows", "AUPRC", "ROC-AUC", "precision", "recall", "F1", "FPR", "accuracy"],
            [
                [
                    name,
                    m["rows"],
                    m["auprc"],
                    m["roc_auc"],
                    m["precision"],
                    m["recall"],
                    m["f1"],
                    m["fpr"],
                    m["accuracy"],
                ]
                for name, r in result["sets"].items()
                for m in [r["overall"]]
            ],
        ),
        "",
        "## Beside published numbers on the same sets",
        "",
        markdown_table(
            ["set", "metric", "published model", "published", "this bundle"], published_rows(result["sets"])
        ),
        "",
    ]
    if result.get("peers"):
        out += ["## Beside peers that install offline (each at its own decision rule)", ""]
        out += [
            markdown_table(
                ["set", "guard", "AUPRC", "precision", "recall", "F1", "FPR"],
                [
                    [name, who, m["auprc"], m["precision"], m["recall"], m["f1"], m["fpr"]]
                    for name, r in result["sets"].items()
                    for who, m in [("this bundle", r["overall"])]
                    + [(peer, sets[name]) for peer, sets in result["peers"].items()]
                ],
            ),
            "",
        ]
    for name, r in result["sets"].items():
        if "categories" in r:
            out += [f"### {name}: per category (recall at threshold; AUPRC vs all safe rows)", ""]
            out += [
                markdown_table(
                    ["category", "positives", "recall", "AUPRC"],
                    [[c, v["positives"], v["recall"], v["auprc"]] for c, v in r["categories"].items()],
                ),
                "",
            ]
        if "false_positives_by_type" in r:
            out += [f"### {name}: false positives by prompt type", ""]
            out += [
                markdown_table(
                    ["type", "safe rows", "flagged", "FPR"],
                    [[t, v["safe_rows"], v["flagged"], v["fpr"]] for t, v in r["false_positives_by_type"].items()],
                ),
                "",
            ]
        if "splits" in r:
            out += [f"### {name}: per split", ""]
            out += [
                markdown_table(
                    ["split", "rows", "AUPRC", "F1", "FPR", "accuracy"],
                    [[s, m["rows"], m["auprc"], m["f1"], m["fpr"], m["accuracy"]] for s, m in r["splits"].items()],
                ),
                "",
            ]
    return "\n".join(out)


def pr_curves(curves: dict[str, tuple[list[bool], list[float]]], out: Path, name: str, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for set_name, (truth, scores) in curves.items():
        if any(truth) and not all(truth):
            precision, recall, _ = precision_recall_curve(truth, scores)
            ax.plot(recall, precision, label=f"{set_name} (AUPRC {average_precision_score(truth, scores):.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{name}_pr_curves.png", dpi=110)
    plt.close(fig)
    return f"{name}_pr_curves.png"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--bundle", type=Path, action="append", required=True, help="bundle folder (repeat for several)"
    )
    parser.add_argument("--eval-dir", type=Path, default=EVAL_DIR)
    parser.add_argument("--sets", nargs="*", help="set folder names (default: every set in --eval-dir)")
    parser.add_argument(
        "--score", action="append", default=[], metavar="SET=LABELS", help="labels that score a set: max, or a,b"
    )
    parser.add_argument(
        "--stage", choices=["input", "output"], default="input", help="the check's stage (output: answers)"
    )
    parser.add_argument(
        "--context",
        choices=["none", "prompt"],
        default="prompt",
        help="output stage: pass a row's meta.prompt (the request it answers) as the context, or nothing",
    )
    parser.add_argument(
        "--peer", action="append", default=[], choices=sorted(PEERS), help="also score with this peer (repeat)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--limit", type=int, help="rows per set (every k-th row; for a quick look)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="accuracy", help="file name stem of the results")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from guard_sdk import Guard

    started = time.perf_counter()
    guard = Guard(args.bundle, device="cpu", threads=args.threads)
    peers = {name: load_peer(name) for name in args.peer}
    peer_sets: dict[str, dict[str, Any]] = {name: {} for name in peers}
    spec = parse_score_map(args.score)
    names = args.sets or sorted(p.name for p in args.eval_dir.iterdir() if (p / "data.jsonl").is_file())
    unknown = sorted(set(spec) - set(names))
    if unknown:
        raise SystemExit(f"--score names sets {unknown} that are not evaluated ({names})")
    sets, curves, labels_per_set = {}, {}, {}
    # Every --score is checked before any set is scored: a typo fails at once, not after minutes of scoring.
    labels_for = {name: chosen_labels(spec.get(name, "max"), guard.labels, name) for name in names}
    for name in names:
        rows = load_set(args.eval_dir / name, args.limit)
        labels = labels_for[name]
        log(f"accuracy: {name} ({len(rows)} rows) scored by {labels}")
        contexts = [r.meta.get("prompt") for r in rows] if args.context == "prompt" else None
        scores, flagged = score_texts(guard, [r.text for r in rows], labels, stage=args.stage, contexts=contexts)
        sets[name] = evaluate_set(name, rows, scores, flagged)
        curves[name] = ([r.unsafe for r in rows], scores)
        labels_per_set[name] = labels
        for peer, scorer in peers.items():
            peer_scores, peer_flagged = scorer([r.text for r in rows])
            peer_sets[peer][name] = metrics([r.unsafe for r in rows], peer_scores, peer_flagged)
    result = {
        "bundles": [b.manifest.id for b in guard.bundles],
        "thresholds": {label: s for label, s in zip(guard.labels, _thresholds(guard))},
        "labels_per_set": labels_per_set,
        "stage": args.stage,
        "context": args.context,
        "machine": machine_info(),
        "sets": sets,
        "published": PUBLISHED,
        "peers": peer_sets,
        "limit": args.limit,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    result["plots"] = [pr_curves(curves, args.out, args.name, f"PR curves: {', '.join(result['bundles'])}")]
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_json(args.out / f"{args.name}.json", result)
    (args.out / f"{args.name}.md").write_text(markdown(result) + "\n")
    print(markdown(result))
    return result


def _thresholds(guard: Any) -> list[float]:
    return [label.threshold for bundle in guard.bundles for label in bundle.manifest.labels]


if __name__ == "__main__":
    main()
