"""``python -m guard_sdk.triton serve --bundle DIR``: serve bundles' models on Triton (PyTriton), in an environment
with ``nvidia-pytriton``. Prints one JSON line when every model is ready."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from .._errors import GuardError
from ._pytriton import ServeOptions, serve

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m guard_sdk.triton", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve bundles' ONNX models on Triton until SIGINT or SIGTERM")
    run.add_argument("--bundle", action="append", required=True, help="a bundle folder (repeat for several)")
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    run.add_argument("--http-port", type=int, default=8000)
    run.add_argument("--grpc-port", type=int, default=8001)
    run.add_argument("--metrics-port", type=int, default=8002)
    run.add_argument(
        "--precision",
        action="append",
        choices=["int8", "fp32", "all"],
        help="serve this precision of each bundle's model (repeat for several; 'all': every model file the bundle "
        "ships); default: the manifest's",
    )
    run.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    run.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads per model")
    run.add_argument("--instances", type=int, default=1, help="model instances (requests run at once)")
    run.add_argument("--max-batch", type=int, default=64, help="most windows Triton batches into one run")
    run.add_argument("--max-queue-delay-us", type=int, default=500, help="how long a request waits for a batch")
    run.add_argument(
        "--share-int8-calls",
        action="store_true",
        help="run batched requests of an int8 model in one call (faster; scores then move with the batch)",
    )
    args = parser.parse_args(argv)
    for name in ("http_port", "grpc_port", "metrics_port"):
        if not 0 < getattr(args, name) < 65536:
            parser.error(f"--{name.replace('_', '-')} must be a port number")
    for name, low, high in (("instances", 1, 64), ("max_batch", 1, 4096), ("max_queue_delay_us", 0, 10_000_000)):
        if not low <= getattr(args, name) <= high:
            parser.error(f"--{name.replace('_', '-')} must be from {low} to {high}")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    options = ServeOptions(
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        precisions=tuple(args.precision or [None]),
        device=args.device,
        threads=args.threads,
        instances=args.instances,
        max_batch_size=args.max_batch,
        max_queue_delay_us=args.max_queue_delay_us,
        share_int8_calls=args.share_int8_calls,
    )

    def ready(models: list[str]) -> None:
        urls = {"http": f"http://{args.host}:{args.http_port}", "grpc": f"grpc://{args.host}:{args.grpc_port}"}
        print(json.dumps({"ready": True, "models": models, **urls}), flush=True)

    try:
        serve(args.bundle, options, on_ready=ready)
    except GuardError as exc:
        print(f"guard_sdk.triton: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
