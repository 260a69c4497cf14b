"""Guarded OpenAI clients: ``guard.wrap(openai.OpenAI(...))`` and ``guard.wrap(openai.AsyncOpenAI(...))``.

The wrapped client keeps the call shapes and return types of what it guards: ``chat.completions.create`` (plain and
``stream=True``) returns a ``ChatCompletion`` / ``Stream[ChatCompletionChunk]`` subclass with ``guard_results``, and
``responses.create`` (not streamed) a ``Response`` subclass with ``guard_results``. Everything else is the client's
own (``models``, ``files``, ...), except generating endpoints this module does not guard (legacy ``completions``,
the ``parse``/``stream`` helpers, raw responses, ``with_options``): they raise ``UnsupportedClientError`` instead of
letting text through unchecked. ``client.unguarded`` is the original client, for an explicit opt-out.

What is checked:
- input: the text of every message except system and developer ones (unless ``check_system=True``): user turns,
  tool and function results, and assistant turns with their tool-call arguments (chat history comes back from the
  caller, so it is untrusted). The text parts of one message are checked as one text, so a violation split across
  parts is seen whole; image, audio and file parts get a ``skipped_non_text`` result.
- output: each choice's text and tool-call arguments; streams in overlapping windows (see ``guard_sdk._streaming``).

``input_mode="parallel"`` (default) sends the request while the input is checked and cancels it when the input is
blocked: an async client cancels the HTTP request; a sync client closes a stream as soon as it opens and discards a
plain response (a blocking HTTP call cannot be interrupted from another thread). ``"sequential"`` sends the request
only after the input passed.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

import openai
import pydantic
from openai import AsyncOpenAI, AsyncStream, OpenAI, Stream
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from openai.types.responses import Response, ResponseOutputMessage, ResponseOutputText

from .._enforce import Decision, Enforcer, InputMode, Piece, SourcedResult
from .._errors import InputTypeError, UnsupportedClientError
from .._streaming import StreamGuard

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam
    from typing_extensions import Unpack

    from .._enforce import EnforceOptions
    from .._guard import Guard

__all__ = [
    "GuardedAsyncCompletions",
    "GuardedAsyncOpenAI",
    "GuardedAsyncResponses",
    "GuardedAsyncStream",
    "GuardedChat",
    "GuardedChatCompletion",
    "GuardedCompletions",
    "GuardedOpenAI",
    "GuardedResponse",
    "GuardedResponses",
    "GuardedStream",
    "wrap",
]

R = TypeVar("R")
C = TypeVar("C")


class GuardedChatCompletion(ChatCompletion):
    """A ``ChatCompletion`` with the results of the input and output checks (left out of ``model_dump``)."""

    guard_results: list[SourcedResult] = pydantic.Field(default_factory=list, exclude=True)


class GuardedResponse(Response):
    """A Responses-API ``Response`` with the results of the input and output checks (left out of ``model_dump``)."""

    guard_results: list[SourcedResult] = pydantic.Field(default_factory=list, exclude=True)


class GuardedStream(Stream[ChatCompletionChunk]):
    """A ``Stream[ChatCompletionChunk]`` whose chunks passed the output checks; ``guard_results`` grows as it runs.

    ``response`` is None when the guard refused before any request was sent.
    """

    guard_results: list[SourcedResult]

    # Not Stream.__init__: the chunks come from the guarded iterator, which reads the wrapped stream.
    def __init__(
        self,
        inner: Stream[ChatCompletionChunk] | None,
        chunks: Iterator[ChatCompletionChunk],
        results: list[SourcedResult],
    ) -> None:
        self._inner = inner
        self.response = inner.response if inner is not None else None  # type: ignore[assignment]
        self.guard_results = results
        self._iterator = chunks

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


class GuardedAsyncStream(AsyncStream[ChatCompletionChunk]):
    """The async twin of ``GuardedStream``."""

    guard_results: list[SourcedResult]

    def __init__(
        self,
        inner: AsyncStream[ChatCompletionChunk] | None,
        chunks: AsyncIterator[ChatCompletionChunk],
        results: list[SourcedResult],
    ) -> None:
        self._inner = inner
        self.response = inner.response if inner is not None else None  # type: ignore[assignment]
        self.guard_results = results
        self._iterator = chunks

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


# ---------------------------------------------------------------------------------------------------------------------
# What to check in a request and in a response


_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_SYSTEM_ROLES = frozenset({"system", "developer"})
_TEXT_PARTS = {"text": "text", "input_text": "text", "output_text": "text", "refusal": "refusal"}


def message_pieces(messages: Iterable[Any], *, check_system: bool) -> list[Piece]:
    """The texts of a chat request's messages that are checked as input, and its non-text parts (as skipped)."""
    pieces: list[Piece] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        fields = _fields(message, where)
        role = fields.get("role")
        if role not in _ROLES:
            raise InputTypeError(f"{where} has role {role!r}; an OpenAI message has one of {sorted(_ROLES)}")
        if role in _SYSTEM_ROLES and not check_system:
            continue
        pieces += content_pieces(fields.get("content"), f"{where}.content")
        pieces += _call_pieces(fields, where)
    return pieces


def content_pieces(content: object, where: str) -> list[Piece]:
    """A message content: a str, None, or content parts (text parts joined into one text, the rest skipped)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [Piece(where, content)]
    if not isinstance(content, (list, tuple)):
        raise InputTypeError(f"{where} must be a str, a list of content parts or None, got {type(content).__name__}")
    texts: list[str] = []
    skipped: list[Piece] = []
    for k, part in enumerate(content):
        fields = _fields(part, f"{where}[{k}]")
        kind = fields.get("type")
        if not isinstance(kind, str):
            raise InputTypeError(f"{where}[{k}] is a content part without a 'type'")
        key = _TEXT_PARTS.get(kind)
        if key is None:
            skipped.append(Piece(f"{where}[{k}] ({kind})", None))
            continue
        text = fields.get(key)
        if not isinstance(text, str):
            raise InputTypeError(f"{where}[{k}] is a {kind!r} part whose {key!r} is {type(text).__name__}, not str")
        texts.append(text)
    return ([Piece(where, "\n".join(texts))] if texts else []) + skipped


def _call_pieces(fields: Mapping[str, Any], where: str) -> list[Piece]:
    """Tool-call and (deprecated) function-call arguments of an assistant message."""
    pieces = []
    for j, call in enumerate(fields.get("tool_calls") or ()):
        call = _fields(call, f"{where}.tool_calls[{j}]")
        if function := call.get("function"):
            source, text = f"{where}.tool_calls[{j}].function.arguments", _fields(function, where).get("arguments")
        else:  # a custom tool's call carries free text
            source, text = (
                f"{where}.tool_calls[{j}].custom.input",
                _fields(call.get("custom") or {}, where).get("input"),
            )
        pieces.append(Piece(source, _text(text, source)))
    if function_call := fields.get("function_call"):
        source = f"{where}.function_call.arguments"
        pieces.append(Piece(source, _text(_fields(function_call, source).get("arguments"), source)))
    return pieces


def completion_pieces(completion: ChatCompletion) -> list[tuple[int, Piece]]:
    """Each choice's text and call arguments, with the index of its choice."""
    pieces: list[tuple[int, Piece]] = []
    for choice in completion.choices:
        where = f"choices[{choice.index}].message"
        message = choice.message.model_dump(exclude_none=True)
        pieces += [(choice.index, piece) for piece in content_pieces(message.get("content"), f"{where}.content")]
        pieces += [(choice.index, piece) for piece in _call_pieces(message, where)]
    return pieces


def chunk_texts(chunk: ChatCompletionChunk) -> Iterator[tuple[str, str]]:
    """The (channel, text) pairs a streamed chunk adds: each choice's content and each tool call's arguments."""
    for choice in chunk.choices:
        where = f"choices[{choice.index}].delta"
        delta = choice.delta
        if delta.content:
            yield f"{where}.content", delta.content
        for call in delta.tool_calls or ():
            if call.function is not None and call.function.arguments:
                yield f"{where}.tool_calls[{call.index}].function.arguments", call.function.arguments
        if delta.function_call is not None and delta.function_call.arguments:
            yield f"{where}.function_call.arguments", delta.function_call.arguments


def response_input_pieces(kwargs: Mapping[str, Any], *, check_system: bool) -> list[Piece]:
    """The texts of a Responses-API request checked as input: ``input`` items (and ``instructions`` if asked)."""
    pieces: list[Piece] = []
    if check_system and kwargs.get("instructions") is not None:
        pieces.append(Piece("instructions", _text(kwargs["instructions"], "instructions")))
    items = kwargs.get("input")
    if items is None or isinstance(items, str):
        return pieces + ([Piece("input", items)] if items is not None else [])
    if not isinstance(items, (list, tuple)):
        raise InputTypeError(f"input must be a str or a list of input items, got {type(items).__name__}")
    for i, item in enumerate(items):
        pieces += _item_pieces(_fields(item, f"input[{i}]"), f"input[{i}]", check_system=check_system)
    return pieces


def response_output_pieces(response: Response) -> list[Piece]:
    return [
        piece
        for i, item in enumerate(response.output)
        for piece in _item_pieces(item.model_dump(exclude_none=True), f"output[{i}]", check_system=True)
    ]


def _item_pieces(item: Mapping[str, Any], where: str, *, check_system: bool) -> list[Piece]:
    """One Responses-API item: a message's content, a tool call's arguments or a tool's output; others are skipped."""
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in _ROLES:
            raise InputTypeError(f"{where} has role {role!r}; a message has one of {sorted(_ROLES)}")
        return (
            []
            if role in _SYSTEM_ROLES and not check_system
            else content_pieces(item.get("content"), f"{where}.content")
        )
    if kind.endswith("_output") and isinstance(item.get("output"), (str, list, tuple)):
        return content_pieces(item["output"], f"{where}.output")  # what a tool returned: untrusted
    for key in ("arguments", "input"):  # function, MCP and custom tool calls
        if kind.endswith("_call") and isinstance(item.get(key), str):
            return [Piece(f"{where}.{key}", item[key])]
    return [Piece(f"{where} ({kind})", None)]


def _fields(value: object, where: str) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    if isinstance(value, pydantic.BaseModel):  # e.g. a ChatCompletionMessage passed back as history
        return value.model_dump(exclude_none=True)
    raise InputTypeError(f"{where} must be a dict (or an openai model), got {type(value).__name__}")


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise InputTypeError(f"{where} must be a str, got {type(value).__name__}")
    return value


# ---------------------------------------------------------------------------------------------------------------------
# What a refusal looks like


def _refused_completion(model: str, refusal: str, results: list[SourcedResult]) -> GuardedChatCompletion:
    return GuardedChatCompletion(
        id=f"guard-{uuid.uuid4().hex}",
        object="chat.completion",
        created=int(time.time()),
        model=model,
        choices=[Choice(index=0, finish_reason="content_filter", message=_refusal_message(refusal))],
        guard_results=results,
    )


def _refusal_message(refusal: str) -> ChatCompletionMessage:
    return ChatCompletionMessage(role="assistant", content=refusal, refusal=refusal)


def _checked_completion(
    completion: ChatCompletion, pieces: list[tuple[int, Piece]], decision: Decision, results: list[SourcedResult]
) -> GuardedChatCompletion:
    """The completion with its guard results; a refusal replaces each blocked choice."""
    choices = completion.choices
    if decision.refusal is not None:
        owner = {piece.source: index for index, piece in pieces}
        blocked = {owner[result.source] for result in decision.violations}
        message = _refusal_message(decision.refusal)
        choices = [
            choice.model_copy(update={"finish_reason": "content_filter", "message": message, "logprobs": None})
            if choice.index in blocked
            else choice
            for choice in choices
        ]
    values = {**dict(completion), "choices": choices}
    return GuardedChatCompletion.model_construct(
        _fields_set=completion.model_fields_set | {"guard_results"}, **values, guard_results=results
    )


def _refusal_output(refusal: str) -> list[ResponseOutputMessage]:
    text = ResponseOutputText(type="output_text", text=refusal, annotations=[])
    return [
        ResponseOutputMessage(
            id=f"msg_guard_{uuid.uuid4().hex}", type="message", role="assistant", status="completed", content=[text]
        )
    ]


def _refused_response(model: str, refusal: str, results: list[SourcedResult]) -> GuardedResponse:
    return GuardedResponse.model_construct(
        id=f"resp_guard_{uuid.uuid4().hex}",
        object="response",
        created_at=time.time(),
        model=model,
        output=_refusal_output(refusal),
        status="incomplete",
        incomplete_details={"reason": "content_filter"},
        parallel_tool_calls=False,
        tool_choice="none",
        tools=[],
        guard_results=results,
    )


def _checked_response(response: Response, decision: Decision, results: list[SourcedResult]) -> GuardedResponse:
    """The response with its guard results; a refusal replaces its whole output."""
    values = dict(response)
    if decision.refusal is not None:
        values.update(
            output=_refusal_output(decision.refusal),
            status="incomplete",
            incomplete_details={"reason": "content_filter"},
        )
    return GuardedResponse.model_construct(
        _fields_set=response.model_fields_set | {"guard_results"}, **values, guard_results=results
    )


class _ChunkRefusal:
    """Makes the chunk that ends a refused stream, shaped like the stream's own chunks."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.last: ChatCompletionChunk | None = None
        self.choices: set[int] = set()

    def texts(self, chunk: ChatCompletionChunk) -> Iterator[tuple[str, str]]:
        self.last = chunk
        self.choices.update(choice.index for choice in chunk.choices)
        return chunk_texts(chunk)

    def chunk(self, refusal: str) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.last.id if self.last else f"guard-{uuid.uuid4().hex}",
            object="chat.completion.chunk",
            created=self.last.created if self.last else int(time.time()),
            model=self.last.model if self.last else self.model,
            choices=[
                ChunkChoice(
                    index=index,
                    delta=ChoiceDelta(role="assistant", content=refusal, refusal=refusal),
                    finish_reason="content_filter",
                )
                for index in sorted(self.choices or {0})
            ],
        )


# ---------------------------------------------------------------------------------------------------------------------
# The guarded clients


_UNGUARDED: dict[str, tuple[str, ...]] = {
    "chat": (),
    "chat.completions": ("parse", "stream", "with_raw_response", "with_streaming_response"),
    "responses": ("parse", "stream", "with_raw_response", "with_streaming_response"),
    "client": (
        "completions",
        "beta",
        "realtime",
        "with_options",
        "copy",
        "with_raw_response",
        "with_streaming_response",
    ),
}


class _Forwarding:
    """Forwards attributes to the wrapped object, except the generating ones this module does not guard."""

    _kind: str

    def __init__(self, wrapped: Any) -> None:
        self._wrapped = wrapped

    def __getattr__(self, name: str) -> Any:
        if name in _UNGUARDED[self._kind]:
            raise UnsupportedClientError(
                f"{self._kind}.{name} is not guarded; use chat.completions.create or responses.create, "
                f"or client.unguarded.{'' if self._kind == 'client' else self._kind + '.'}{name} to opt out knowingly"
            )
        return getattr(self._wrapped, name)


class _Endpoint(_Forwarding):
    def __init__(self, wrapped: Any, enforcer: Enforcer, input_mode: InputMode, check_system: bool) -> None:
        super().__init__(wrapped)
        self._enforcer = enforcer
        self._input_mode = input_mode
        self._check_system = check_system


class _Completions(_Endpoint):
    _kind = "chat.completions"

    def _request(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[Piece]]:
        messages = kwargs.get("messages")
        if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Iterable):
            raise InputTypeError(f"messages must be a list of messages, got {type(messages).__name__}")
        # A one-shot iterable is read once here, and the same list goes to the server.
        kwargs = {**kwargs, "messages": list(messages)}
        return kwargs, message_pieces(kwargs["messages"], check_system=self._check_system)

    def _stream_guard(self, model: str, results: list[SourcedResult]) -> StreamGuard[ChatCompletionChunk]:
        """Checks a stream's chunks; its decisions' results go to ``results`` (the stream's ``guard_results``)."""
        refusal = _ChunkRefusal(model)
        return StreamGuard(self._enforcer, refusal.texts, refusal.chunk, lambda d: results.extend(d.results))


class GuardedCompletions(_Completions):
    """``client.chat.completions`` of a ``GuardedOpenAI``."""

    @overload
    def create(
        self,
        *,
        messages: Iterable[ChatCompletionMessageParam],
        model: str,
        stream: Literal[False] | None = None,
        **kwargs: Any,
    ) -> GuardedChatCompletion: ...
    @overload
    def create(
        self, *, messages: Iterable[ChatCompletionMessageParam], model: str, stream: Literal[True], **kwargs: Any
    ) -> GuardedStream: ...
    @overload
    def create(
        self, *, messages: Iterable[ChatCompletionMessageParam], model: str, stream: bool, **kwargs: Any
    ) -> GuardedChatCompletion | GuardedStream: ...
    def create(self, **kwargs: Any) -> GuardedChatCompletion | GuardedStream:
        """``chat.completions.create`` with the input checked before (or while) it runs and the output after."""
        kwargs, pieces = self._request(kwargs)
        response, input_decision = _send(
            self._enforcer, self._input_mode, pieces, functools.partial(self._wrapped.create, **kwargs)
        )
        results = list(input_decision.results)
        model = str(kwargs.get("model"))
        if isinstance(response, Stream):
            chunks = _guarded_chunks(response, self._stream_guard(model, results))
            return GuardedStream(response, chunks, results)
        if kwargs.get("stream"):
            return GuardedStream(None, iter([_ChunkRefusal(model).chunk(input_decision.refusal or "")]), results)
        if response is None:
            return _refused_completion(model, input_decision.refusal or "", results)
        pieces_out = completion_pieces(response)
        decision = self._enforcer.check([piece for _, piece in pieces_out], "output")
        return _checked_completion(response, pieces_out, decision, results + decision.results)


class GuardedAsyncCompletions(_Completions):
    """``client.chat.completions`` of a ``GuardedAsyncOpenAI``."""

    @overload
    async def create(
        self,
        *,
        messages: Iterable[ChatCompletionMessageParam],
        model: str,
        stream: Literal[False] | None = None,
        **kwargs: Any,
    ) -> GuardedChatCompletion: ...
    @overload
    async def create(
        self, *, messages: Iterable[ChatCompletionMessageParam], model: str, stream: Literal[True], **kwargs: Any
    ) -> GuardedAsyncStream: ...
    @overload
    async def create(
        self, *, messages: Iterable[ChatCompletionMessageParam], model: str, stream: bool, **kwargs: Any
    ) -> GuardedChatCompletion | GuardedAsyncStream: ...
    async def create(self, **kwargs: Any) -> GuardedChatCompletion | GuardedAsyncStream:
        """``chat.completions.create`` with the input checked before (or while) it runs and the output after."""
        kwargs, pieces = self._request(kwargs)
        response, input_decision = await _asend(
            self._enforcer, self._input_mode, pieces, functools.partial(self._wrapped.create, **kwargs)
        )
        results = list(input_decision.results)
        model = str(kwargs.get("model"))
        if isinstance(response, AsyncStream):
            achunks = _aguarded_chunks(response, self._stream_guard(model, results))
            return GuardedAsyncStream(response, achunks, results)
        if kwargs.get("stream"):
            refusal = _ChunkRefusal(model).chunk(input_decision.refusal or "")
            return GuardedAsyncStream(None, _async_iter([refusal]), results)
        if response is None:
            return _refused_completion(model, input_decision.refusal or "", results)
        pieces_out = completion_pieces(response)
        decision = await self._enforcer.acheck([piece for _, piece in pieces_out], "output")
        return _checked_completion(response, pieces_out, decision, results + decision.results)


class _Responses(_Endpoint):
    _kind = "responses"

    def _request(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[Piece]]:
        if kwargs.get("stream"):
            raise UnsupportedClientError(
                "responses.create(stream=True) is not guarded; use chat.completions.create(stream=True), "
                "or responses.create without stream"
            )
        if isinstance(kwargs.get("input"), (list, tuple)):
            kwargs = {**kwargs, "input": list(kwargs["input"])}
        return kwargs, response_input_pieces(kwargs, check_system=self._check_system)


class GuardedResponses(_Responses):
    """``client.responses`` of a ``GuardedOpenAI``: ``create`` (not streamed) is guarded."""

    def create(self, **kwargs: Any) -> GuardedResponse:
        """``responses.create`` with the input checked before (or while) it runs and the output after."""
        kwargs, pieces = self._request(kwargs)
        call = functools.partial(self._wrapped.create, **kwargs)
        response, input_decision = _send(self._enforcer, self._input_mode, pieces, call)
        if response is None:
            return _refused_response(str(kwargs.get("model")), input_decision.refusal or "", input_decision.results)
        decision = self._enforcer.check(response_output_pieces(response), "output")
        return _checked_response(response, decision, input_decision.results + decision.results)


class GuardedAsyncResponses(_Responses):
    """``client.responses`` of a ``GuardedAsyncOpenAI``: ``create`` (not streamed) is guarded."""

    async def create(self, **kwargs: Any) -> GuardedResponse:
        """``responses.create`` with the input checked before (or while) it runs and the output after."""
        kwargs, pieces = self._request(kwargs)
        call = functools.partial(self._wrapped.create, **kwargs)
        response, input_decision = await _asend(self._enforcer, self._input_mode, pieces, call)
        if response is None:
            return _refused_response(str(kwargs.get("model")), input_decision.refusal or "", input_decision.results)
        decision = await self._enforcer.acheck(response_output_pieces(response), "output")
        return _checked_response(response, decision, input_decision.results + decision.results)


class GuardedChat(_Forwarding, Generic[C]):
    """``client.chat`` of a guarded client."""

    _kind = "chat"

    def __init__(self, wrapped: Any, completions: C) -> None:
        super().__init__(wrapped)
        self.completions = completions


class GuardedOpenAI(_Forwarding):
    """An ``openai.OpenAI`` whose ``chat.completions.create`` is guarded; see the module docstring."""

    _kind = "client"

    def __init__(self, client: OpenAI, enforcer: Enforcer, input_mode: InputMode, check_system: bool) -> None:
        super().__init__(client)
        self.unguarded = client
        self.enforcer = enforcer
        completions = GuardedCompletions(client.chat.completions, enforcer, input_mode, check_system)
        self.chat: GuardedChat[GuardedCompletions] = GuardedChat(client.chat, completions)
        self.responses = GuardedResponses(client.responses, enforcer, input_mode, check_system)


class GuardedAsyncOpenAI(_Forwarding):
    """An ``openai.AsyncOpenAI`` whose ``chat.completions.create`` is guarded; see the module docstring."""

    _kind = "client"

    def __init__(self, client: AsyncOpenAI, enforcer: Enforcer, input_mode: InputMode, check_system: bool) -> None:
        super().__init__(client)
        self.unguarded = client
        self.enforcer = enforcer
        completions = GuardedAsyncCompletions(client.chat.completions, enforcer, input_mode, check_system)
        self.chat: GuardedChat[GuardedAsyncCompletions] = GuardedChat(client.chat, completions)
        self.responses = GuardedAsyncResponses(client.responses, enforcer, input_mode, check_system)


@overload
def wrap(
    client: OpenAI,
    guard: Guard,
    *,
    input_mode: InputMode = ...,
    check_system: bool = ...,
    **options: Unpack[EnforceOptions],
) -> GuardedOpenAI: ...
@overload
def wrap(
    client: AsyncOpenAI,
    guard: Guard,
    *,
    input_mode: InputMode = ...,
    check_system: bool = ...,
    **options: Unpack[EnforceOptions],
) -> GuardedAsyncOpenAI: ...
def wrap(
    client: OpenAI | AsyncOpenAI,
    guard: Guard,
    *,
    input_mode: InputMode = "parallel",
    check_system: bool = False,
    **options: Unpack[EnforceOptions],
) -> GuardedOpenAI | GuardedAsyncOpenAI:
    """Guard an OpenAI client (``guard.wrap(client, ...)`` calls this).

    Args:
        input_mode: ``"parallel"`` sends the request while the input is checked and cancels it when the input is
            blocked; ``"sequential"`` sends it only after the input passed.
        check_system: also check system and developer messages (by default they are the app's own, trusted text).
        options: what to do on a violation, timeouts, stream windows, decision hook: see ``guard_sdk.Enforcer``.
    """
    if input_mode not in ("parallel", "sequential"):
        raise ValueError(f"input_mode must be 'parallel' or 'sequential', got {input_mode!r}")
    enforcer = Enforcer(guard, **options)
    if isinstance(client, OpenAI):
        return GuardedOpenAI(client, enforcer, input_mode, check_system)
    if isinstance(client, AsyncOpenAI):
        return GuardedAsyncOpenAI(client, enforcer, input_mode, check_system)
    raise UnsupportedClientError(
        f"guard.wrap() guards openai.OpenAI and openai.AsyncOpenAI clients (openai {openai.__version__}), "
        f"got {type(client).__module__}.{type(client).__qualname__}"
    )


# ---------------------------------------------------------------------------------------------------------------------
# Sending a request while (or after) its input is checked


def _send(enforcer: Enforcer, mode: InputMode, pieces: list[Piece], call: Callable[[], R]) -> tuple[R | None, Decision]:
    """Check the input and send the request; the response is None when the input was refused."""
    if mode == "sequential":
        decision = enforcer.check(pieces, "input")
        return (None if decision.refusal is not None else call()), decision
    pending = enforcer.start(pieces, "input")
    running = _in_thread(call)
    try:
        decision = pending.wait()
    except BaseException:
        _abandon(running)
        raise
    if decision.refusal is not None:
        _abandon(running)
        return None, decision
    return running.result(), decision


async def _asend(
    enforcer: Enforcer, mode: InputMode, pieces: list[Piece], call: Callable[[], Any]
) -> tuple[Any, Decision]:
    if mode == "sequential":
        decision = await enforcer.acheck(pieces, "input")
        return (None if decision.refusal is not None else await call()), decision
    pending = enforcer.start(pieces, "input")
    running = asyncio.ensure_future(call())
    try:
        decision = await pending.wait_async()
    except BaseException:
        _acancel(running)
        raise
    if decision.refusal is not None:
        _acancel(running)
        return None, decision
    return await running, decision


def _in_thread(call: Callable[[], R]) -> Future[R]:
    """Run a blocking call on its own thread: one per call, so concurrent requests never queue behind each other."""
    future: Future[R] = Future()

    def run() -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(call())
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                future.set_exception(exc)

    threading.Thread(target=run, name="guard-sdk-request", daemon=True).start()
    return future


def _abandon(running: Future[Any]) -> None:
    """Give up on a request: cancel it if it has not started, close its stream when it opens, drop its response."""

    def close(done: Future[Any]) -> None:
        if not done.cancelled() and done.exception() is None and isinstance(done.result(), Stream):
            done.result().close()

    if not running.cancel():
        running.add_done_callback(close)


def _acancel(running: asyncio.Future[Any]) -> None:
    """Cancel a request (the HTTP request is aborted); a stream that already opened is closed."""

    def close(done: asyncio.Future[Any]) -> None:
        if not done.cancelled() and done.exception() is None and isinstance(done.result(), AsyncStream):
            asyncio.ensure_future(done.result().close())

    if not running.cancel():
        running.add_done_callback(close)


def _guarded_chunks(
    stream: Stream[ChatCompletionChunk], guard: StreamGuard[ChatCompletionChunk]
) -> Iterator[ChatCompletionChunk]:
    try:
        yield from guard.run(iter(stream))
    finally:
        stream.close()  # a stopped stream stops the generation


async def _aguarded_chunks(
    stream: AsyncStream[ChatCompletionChunk], guard: StreamGuard[ChatCompletionChunk]
) -> AsyncIterator[ChatCompletionChunk]:
    try:
        async for chunk in guard.arun(stream.__aiter__()):
            yield chunk
    finally:
        await stream.close()


async def _async_iter(items: Iterable[R]) -> AsyncIterator[R]:
    for item in items:
        yield item
