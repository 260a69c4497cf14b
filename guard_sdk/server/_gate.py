"""What every request passes before a route sees it: bearer authentication, the body size limit (enforced while the
body arrives, before anything parses it), and the request metrics. Pure ASGI: an unauthenticated or oversized body
is never read whole."""

from __future__ import annotations

import hmac
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._errors import error_body
from ._metrics import Metrics

__all__ = ["OPEN_PATHS", "Gate"]

# Probes carry no credentials (kubelet's cannot send a Secret's token without a script).
OPEN_PATHS = frozenset({"/healthz", "/readyz"})


class Gate:
    def __init__(self, app: ASGIApp, *, token: str | None, max_body_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.expected = None if token is None else f"Bearer {token}".encode()
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        counted = scope["path"] != "/metrics"  # a scrape would count itself

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                self.metrics.errors.labels(str(message["status"])).inc()
            await send(message)

        if counted:
            self.metrics.in_progress.inc()
        try:
            if self.expected is not None and not self._authorized(scope):
                await _reply(send_counted, 401, "missing or wrong bearer token", "invalid_api_key")
                return
            body = await self._body(scope, receive, send_counted)
            if body is None:
                return
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if replayed:  # later reads wait for the disconnect, as a streamed response's do
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send_counted)
        finally:
            if counted:
                self.metrics.in_progress.dec()

    def _authorized(self, scope: Scope) -> bool:
        assert self.expected is not None
        given = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        return hmac.compare_digest(given, self.expected)  # constant time: no guessing the token byte by byte

    async def _body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None when the caller left or it is over the limit (413 sent)."""
        limit = self.max_body_bytes
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:  # a chunked body, or one longer than it declared
                await _too_large(send, limit)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _too_large(send: Send, limit: int) -> None:
    await _reply(send, 413, f"request body over this server's limit of {limit:,} bytes (max_body_bytes)", "too_large")


async def _reply(send: Send, status: int, message: str, code: str) -> None:
    body = json.dumps(error_body(status, message, code=code)).encode()
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
