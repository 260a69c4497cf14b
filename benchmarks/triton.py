"""A Guard whose model runs on Triton (``TritonBackend``) vs the same Guard in-process, on 64-token texts: one
caller's latency, then checks/s with many callers. The server runs beside the client on the same machine:

    .venv-triton/bin/python -m guard_sdk.triton serve --bundle DIR --precision all --instances 2 --threads 1 &
    python -m benchmarks.triton --bundle DIR --url http://127.0.0.1:8000

Both Guards are timed in one process, in warm turns (``time_interleaved``); their scores are compared first.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._common import (
    RESULTS,
    Engine,
    concurrent_checks,
    corpus,
    log,
    machine_info,
    markdown_table,
    texts_of_length,
    time_interleaved,
    write_json,
)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from guard_sdk import ExecutionOptions, Guard
    from guard_sdk.triton import TritonBackend

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the Triton server serving the bundle")
    parser.add_argument("--precision", choices=["int8", "fp32"], nargs="+", default=["int8", "fp32"])
    parser.add_argument("--threads", type=int, default=2, help="the in-process Guard's threads")
    parser.add_argument("--callers", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--throughput-s", type=float, default=5.0, help="seconds per concurrent-callers setting")
    parser.add_argument("--out", type=Path, default=RESULTS / "triton")
    args = parser.parse_args(argv)

    texts = texts_of_length(args.bundle / "tokenizer.json", corpus(), 64, 50)
    rows, results = [], []
    for precision in args.precision:
        execution = ExecutionOptions(precision=precision)
        guards = {
            "in-process": Guard(args.bundle, device="cpu", threads=args.threads, execution=execution),
            "Triton": Guard(args.bundle, execution=execution, backend=TritonBackend(args.url)),
        }
        local, remote = guards.values()
        diff = max(
            abs(a.score - b.score)
            for x, y in zip(local.check_batch(texts), remote.check_batch(texts))
            for a, b in zip(x.scores, y.scores)
        )
        engines = [Engine(name, lambda i, g=g: g.check(texts[i % len(texts)])) for name, g in guards.items()]
        stats = time_interleaved(engines, warmup=10, min_reps=args.reps, max_reps=args.reps, budget_s=60, block=20)
        log(f"{precision}: max |score difference| {diff:.1e}; p50 {[s.p50 for s in stats.values()]} ms")
        for callers in args.callers:
            measured = {name: concurrent_checks(g, texts, callers, args.throughput_s) for name, g in guards.items()}
            mine, theirs = measured.values()
            log(f"{precision}, {callers} callers: {[m['checks_per_s'] for m in measured.values()]} checks/s")
            rows.append(
                [precision, callers, mine["checks_per_s"], mine["latency_p50"], mine["latency_p99"]]
                + [theirs["checks_per_s"], theirs["latency_p50"], theirs["latency_p99"]]
            )
            results.append({"precision": precision, "callers": callers, **measured})
        results.append({"precision": precision, "max_score_diff": diff, "one_caller": stats})
    table = markdown_table(
        ["precision", "callers", "in-process checks/s", "p50 ms", "p99 ms", "Triton checks/s", "p50 ms", "p99 ms"], rows
    )
    print(table)
    payload = {"machine": machine_info([args.threads]), "bundle": str(args.bundle), "results": results}
    write_json(args.out / "triton.json", payload)
    (args.out / "triton.md").write_text(f"# In-process vs Triton (`python -m benchmarks.triton`)\n\n{table}\n")
    return payload


if __name__ == "__main__":
    main()
