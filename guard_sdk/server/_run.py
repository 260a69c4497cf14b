"""Running the app: ``serve_in_thread`` (tests, benchmarks, notebooks) and ``guard serve``'s uvicorn processes."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from pydantic import BaseModel, ConfigDict, SecretStr

from .._guard import Guard
from .._runtime import Device
from ._app import create_app
from ._settings import ServerSettings

__all__ = ["ServeConfig", "serve", "serve_in_thread"]

# Seconds an idle keep-alive connection stays open. Longer than the idle timeouts of the clients and load balancers
# in front (httpx 5 s, AWS ALB 60 s): when the server closes first, a request sent as the close arrives is reset.
KEEP_ALIVE_S = 75

# How `guard serve --workers N` hands its configuration to the worker processes uvicorn starts (secrets stay in the
# environment variables the configuration names).
_CONFIG_ENV = "GUARD_SDK_SERVE_CONFIG"


@contextmanager
def serve_in_thread(app: Any, *, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a thread of this process; yields its base URL (``http://host:port``).

    ``port=0`` takes a free port (bound here, so no other process can take it first). On exit the server shuts down
    as on SIGTERM: it finishes the requests in flight, then the thread ends.
    """
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and without it every
    # response waits out a delayed ACK (40 ms).
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_keep_alive=KEEP_ALIVE_S)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="guard-serve", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server stopped while starting (its error is in the log above)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not start within {timeout:g} s")
            time.sleep(0.01)
        yield f"http://{'[' + host + ']' if ':' in host else host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


class ServeConfig(BaseModel):
    """What ``guard serve`` builds its app from: the Guard's options, the settings without their secrets, and the
    environment variables that hold those."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bundles: list[str] | None = None
    """Bundle folders; None: the default pack."""
    device: Device = "auto"
    threads: int | None = None
    trust: str | None = None
    triton: str | None = None
    """A Triton server's URL: the models run there (``TritonBackend``), tokenisation and heads here."""
    token_env: str | None = None
    upstream_key_env: str | None = None
    settings: ServerSettings = ServerSettings()

    def guard(self) -> Guard:
        options: dict[str, Any] = {"device": self.device, "threads": self.threads, "trust": self.trust}
        if self.triton:
            from ..triton import TritonBackend

            options["backend"] = TritonBackend(self.triton)
        return Guard(self.bundles, **options) if self.bundles else Guard.default(build=False, **options)

    def secret_settings(self) -> ServerSettings:
        """The settings with the token and the upstream key read from their environment variables."""
        secrets = {
            field: SecretStr(os.environ[name])
            for field, name in (("token", self.token_env), ("upstream_api_key", self.upstream_key_env))
            if name
        }
        return self.settings.model_copy(update=secrets)


def _worker_app() -> Any:
    """The app of one worker process of ``guard serve --workers N`` (uvicorn's factory)."""
    config = ServeConfig.model_validate_json(os.environ[_CONFIG_ENV])
    return create_app(config.guard(), config.secret_settings())


def serve(
    config: ServeConfig,
    *,
    host: str,
    port: int,
    workers: int,
    log_level: str = "info",
    keep_alive: int = KEEP_ALIVE_S,
) -> None:
    """Run ``guard serve`` until SIGINT or SIGTERM, which finish the requests in flight before the process exits.

    One worker serves the Guard built here. Several are uvicorn's worker processes, each with a Guard of its own
    (built once here first, so that a bad bundle fails now rather than in every worker).
    """
    guard = config.guard()
    if workers == 1:
        app = create_app(guard, config.secret_settings())
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=keep_alive)
        return
    del guard
    os.environ[_CONFIG_ENV] = json.dumps(config.model_dump(mode="json"))
    uvicorn.run(
        f"{__name__}:_worker_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        timeout_keep_alive=keep_alive,
    )
