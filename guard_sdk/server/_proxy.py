"""``POST /v1/chat/completions``: a guarded OpenAI-compatible proxy.

Nothing is checked here: each request goes through ``guard.wrap(openai.AsyncOpenAI(base_url=upstream))``, so its
input and output checks, stream windows, fail-closed timeouts and on-fail actions are exactly the wrapper's. This
module only turns HTTP into a ``create`` call and its outcome back into HTTP: a completion (with ``guard_results``),
SSE chunks, a 400 ``content_filter`` error for a violation under ``on_fail="raise"``, the upstream's own error
status and body, or 502 when the upstream cannot be reached in time.

Keys: the upstream gets ``ServerSettings.upstream_api_key`` when one is set; else the caller's bearer token, but only
when the server has no token of its own (then that header is our credential and is never forwarded); else no
``Authorization`` header at all.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator
from typing import Any

import openai
from fastapi.responses import JSONResponse, Response, StreamingResponse
from openai.resources.chat.completions import AsyncCompletions
from pydantic import BaseModel, ConfigDict

from .._errors import GuardError, GuardViolation
from .._guard import Guard
from ..integrations.openai import GuardedAsyncStream, GuardedChatCompletion
from ._errors import error_body, error_response, guard_error
from ._metrics import Metrics
from ._settings import ServerSettings

__all__ = ["ChatRequest", "Proxy"]

# Body fields the openai client takes as arguments; any other goes in extra_body, sent as it came (and checked).
_ARGUMENTS = frozenset(inspect.signature(AsyncCompletions.create).parameters) - {
    "self",
    "extra_headers",
    "extra_query",
    "extra_body",
    "timeout",
}


class ChatRequest(BaseModel):
    """What the proxy needs to know of a chat request; every other field is forwarded as it came."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[Any]
    stream: bool = False


class Proxy:
    def __init__(self, guard: Guard, settings: ServerSettings, metrics: Metrics) -> None:
        assert settings.upstream is not None
        self.guard = guard
        self.settings = settings
        self.metrics = metrics
        # One connection pool for every request's client.
        self.http = openai.DefaultAsyncHttpxClient()

    async def aclose(self) -> None:
        await self.http.aclose()

    def _client(self, caller_key: str | None) -> tuple[Any, dict[str, Any]]:
        """A guarded client for one request, and the headers its call adds."""
        settings = self.settings
        key = settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
        if key is None and settings.token is None:
            key = caller_key
        upstream = openai.AsyncOpenAI(
            base_url=settings.upstream,
            api_key=key or "unused",
            max_retries=0,  # a retry is the caller's decision, and its time
            timeout=settings.upstream_timeout,
            http_client=self.http,
        )
        headers = {} if key else {"Authorization": openai.Omit()}
        client = self.guard.wrap(
            upstream, on_fail=settings.on_fail, timeout=settings.timeout, on_decision=self.metrics.decided
        )
        return client, headers

    async def complete(self, request: ChatRequest, caller_key: str | None) -> Response:
        body = request.model_dump(exclude_unset=True)
        arguments = {name: value for name, value in body.items() if name in _ARGUMENTS}
        if extra := {name: value for name, value in body.items() if name not in _ARGUMENTS}:
            arguments["extra_body"] = extra
        self.metrics.proxy_requests.labels(str(request.stream).lower()).inc()
        client, headers = self._client(caller_key)
        try:
            completion = await client.chat.completions.create(**arguments, extra_headers=headers)
        except GuardViolation as violation:
            return _violation(violation)
        except openai.APIStatusError as exc:
            self.metrics.upstream_errors.labels("status").inc()
            # The upstream's own answer, as it came: its status and body.
            content_type = exc.response.headers.get("content-type", "application/json")
            return Response(exc.response.content, status_code=exc.response.status_code, media_type=content_type)
        except openai.APIConnectionError as exc:
            return self._unreachable(exc)
        if isinstance(completion, GuardedAsyncStream):
            return StreamingResponse(self._events(completion), media_type="text/event-stream")
        assert isinstance(completion, GuardedChatCompletion)
        content = completion.model_dump(mode="json", exclude_unset=True)
        content["guard_results"] = [result.model_dump(mode="json") for result in completion.guard_results]
        return JSONResponse(content)

    def _unreachable(self, exc: openai.APIConnectionError) -> JSONResponse:
        timeout = isinstance(exc, openai.APITimeoutError)
        self.metrics.upstream_errors.labels("timeout" if timeout else "connection").inc()
        reason = f"did not answer within {self.settings.upstream_timeout:g} s" if timeout else "cannot be reached"
        return error_response(
            502,
            f"the upstream {self.settings.upstream} {reason}",
            code="upstream_timeout" if timeout else "upstream_unreachable",
        )

    async def _events(self, stream: GuardedAsyncStream) -> AsyncIterator[str]:
        """The stream as server-sent events; a violation or failure mid-stream ends it with an error event, which
        openai clients raise (``APIError``)."""
        error: dict[str, Any] | None = None
        try:
            async for chunk in stream:
                yield f"data: {chunk.model_dump_json(exclude_unset=True)}\n\n"
        except GuardViolation as violation:
            error = _violation_body(violation)
        except openai.APIConnectionError as exc:
            self.metrics.upstream_errors.labels("connection").inc()
            error = error_body(502, f"the upstream stream failed: {exc}", code="upstream_unreachable")
        except openai.APIError as exc:
            self.metrics.upstream_errors.labels("status").inc()
            error = error_body(502, f"the upstream stream failed: {exc.message}", code="upstream_error")
        except GuardError as exc:
            failure = guard_error(exc)
            error = error_body(failure.status, failure.message, code=failure.code)
        finally:
            await stream.close()  # a stopped stream stops the generation upstream
        yield f"data: {json.dumps(error)}\n\n" if error else "data: [DONE]\n\n"


def _violation_body(violation: GuardViolation) -> dict[str, Any]:
    body = error_body(400, str(violation), code="content_filter")
    body["error"]["stage"] = violation.stage
    body["error"]["guard_results"] = [result.model_dump(mode="json") for result in violation.results]
    return body


def _violation(violation: GuardViolation) -> JSONResponse:
    return JSONResponse(_violation_body(violation), status_code=400)
