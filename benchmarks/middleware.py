"""What the middleware costs: a wrapped OpenAI call vs the bare call, and check throughput with micro-batching.

python benchmarks/middleware.py                       # demo bundle (bash scripts/demo.sh builds it), local llama.cpp
python benchmarks/middleware.py --bundle DIR --rounds 40 --checks-per-caller 40

1. Added latency: the same chat request (short answer, temperature 0) sent bare, through guard.wrap with the input
   checked in parallel with the request (default), and with the input checked first (sequential). Calls are
   interleaved round by round so drifting load hits all three alike; the added latency is the median of the per-round
   differences to the bare call. A wrapped call also checks the answer, which no input mode can overlap.
2. Throughput: 32 concurrent callers (asyncio tasks calling ``acheck``, and threads calling ``check``) on chat-like
   texts, without and with ``Guard(batching=True)``, the latter with 32 and with 4 windows per ONNX Runtime call.
Writes benchmarks/results/middleware.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import RESULTS, machine_info, write_json

ROOT = Path(__file__).resolve().parent.parent
DEMO_BUNDLE = ROOT / ".cache" / "demo" / "bundle"
DEMO_DATA = ROOT / "examples" / "data" / "demo.jsonl"
QUESTION = "What time does the hotel pool open on Sundays?"


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered), 2),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
        "n": len(ordered),
    }


def added_latency(bundle: Path, rounds: int, threads: int) -> dict[str, Any]:
    import openai

    from builder.llm.local_server import LocalLLMServer
    from guard_sdk import Guard

    guard = Guard(bundle, device="cpu", threads=threads)
    guard.warmup()
    request: dict[str, Any] = {
        "messages": [{"role": "user", "content": QUESTION}],
        "temperature": 0,
        "seed": 7,
        "max_tokens": 8,
    }
    with LocalLLMServer(threads=threads) as server:
        bare = openai.OpenAI(base_url=server.base_url, api_key="local")
        calls: dict[str, Any] = {
            "bare": bare,
            "parallel": guard.wrap(bare, input_mode="parallel"),
            "sequential": guard.wrap(bare, input_mode="sequential"),
        }
        for client in calls.values():  # warm the connection and the server's prompt cache
            client.chat.completions.create(model=server.model, **request)
        timings: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(rounds):
            for name, client in calls.items():
                started = time.perf_counter()
                client.chat.completions.create(model=server.model, **request)
                timings[name].append((time.perf_counter() - started) * 1000.0)
    out: dict[str, Any] = {name: _ms(samples) for name, samples in timings.items()}
    for name in ("parallel", "sequential"):
        out[name]["added_p50"] = round(statistics.median(w - b for w, b in zip(timings[name], timings["bare"])), 2)
    out["check_alone_p50"] = _ms([guard.check(QUESTION).latency_ms for _ in range(rounds)])["p50"]
    return out


def throughput(bundle: Path, callers: int, per_caller: int, threads: int) -> dict[str, Any]:
    from builder.data.dataset import read_texts
    from guard_sdk import BatchingOptions, ExecutionOptions, Guard

    rows = read_texts(DEMO_DATA)
    texts = [rows[i % len(rows)] for i in range(callers * per_caller)]
    out: dict[str, Any] = {}
    # Small calls of similar-length windows waste little on padding.
    configs = (("unbatched", False, 32), ("batched", BatchingOptions(), 32), ("batched_ort4", BatchingOptions(), 4))
    for name, batching, windows_per_call in configs:
        execution = ExecutionOptions(windows_per_call=windows_per_call)
        guard = Guard(bundle, device="cpu", threads=threads, batching=batching, execution=execution)
        guard.warmup()
        out[name] = _concurrent_checks(guard, texts, callers, per_caller)
        if guard._batcher is not None:
            out[name]["mean_batch_texts"] = round(guard._batcher.texts / max(1, guard._batcher.batches), 1)
    return out


def _concurrent_checks(guard: Any, texts: list[str], callers: int, per_caller: int) -> dict[str, Any]:
    """Checks per second and the latency each caller sees, from asyncio tasks and from threads."""

    async def task(i: int) -> list[float]:
        latencies = []
        for j in range(per_caller):
            started = time.perf_counter()
            await guard.acheck(texts[i * per_caller + j])
            latencies.append((time.perf_counter() - started) * 1000.0)
        return latencies

    async def tasks() -> list[list[float]]:
        return await asyncio.gather(*(task(i) for i in range(callers)))

    def thread(i: int) -> list[float]:
        latencies = []
        for j in range(per_caller):
            started = time.perf_counter()
            guard.check(texts[i * per_caller + j])
            latencies.append((time.perf_counter() - started) * 1000.0)
        return latencies

    result: dict[str, Any] = {}
    started = time.perf_counter()
    latencies = [ms for part in asyncio.run(tasks()) for ms in part]
    result["async_checks_per_s"] = round(len(latencies) / (time.perf_counter() - started), 1)
    result["async_latency_ms"] = _ms(latencies)
    started = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        latencies = [ms for part in pool.map(thread, range(callers)) for ms in part]
    result["thread_checks_per_s"] = round(len(latencies) / (time.perf_counter() - started), 1)
    result["thread_latency_ms"] = _ms(latencies)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=DEMO_BUNDLE)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--checks-per-caller", type=int, default=20)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    if not (args.bundle / "guard.json").is_file():
        print(f"no bundle at {args.bundle}: run `bash scripts/demo.sh` first, or pass --bundle", file=sys.stderr)
        return 2
    report = {
        "machine": machine_info([args.threads]),
        "bundle": str(args.bundle),
        "added_latency_ms": added_latency(args.bundle, args.rounds, args.threads),
        f"throughput_{args.callers}_callers": throughput(
            args.bundle, args.callers, args.checks_per_caller, args.threads
        ),
    }
    write_json(RESULTS / "middleware.json", report)
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
