"""Latency, throughput, memory and start-up of a guard bundle, beside torch eager and the peers, in one run.

    python -m benchmarks.latency --bundle .cache/demo/bundle --checkpoint .cache/demo/run/model

Every engine checks the same texts, cut from ../shared/train to exact token counts, and engines take turns (20
measured calls each after 2 unmeasured, ``--block``/``--rewarm``) so that load from other processes on a shared
machine hits all of them alike while each runs warm: compare engines by the ratios of one run, not by milliseconds
across runs. ``--spin`` times ``ExecutionOptions(spin=True)``.

- ``onnx-int8`` / ``onnx-fp32``: ``Guard.check(text)``, the product path (normalise, tokenize, windows, ONNX
  Runtime, result). fp32 comes from the bundle's ``model.fp32.onnx`` or, given ``--checkpoint``, is exported from it.
- ``torch-eager``: the same checkpoint in transformers, fed the same windows (normalise + tokenize + forward).
- ``int8-session``: ``InferenceSession.run`` alone on one window, to show what the runtime adds around it.
- batches (``check_batch``): ``onnx-int8`` batch-invariant (the default: one text per ONNX Runtime call) and
  ``onnx-int8-shared`` (``ExecutionOptions(batch_invariant=False)``: texts share calls); micro-batching runs with
  shared calls.
- peers (``benchmarks.peers``): llm-guard's DeBERTa-v3-base and Prompt Guard 2 22M, random weights, fed random
  token ids of the target length (their tokenization is not counted, in their favour).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import (
    CACHE,
    RESULTS,
    Engine,
    bundle_model_kind,
    concurrent_checks,
    corpus,
    log,
    machine_info,
    markdown_table,
    texts_of_length,
    time_interleaved,
    write_json,
)

if TYPE_CHECKING:
    from guard_sdk import Guard, GuardBundle


TARGETS = {
    "int8_64_p50_ms": 4.0,
    "int8_64_p99_ms": 8.0,
    "int8_512_p99_ms": 50.0,
    "torch_over_int8_64": 4.0,
    "checks_per_s_64_32_callers": 400.0,
    "import_ms": 150.0,
}


# ------------------------------------------------------------------------------------------------------ engines


def fp32_bundle(bundle_dir: Path, checkpoint: Path | None) -> tuple[Path, str] | None:
    """A bundle folder and precision that run this bundle's model in fp32, or None when there is no way to."""
    from guard_sdk import GuardBundle

    bundle = GuardBundle.load(bundle_dir)
    if bundle.manifest.model.fp32_file:
        return bundle_dir, "fp32"
    if checkpoint is None:
        return None
    from builder.export.onnx import export_fused_fp32
    from guard_sdk.bundle import MANIFEST_NAME, MODEL_FILE, ModelSpec, file_sha256, write_manifest

    manifest = bundle.manifest
    derived = CACHE / "fp32" / f"{manifest.name}-{manifest.version}-{manifest.files[manifest.model.file][:12]}"
    if not (derived / MANIFEST_NAME).is_file():
        log(f"exporting the fp32 model of {manifest.id} from {checkpoint} ...")
        shutil.rmtree(derived, ignore_errors=True)
        fp32 = export_fused_fp32(checkpoint, derived / "onnx", kind=bundle_model_kind(manifest))
        shutil.move(str(fp32), derived / MODEL_FILE)
        shutil.rmtree(derived / "onnx")
        shutil.copyfile(bundle.file(manifest.tokenizer.file), derived / manifest.tokenizer.file)
        files = {name: file_sha256(derived / name) for name in (MODEL_FILE, manifest.tokenizer.file)}
        fp32_manifest = manifest.model_copy(
            update={"model": ModelSpec(file=MODEL_FILE, precision="fp32"), "files": files}
        )
        write_manifest(derived, fp32_manifest)
    return derived, "fp32"


class TorchGuard:
    """The bundle's checkpoint in torch eager (``builder.export.bundle``'s reference model, classifier or embedding guard),
    over the same normalisation and windows as the runtime."""

    def __init__(self, checkpoint: Path, bundle: GuardBundle) -> None:
        from tokenizers import Tokenizer

        from builder.export.parity import torch_logits

        spec = bundle.manifest.tokenizer
        self.logits = torch_logits(checkpoint, bundle_model_kind(bundle.manifest))
        self.tokenizer = Tokenizer.from_file(str(bundle.file(spec.file)))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(spec.max_length, stride=spec.stride)

    def check(self, text: str) -> list[float]:
        import numpy as np

        from guard_sdk import normalize

        encoding = self.tokenizer.encode(normalize(text).text)
        parts = [encoding, *encoding.overflowing]
        width = max(len(p.ids) for p in parts)
        ids = np.zeros((len(parts), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, part in enumerate(parts):
            ids[row, : len(part.ids)] = part.ids
            mask[row, : len(part.ids)] = 1
        logits = self.logits({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
        return (1.0 / (1.0 + np.exp(-logits))).max(axis=0).tolist()


def ort_session(model: Path, threads: int):
    """A session set up like guard_sdk's own, for models that are not bundles (the peers)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model), sess_options=options, providers=_providers())


def _providers() -> list[str]:
    import onnxruntime as ort

    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]


def _cycle(texts: Sequence[Any], fn: Callable[[Any], object]) -> Callable[[int], object]:
    return lambda i: fn(texts[i % len(texts)])


def _torch_threads(threads: int, fn: Callable[[int], object]) -> Callable[[int], object]:
    import torch

    def call(i: int) -> object:
        torch.set_num_threads(threads)  # global in torch: set per call, the engines are interleaved
        return fn(i)

    return call


# ------------------------------------------------------------------------------------------------------ sections


def latency_by_length(
    args: argparse.Namespace, texts: dict[int, list[str]], fp32: tuple[Path, str] | None
) -> list[dict]:
    from tokenizers import Tokenizer

    from guard_sdk.bundle import create_session

    from . import peers

    bundle_max = _bundle(args.bundle).manifest.tokenizer.max_length
    tokenizer = Tokenizer.from_file(str(args.bundle / _bundle(args.bundle).manifest.tokenizer.file))
    peer_models = {key: peers.peer_onnx(peers.PEERS[key]) for key in args.peers}
    torch_peers = {key: peers.peer_torch_model(peers.PEERS[key]) for key in args.torch_peers}
    torch_model = TorchGuard(args.checkpoint, _bundle(args.bundle)) if args.checkpoint else None
    rows = []
    for threads in args.threads:
        guards = {"onnx-int8": _guard(args, threads)}
        if fp32:
            guards["onnx-fp32"] = _guard(args, threads, fp32[0], precision=fp32[1])
        sessions = {key: ort_session(path, threads) for key, path in peer_models.items()}
        # The very session Guard runs (sessions are shared per model file and settings): its time alone.
        int8_session = create_session(
            _bundle(args.bundle).model_path(), device=guards["onnx-int8"].device, threads=threads, spin=args.spin
        )
        for tokens in args.tokens:
            engines = [Engine(name, _cycle(texts[tokens], guard.check)) for name, guard in guards.items()]
            if tokens <= bundle_max:
                feeds = [_feeds(tokenizer, text, int8_session) for text in texts[tokens]]
                engines.append(Engine("int8-session", _cycle(feeds, lambda f, s=int8_session: s.run(None, f))))
            if torch_model:
                engines.append(Engine("torch-eager", _torch_threads(threads, _cycle(texts[tokens], torch_model.check))))
            for key, session in sessions.items():
                if tokens <= peers.PEERS[key].max_tokens:
                    names = [i.name for i in session.get_inputs()]
                    feeds = [peers.random_feeds(names, tokens, seed) for seed in range(8)]
                    engines.append(Engine(f"peer:{key}", _cycle(feeds, lambda f, s=session: s.run(None, f))))
            for key, model in torch_peers.items():
                if tokens <= peers.PEERS[key].max_tokens:
                    engines.append(
                        Engine(f"peer:{key}-torch", _torch_threads(threads, _peer_torch_call(model, tokens)))
                    )
            log(f"latency: {tokens} tokens, {threads} thread(s): {[e.name for e in engines]}")
            stats = time_interleaved(engines, **_turns(args))
            for name, s in stats.items():
                rows.append({"tokens": tokens, "threads": threads, "engine": name, **vars(s)})
    return rows


def _guard(
    args: argparse.Namespace, threads: int, bundle: Path | None = None, *, batching: bool = False, **execution: Any
) -> Guard:
    """A Guard on ``bundle`` (default: the measured one) with this run's device and spinning; ``execution``: more
    ``ExecutionOptions``."""
    from guard_sdk import ExecutionOptions, Guard

    options = ExecutionOptions(spin=args.spin, **execution)
    return Guard(bundle or args.bundle, device=args.device, threads=threads, batching=batching, execution=options)


def _turns(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("warmup", "min_reps", "max_reps", "budget_s", "block", "rewarm")
    return {key: getattr(args, key) for key in keys}


def _feeds(tokenizer: Any, text: str, session: Any) -> dict[str, Any]:
    import numpy as np

    encoding = tokenizer.encode(text)
    ids = np.asarray([encoding.ids], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return {i.name: feeds[i.name] for i in session.get_inputs()}


def _peer_torch_call(model: Any, tokens: int) -> Callable[[int], object]:
    import torch

    from .peers import random_feeds

    feeds = [
        {k: torch.from_numpy(v) for k, v in random_feeds(["input_ids", "attention_mask"], tokens, s).items()}
        for s in range(8)
    ]

    def call(i: int) -> object:
        with torch.inference_mode():
            return model(**feeds[i % len(feeds)]).logits

    return call


def latency_by_batch(args: argparse.Namespace, texts: list[str], fp32: tuple[Path, str] | None) -> list[dict]:
    threads = max(args.threads)
    guards = {
        "onnx-int8": _guard(args, threads),
        # Texts share ONNX Runtime calls: faster, but each int8 score moves with its batch.
        "onnx-int8-shared": _guard(args, threads, batch_invariant=False),
    }
    if fp32:
        guards["onnx-fp32"] = _guard(args, threads, fp32[0], precision=fp32[1])
    rows = []
    for size in args.batch_sizes:
        batches = [[texts[(i * size + j) % len(texts)] for j in range(size)] for i in range(8)]
        engines = [Engine(name, _cycle(batches, guard.check_batch)) for name, guard in guards.items()]
        log(f"batch: {size} texts of {args.batch_tokens} tokens")
        stats = time_interleaved(engines, **_turns(args) | {"warmup": 1, "min_reps": max(3, args.min_reps // 4)})
        for name, s in stats.items():
            rows.append(
                {
                    "batch": size,
                    "tokens": args.batch_tokens,
                    "threads": threads,
                    "engine": name,
                    **vars(s),
                    "per_text_ms": round(s.p50 / size, 3),
                    "texts_per_s": round(size * 1000.0 / s.p50, 1),
                }
            )
    return rows


def throughput(args: argparse.Namespace, texts: list[str]) -> list[dict]:
    """Checks per second when N threads call ``check`` on one shared Guard, with and without micro-batching, for
    each intra-op thread setting (many callers on 1-thread sessions fill the cores without the pool's hand-offs)."""
    rows = []
    for threads in args.threads:
        modes = {
            "direct": _guard(args, threads),
            # Shared calls are what micro-batching is for (batch-invariant int8 would run its texts one by one).
            "micro-batching": _guard(args, threads, batching=True, batch_invariant=False),
        }
        for mode, guard in modes.items():
            guard.warmup()
            for callers in args.callers:
                log(f"throughput: {callers} caller(s), {mode}, {threads} thread(s)")
                measured = concurrent_checks(guard, texts, callers, args.throughput_s)
                rows.append(
                    {"mode": mode, "callers": callers, "tokens": args.batch_tokens, "threads": threads, **measured}
                )
    return rows


_IMPORT_SNIPPET = """
import time
started = time.perf_counter()
import guard_sdk
print((time.perf_counter() - started) * 1000.0)
"""

_PROCESS_SNIPPET = """
import json, os, sys, time
def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
t0 = time.perf_counter()
import guard_sdk
t1 = time.perf_counter()
base = rss_mb()
guard = guard_sdk.Guard(sys.argv[1:], device=os.environ.get("BENCH_DEVICE", "auto"), threads=int(os.environ["BENCH_THREADS"]))
t2 = time.perf_counter()
guard.check("Is this the first check of a cold process?")
t3 = time.perf_counter()
guard.warmup()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "load_ms": (t2 - t1) * 1e3, "first_check_ms": (t3 - t2) * 1e3,
                  "cold_start_ms": (t3 - t0) * 1e3, "rss_after_import_mb": base, "rss_loaded_mb": rss_mb()}))
"""


def startup(args: argparse.Namespace) -> dict[str, Any]:
    """Import time, cold start (import + load + first check) and resident memory, each in a fresh interpreter."""
    env = {**os.environ, "BENCH_DEVICE": args.device, "BENCH_THREADS": str(max(args.threads))}
    imports = [float(_python(_IMPORT_SNIPPET, [], env)) for _ in range(args.import_reps)]
    three = list(args.bundle_extra) if len(args.bundle_extra) >= 2 else _copies(args.bundle, 2)
    one_bundle = [_json(_python(_PROCESS_SNIPPET, [str(args.bundle)], env)) for _ in range(args.import_reps)]
    three_bundles = _json(_python(_PROCESS_SNIPPET, [str(args.bundle), *map(str, three[:2])], env))
    return {
        "import_guard_sdk_ms": {
            "median": round(statistics.median(imports), 1),
            "min": round(min(imports), 1),
            "runs": len(imports),
        },
        "one_bundle": {k: round(statistics.median(r[k] for r in one_bundle), 1) for k in one_bundle[0]},
        "three_bundles": {k: round(v, 1) for k, v in three_bundles.items()},
    }


def _copies(bundle: Path, n: int) -> list[Path]:
    """Distinct folders of the same bundle: each gets its own session, as three different bundles would."""
    manifest = _bundle(bundle).manifest
    out = []
    for i in range(n):
        target = CACHE / "copies" / f"{manifest.name}-{manifest.files[manifest.model.file][:12]}-{i}"
        if not (target / "guard.json").is_file():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(bundle, target)
        out.append(target)
    return out


def _python(code: str, argv: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], check=False, capture_output=True, text=True, env=env, timeout=300
    )
    if done.returncode:
        raise RuntimeError(f"benchmark subprocess failed:\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def _json(line: str) -> dict[str, float]:
    import json

    return json.loads(line)


# ------------------------------------------------------------------------------------------------------ report


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets against this run's numbers (threads = the most measured)."""
    threads = max(result["settings"]["threads"])
    lat = {(r["engine"], r["tokens"]): r for r in result["latency"] if r["threads"] == threads}
    measured: dict[str, float | None] = {
        "int8_64_p50_ms": lat.get(("onnx-int8", 64), {}).get("p50"),
        "int8_64_p99_ms": lat.get(("onnx-int8", 64), {}).get("p99"),
        "int8_512_p99_ms": lat.get(("onnx-int8", 512), {}).get("p99"),
        "torch_over_int8_64": _ratio(lat.get(("torch-eager", 64)), lat.get(("onnx-int8", 64))),
        "checks_per_s_64_32_callers": max(
            (r["checks_per_s"] for r in result["throughput"] if r["callers"] == 32), default=None
        ),
        "import_ms": result["startup"]["import_guard_sdk_ms"]["median"] if result.get("startup") else None,
    }
    lower_is_better = {"int8_64_p50_ms", "int8_64_p99_ms", "int8_512_p99_ms", "import_ms"}
    return {
        key: {
            "target": target,
            "measured": measured[key],
            "met": None
            if measured[key] is None
            else (measured[key] <= target if key in lower_is_better else measured[key] >= target),
        }
        for key, target in TARGETS.items()
    }


def _ratio(slow: dict | None, fast: dict | None) -> float | None:
    return round(slow["p50"] / fast["p50"], 2) if slow and fast else None


def _turns_text(settings: dict[str, Any]) -> str:
    block, rewarm = settings["block"], settings["rewarm"]
    if block == 1 and rewarm == 0:
        return "Engines timed round-robin (one call each per turn)"
    return f"Engines timed in turns of {block} calls each, after {rewarm} unmeasured"


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    s = result["settings"]
    out = [
        f"# Latency: {result['bundle']}",
        "",
        (
            f"Machine: {m['cpu']} ({', '.join(m['cpu_flags'])}), {m['usable_cpus']} usable CPUs, load average "
            f"{', '.join(f'{x:.2f}' for x in m['load_average_1_5_15'] or [])} at the start; Python {m['python']}, "
            f"onnxruntime {m['onnxruntime']} ({s['provider']}), torch {m['torch']}. Threads measured: {s['threads']} "
            f"(intra-op; inter-op 1{'; spinning inside a check' if s['spin'] else ''}). {_turns_text(s)}; warm-up {s['warmup']}, {s['min_reps']}–{s['max_reps']} "
            f"repetitions or {s['budget_s']} s per engine and cell. Milliseconds per check, texts cut from ../shared/train."
        ),
        "",
        "## Targets",
        "",
        markdown_table(
            ["target", "goal", "measured", "met"],
            [
                [k, v["target"], v["measured"], {True: "yes", False: "**no**", None: "–"}[v["met"]]]
                for k, v in result["summary"].items()
            ],
        ),
        "",
    ]
    engines = list(dict.fromkeys(r["engine"] for r in result["latency"]))
    for threads in s["threads"]:
        rows = [r for r in result["latency"] if r["threads"] == threads]
        out += [f"## Per-check latency, {threads} thread(s): p50 / p99 ms (× = p50 ratio to onnx-int8)", ""]
        table = []
        for tokens in s["tokens"]:
            cells = {r["engine"]: r for r in rows if r["tokens"] == tokens}
            base = cells.get("onnx-int8")
            table.append(
                [tokens]
                + [
                    f"{c['p50']:.2f} / {c['p99']:.2f}"
                    + (f" ({c['p50'] / base['p50']:.2f}×)" if base and e != "onnx-int8" else "")
                    if (c := cells.get(e))
                    else "–"
                    for e in engines
                ]
            )
        out += [markdown_table(["tokens", *engines], table), ""]
    if result["batch"]:
        out += [f"## Batches (`check_batch`), texts of {result['batch'][0]['tokens']} tokens", ""]
        out += [
            markdown_table(
                ["batch", "engine", "p50 ms / batch", "ms / text", "texts/s"],
                [[r["batch"], r["engine"], r["p50"], r["per_text_ms"], r["texts_per_s"]] for r in result["batch"]],
            ),
            "",
        ]
    if result["throughput"]:
        out += [f"## Concurrent callers (one shared Guard), texts of {result['throughput'][0]['tokens']} tokens", ""]
        out += [
            markdown_table(
                ["callers", "mode", "threads", "checks/s", "p50 ms", "p99 ms"],
                [
                    [r["callers"], r["mode"], r["threads"], r["checks_per_s"], r["latency_p50"], r["latency_p99"]]
                    for r in result["throughput"]
                ],
            ),
            "",
        ]
    if result.get("startup"):
        st = result["startup"]
        out += [
            "## Start-up and memory (fresh interpreter each)",
            "",
            markdown_table(
                ["", "import ms", "load ms", "first check ms", "cold start ms", "RSS after import MB", "RSS loaded MB"],
                [
                    [
                        name,
                        d["import_ms"],
                        d["load_ms"],
                        d["first_check_ms"],
                        d["cold_start_ms"],
                        d["rss_after_import_mb"],
                        d["rss_loaded_mb"],
                    ]
                    for name, d in (("1 bundle", st["one_bundle"]), ("3 bundles", st["three_bundles"]))
                ],
            ),
            "",
            (
                f"`import guard_sdk` alone: median {st['import_guard_sdk_ms']['median']} ms over "
                f"{st['import_guard_sdk_ms']['runs']} runs (min {st['import_guard_sdk_ms']['min']})."
            ),
            "",
        ]
    return "\n".join(out)


def plots(result: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    threads = max(result["settings"]["threads"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for engine in dict.fromkeys(r["engine"] for r in result["latency"]):
        rows = sorted(
            (r for r in result["latency"] if r["engine"] == engine and r["threads"] == threads),
            key=lambda r: r["tokens"],
        )
        if rows:
            ax.plot([r["tokens"] for r in rows], [r["p50"] for r in rows], marker="o", label=engine)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="tokens per text",
        ylabel="p50 ms per check",
        title=f"Latency vs length ({threads} threads)",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency_vs_tokens.png", dpi=110)
    written.append("latency_vs_tokens.png")
    plt.close(fig)
    if result["throughput"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        for mode, threads in dict.fromkeys((r["mode"], r["threads"]) for r in result["throughput"]):
            rows = [r for r in result["throughput"] if (r["mode"], r["threads"]) == (mode, threads)]
            ax.plot(
                [r["callers"] for r in rows],
                [r["checks_per_s"] for r in rows],
                marker="o",
                label=f"{mode}, {threads} thread(s)",
            )
        ax.axhline(TARGETS["checks_per_s_64_32_callers"], color="grey", linestyle="--", label="target (32 callers)")
        ax.set(xscale="log", xlabel="concurrent callers", ylabel="checks / s", title="Throughput, one shared Guard")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "throughput.png", dpi=110)
        written.append("throughput.png")
        plt.close(fig)
    return written


def _bundle(path: Path):
    from guard_sdk import GuardBundle

    return GuardBundle.load(path, verify=False)


# ------------------------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True, help="the bundle to measure")
    parser.add_argument(
        "--bundle-extra",
        type=Path,
        nargs="*",
        default=[],
        help="two more bundles for the 3-bundle RSS (default: copies)",
    )
    parser.add_argument(
        "--checkpoint", type=Path, help="the bundle's Hugging Face checkpoint, for torch eager (and fp32)"
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--tokens", type=int, nargs="+", default=[16, 64, 256, 512, 2048])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--batch-tokens", type=int, default=64)
    parser.add_argument("--callers", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--peers", nargs="*", default=["llm-guard", "prompt-guard-2"], help="peer ONNX models (benchmarks.peers)"
    )
    parser.add_argument("--torch-peers", nargs="*", default=["prompt-guard-2"], help="peers also timed in torch eager")
    parser.add_argument("--texts", type=int, default=32, help="distinct texts per length")
    parser.add_argument(
        "--spin", action="store_true", help="ExecutionOptions(spin=True): ONNX Runtime threads spin in a check"
    )
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--block", type=int, default=20, help="measured calls per engine and turn (1: round-robin)")
    parser.add_argument("--rewarm", type=int, default=2, help="unmeasured calls per engine at the start of a turn")
    parser.add_argument("--min-reps", type=int, default=20)
    parser.add_argument("--max-reps", type=int, default=400)
    parser.add_argument(
        "--budget-s", type=float, default=4.0, help="seconds per engine and cell once min-reps is reached"
    )
    parser.add_argument("--throughput-s", type=float, default=4.0)
    parser.add_argument("--import-reps", type=int, default=5)
    parser.add_argument("--no-startup", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for latency.json / .md / .png")
    parser.add_argument("--quick", action="store_true", help="tiny settings: checks the harness, not the machine")
    args = parser.parse_args(argv)
    if args.block < 1 or args.rewarm < 0:
        parser.error(f"--block must be at least 1 and --rewarm at least 0 (got {args.block} and {args.rewarm})")
    if args.quick:
        args.tokens, args.threads, args.batch_sizes, args.callers = [16, 64, 200], [1], [1, 8], [1, 4]
        args.peers, args.torch_peers, args.texts, args.warmup, args.block, args.rewarm = [], [], 4, 1, 2, 1
        args.min_reps, args.max_reps, args.budget_s, args.throughput_s, args.import_reps = 3, 5, 0.1, 0.5, 1
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from guard_sdk import Guard

    started = time.perf_counter()
    machine = machine_info(args.threads)
    log(f"machine: {machine}")
    pool = corpus()
    tokenizer_file = args.bundle / _bundle(args.bundle).manifest.tokenizer.file
    lengths = sorted(set(args.tokens) | {args.batch_tokens})
    texts = {n: texts_of_length(tokenizer_file, pool, n, args.texts, seed=n) for n in lengths}
    fp32 = fp32_bundle(args.bundle, args.checkpoint)
    provider = Guard(args.bundle, device=args.device, threads=1).providers[0]
    result: dict[str, Any] = {
        "bundle": _bundle(args.bundle).manifest.id,
        "machine": machine,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()} | {"provider": provider},
        "latency": latency_by_length(args, texts, fp32),
        "batch": latency_by_batch(args, texts[args.batch_tokens], fp32),
        "throughput": throughput(args, texts[args.batch_tokens]),
        "startup": None if args.no_startup else startup(args),
    }
    result["summary"] = summary(result)
    result["seconds"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    result["plots"] = plots(result, args.out)
    write_json(args.out / "latency.json", result)
    (args.out / "latency.md").write_text(markdown(result) + "\n")
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
