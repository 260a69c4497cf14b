"""A distilled student encoder for the default pack: what it saves in latency and costs in accuracy.

    python -m benchmarks.distill [--layers 2] [--epochs 2] [--threads 2]

``builder.train.distill`` trains a ``--layers`` student of all-MiniLM-L6-v2 to reproduce its sentence embedding on the texts
of the pack's two training files (no labels are used, and no evaluation or held-out text); ``guard-build pack
--base-model STUDENT`` then builds both pack guards on it with the pack's recipe unchanged. The teacher pack (the
default one) is built beside it from the same data. Reported: each pack against the pack targets
(``benchmarks.pack``), the student's cosine to the teacher on held-out texts, build times, and ``Guard.check``
latency of the content-safety bundles at 16/64/256/512 tokens, timed round-robin in one run.
Writes ``results/distill/distill.{json,md}`` and each pack's accuracy files.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import pack as pack_benchmark
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

TOKENS = (16, 64, 256, 512)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from builder.data.dataset import read_texts
    from builder.recipes.pack import PACK_GUARDS, PackConfig, build_pack, pack_datasets
    from builder.train.distill import DistillConfig, distill_encoder

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "distill")
    parser.add_argument("--out", type=Path, default=RESULTS / "distill")
    parser.add_argument("--layers", default="2", help="comma-separated student depths")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    pack_work = args.work / "pack-work"
    data = pack_datasets(PackConfig(seed_sets=TRAIN_DIR), pack_work / "data")
    texts = [text for guard in PACK_GUARDS for text in read_texts(pack_work / "data" / f"{guard}.jsonl")]
    packs: dict[str, Path] = {"teacher (6 layers)": args.work / "pack-teacher"}
    students: dict[str, Any] = {}
    build_seconds: dict[str, float] = {}
    for layers in (int(n) for n in args.layers.split(",")):
        log(f"distill: a {layers}-layer student on {len(texts)} texts")
        info = distill_encoder(
            texts,
            args.work / f"student-{layers}",
            DistillConfig(num_layers=layers, epochs=args.epochs, threads=args.threads),
        )
        students[f"student ({layers} layers)"] = info.model_dump()
        build_seconds[f"distill {layers} layers"] = info.train_seconds
        packs[f"student ({layers} layers)"] = args.work / f"pack-student-{layers}"

    accuracy: dict[str, Any] = {}
    for kind, out in packs.items():
        base = students.get(kind, {}).get("num_layers")
        config = PackConfig(
            seed_sets=TRAIN_DIR,
            threads=args.threads,
            base_model=str(args.work / f"student-{base}" / "model") if base else None,
        )
        started = time.perf_counter()
        build_pack(config, out, pack_work, progress=log)
        build_seconds[f"pack {kind}"] = round(time.perf_counter() - started, 1)
        name = "pack_" + kind.split(" ")[0] + (f"_{base}" if base else "")
        measured = pack_benchmark.main(
            ["--pack", str(out), "--heldout", str(pack_work / "data" / "heldout"), "--out", str(args.out)]
            + ["--name", name, "--threads", str(args.threads)]
        )
        accuracy[kind] = {row[1] + " " + row[2]: row[4] for row in measured["targets"]}

    result = {
        "machine": machine_info(),
        "config": {k: str(v) for k, v in vars(args).items()},
        "training_rows": {guard.name: guard.rows for guard in data.guards},
        "students": students,
        "accuracy": accuracy,
        "build_seconds": build_seconds,
        "latency_ms": _latency(packs, args.threads),
    }
    write_json(args.out / "distill.json", result)
    (args.out / "distill.md").write_text(_markdown(result) + "\n")
    print(_markdown(result))
    return result


def _latency(packs: dict[str, Path], threads: int) -> dict[str, dict[str, Any]]:
    """``Guard.check`` on the content-safety bundles, every depth timed round-robin at each length."""
    from guard_sdk import Guard

    guards = {kind: Guard(out / "content-safety", device="cpu", threads=threads) for kind, out in packs.items()}
    tokenizer = next(iter(packs.values())) / "content-safety" / "tokenizer.json"
    out: dict[str, dict[str, Any]] = {}
    for tokens in TOKENS:
        texts = texts_of_length(tokenizer, corpus(100), tokens, 40)
        engines = [Engine(kind, lambda i, g=g, t=texts: g.check(t[i % len(t)])) for kind, g in guards.items()]
        stats = time_interleaved(engines, warmup=5, min_reps=50, max_reps=300, budget_s=15)
        out[str(tokens)] = {kind: vars(s) for kind, s in stats.items()}
    return out


def _markdown(result: dict[str, Any]) -> str:
    kinds = list(result["accuracy"])
    metrics = list(next(iter(result["accuracy"].values())))
    rows = [[metric, *(result["accuracy"][kind][metric] for kind in kinds)] for metric in metrics]
    parts = ["Pack targets (benchmarks.pack):", markdown_table(["set metric", *kinds], rows)]
    rows = []
    for tokens, by_kind in result["latency_ms"].items():
        teacher = by_kind[kinds[0]]["p50"]
        rows.append(
            [
                tokens,
                *(f"{by_kind[k]['p50']} / {by_kind[k]['p99']} ({by_kind[k]['p50'] / teacher:.2f}×)" for k in kinds),
            ]
        )
    parts += ["", "Guard.check, content-safety, p50 / p99 ms (p50 ratio to the teacher):"]
    parts.append(markdown_table(["tokens", *kinds], rows))
    rows = [
        [k, v["kept_layers"], v["texts"], v["cosine_before"], v["cosine_after"]] for k, v in result["students"].items()
    ]
    parts += [
        "",
        "Students:",
        markdown_table(["student", "teacher layers kept", "texts", "cosine before", "after"], rows),
    ]
    parts += ["", "Build seconds: " + ", ".join(f"{k} {v}" for k, v in result["build_seconds"].items())]
    return "\n".join(parts)


if __name__ == "__main__":
    main()
