"""``create_app(guard, settings)``: the FastAPI app of ``guard serve``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from .._context import Context
from .._guard import Guard
from .._result import CheckResult, Stage
from ._errors import APIError, error_response, install_handlers
from ._gate import Gate
from ._metrics import Metrics
from ._moderations import Categories, ModerationRequest, moderation_response, moderation_texts
from ._proxy import ChatRequest, Proxy
from ._settings import ServerSettings

__all__ = ["CheckRequest", "create_app"]

logger = logging.getLogger("guard_sdk.server")


class CheckRequest(BaseModel):
    """``POST /v1/check``: texts checked at one stage, each with its context (the request it answers, or the
    conversation before it) or None."""

    model_config = ConfigDict(extra="forbid")

    texts: list[str]
    stage: Stage = "input"
    contexts: list[str | list[dict[str, Any]] | None] | None = None


class _Checker:
    """Runs checks off the event loop (on the Guard's own worker threads), within the settings' limits."""

    def __init__(self, guard: Guard, settings: ServerSettings, metrics: Metrics) -> None:
        self.guard = guard
        self.settings = settings
        self.metrics = metrics

    async def check(
        self, texts: list[str], stage: Stage, contexts: list[Context | None] | None = None, where: str = "texts"
    ) -> list[CheckResult]:
        self._limit(texts, contexts, where)
        started = time.perf_counter()
        future = self.guard.submit(texts, stage=stage, contexts=contexts)
        try:
            # Cancelling the wrapped future (a timeout) stops the check at its next model call.
            results = await asyncio.wait_for(asyncio.wrap_future(future), self.settings.timeout)
        except asyncio.TimeoutError:
            raise APIError(
                503,
                f"the check did not finish within {self.settings.timeout:g} s; the server is busy, retry later",
                code="check_timeout",
            ) from None
        self.metrics.checked(stage, results, time.perf_counter() - started)
        return results

    def _limit(self, texts: list[str], contexts: list[Context | None] | None, where: str) -> None:
        limits = self.settings
        if len(texts) > limits.max_texts:
            raise APIError(
                413,
                f"{where} holds {len(texts)} texts, over this server's limit of {limits.max_texts} per request "
                "(max_texts)",
                code="too_many_texts",
                param=where,
            )
        for name, items in ((where, texts), ("contexts", contexts or [])):
            for i, item in enumerate(items):
                chars = (
                    len(item) if isinstance(item, str) else sum(len(str(m.get("content") or "")) for m in item or [])
                )
                if chars > limits.max_chars:
                    raise APIError(
                        413,
                        f"{name}[{i}] has {chars:,} characters, over this server's limit of {limits.max_chars:,} "
                        "(max_chars)",
                        code="text_too_long",
                        param=f"{name}[{i}]",
                    )


def create_app(guard: Guard, settings: ServerSettings | None = None) -> FastAPI:
    """The HTTP service of ``guard serve`` around a ready ``Guard``: ``/v1/moderations``, ``/v1/check``, the guarded
    proxy ``/v1/chat/completions`` (with ``settings.upstream``), ``/healthz``, ``/readyz`` and ``/metrics``.

    Serving starts at once; the Guard warms up in the background and ``/readyz`` answers 503 until it has. Each app
    counts its metrics in a registry of its own.
    """
    settings = settings or ServerSettings()
    metrics = Metrics()
    checker = _Checker(guard, settings, metrics)
    proxy = Proxy(guard, settings, metrics) if settings.upstream else None
    input_labels = [
        label.name for bundle in guard.bundles if "input" in bundle.manifest.stages for label in bundle.manifest.labels
    ]
    categories = Categories(input_labels, settings.categories)
    model_name = ",".join(bundle.manifest.id for bundle in guard.bundles if "input" in bundle.manifest.stages)
    readiness: dict[str, str | None] = {"state": "warming up", "error": None}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        def warmed(done: asyncio.Future[None]) -> None:
            if done.cancelled() or done.exception() is not None:
                error = "cancelled" if done.cancelled() else repr(done.exception())
                readiness.update(state="failed", error=error)
                logger.error("guard warm-up failed: %s", error)
            else:
                readiness["state"] = "ready"

        # In the background: the probes answer while the models warm up.
        warmup = asyncio.get_running_loop().run_in_executor(None, guard.warmup)
        warmup.add_done_callback(warmed)
        try:
            yield
        finally:
            if proxy is not None:
                await proxy.aclose()

    app = FastAPI(title="guard-sdk", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None)
    install_handlers(app)
    token = settings.token.get_secret_value() if settings.token else None
    app.add_middleware(Gate, token=token, max_body_bytes=settings.max_body_bytes, metrics=metrics)
    app.state.metrics = metrics

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        body = {"status": readiness["state"], "bundles": [bundle.manifest.id for bundle in guard.bundles]}
        if readiness["error"]:
            body["error"] = readiness["error"]
        return JSONResponse(body, status_code=200 if readiness["state"] == "ready" else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/v1/check")
    async def check(request: CheckRequest) -> Response:
        contexts: list[Context | None] | None = list(request.contexts) if request.contexts is not None else None
        results = await checker.check(request.texts, request.stage, contexts)
        # As `guard check` prints them, one model_dump_json each, joined without parsing them again.
        content = '{"results":[' + ",".join(result.model_dump_json() for result in results) + "]}"
        return Response(content, media_type="application/json")

    @app.post("/v1/moderations")
    async def moderations(request: ModerationRequest) -> JSONResponse:
        results = await checker.check(moderation_texts(request), "input", where="input")
        return JSONResponse(moderation_response(model_name, results, categories))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatRequest, raw: Request) -> Response:
        if proxy is None:
            return error_response(
                404,
                "the guarded chat proxy is off: start the server with an upstream (guard serve --upstream URL)",
                code="not_found",
            )
        authorization = raw.headers.get("authorization", "")
        caller_key = authorization[7:] if authorization[:7].lower() == "bearer " else None
        return await proxy.complete(request, caller_key)

    return app


def _version() -> str:
    from .. import __version__

    return __version__
