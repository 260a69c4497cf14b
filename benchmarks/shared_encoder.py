"""A check of the default pack (both guards, as ``Guard.default()`` runs them): one shared encoder run vs one per guard.

    python -m benchmarks.shared_encoder                       # the pack in guard_sdk.default_pack_dir()
    python -m benchmarks.shared_encoder --pack .cache/pack --threads 1 2 --out benchmarks/results/shared_encoder

The baseline is the same bundles with ``model.embedding`` taken out of their manifests (copies under
``.cache/benchmarks/unshared``): each guard then runs its own ``model.onnx`` and its head inside it, as before the
runtime shared encoders. Both are timed in one process, in warm turns (``time_interleaved``), on texts of exact token
lengths; the scores of the two are compared on the same texts first.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._common import (
    CACHE,
    RESULTS,
    Engine,
    corpus,
    log,
    machine_info,
    markdown_table,
    texts_of_length,
    time_interleaved,
    write_json,
)


def unshared_copy(bundle_dir: Path) -> Path:
    """The bundle without ``model.embedding``: its own model (encoder and head) runs for every check."""
    from guard_sdk import GuardBundle
    from guard_sdk.bundle import write_manifest

    manifest = GuardBundle.load(bundle_dir).manifest
    if manifest.model.embedding is None:
        raise SystemExit(f"{bundle_dir} is not an embedding guard with its head in the manifest (pack >= 0.4.0)")
    copy = CACHE / "unshared" / f"{manifest.name}-{manifest.files[manifest.model.file][:12]}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(bundle_dir, copy)
    head = manifest.model.embedding.head_file
    (copy / head).unlink()
    plain = manifest.model_copy(
        update={
            "model": manifest.model.model_copy(update={"embedding": None}),
            "files": {name: sha for name, sha in manifest.files.items() if name != head},
        }
    )
    write_manifest(copy, plain)
    return copy


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from guard_sdk import PACK_GUARDS, Guard, default_pack_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pack", type=Path, default=None, help="pack folder (default: guard_sdk.default_pack_dir())")
    parser.add_argument("--tokens", type=int, nargs="+", default=[16, 64, 512])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--reps", type=int, default=300, help="measured checks per engine and setting (at most)")
    parser.add_argument("--out", type=Path, default=RESULTS / "shared_encoder")
    args = parser.parse_args(argv)

    shared = [(args.pack or default_pack_dir()) / name for name in PACK_GUARDS]
    unshared = [unshared_copy(bundle) for bundle in shared]
    pool = corpus()
    sample = pool[:300]
    rows, results = [], []
    for threads in args.threads:
        one_run = Guard(shared, device="cpu", threads=threads)
        per_guard = Guard(unshared, device="cpu", threads=threads)
        diff = max(
            abs(a.score - b.score)
            for x, y in zip(one_run.check_batch(sample), per_guard.check_batch(sample))
            for a, b in zip(x.scores, y.scores)
        )
        for tokens in args.tokens:
            texts = texts_of_length(shared[0] / "tokenizer.json", pool, tokens, 50)
            engines = [
                Engine("one run per guard", lambda i, g=per_guard, t=texts: g.check(t[i % len(t)])),
                Engine("one shared run", lambda i, g=one_run, t=texts: g.check(t[i % len(t)])),
            ]
            reps = args.reps if tokens <= 128 else max(40, args.reps // 5)
            stats = time_interleaved(engines, warmup=10, min_reps=reps, max_reps=reps, budget_s=60, block=20, rewarm=2)
            before, after = stats["one run per guard"], stats["one shared run"]
            log(f"{threads} threads, {tokens} tokens: {before.p50:.2f} -> {after.p50:.2f} ms p50")
            rows.append([threads, tokens, before.p50, before.p99, after.p50, after.p99, before.p50 / after.p50])
            results.append({"threads": threads, "tokens": tokens, "per_guard": before, "shared": after})
        rows.append([threads, "max \\|Δscore\\|", f"{diff:.1e}", "", "", "", ""])
    table = markdown_table(["threads", "tokens", "per guard p50", "p99", "shared p50", "p99", "speed-up (p50)"], rows)
    print(table)
    payload = {"machine": machine_info(args.threads), "pack": [str(b) for b in shared], "results": results}
    write_json(args.out / "shared_encoder.json", payload)
    (args.out / "shared_encoder.md").write_text(
        f"# Default pack check, both guards (`python -m benchmarks.shared_encoder`)\n\n{table}\n\n"
        f"Machine: {json.dumps(payload['machine']['cpu'])}, load at start {payload['machine']['load_average_1_5_15']}\n"
    )
    return payload


if __name__ == "__main__":
    main()
