"""A LiteLLM guardrail backed by a ``Guard``: ``guard_sdk.integrations.litellm.GuardSdkGuardrail``.

In a LiteLLM proxy's ``config.yaml`` (``mode`` is one hook or a list of them)::

    guardrails:
      - guardrail_name: guard-sdk
        litellm_params:
          guardrail: guard_sdk.integrations.litellm.GuardSdkGuardrail
          mode: [pre_call, post_call]      # or during_call: the input is checked while the model runs
          default_on: true
          bundles: [bundles/injection, bundles/content-safety]   # omitted: the default pack
          on_fail: raise                   # raise (HTTP 400), refuse (a 200 answer with the refusal), monitor

Every other ``litellm_params`` key of this class's constructor (``refusal``, ``timeout``, ``fail_open``,
``check_system``, ``stream_chunk_chars``, ``stream_context_chars``, ``device``, ``threads``) is passed to it too.
With the litellm SDK, ``litellm.callbacks = [GuardSdkGuardrail(guard, guardrail_name=..., event_hook=[...],
default_on=True)]`` runs the pre-call and post-call hooks around each call that names its guardrails
(``litellm.acompletion(..., guardrails=["guard-sdk"])``); the during-call and streaming hooks are the proxy's.

What each hook checks (the same texts as ``guard.wrap``; see ``guard_sdk.integrations.openai``):

- ``pre_call`` (``async_pre_call_hook``) and ``during_call`` (``async_moderation_hook``): a chat request's messages
  (all but system and developer ones, unless ``check_system``) and the request fields a model reads, or a Responses
  request's input. LiteLLM adds fields of its own to a request (metadata, call ids, keys, the proxy's copy of the
  request): only the OpenAI request fields are read. Other call types (embeddings, images, ...) are not checked.
- ``post_call`` (``async_post_call_success_hook``): every text of the answer, with the request's messages as the
  context of guards that judge an answer in context.
- streams (``async_post_call_streaming_iterator_hook``, run for ``post_call``): checked in overlapping windows while
  they arrive, as ``guard.wrap`` checks them; a chunk reaches the client only after a window covering it passed.

On a violation (``on_fail``): ``"raise"`` raises FastAPI's ``HTTPException`` 400 (LiteLLM's own guardrails block
so; the proxy returns it as an error), its ``detail`` naming the stage and carrying the flagged results;
``"refuse"`` answers with the refusal text instead (a blocked input or a blocked non-chat answer through LiteLLM's
``ModifyResponseException``, which the proxy turns into a normal answer; a blocked chat answer has its blocked
choices replaced; a blocked stream ends with a refusal chunk); ``"monitor"`` allows and logs. A check that fails or
times out blocks unless ``fail_open`` (see ``guard_sdk.Enforcer``). A request the guard refuses to check (a text
over the guard's limits, a malformed message) gets a 400 naming the problem.

Importing litellm fetches its model cost map unless ``LITELLM_LOCAL_MODEL_COST_MAP=True`` is set.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from .._enforce import DEFAULT_REFUSAL, Decision, Enforcer, OnFail, Piece
from .._errors import ExtraNotInstalledError, GuardViolation, InputError

try:
    from litellm.exceptions import GuardrailRaisedException
    from litellm.integrations.custom_guardrail import CustomGuardrail
    from litellm.types.guardrails import GuardrailEventHooks
    from litellm.types.utils import Choices, Message, ModelResponse, ModelResponseStream
except ImportError as exc:
    raise ExtraNotInstalledError("guard_sdk.integrations.litellm", "litellm", "litellm") from exc

from .openai import (
    _CHAT_FIELDS,
    _RESPONSES_FIELDS,
    _ChunkRefusal,
    chat_request_pieces,
    completion_pieces,
    request_context,
    response_output_pieces,
    responses_request_pieces,
)

if TYPE_CHECKING:
    from litellm.caching.dual_cache import DualCache
    from litellm.proxy._types import UserAPIKeyAuth
    from litellm.types.utils import CallTypesLiteral, LLMResponseTypes
    from openai.types.chat import ChatCompletion, ChatCompletionChunk
    from openai.types.responses import Response

    from .._context import Context
    from .._guard import Guard
    from .._result import Stage
    from .._runtime import Device

__all__ = ["GuardSdkGuardrail"]

logger = logging.getLogger("guard_sdk")

_RESPONSES_CALLS = frozenset({"responses", "aresponses"})


class GuardSdkGuardrail(CustomGuardrail):
    """A LiteLLM ``CustomGuardrail`` whose checks are a ``Guard``'s (see the module docstring).

    Args:
        guard: the Guard that checks; None loads ``bundles`` (the LiteLLM proxy passes them from ``litellm_params``).
        bundles: bundle folders to load when no ``guard`` is given; neither loads the installed default pack
            (never built here: a gateway must not train models at start-up).
        device, threads: ``Guard``'s own, for the bundles loaded here.
        on_fail: ``"raise"``, ``"refuse"``, ``"monitor"`` or a callable (see ``guard_sdk.Enforcer``).
        refusal, fail_open, timeout, stream_chunk_chars, stream_context_chars, on_decision: ``guard_sdk.Enforcer``'s.
        check_system: also check system and developer messages, instructions and tool definitions.
        kwargs: ``CustomGuardrail``'s own (``guardrail_name``, ``event_hook``, ``default_on``, ...). The proxy passes
            every ``litellm_params`` value it knows, most of them meant for other guardrails; they go there too.
    """

    def __init__(
        self,
        guard: Guard | None = None,
        *,
        bundles: str | list[str] | None = None,
        device: Device = "auto",
        threads: int | None = None,
        on_fail: OnFail = "raise",
        refusal: str = DEFAULT_REFUSAL,
        fail_open: bool = False,
        timeout: float | None = 5.0,
        stream_chunk_chars: int = 200,
        stream_context_chars: int = 200,
        on_decision: Callable[[Decision], None] | None = None,
        check_system: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("guardrail_name", "guard-sdk")
        kwargs.setdefault(
            "supported_event_hooks",
            [GuardrailEventHooks.pre_call, GuardrailEventHooks.during_call, GuardrailEventHooks.post_call],
        )
        super().__init__(timeout=timeout, **kwargs)
        if guard is None:
            from .._guard import Guard

            options: dict[str, Any] = {"device": device, "threads": threads}
            guard = Guard(bundles, **options) if bundles else Guard.default(build=False, **options)
        self.guard = guard
        self.enforcer = Enforcer(
            guard,
            on_fail=on_fail,
            refusal=refusal,
            fail_open=fail_open,
            timeout=timeout,
            stream_chunk_chars=stream_chunk_chars,
            stream_context_chars=stream_context_chars,
            on_decision=on_decision,
        )
        self.check_system = check_system

    async def async_pre_call_hook(
        self, user_api_key_dict: UserAPIKeyAuth, cache: DualCache, data: dict[str, Any], call_type: CallTypesLiteral
    ) -> Exception | str | dict[str, Any] | None:
        """Check the request before it is sent; returns it unchanged when it passed."""
        await self._check_input(data, call_type)
        return data

    async def async_moderation_hook(
        self, data: dict[str, Any], user_api_key_dict: UserAPIKeyAuth, call_type: CallTypesLiteral
    ) -> object:
        """Check the request while the model runs (LiteLLM cancels the call when this raises)."""
        await self._check_input(data, call_type)
        return None

    async def async_post_call_success_hook(
        self, data: dict[str, Any], user_api_key_dict: UserAPIKeyAuth, response: LLMResponseTypes
    ) -> Any:
        """Check the answer, with the request as context; returns the response (its blocked choices refused)."""
        if isinstance(response, ModelResponse):
            pieces = completion_pieces(cast("ChatCompletion", response))  # the same choices[].index/.message shape
            decision = await self._decide([piece for _, piece in pieces], "output", _context(data))
            if decision.refusal is not None:
                owner = {piece.source: index for index, piece in pieces}
                blocked = {owner[result.source] for result in decision.violations}
                for choice in response.choices:
                    if isinstance(choice, Choices) and choice.index in blocked:
                        choice.message = Message(role="assistant", content=decision.refusal)
                        choice.finish_reason = "content_filter"
            return response
        output = getattr(response, "output", None)
        if isinstance(output, list):  # a Responses-API response
            decision = await self._decide(response_output_pieces(cast("Response", response)), "output", _context(data))
            if decision.refusal is not None:
                self.raise_passthrough_exception(decision.refusal, data, _detail(decision), response)
        return response

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: UserAPIKeyAuth, response: Any, request_data: dict[str, Any]
    ) -> AsyncGenerator[ModelResponseStream, None]:
        """The stream, checked in windows while it arrives and in full at its end."""
        from .._streaming import StreamGuard

        refusal = _ChunkRefusal(str(request_data.get("model")))

        def texts(chunk: ModelResponseStream) -> Iterator[tuple[str, str]]:
            # A litellm chunk has the shape of an openai one: choices[].index and .delta.
            return refusal.texts(cast("ChatCompletionChunk", chunk))

        def refusal_chunk(text: str) -> ModelResponseStream:
            return ModelResponseStream(**refusal.chunk(text).model_dump(exclude_none=True))

        stream = StreamGuard(self.enforcer, texts, refusal_chunk, context=_context(request_data))
        try:
            async for chunk in stream.arun(_chunks(response)):
                yield chunk
        except GuardViolation as violation:
            raise _blocked(violation, self.guardrail_name) from violation
        except InputError as error:
            raise _rejected(error, self.guardrail_name) from error

    async def _check_input(self, data: Mapping[str, Any], call_type: str) -> None:
        try:
            pieces = _request_pieces(data, call_type, check_system=self.check_system)
        except InputError as error:
            raise _rejected(error, self.guardrail_name) from error
        if pieces is None:
            logger.debug("guard-sdk guardrail: call type %s carries no chat or Responses input; not checked", call_type)
            return
        decision = await self._decide(pieces, "input")
        if decision.refusal is not None:
            self.raise_passthrough_exception(decision.refusal, dict(data), _detail(decision))

    async def _decide(self, pieces: list[Piece], stage: Stage, context: Context | None = None) -> Decision:
        """The Enforcer's decision; a blocked "raise" and a text the guard refuses become LiteLLM's HTTP 400."""
        try:
            return await self.enforcer.acheck(pieces, stage, context)
        except GuardViolation as violation:
            raise _blocked(violation, self.guardrail_name) from violation
        except InputError as error:
            raise _rejected(error, self.guardrail_name) from error


def _request_pieces(data: Mapping[str, Any], call_type: str, *, check_system: bool) -> list[Piece] | None:
    """The input pieces of a chat or Responses request, read from its OpenAI fields only; None for other calls."""
    if "messages" in data:
        body = {key: value for key, value in data.items() if key == "messages" or key in _CHAT_FIELDS}
        return chat_request_pieces(body, check_system=check_system)
    if call_type in _RESPONSES_CALLS:
        body = {key: value for key, value in data.items() if key == "input" or key in _RESPONSES_FIELDS}
        return responses_request_pieces(body, check_system=check_system)
    return None


def _context(data: Mapping[str, Any]) -> Context | None:
    """What an answer answers: the request's messages, or its Responses input."""
    messages = data.get("messages")
    if isinstance(messages, (list, tuple)):
        return request_context(messages, "messages")
    items = data.get("input")
    if isinstance(items, str):
        return items
    if isinstance(items, (list, tuple)):
        return request_context(items, "input")
    return None


async def _chunks(response: AsyncIterable[ModelResponseStream]) -> AsyncGenerator[ModelResponseStream, None]:
    async for chunk in response:
        yield chunk


def _detail(decision: Decision | GuardViolation) -> dict[str, Any]:
    return {"stage": decision.stage, "violations": [result.model_dump(mode="json") for result in decision.violations]}


def _blocked(violation: GuardViolation, guardrail_name: str | None) -> Exception:
    return _http_400(str(violation), guardrail_name, _detail(violation))


def _rejected(error: InputError, guardrail_name: str | None) -> Exception:
    return _http_400(f"guard-sdk guardrail cannot check this request: {error}", guardrail_name, {})


def _http_400(message: str, guardrail_name: str | None, detail: dict[str, Any]) -> Exception:
    """How LiteLLM's guardrails block: FastAPI's HTTPException 400 with a detail dict (the proxy returns it as is),
    or, where FastAPI is not installed (the litellm SDK alone), LiteLLM's ``GuardrailRaisedException``."""
    try:
        from fastapi import HTTPException
    except ImportError:
        return GuardrailRaisedException(
            guardrail_name=guardrail_name, message=message, should_wrap_with_default_message=False, blocked_content=True
        )
    return HTTPException(status_code=400, detail={"error": message, "guardrail": guardrail_name, **detail})
