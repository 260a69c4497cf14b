"""Guards on different models in one ``Guard``: their models run at the same time
(``ExecutionOptions.models_side_by_side``, on by default: the threads are split between them) vs one after the other
with all threads each (``models_side_by_side=False``).

    python -m benchmarks.parallel_models --bundles PACK/content-safety PACK/prompt-injection .cache/demo/bundle

Both Guards are timed in one process, in warm turns (``time_interleaved``), on texts of exact token lengths (by the
first bundle's tokenizer); then many callers share each Guard (``concurrent_checks``). The scores of the two are
compared on the same texts first. Guards on one shared encoder are one model here (one lane).
"""

from __future__ import annotations

import argparse
import json
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

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", type=Path, nargs="+", required=True, help="bundles on at least two models")
    parser.add_argument("--tokens", type=int, nargs="+", default=[16, 64, 256, 512])
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--callers", type=int, nargs="+", default=[1, 8, 32], help="concurrent callers, 64 tokens")
    parser.add_argument("--reps", type=int, default=300, help="measured checks per Guard and setting (at most)")
    parser.add_argument("--throughput-s", type=float, default=5.0, help="seconds per concurrent-callers setting")
    parser.add_argument("--out", type=Path, default=RESULTS / "parallel_models")
    args = parser.parse_args(argv)

    pool = corpus()
    tokenizer = args.bundles[0] / "tokenizer.json"
    latency_rows, throughput_rows, results = [], [], []
    for threads in args.threads:
        guards = {
            "one after the other": Guard(
                args.bundles, device="cpu", threads=threads, execution=ExecutionOptions(models_side_by_side=False)
            ),
            "at the same time": Guard(args.bundles, device="cpu", threads=threads),
        }
        sequential, parallel = guards.values()
        # Input checks: the lanes of the stage every benchmark text is checked at.
        lanes = [[parallel.bundles[i].manifest.id for i in lane] for lane in parallel._stage_lanes["input"]]
        if len(lanes) < 2:
            raise SystemExit(f"with {threads} threads these bundles run as one lane ({lanes}): nothing to compare")
        diff = max(
            abs(a.score - b.score)
            for x, y in zip(sequential.check_batch(pool[:300]), parallel.check_batch(pool[:300]))
            for a, b in zip(x.scores, y.scores)
        )
        log(f"{threads} threads: lanes {lanes}, max |score difference| {diff:.1e}")
        for tokens in args.tokens:
            texts = texts_of_length(tokenizer, pool, tokens, 50)
            engines = [Engine(name, lambda i, g=g, t=texts: g.check(t[i % len(t)])) for name, g in guards.items()]
            reps = args.reps if tokens <= 128 else max(40, args.reps // 5)
            stats = time_interleaved(engines, warmup=10, min_reps=reps, max_reps=reps, budget_s=60, block=20, rewarm=2)
            before, after = stats.values()
            log(f"{threads} threads, {tokens} tokens: {before.p50:.2f} -> {after.p50:.2f} ms p50")
            latency_rows.append([threads, tokens, before.p50, before.p99, after.p50, after.p99, before.p50 / after.p50])
            results.append({"threads": threads, "tokens": tokens, "lanes": lanes, "max_score_diff": diff, **stats})
        texts = texts_of_length(tokenizer, pool, 64, 50)
        for callers in args.callers:
            measured = {name: concurrent_checks(g, texts, callers, args.throughput_s) for name, g in guards.items()}
            log(f"{threads} threads, {callers} callers: {[m['checks_per_s'] for m in measured.values()]} checks/s")
            before, after = measured.values()
            throughput_rows.append(
                [threads, callers, before["checks_per_s"], before["latency_p99"], after["checks_per_s"]]
                + [after["latency_p99"]]
            )
            results.append({"threads": threads, "callers": callers, "tokens": 64, **measured})
    latency = markdown_table(
        ["threads", "tokens", "one after the other p50", "p99", "at the same time p50", "p99", "speed-up (p50)"],
        latency_rows,
    )
    throughput = markdown_table(
        ["threads", "callers", "one after the other checks/s", "p99 ms", "at the same time checks/s", "p99 ms"],
        throughput_rows,
    )
    print(latency, throughput, sep="\n\n")
    payload = {"machine": machine_info(args.threads), "bundles": [str(b) for b in args.bundles], "results": results}
    write_json(args.out / "parallel_models.json", payload)
    (args.out / "parallel_models.md").write_text(
        f"# Guards on different models in one check (`python -m benchmarks.parallel_models`)\n\n"
        f"Bundles: {', '.join(f'`{b}`' for b in args.bundles)}; lanes: {results[0]['lanes']}; largest score "
        f"difference {results[0]['max_score_diff']:.1e}.\n\n## One check (ms)\n\n{latency}\n\n"
        f"## Concurrent callers, 64 tokens\n\n{throughput}\n\n"
        f"Machine: {json.dumps(payload['machine']['cpu'])}, load at start {payload['machine']['load_average_1_5_15']}\n"
    )
    return payload


if __name__ == "__main__":
    main()
