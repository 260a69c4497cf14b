"""Benign prose as negatives: does it stop the prompt-injection guard flagging ordinary documents (issues #24, #25)?

    python -m benchmarks.document_negatives [--data DIR] [--train-chunks 300] [--name document_negatives]

The default pack flags benign 3,000-word documents (``benchmarks.attacks``) on windows of plain prose, through the
prompt-injection guard's ``role-play`` and ``jailbreak`` labels. Here the guard's recipe (``benchmarks.loso``'s fp32
embedding guard: the pack's data, cached all-MiniLM-L6-v2 embeddings, one balanced logistic regression per label,
threshold where 4 % of benign validation rows are flagged) is trained in four arms:

- ``a``: the recipe's data as is;
- ``b``: plus ``--train-chunks`` windows of SEP's clean documents as rows without a label;
- ``c``: the same from TaskTracker's clean documents;
- ``d``: both.

A window ("chunk") is consecutive clean documents of one set joined by blank lines up to ``CHUNK_WORDS`` words,
about the guard's 128-token window. Each set's documents are split in half by document: chunks that train come from
one half, everything measured from the other. Measured per arm: deepset's test split (AUPRC, recall and FPR at the
threshold); per set, the share of held-out prose chunks flagged (cross-source where the arm did not train on that
set's prose: that is the honest number, though both sets are GPT-4-written SEP task inputs), recall on the
injection and jailbreak payloads of ``benchmarks.attacks`` alone and placed in the middle of held-out chunks, and
recall on the set's held-out injected documents (do prose negatives hide real indirect injections?); which label is
highest on the flagged chunks. Writes ``results/loso/<name>.{json,md}``.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._common import RESULTS, TRAIN_DIR, log, markdown_table, write_results
from .attacks import PAYLOADS
from .loso import at_threshold, dev_set, embed, load_rows, score, targets, threshold

DOCUMENT_SETS = ["sep_probe_injections", "tasktracker_injections"]
ARMS = {
    "a: recipe": [],
    "b: + SEP prose": ["sep_probe_injections"],
    "c: + TaskTracker prose": ["tasktracker_injections"],
    "d: + both": DOCUMENT_SETS,
}
# The injections and jailbreaks among the payloads (the rest are harmful requests and abuse: content-safety's).
INJECTION_PAYLOADS = PAYLOADS[:14]
CHUNK_WORDS = 80  # a chunk is at least this long: with the payload inside, about the guard's 128-token window
DOCUMENT_CHUNKS = 30  # chunks per held-out 3,000-word document (benchmarks.attacks' length)


def chunks(documents: Sequence[str], count: int, rng: random.Random) -> list[str]:
    """Up to ``count`` windows of prose, each consecutive documents (in a shuffled order) of ``CHUNK_WORDS`` words or
    more; no document is in two chunks."""
    order = list(documents)
    rng.shuffle(order)
    out: list[str] = []
    current: list[str] = []
    words = 0
    for text in order:
        if len(out) == count:
            break
        current.append(text.strip())
        words += len(text.split())
        if words >= CHUNK_WORDS:
            out.append("\n\n".join(current))
            current, words = [], 0
    return out


def in_middle(text: str, payload: str) -> str:
    """``payload`` inserted at the first space from the middle of ``text`` on, so no word is split."""
    cut = text.find(" ", len(text) // 2)
    cut = len(text) if cut < 0 else cut
    return f"{text[:cut]} {payload}{text[cut:]}"


def split_set(name: str, rng: random.Random, args: argparse.Namespace) -> dict[str, list[str]]:
    """One document set's texts: training chunks from half its documents; held-out chunks, payloads inside them and
    injected documents from the other half."""
    by_document: dict[str, list[dict[str, Any]]] = {}
    for row in load_rows(TRAIN_DIR / name / "data.jsonl"):
        # ids are "<set>-doc-<n>-clean" and "<set>-doc-<n>-<injection>": the document is all but the last part.
        by_document.setdefault(row["id"].rsplit("-", 1)[0], []).append(row)
    keys = sorted(by_document)
    rng.shuffle(keys)
    train_keys, test_keys = keys[: len(keys) // 2], keys[len(keys) // 2 :]

    def texts(keys: Sequence[str], label: str) -> list[str]:
        return [row["text"] for key in keys for row in by_document[key] if row["label"] == label]

    held_out = chunks(texts(test_keys, "safe"), args.test_chunks, rng)
    injected = texts(test_keys, "unsafe")
    return {
        "train": chunks(texts(train_keys, "safe"), args.train_chunks, rng),
        "held_out": held_out,
        "payload_in_chunk": [in_middle(c, p) for c in held_out[: args.payload_chunks] for p in INJECTION_PAYLOADS],
        "injected": rng.sample(injected, min(args.injected, len(injected))),
    }


def run_arm(
    base: tuple[np.ndarray, np.ndarray],
    vectors: dict[str, dict[str, np.ndarray]],
    extra: Sequence[str],
    dev: tuple[np.ndarray, np.ndarray],
    alone: np.ndarray,
    labels: Sequence[str],
    seed: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    added = np.concatenate([vectors[name]["train"] for name in extra]) if extra else base[0][:0]
    x = np.concatenate([base[0], added])
    y = np.concatenate([base[1], np.zeros((len(added), base[1].shape[1]), dtype=bool)])
    head, cut = threshold(x, y, args.benign_flag_rate, seed)
    # The same guard with role-play never firing (the threshold kept): does that label carry the prose flags?
    weight, bias = head[0].copy(), head[1].copy()
    weight[:, labels.index("role-play")], bias[labels.index("role-play")] = 0.0, -20.0
    return {
        "added_rows": len(added),
        "threshold": cut,
        **measure(head, cut, vectors, extra, dev, alone, labels),
        "without_role_play": measure((weight, bias), cut, vectors, extra, dev, alone, labels),
    }


def measure(
    head: tuple[np.ndarray, np.ndarray],
    cut: float,
    vectors: dict[str, dict[str, np.ndarray]],
    extra: Sequence[str],
    dev: tuple[np.ndarray, np.ndarray],
    alone: np.ndarray,
    labels: Sequence[str],
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "deepset": at_threshold(dev[1], score(dev[0], head), cut),
        "payloads_alone": float((score(alone, head) >= cut).mean()),
        "sets": {},
    }
    for name in DOCUMENT_SETS:
        held_out = vectors[name]["held_out"]
        flagged = score(held_out, head) >= cut
        # The label that flags a chunk: its highest one (how Guard names a flag).
        top = (held_out @ head[0] + head[1]).argmax(axis=1)
        documents = flagged[: len(flagged) // DOCUMENT_CHUNKS * DOCUMENT_CHUNKS].reshape(-1, DOCUMENT_CHUNKS)
        result["sets"][name] = {
            "cross_source": name not in extra,
            "prose_flagged": float(flagged.mean()),
            # A document is flagged when any of its windows is.
            "documents_flagged": float(documents.any(axis=1).mean()),
            "documents": len(documents),
            "prose_flagged_by_label": dict(Counter(labels[j] for j in top[flagged])),
            "payload_in_chunk_recall": float((score(vectors[name]["payload_in_chunk"], head) >= cut).mean()),
            "injected_recall": float((score(vectors[name]["injected"], head) >= cut).mean()),
        }
    return result


def run_seed(
    rows: Sequence[dict[str, Any]],
    base_y: np.ndarray,
    labels: Sequence[str],
    data: Path,
    seed: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Every arm on one draw of chunks and one validation split."""
    rng = random.Random(seed)
    texts = {name: split_set(name, rng, args) for name in DOCUMENT_SETS}
    dev_texts, dev_truth = dev_set("deepset_prompt_injections")
    # One call: every new text is embedded and added to the pack's embedding cache at once.
    named = [(name, part) for name in DOCUMENT_SETS for part in texts[name]]
    parts = [[row["text"] for row in rows], dev_texts, INJECTION_PAYLOADS] + [texts[n][p] for n, p in named]
    log(f"seed {seed}: embedding {sum(map(len, parts))} texts (cached ones are read)")
    flat = embed([text for part in parts for text in part], data)
    base_x, dev_x, alone_x, *set_x = np.split(flat, np.cumsum([len(part) for part in parts])[:-1])
    vectors: dict[str, dict[str, np.ndarray]] = {name: {} for name in DOCUMENT_SETS}
    for (name, part), x in zip(named, set_x):
        vectors[name][part] = x
    return {
        "counts": {name: {part: len(t) for part, t in texts[name].items()} for name in DOCUMENT_SETS},
        "arms": {
            arm: run_arm((base_x, base_y), vectors, extra, (dev_x, dev_truth), alone_x, labels, seed, args)
            for arm, extra in ARMS.items()
        },
    }


def mean_over_seeds(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The arms' numbers averaged over seeds; the flagged chunks' labels summed."""

    def merge(values: list[Any]) -> Any:
        if isinstance(values[0], dict):
            counts = [v for value in values for v in value.values()]
            if all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
                return dict(sum((Counter(value) for value in values), Counter()))
            return {key: merge([value[key] for value in values]) for key in values[0]}
        return values[0] if isinstance(values[0], bool) else float(np.mean(values))

    return merge([run["arms"] for run in runs])


SHORT = {"sep_probe_injections": "SEP", "tasktracker_injections": "TaskTracker"}


def arms_table(arms: dict[str, Any]) -> str:
    rows = []
    for arm, r in arms.items():
        row: list[object] = [arm, int(r["added_rows"]), r["deepset"]["auprc"], r["deepset"]["recall"]]
        row += [r["deepset"]["fpr"], r["payloads_alone"]]
        for name in DOCUMENT_SETS:
            s = r["sets"][name]
            mark = "" if s["cross_source"] else " (in)"
            row += [f"{s['prose_flagged']:.3g}{mark}", f"{s['documents_flagged']:.3g}{mark}"]
            row += [s["payload_in_chunk_recall"], s["injected_recall"]]
        rows.append(row)
    header = ["arm", "rows added", "deepset AUPRC", "deepset recall", "deepset FPR", "payloads alone"]
    for name in DOCUMENT_SETS:
        n = SHORT[name]
        header += [f"{n} chunks flagged", f"{n} docs flagged", f"{n} payload in chunk", f"{n} injected recall"]
    return markdown_table(header, rows)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from builder.recipes.pack import default_work_dir
    from guard_sdk import default_pack_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="pack_datasets' folder (default: the default pack's work data)")
    parser.add_argument("--train-chunks", type=int, default=300, help="prose chunks added per set")
    parser.add_argument("--test-chunks", type=int, default=300, help="held-out prose chunks per set")
    parser.add_argument("--payload-chunks", type=int, default=20, help="held-out chunks each payload is placed in")
    parser.add_argument("--injected", type=int, default=300, help="held-out injected documents per set")
    parser.add_argument("--benign-flag-rate", type=float, default=0.04)
    parser.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    parser.add_argument("--out", type=Path, default=RESULTS / "loso")
    parser.add_argument("--name", default="document_negatives")
    args = parser.parse_args(argv)
    data = args.data or default_work_dir(default_pack_dir()) / "data"
    if not (data / "prompt-injection.jsonl").is_file():
        raise SystemExit(f"{data} holds no prompt-injection.jsonl: pass --data, the data folder of a pack build")

    rows = load_rows(data / "prompt-injection.jsonl")
    labels, base_y = targets(rows)
    runs = {seed: run_seed(rows, base_y, labels, data, seed, args) for seed in args.seeds}
    mean = mean_over_seeds(list(runs.values()))
    result: dict[str, Any] = {
        "data": str(data),
        "seeds": args.seeds,
        "benign_flag_rate": args.benign_flag_rate,
        "chunk_words": CHUNK_WORDS,
        "document_chunks": DOCUMENT_CHUNKS,
        "labels": labels,
        "mean": mean,
        "runs": runs,
    }

    labels_table = [
        [arm, SHORT[name], ", ".join(f"{k} {v}" for k, v in sorted(s["prose_flagged_by_label"].items())) or "none"]
        for arm, r in mean.items()
        for name, s in r["sets"].items()
    ]
    counts = next(iter(runs.values()))["counts"]
    lines = [
        f"### Benign prose as negatives (prompt-injection guard; mean of seeds {', '.join(map(str, args.seeds))})",
        "",
        f"Chunks of >= {CHUNK_WORDS} words of clean documents; per set and seed "
        + "; ".join(f"{SHORT[n]}: " + ", ".join(f"{p} {c}" for p, c in counts[n].items()) for n in DOCUMENT_SETS)
        + f". A document is {DOCUMENT_CHUNKS} held-out chunks (about 3,000 words), flagged when any chunk is. "
        f"Payloads: the {len(INJECTION_PAYLOADS)} injection/jailbreak probes of benchmarks.attacks. Prose flags "
        "are cross-source unless marked (in): documents held out of the same set.",
        "",
        arms_table(mean),
        "",
        "The same guards with `role-play` never firing (same thresholds):",
        "",
        arms_table({arm: {**r, **r["without_role_play"]} for arm, r in mean.items()}),
        "",
        "Highest label on the flagged held-out prose chunks (all seeds):",
        "",
        markdown_table(["arm", "set", "flagged chunks by label"], labels_table),
        "",
    ]
    write_results(args.out, args.name, result, "\n".join(lines))
    return result


if __name__ == "__main__":
    main()
