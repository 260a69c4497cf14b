"""Can a threshold placed for documents keep benign 3,000-word documents unflagged and still find a payload in one?

    python -m benchmarks.document_thresholds [--pack DIR] [--documents 20] [--name document_thresholds]

A document is read as many windows and sentences, and it is flagged when any of them is over its threshold; the
pack's thresholds are placed on short texts, where one text is one window. Here, per label, a document's score is
its highest over every view (windows and sentences in context: ``check`` with every threshold at 1.0), and a
document threshold per label is placed on documents made of the pack's own benign validation texts (~3,000 words
each, drawn at random): the lowest that flags at most ``budget`` / labels of them. It is measured on ~3,000-word
documents of prose from sources the pack never trained on (SEP's and TaskTracker's clean documents, and the six of
``benchmarks.attacks``) and on the probe payloads of ``benchmarks.attacks`` placed at the start, middle or end of
twelve of them, beside the shipped thresholds. Writes ``<name>.json`` and ``<name>.md`` under
``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._common import RESULTS, TRAIN_DIR, markdown_table, write_results
from .attacks import DOCUMENT_BUDGET, PAYLOADS, benign_documents, benign_sets, document_of, safe_texts
from .sentence_rules import GUARDS, validation_benign

BUDGETS = [0.05, 0.1, 0.2, 0.4]
PROSE_SOURCES = ["sep_probe_injections", "tasktracker_injections"]


def documents_of(texts: Sequence[str], rng: random.Random, count: int, words: int = 3000) -> list[str]:
    """``count`` documents of about ``words`` words, each of texts drawn at random, one paragraph each."""
    return ["\n\n".join(document_of(texts, rng, words)) for _ in range(count)]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from guard_sdk import Guard, ScanOptions, default_pack_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pack", type=Path, default=None, help="pack folder (default: guard_sdk.default_pack_dir())")
    parser.add_argument("--documents", type=int, default=20, help="prose documents per unseen source")
    parser.add_argument("--calibration", type=int, default=60, help="validation documents per guard")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="document_thresholds")
    args = parser.parse_args(argv)
    pack = args.pack or default_pack_dir()
    bundles = [pack / g for g in GUARDS]

    shipped = Guard(bundles, threads=2, scan=ScanOptions(decode=False), max_tokens=DOCUMENT_BUDGET)
    labels = [label for b in shipped.bundles for label in b.manifest.labels]
    label_guard = np.asarray([g for g, b in enumerate(shipped.bundles) for _ in b.manifest.labels])
    # Every threshold at 1.0 (a sentence's too): each label reports its highest score over all of a text's views.
    raw = Guard(
        bundles,
        threads=2,
        scan=ScanOptions(decode=False),
        max_tokens=DOCUMENT_BUDGET,
        thresholds={label.name: 1.0 for label in labels},
    )
    whole_text = Guard(bundles, threads=2, scan=ScanOptions(sentences_in_context=False, decode=False))

    def highest(docs: Sequence[str]) -> np.ndarray:
        return np.asarray([[s.score for s in r.scores] for r in raw.check_batch(list(docs))])

    rng = random.Random(1)
    calibration = {
        g: highest(documents_of(validation_benign(bundle), rng, args.calibration))
        for g, bundle in enumerate(shipped.bundles)
    }
    prose = {
        source: documents_of(
            safe_texts(TRAIN_DIR / source / "data.jsonl"),
            rng,
            args.documents,
        )
        for source in PROSE_SOURCES
    }
    attacks_rng = random.Random(0)  # as benchmarks.attacks draws its documents
    benign_sets(attacks_rng, 200)
    prose["benchmarks.attacks documents"] = ["\n\n".join(d) for d in benign_documents(attacks_rng, 6)]
    probes = [p for p, r in zip(PAYLOADS, whole_text.check_batch(PAYLOADS)) if r.flagged]
    hosts = [doc for source in PROSE_SOURCES for doc in prose[source][:6]]
    placed = []
    for k, doc in enumerate(hosts):
        paragraphs = doc.split("\n\n")
        for n, where in enumerate((0.0, 0.5, 1.0)):
            with_payload = list(paragraphs)
            with_payload.insert(int(where * len(paragraphs)), probes[(3 * k + n) % len(probes)])
            placed.append("\n\n".join(with_payload))
    sets = {**{f"benign: {name}": docs for name, docs in prose.items()}, "payload inside a document": placed}

    rows: dict[str, list[float]] = {
        "shipped thresholds": [
            round(float(np.mean([r.flagged for r in shipped.check_batch(docs)])), 3) for docs in sets.values()
        ]
    }
    scores = {name: highest(docs) for name, docs in sets.items()}
    for budget in BUDGETS:
        thresholds = np.ones(len(labels))
        for g in range(len(GUARDS)):
            mine = np.flatnonzero(label_guard == g)
            allowed = int(np.floor(len(calibration[g]) * budget / mine.size))
            for j in mine:
                ranked = np.sort(calibration[g][:, j])[::-1]
                thresholds[j] = max(labels[j].threshold, float(np.nextafter(ranked[allowed], 1.0)))
        rows[f"document thresholds @ {budget:g} of validation documents"] = [
            round(float(np.mean((s >= thresholds).any(axis=1))), 3) for s in scores.values()
        ]
    out = {
        "pack": str(pack),
        "probes flagged alone": f"{len(probes)}/{len(PAYLOADS)}",
        "columns": list(sets),
        "rows": rows,
    }
    table = markdown_table(["thresholds", *sets], [[k, *v] for k, v in rows.items()])
    write_results(args.out, args.name, out, table + "\n")
    return out


if __name__ == "__main__":
    main()
