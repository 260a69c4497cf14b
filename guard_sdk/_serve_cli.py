"""``guard serve``'s options and start-up; the service itself is ``guard_sdk.server`` (the ``server`` extra, imported
only when the command runs, so ``guard --help`` works without it)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import get_args

from ._errors import GuardError
from ._runtime import Device

__all__ = ["add_arguments", "run"]


def add_arguments(serve: argparse.ArgumentParser) -> None:
    serve.description = (
        "Serve guards over HTTP: POST /v1/moderations (OpenAI's Moderation API), POST /v1/check, the guarded proxy "
        "POST /v1/chat/completions (with --upstream), GET /healthz, /readyz, /metrics. Stops on SIGINT/SIGTERM after "
        "finishing the requests in flight."
    )
    serve.add_argument(
        "--bundle", action="append", help="a bundle folder (repeat for several); default: the default pack"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--upstream", help="an OpenAI-compatible base URL (e.g. http://127.0.0.1:8080/v1): turns on the proxy"
    )
    serve.add_argument(
        "--upstream-key-env",
        metavar="NAME",
        help="environment variable holding the upstream's API key; without it the caller's bearer token is "
        "forwarded, but only when the server has no --token-env",
    )
    serve.add_argument(
        "--token-env",
        metavar="NAME",
        help="environment variable holding the bearer token callers must send (all routes but /healthz, /readyz)",
    )
    serve.add_argument("--max-body-bytes", type=int, default=1_048_576, help="larger request bodies get 413")
    serve.add_argument("--max-texts", type=int, default=64, help="texts per /v1/check or moderation request")
    serve.add_argument("--max-chars", type=int, default=32_768, help="characters per text and per context")
    serve.add_argument(
        "--on-fail", choices=("raise", "refuse", "monitor"), default="raise", help="the proxy's action on a violation"
    )
    serve.add_argument(
        "--timeout", type=float, default=5.0, help="seconds a check may take, queueing included (then 503, or a block)"
    )
    serve.add_argument(
        "--upstream-timeout", type=float, default=60.0, help="seconds to wait on the upstream (then 502)"
    )
    serve.add_argument(
        "--category",
        action="append",
        metavar="LABEL=CATEGORY",
        help="report a label as an OpenAI moderation category (labels named like one need none)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn worker processes, each loading its own copy of the models (memory x N); for more cores than "
        "one process's checks keep busy",
    )
    serve.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads each check may use, per worker (the Guard's threads); default: the core count. Keep "
        "workers x threads at most the cores",
    )
    serve.add_argument("--device", choices=get_args(Device), default="auto")
    serve.add_argument(
        "--triton",
        metavar="URL",
        help="run the models on this Triton server (http://host:8000 or grpc://host:8001; guard-sdk[triton]) "
        "instead of in this process; --device and --threads then do nothing",
    )
    serve.add_argument("--trust", help="a JSON file of guard.json pins (from `guard trust`); unpinned bundles fail")
    serve.add_argument(
        "--keep-alive",
        type=int,
        default=75,
        metavar="SECONDS",
        help="how long an idle connection stays open; keep it above the idle timeout of the clients and load "
        "balancers in front, or requests sent as the server closes are reset",
    )
    serve.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))


def run(args: argparse.Namespace) -> int:
    try:
        from .server._run import ServeConfig, serve
        from .server._settings import ServerSettings
    except ImportError as exc:
        return _error(exc)
    if args.keep_alive < 1:
        return _error(ValueError(f"--keep-alive must be at least 1 second, got {args.keep_alive}"))
    for name in (args.token_env, args.upstream_key_env):
        if name and not os.environ.get(name):
            return _error(ValueError(f"environment variable {name} is not set (or empty)"))
    if not args.upstream:
        ignored = [
            flag
            for flag, given in (
                ("--upstream-key-env", args.upstream_key_env),
                ("--on-fail", args.on_fail != "raise"),
                ("--upstream-timeout", args.upstream_timeout != 60.0),
            )
            if given
        ]
        if ignored:
            print(f"guard: warning: {', '.join(ignored)} do nothing without --upstream", file=sys.stderr)
    if args.triton and (args.device != "auto" or args.threads is not None):
        print("guard: warning: --device and --threads do nothing with --triton", file=sys.stderr)
    cores = os.cpu_count() or 1
    if not args.triton and args.workers * (args.threads or cores) > cores:
        print(
            f"guard: warning: {args.workers} workers x {args.threads or cores} threads is more than the {cores} cores: "
            "checks will wait for each other's threads",
            file=sys.stderr,
        )
    try:
        categories = {}
        for item in args.category or []:
            label, equals, category = item.partition("=")
            if not (label and equals and category):
                raise ValueError(f"--category takes LABEL=CATEGORY, got {item!r}")
            categories[label] = category
        settings = ServerSettings(
            max_body_bytes=args.max_body_bytes,
            max_texts=args.max_texts,
            max_chars=args.max_chars,
            on_fail=args.on_fail,
            timeout=args.timeout,
            upstream=args.upstream,
            upstream_timeout=args.upstream_timeout,
            categories=categories,
        )
        config = ServeConfig(
            bundles=args.bundle,
            device=args.device,
            threads=args.threads,
            trust=args.trust,
            triton=args.triton,
            token_env=args.token_env,
            upstream_key_env=args.upstream_key_env,
            settings=settings,
        )
        serve(
            config,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            keep_alive=args.keep_alive,
        )
    except (GuardError, ValueError) as exc:
        return _error(exc)
    return 0


def _error(exc: Exception) -> int:
    print(f"guard: error: {exc}", file=sys.stderr)
    return 2
