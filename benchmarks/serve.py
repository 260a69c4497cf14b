"""Serving guards: in-process checks vs ``guard serve`` over HTTP vs a Triton server, the proxy's added latency, and a
soak run.

python -m benchmarks.serve                       # the default pack (`guard-build pack`), 64-token texts
python -m benchmarks.serve --bundle DIR ...      # other bundles
python -m benchmarks.serve --seconds 3 --soak 2000 --no-proxy      # a shorter run
python -m benchmarks.serve --triton              # also Triton (PyTriton from .venv-triton: scripts/setup-triton.sh)

1. Throughput and latency at 1/8/32/128 concurrent clients (threads), each for ``--seconds``: ``guard.check`` in
   this process; ``POST /v1/check`` (one text a request, keep-alive HTTP) to a ``guard serve`` subprocess; and, with
   ``--triton``, a Guard whose models run on a PyTriton server subprocess (tokenisation stays here; its scores are
   compared with the in-process ones first). The clients run in this process and each server in its own, sharing
   the machine's cores as a sidecar shares them with its app.
2. Added latency at 1 client: in-process check and ``/v1/check`` (and Triton) interleaved; the median of per-pair
   differences.
3. The proxy: one chat request (8 tokens, temperature 0) to the embedded llama.cpp server directly and through
   ``guard serve --upstream``, streamed and not, interleaved round by round; added latency is the median of the
   per-round differences. Through the proxy the answer is checked too, which no input mode can overlap.
4. Soak: ``--soak`` requests to ``/v1/check`` from 128 concurrent clients: errors, and the server's resident memory
   after every tenth of them.
Writes benchmarks/results/serve/serve.json and serve.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    RESULTS,
    concurrent_checks,
    corpus,
    log,
    machine_info,
    markdown_table,
    texts_of_length,
    write_json,
)

OUT = RESULTS / "serve"
GUARD_CLI = Path(sys.executable).parent / "guard"
TRITON_PYTHON = Path(__file__).resolve().parent.parent / ".venv-triton" / "bin" / "python"
CLIENTS = (1, 8, 32, 128)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def guard_serve(bundles: Sequence[Path], threads: int, *extra: str) -> Iterator[tuple[str, int]]:
    """A ``guard serve`` subprocess on a free loopback port; yields its base URL and pid once ``/readyz`` says 200."""
    import httpx

    port = _free_port()
    command = [str(GUARD_CLI), "serve", "--port", str(port), "--threads", str(threads), "--log-level", "warning"]
    for bundle in bundles:
        command += ["--bundle", str(bundle)]
    process = subprocess.Popen([*command, *extra])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"guard serve exited with {process.returncode} while starting")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("guard serve was not ready within 120 s")
            time.sleep(0.2)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def triton_serve(bundles: Sequence[Path], instances: int) -> Iterator[str]:
    """``python -m guard_sdk.triton serve`` (PyTriton, one thread per instance) on free loopback ports; yields its
    HTTP URL once every model is ready. Its log goes to a file, named in any error."""
    import tempfile

    if not TRITON_PYTHON.exists():
        raise FileNotFoundError(f"{TRITON_PYTHON} is missing: run bash scripts/setup-triton.sh")
    held = [socket.socket() for _ in range(3)]  # bound together, so the three ports differ
    for sock in held:
        sock.bind(("127.0.0.1", 0))
    ports = [int(sock.getsockname()[1]) for sock in held]
    for sock in held:
        sock.close()
    command = [str(TRITON_PYTHON), "-m", "guard_sdk.triton", "serve", "--instances", str(instances), "--threads", "1"]
    for name, port in zip(("--http-port", "--grpc-port", "--metrics-port"), ports):
        command += [name, str(port)]
    for bundle in bundles:
        command += ["--bundle", str(bundle)]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    log_file = Path(tempfile.mkdtemp(prefix="triton-")) / "server.log"
    with log_file.open("w") as log_out:
        process = subprocess.Popen(
            command, stdout=log_out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{ports[0]}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the Triton server exited with {process.returncode}; its log: {log_file}")
            # It prints one JSON line once every model is loaded (Triton's own readiness comes before that).
            if any(line.startswith('{"ready"') for line in log_file.read_text().splitlines()):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Triton server was not ready within 180 s; its log: {log_file}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)  # tritonserver and PyTriton's workers are in its group
            process.wait()


class HttpChecks:
    """``check(text)`` through ``POST /v1/check``: what ``concurrent_checks`` calls, from any number of threads."""

    def __init__(self, url: str, clients: int) -> None:
        import httpx

        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        self.client = httpx.Client(base_url=url, limits=limits, timeout=60)
        self.transport_error = httpx.TransportError
        # Counted, not raised: a soak run reports its errors (by HTTP status or transport error) instead of
        # stopping at the first.
        self.errors: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()

    def check(self, text: str) -> None:
        try:
            status = self.client.post("/v1/check", json={"texts": [text]}).status_code
            error = None if status == 200 else f"HTTP {status}"
        except self.transport_error as exc:
            error = type(exc).__name__
        if error is not None:
            with self.lock:
                self.errors[error] += 1

    def close(self) -> None:
        self.client.close()


def throughput(name: str, checker: Any, texts: Sequence[str], seconds: float) -> list[dict[str, Any]]:
    rows = []
    for clients in CLIENTS:
        result = concurrent_checks(checker, texts, clients, seconds)
        log(f"{name} at {clients} clients: {result['checks_per_s']} checks/s, p50 {result['latency_p50']:.2f} ms")
        rows.append({"engine": name, "clients": clients, **result})
    return rows


def added_latency(guard: Any, others: dict[str, Any], texts: Sequence[str], pairs: int) -> dict[str, float]:
    """One check in-process, then the same text through each of ``others``, in turns, so drifting load hits all
    alike; the median of each one's per-turn difference to the in-process check."""
    timings: dict[str, list[float]] = {"in-process": [], **{name: [] for name in others}}
    engines = {"in-process": guard, **others}
    for i in range(pairs):
        for name, engine in engines.items():
            started = time.perf_counter()
            engine.check(texts[i % len(texts)])
            timings[name].append((time.perf_counter() - started) * 1000.0)
    out = {f"{name}_p50_ms": round(statistics.median(samples), 3) for name, samples in timings.items()}
    for name in others:
        added = statistics.median(o - local for o, local in zip(timings[name], timings["in-process"]))
        out[f"{name}_added_p50_ms"] = round(added, 3)
    return out


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for process {pid}")


def soak(url: str, pid: int, texts: Sequence[str], requests: int, clients: int) -> dict[str, Any]:
    """``requests`` checks from ``clients`` threads on new connections; the server's RSS after every tenth."""
    http = HttpChecks(url, clients)
    lock = threading.Lock()
    done = 0
    rss = [_rss_mib(pid)]
    step = max(1, requests // 10)

    def client(k: int) -> None:
        nonlocal done
        while True:
            with lock:
                if done >= requests:
                    return
                done += 1
                i = done
                if i % step == 0:
                    rss.append(_rss_mib(pid))
            http.check(texts[(k + i) % len(texts)])

    started = time.perf_counter()
    workers = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    rss.append(_rss_mib(pid))
    http.close()
    return {
        "requests": requests,
        "clients": clients,
        "errors": sum(http.errors.values()),
        "errors_by_kind": dict(http.errors),
        "seconds": round(elapsed, 1),
        "requests_per_s": round(requests / elapsed, 1),
        "server_rss_mib": rss,
    }


def proxy_latency(bundles: Sequence[Path], threads: int, rounds: int) -> dict[str, Any]:
    """A chat call direct, through ``guard.wrap`` in this process, and through ``guard serve --upstream``: with all
    the bundles (input checks beside the call, the answer checked after it), and with the input bundles alone."""
    import openai

    from builder.llm.local_server import LocalLLMServer
    from guard_sdk import Guard, GuardBundle

    request: dict[str, Any] = {
        "messages": [{"role": "user", "content": "What time does the hotel pool open on Sundays?"}],
        "temperature": 0,
        "seed": 7,
        "max_tokens": 8,
    }
    input_only = [b for b in bundles if GuardBundle.load(b).manifest.stages == ["input"]]
    out: dict[str, Any] = {}
    with LocalLLMServer(threads=threads) as llm:
        direct = openai.OpenAI(base_url=llm.base_url, api_key="local", max_retries=0)
        for checks, chosen in (("input_and_output", bundles), ("input_only", input_only)):
            wrapped = Guard(chosen, device="cpu", threads=threads).wrap(direct)
            with guard_serve(chosen, threads, "--upstream", llm.base_url) as (url, _):
                clients = {
                    "direct": direct,
                    "wrapped": wrapped,
                    "proxy": openai.OpenAI(base_url=f"{url}/v1", api_key="local", max_retries=0),
                }
                for stream in (False, True):
                    key = f"{checks}_{'streamed' if stream else 'not_streamed'}"
                    out[key] = _interleaved_calls(clients, llm.model, request, stream, rounds)
                    log(f"proxy, {key}: {out[key]}")
    return out


def _interleaved_calls(
    clients: dict[str, Any], model: str, request: dict[str, Any], stream: bool, rounds: int
) -> dict[str, Any]:
    """Each client's call in turn, round after round; each one's median added latency over the direct call."""

    def call(client: Any) -> float:
        started = time.perf_counter()
        if stream:
            for _ in client.chat.completions.create(model=model, stream=True, **request):
                pass
        else:
            client.chat.completions.create(model=model, **request)
        return (time.perf_counter() - started) * 1000.0

    for client in clients.values():  # warm the connections and the llama.cpp prompt cache
        call(client)
    timings: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(rounds):
        for name, client in clients.items():
            timings[name].append(call(client))
    out: dict[str, Any] = {f"{name}_p50_ms": round(statistics.median(t), 2) for name, t in timings.items()}
    for name in clients:
        if name != "direct":
            added = statistics.median(t - d for t, d in zip(timings[name], timings["direct"]))
            out[f"{name}_added_p50_ms"] = round(added, 2)
    return {**out, "rounds": rounds}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, action="append", help="a bundle folder; default: the default pack")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="the Guard's threads, both sides")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per checked text")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per throughput point")
    parser.add_argument("--pairs", type=int, default=400, help="interleaved pairs for the added latency")
    parser.add_argument("--soak", type=int, default=10_000, help="requests in the soak run (0: none)")
    parser.add_argument("--rounds", type=int, default=30, help="proxy rounds per mode")
    parser.add_argument("--no-proxy", action="store_true", help="skip the proxy (it starts the llama.cpp server)")
    parser.add_argument("--triton", action="store_true", help="also serve the models on Triton (PyTriton)")
    parser.add_argument("--triton-instances", type=int, default=2, help="model instances on the Triton server")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    from guard_sdk import Guard

    options: dict[str, Any] = {"device": "cpu", "threads": args.threads}
    guard = Guard(args.bundle, **options) if args.bundle else Guard.default(build=False, **options)
    bundles = [bundle.path for bundle in guard.bundles]
    guard.warmup()
    tokenizer = guard.bundles[0].file(guard.bundles[0].manifest.tokenizer.file)
    texts = texts_of_length(tokenizer, corpus(), args.tokens, 64)
    report: dict[str, Any] = {
        "machine": machine_info([args.threads]),
        "bundles": [f"{b.manifest.name}@{b.manifest.version}" for b in guard.bundles],
        "bundle_paths": [str(path) for path in bundles],
        "tokens": args.tokens,
        "threads": args.threads,
    }
    rows = throughput("in-process", guard, texts, args.seconds)
    with contextlib.ExitStack() as servers:
        url, pid = servers.enter_context(guard_serve(bundles, args.threads))
        http = HttpChecks(url, max(CLIENTS))
        servers.callback(http.close)
        others: dict[str, Any] = {"guard serve": http}
        if args.triton:
            from guard_sdk.triton import TritonBackend

            triton_url = servers.enter_context(triton_serve(bundles, args.triton_instances))
            remote = others["Triton"] = Guard(bundles, backend=TritonBackend(triton_url))
            report["triton_max_score_difference"] = max(
                abs(a.score - b.score)
                for mine, theirs in zip(guard.check_batch(texts), remote.check_batch(texts))
                for a, b in zip(mine.scores, theirs.scores)
            )
            log(f"Triton: largest score difference to in-process {report['triton_max_score_difference']:.1e}")
        report["added_latency_1_client"] = added_latency(guard, others, texts, args.pairs)
        log(f"added latency: {report['added_latency_1_client']}")
        for name, engine in others.items():
            rows += throughput(name, engine, texts, args.seconds)
        report["throughput_http_errors"] = dict(http.errors)
        if args.soak:
            report["soak"] = soak(url, pid, texts, args.soak, max(CLIENTS))
            log(f"soak: {report['soak']}")
    report["throughput"] = rows
    if not args.no_proxy:
        report["proxy"] = proxy_latency(bundles, args.threads, args.rounds)
    write_json(args.out / "serve.json", report)
    (args.out / "serve.md").write_text(_markdown(report))
    _plot(report["throughput"], args.out / "serve.png")
    log(f"wrote {args.out / 'serve.json'}")
    return 0


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Checks/s and p99 latency against concurrent clients, one line per engine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate, tail) = plt.subplots(1, 2, figsize=(10, 4))
    for engine in dict.fromkeys(row["engine"] for row in rows):
        mine = [row for row in rows if row["engine"] == engine]
        clients = [row["clients"] for row in mine]
        rate.plot(clients, [row["checks_per_s"] for row in mine], marker="o", label=engine)
        tail.plot(clients, [row["latency_p99"] for row in mine], marker="o", label=engine)
    for axis, label in ((rate, "checks/s"), (tail, "p99 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(list(CLIENTS), [str(c) for c in CLIENTS])
        axis.set_xlabel("concurrent clients")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    tail.set_yscale("log")
    rate.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown(report: dict[str, Any]) -> str:
    rows = report["throughput"]
    base = {row["clients"]: row["checks_per_s"] for row in rows if row["engine"] == "in-process"}
    table = markdown_table(
        ["engine", "clients", "checks/s", "× in-process", "p50 ms", "p99 ms"],
        [
            [
                row["engine"],
                row["clients"],
                row["checks_per_s"],
                f"{row['checks_per_s'] / base[row['clients']]:.2f}",
                f"{row['latency_p50']:.2f}",
                f"{row['latency_p99']:.2f}",
            ]
            for row in rows
        ],
    )
    parts = [
        f"bundles {', '.join(report['bundles'])}; {report['tokens']}-token texts; {report['threads']} threads",
        table,
    ]
    if "triton_max_score_difference" in report:
        parts.append(f"Triton: largest score difference to in-process {report['triton_max_score_difference']:.1e}")
    added = report["added_latency_1_client"]
    parts.append(
        "added latency at 1 client (interleaved, median of per-check differences to in-process): "
        + ", ".join(f"{key[: -len('_added_p50_ms')]} +{value} ms" for key, value in added.items() if "added" in key)
    )
    if "soak" in report:
        soaked = report["soak"]
        parts.append(
            f"soak: {soaked['requests']} requests from {soaked['clients']} clients, {soaked['errors']} errors "
            f"{soaked['errors_by_kind'] or ''}, {soaked['requests_per_s']} requests/s, server RSS "
            f"{soaked['server_rss_mib'][0]} -> {soaked['server_rss_mib'][-1]} MiB"
        )
    if "proxy" in report:
        parts.append(
            markdown_table(
                ["chat call", "direct p50 ms", "guard.wrap added ms", "guard serve proxy added ms"],
                [
                    [key, row["direct_p50_ms"], row["wrapped_added_p50_ms"], row["proxy_added_p50_ms"]]
                    for key, row in report["proxy"].items()
                ],
            )
        )
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    sys.exit(main())
