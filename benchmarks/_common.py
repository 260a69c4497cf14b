"""Shared pieces of the benchmark scripts: machine description, texts of exact token lengths, timing, output files."""

from __future__ import annotations

import json
import os
import platform
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from builder.train.run import ModelKind
    from guard_sdk import GuardBundle
    from guard_sdk.bundle import BundleManifest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / ".cache" / "benchmarks"
SHARED = ROOT.parent / "shared"
TRAIN_DIR = SHARED / "train"
EVAL_DIR = SHARED / "eval"


def bundle_model_kind(manifest: BundleManifest) -> ModelKind:
    """The bundle's head (``classifier`` or ``embedding``), which decides how its checkpoint is exported and run."""
    return manifest.training.head  # type: ignore[return-value]  # the builder's heads: what it wrote


def training_run(bundle: GuardBundle) -> Path:
    """The training run a pack bundle was exported from (``guard-build pack``'s work folder beside the pack), found by
    its training data's sha256."""
    from builder.recipes.pack import default_work_dir

    name, sha = bundle.manifest.name, bundle.manifest.training_data_sha256 or ""
    work = default_work_dir(bundle.path.parent)
    runs = sorted(work.glob(f"run-{sha[:12]}-*-{name}"))
    if not sha or not runs:
        raise SystemExit(f"no training run of {name} in {work}: build the pack with guard-build pack first")
    return runs[0]


def machine_info(threads: Sequence[int] = ()) -> dict[str, Any]:
    """What the numbers were measured on: they mean little without it (and this VM is shared, hence the load)."""
    import numpy as np

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "numpy": np.__version__,
        "threads_measured": list(threads),
        "env": {
            k: os.environ[k]
            for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM")
            if k in os.environ
        },
    }
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        info["onnxruntime"] = None
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return sorted(f for f in flags if f in {"avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"})


# ---------------------------------------------------------------------------------------------------------- texts


def corpus(limit_per_set: int = 300, seed: int = 0) -> list[str]:
    """Varied real texts: a sample of every training seed set (chat, code, maths, dialogues, injections, hate)."""
    from builder.data.dataset import read_texts

    rng = random.Random(seed)
    texts: list[str] = []
    for data in sorted(TRAIN_DIR.glob("*/data.jsonl")):
        rows = read_texts(data)
        texts.extend(rng.sample(rows, min(limit_per_set, len(rows))))
    if not texts:
        raise FileNotFoundError(f"no training texts under {TRAIN_DIR}; the benchmarks cut their inputs from them")
    rng.shuffle(texts)
    return texts


def texts_of_length(tokenizer_file: Path, pool: Sequence[str], tokens: int, count: int, seed: int = 0) -> list[str]:
    """``count`` different texts that each tokenize to exactly ``tokens`` tokens (special tokens included).

    Each one starts at a random corpus text and runs on through the next ones until long enough, then is cut on a
    token boundary; a cut that re-tokenizes to another length (a word split differently) is dropped and redrawn.
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    specials = len(tokenizer.encode("").ids)
    need = tokens - specials
    if need < 1:
        raise ValueError(f"{tokens} tokens leave no room for text beside {specials} special tokens")
    rng = random.Random(seed)
    out: list[str] = []
    for _attempt in range(count * 20):
        if len(out) == count:
            return out
        start = rng.randrange(len(pool))
        text, i = "", start
        while True:
            text = f"{text}\n{pool[i % len(pool)]}" if text else pool[i % len(pool)]
            i += 1
            encoding = tokenizer.encode(text)
            content = [o for o, s in zip(encoding.offsets, encoding.special_tokens_mask) if not s]
            if len(content) >= need:
                break
        cut = text[: content[need - 1][1]]
        if len(tokenizer.encode(cut).ids) == tokens:
            out.append(cut)
    raise RuntimeError(f"could not cut {count} texts of exactly {tokens} tokens from the corpus")


# ---------------------------------------------------------------------------------------------------------- timing


@dataclass
class Stats:
    n: int
    p50: float
    p95: float
    p99: float
    mean: float
    min: float

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> Stats:
        import numpy as np

        a = np.asarray(samples_ms, dtype=np.float64)
        p50, p95, p99 = (float(x) for x in np.percentile(a, [50, 95, 99]))
        return cls(
            len(a), round(p50, 3), round(p95, 3), round(p99, 3), round(float(a.mean()), 3), round(float(a.min()), 3)
        )


@dataclass
class Engine:
    """Something to time: ``call(i)`` does the i-th measured operation (it picks its own input from ``i``)."""

    name: str
    call: Callable[[int], object]
    samples: list[float] = field(default_factory=list)
    spent_s: float = 0.0


def time_interleaved(
    engines: Sequence[Engine],
    *,
    warmup: int,
    min_reps: int,
    max_reps: int,
    budget_s: float,
    block: int = 1,
    rewarm: int = 0,
) -> dict[str, Stats]:
    """Time the engines in turns, so a noisy neighbour slows them all alike: in each turn every engine makes
    ``rewarm`` unmeasured calls, then ``block`` measured ones.

    ``block=1, rewarm=0`` is strict round-robin: every call then first refills the caches the other engines emptied
    (torch's fp32 weights, a peer's hundreds of MB) and, with 2 threads, shares the cores with torch's OpenMP
    workers still spinning after its call. Blocks measure each engine warm, as a process that runs only it would.
    An engine stops when it has ``max_reps`` samples, or ``min_reps`` samples and ``budget_s`` seconds spent;
    a slow engine (a 184M-parameter peer at 512 tokens) so gets fewer repetitions instead of stalling the run.
    """
    if block < 1 or rewarm < 0:  # block 0 would never take a sample, and never stop
        raise ValueError(f"time_interleaved needs block >= 1 and rewarm >= 0, got block={block}, rewarm={rewarm}")
    for engine in engines:
        engine.samples, engine.spent_s = [], 0.0
        for i in range(warmup):
            engine.call(i)
    active = list(engines)
    i = 0
    while active:
        for engine in list(active):
            for j in range(rewarm):
                engine.call(i + j)
            for j in range(block):
                started = time.perf_counter()
                engine.call(i + j)
                elapsed = time.perf_counter() - started
                engine.samples.append(elapsed * 1000.0)
                engine.spent_s += elapsed
                if len(engine.samples) >= max_reps or (len(engine.samples) >= min_reps and engine.spent_s >= budget_s):
                    active.remove(engine)
                    break
        i += block
    return {engine.name: Stats.of(engine.samples) for engine in engines}


def concurrent_checks(guard: Any, texts: Sequence[str], callers: int, seconds: float) -> dict[str, Any]:
    """Checks per second when ``callers`` threads call ``guard.check`` at once for ``seconds``, and the latency of
    their calls (``latency_p50`` ... in ms)."""
    latencies: list[list[float]] = [[] for _ in range(callers)]
    stop = threading.Event()
    workers = [
        threading.Thread(target=_caller, args=(guard, texts, k, callers, stop, latencies[k]), daemon=True)
        for k in range(callers)
    ]
    started = time.perf_counter()
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    done = [x for per in latencies for x in per]
    stats = Stats.of(done)
    return {"checks_per_s": round(len(done) / elapsed, 1), **{f"latency_{k}": v for k, v in vars(stats).items()}}


def _caller(
    guard: Any, texts: Sequence[str], k: int, callers: int, stop: threading.Event, latencies: list[float]
) -> None:
    """One concurrent caller: checks its share of the texts until told to stop, recording each call's latency."""
    i = k
    while not stop.is_set():
        started = time.perf_counter()
        guard.check(texts[i % len(texts)])
        latencies.append((time.perf_counter() - started) * 1000.0)
        i += callers


# ---------------------------------------------------------------------------------------------------------- output


def write_results(out: Path, name: str, result: Any, markdown: str) -> None:
    """A benchmark's ``<name>.json`` and ``<name>.md`` in ``out``; the markdown is printed too."""
    write_json(out / f"{name}.json", result)
    (out / f"{name}.md").write_text(markdown)
    print(markdown)


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
