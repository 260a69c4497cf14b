"""Leave-one-source-out: how the default pack's recipe does on sources it never saw.

    python -m benchmarks.loso [--data DIR] [--guards content-safety prompt-injection] [--name loso]

Rows held out of a source the guard trained on say little (the pack's own held-out trigger-word rows said 3 % false
positives where unseen benign prompts said 35 %). Here every source of a guard's training data (``pack_datasets``'
output, ``--data``) is held out whole in turn: the guard is trained on the other sources, its threshold set as the
pack sets it (at most ``--benign-flag-rate`` of benign validation texts flagged), and the held-out source is scored:
recall on its unsafe rows, the share of its safe rows flagged (over-defence). The dev sets are scored by the guard
trained on every source.

The model is the pack's embedding guard (all-MiniLM-L6-v2 sentence embedding + one balanced logistic regression per
label, a text flagged by its highest label), in fp32 with sentence-transformers: the int8 bundle's numbers are
``benchmarks.pack``'s. Embeddings are kept in the pack's embedding cache beside ``--data``. Writes ``<name>.json`` and
``<name>.md``.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._common import EVAL_DIR, RESULTS, TRAIN_DIR, markdown_table, write_results

# Dev sets per guard: (set, how its rows are read).
DEV_SETS = {
    "content-safety": ["openai_moderation", "xstest"],
    "prompt-injection": ["deepset_prompt_injections"],
}
MIN_ROWS = 20


def embed(texts: Sequence[str], data: Path) -> np.ndarray:
    """Sentence embeddings as the pack's embedding guards compute them, in the pack's embedding cache."""
    from builder.recipes.pack import PackConfig, embedding_cache
    from builder.train.embedding import embed_texts

    return embed_texts(_encoder(), list(texts), 64, True, embedding_cache(PackConfig(seed_sets=TRAIN_DIR), data.parent))


@functools.cache
def _encoder() -> Any:
    from builder.recipes.pack import PackConfig
    from builder.train.run import sentence_encoder

    return sentence_encoder(None, PackConfig(seed_sets=TRAIN_DIR).max_length)


def fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pack's heads; a label without positives among the training sources never fires."""
    from builder.train.embedding import fit_heads

    present = y.any(axis=0) & ~y.all(axis=0)
    weight = np.zeros((x.shape[1], y.shape[1]), dtype=np.float32)
    bias = np.full(y.shape[1], -20.0, dtype=np.float32)
    weight[:, present], bias[present] = fit_heads(x, y[:, present])
    return weight, bias


def score(x: np.ndarray, head: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The highest label's probability per row (how ``Guard`` flags a text)."""
    logits = x @ head[0] + head[1]
    return 1.0 / (1.0 + np.exp(-logits.max(axis=1)))


def threshold(x: np.ndarray, y: np.ndarray, rate: float, seed: int) -> tuple[tuple[np.ndarray, np.ndarray], float]:
    """Train on 85 % of the rows and put the threshold where ``rate`` of the other 15 %'s benign rows are flagged;
    then refit on every row (the pack's own bundle calibrates on its validation split the same way)."""
    rng = np.random.default_rng(seed)
    validation = rng.random(len(x)) < 0.15
    head = fit(x[~validation], y[~validation])
    benign = score(x[validation & ~y.any(axis=1)], head)
    cut = float(np.quantile(benign, 1.0 - rate)) if len(benign) else 0.5
    return fit(x, y), cut


def auprc(truth: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(truth, scores)) if truth.any() and not truth.all() else float("nan")


def targets(rows: Sequence[dict[str, Any]]) -> tuple[list[str], np.ndarray]:
    """The labels of these rows, sorted, and which of them each row has (rows x labels)."""
    labels = sorted({label for row in rows for label in row["labels"]})
    return labels, np.asarray([[label in row["labels"] for label in labels] for row in rows], dtype=bool)


def at_threshold(truth: np.ndarray, scores: np.ndarray, cut: float) -> dict[str, float]:
    """AUPRC, and recall and FPR at the threshold ``cut``."""
    flagged = scores >= cut
    return {"auprc": auprc(truth, scores), "recall": float(flagged[truth].mean()), "fpr": float(flagged[~truth].mean())}


def held_out_rates(flagged: np.ndarray, unsafe: np.ndarray) -> dict[str, float | None]:
    """A held-out source's recall on its unsafe rows and share of its safe rows flagged (None where it has none)."""
    return {
        "recall": float(flagged[unsafe].mean()) if unsafe.any() else None,
        "flagged_safe": float(flagged[~unsafe].mean()) if (~unsafe).any() else None,
    }


def load_rows(path: Path) -> list[dict[str, Any]]:
    from builder.data.dataset import iter_text_rows

    return list(iter_text_rows(path))


def dev_set(name: str) -> tuple[list[str], np.ndarray]:
    """A dev set's texts and which are unsafe (deepset: its test split)."""
    rows = load_rows(EVAL_DIR / name / "data.jsonl")
    if name == "deepset_prompt_injections":
        rows = [r for r in rows if r.get("meta", {}).get("split") == "test"]
    return [r["text"] for r in rows], np.asarray([r["label"] == "unsafe" for r in rows])


def run_guard(data: Path, guard: str, rate: float, seed: int) -> dict[str, Any]:
    rows = load_rows(data / f"{guard}.jsonl")
    labels, y = targets(rows)
    x = embed([row["text"] for row in rows], data)
    sources = np.asarray([row.get("source", "") for row in rows])
    held_out = []
    for source in sorted(set(sources)):
        mask = sources == source
        if mask.sum() < MIN_ROWS:
            continue
        head, cut = threshold(x[~mask], y[~mask], rate, seed)
        flagged = score(x[mask], head) >= cut
        unsafe = y[mask].any(axis=1)
        held_out.append(
            {
                "source": source,
                "unsafe": int(unsafe.sum()),
                "safe": int((~unsafe).sum()),
                **held_out_rates(flagged, unsafe),
            }
        )
    head, cut = threshold(x, y, rate, seed)
    dev = {}
    for name in DEV_SETS[guard]:
        texts, truth = dev_set(name)
        scores = score(embed(texts, data), head)
        dev[name] = {"rows": len(texts), **at_threshold(truth, scores, cut)}
    return {"rows": len(rows), "labels": labels, "threshold": cut, "held_out": held_out, "dev": dev}


def summary(result: dict[str, Any]) -> dict[str, float | None]:
    """Mean recall over held-out sources with unsafe rows, mean and worst flag rate over those with safe rows."""
    recalls = [r["recall"] for r in result["held_out"] if r["recall"] is not None]
    flagged = [r["flagged_safe"] for r in result["held_out"] if r["flagged_safe"] is not None]
    return {
        "mean_recall": float(np.mean(recalls)) if recalls else None,
        "min_recall": float(np.min(recalls)) if recalls else None,
        "mean_flagged_safe": float(np.mean(flagged)) if flagged else None,
        "max_flagged_safe": float(np.max(flagged)) if flagged else None,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from builder.recipes.pack import default_work_dir
    from guard_sdk import default_pack_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="pack_datasets' folder (default: the default pack's work data)")
    parser.add_argument("--guards", nargs="+", default=list(DEV_SETS), choices=list(DEV_SETS))
    parser.add_argument("--benign-flag-rate", type=float, default=0.04)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="loso")
    args = parser.parse_args(argv)
    data = args.data or default_work_dir(default_pack_dir()) / "data"
    if missing := [guard for guard in args.guards if not (data / f"{guard}.jsonl").is_file()]:
        raise SystemExit(f"{data} holds no training data for {missing}: pass --data, the data folder of a pack build")
    result: dict[str, Any] = {"data": str(data), "benign_flag_rate": args.benign_flag_rate, "guards": {}}
    lines = []
    for guard in args.guards:
        run = result["guards"][guard] = run_guard(data, guard, args.benign_flag_rate, args.seed)
        run["summary"] = summary(run)
        lines += [f"### {guard} ({run['rows']} rows)", ""]
        lines.append(
            markdown_table(
                ["held-out source", "unsafe", "safe", "recall", "safe flagged"],
                [[r["source"], r["unsafe"], r["safe"], r["recall"], r["flagged_safe"]] for r in run["held_out"]],
            )
        )
        lines += ["", markdown_table(["summary", "value"], [[k, v] for k, v in run["summary"].items()]), ""]
        lines.append(
            markdown_table(
                ["dev set (all sources)", "rows", "AUPRC", "recall", "FPR"],
                [[k, v["rows"], v["auprc"], v["recall"], v["fpr"]] for k, v in run["dev"].items()],
            )
        )
        lines.append("")
    write_results(args.out, args.name, result, "\n".join(lines))
    return result


if __name__ == "__main__":
    main()
