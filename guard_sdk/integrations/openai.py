"""Guarded OpenAI clients: ``guard.wrap(openai.OpenAI(...))`` and ``guard.wrap(openai.AsyncOpenAI(...))``.

The wrapped client keeps the call shapes and return types of what it guards: ``chat.completions.create`` (plain and
``stream=True``) returns a ``ChatCompletion`` / ``Stream[ChatCompletionChunk]`` subclass with ``guard_results``, and
``responses.create`` (not streamed) a ``Response`` subclass with ``guard_results``. ``with_options`` / ``copy``
return a client guarded as this one is. Of the rest, only the client's configuration and ``models`` pass through;
every other endpoint and helper (``images``, ``audio``, ``batches``, ``files``, legacy ``completions``,
``parse``/``stream``, raw responses, the HTTP verbs, ...) raises ``UnsupportedClientError`` instead of letting text
through unchecked. ``client.unguarded`` is the original client, for an explicit opt-out.

What is checked (every field of the openai client's types, and why: ``OPENAI_FIELDS.md`` next to this module):
- input: every string of every message (content, names, tool-call names and arguments, refusals, fields the types do
  not know) except system and developer messages, and the other texts of the request body as sent, ``extra_body``
  merged in (``prediction``, prompt variables, unknown fields), and every string of the query as sent (the client's
  ``default_query`` with ``extra_query`` over it; headers are the app's transport settings, the client's raw-response
  control headers are refused); keys that are not short names are texts too; chat history comes back from the
  caller, so it is untrusted. The app's own text (system and developer messages, Responses ``instructions``, tool
  and response-format definitions) is checked with ``check_system=True``. Each text of a message carries the
  conversation before it as its context (at most ``MAX_CONTEXT_TURNS`` turns), which a guard that reads
  conversations judges it in. The text parts of one message are checked as one text, so a violation split across
  parts is seen whole; image, audio and file parts get a ``skipped_non_text`` result, or with ``media="refuse"``
  raise ``InputError`` before anything is sent.
  Identifiers and enumerations (single ASCII tokens) are read as their words and checked when they make an
  instruction's worth of words, as keys are; the API's own enumerations (``function_call_output``) are not.
- output: every string of each choice's message or delta (content, refusal, ``reasoning_content``/``reasoning``,
  tool-call names and arguments, audio transcripts, annotations) and of each Responses output item; streams in
  overlapping windows (see ``guard_sdk._streaming``). Each output check carries the request as its context
  (``request_context``): the chat messages, or the Responses ``input`` (a str, or its message items), each message as
  its role and the text of its content. A guard that judges answers in context reads the last user message of it, one
  that reads conversations every turn.

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
import typing
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

import openai
import pydantic
from openai import AsyncOpenAI, AsyncStream, NotGiven, Omit, OpenAI, Stream
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage, ChatCompletionMessageParam
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from openai.types.responses import (
    Response,
    ResponseInputItemParam,
    ResponseOutputItem,
    ResponseOutputMessage,
    ResponseOutputText,
)

from .._enforce import Decision, Enforcer, InputMode, MediaMode, Piece, SourcedResult
from .._errors import InputError, InputTypeError, UnsupportedClientError
from .._streaming import StreamGuard

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

    from .._context import Context
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
# What to check in a request and in a response: every field of the openai client's types, and why, is in
# OPENAI_FIELDS.md next to this module.


_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_SYSTEM_ROLES = frozenset({"system", "developer"})
# Content parts whose text is joined with the other text parts of the same content list, and the key holding it.
_TEXT_PARTS = {
    "text": "text",
    "input_text": "text",
    "output_text": "text",
    "refusal": "refusal",
    "summary_text": "text",
    "reasoning_text": "text",
}
# Identifiers, enumerations and opaque tokens: while the value is one printable ASCII token it is not a sentence,
# and is read as words (_identifier_pieces); keys ending in "_id" too.
_TOKEN_KEYS = frozenset(
    {
        "type",
        "role",
        "status",
        "id",
        "created_by",
        "format",
        "media_type",
        "detail",
        "voice",
        "mode",
        "ttl",
        "phase",
        "execution",
        "action",
        "version",
        "server_label",
        "encrypted_content",
        "signature",
        "fingerprint",
    }
)
# Log-probabilities repeat the checked text one token at a time.
_UNWALKED = frozenset({"logprobs", "top_logprobs"})
# Where encoded media (or a link to it) sits: the _MEDIA_FIELDS of a part or item of a _MEDIA_TYPES type, or of an
# object under a _MEDIA_OBJECTS key. It gets a skipped_non_text result; the other strings there (a file name, an
# audio transcript, an image's revised prompt) are text.
_MEDIA_TYPES = frozenset(
    {
        "image_url",
        "input_image",
        "input_audio",
        "file",
        "input_file",
        "image",
        "image_generation_call",
        "computer_screenshot",
        "base64",
    }
)
_MEDIA_OBJECTS = frozenset({"audio", "input_audio", "image_url", "file"})
_MEDIA_FIELDS = frozenset({"url", "image_url", "file_data", "file_url", "data", "result"})
# Encrypted or signed state (thousands of base64 characters) that the server decodes: no model reads it as written,
# and read as words it would cost a check, and risk a false positive, on every reasoning item sent back.
_OPAQUE_KEYS = frozenset({"encrypted_content", "signature"})
# Keys are sent as written. An identifier key of this many words or more (split at "_-./" and camelCase) is read
# as those words and checked: an instruction fits in one token (ignore_previous_instructions), a short name
# (temperature, user_id, max_tokens) says nothing and costs no check.
_KEY_WORDS = 3
_KEY = " (key)"
_SEPARATORS = frozenset("_-./")
_TO_UNDERSCORE = str.maketrans("-./", "___")
# Digits between the words of an identifier's value separate them (Ignore1All2Previous).
_DIGITS_APART = str.maketrans("0123456789", "_" * 10)
# An identifier's value is read as words too, and checked when it makes _KEY_WORDS words of _WORD_LETTERS letters or
# more in parts (between separators) made of letters only and at least _WORDY of them in such words, or of such words
# and digits only. Random ids mix digits and one- or two-letter camelCase fragments into their parts
# (call_8pLmN2xQ7rT4vW9yZ1): one to three in 1,000 base62 ids make three such words, fewer hex ids and uuids
# (guard_sdk/integrations/OPENAI_FIELDS.md has the rates).
_IDENTIFIER = " (identifier)"
_WORD_LETTERS = 3
_WORDY = 0.8
# Keys and identifiers checked in one text at most: one check for a request's, a few for one with very many.
_BATCH_CHARS = 4096
_BATCHED = {_KEY: "keys", _IDENTIFIER: "identifiers"}
# A request nested deeper than this is refused rather than walked (JSON from a caller may be built to exhaust us).
MAX_DEPTH = 32
# The turns with text before a message that its input check passes as context. A guard that reads conversations keeps
# only the last ``context_tokens`` tokens of them, and a rendered turn is at least three (role, ":", a word): 32 turns
# hold all a guard of the default 96 reads. The bound makes a request of n messages n slices of one list, not n².
MAX_CONTEXT_TURNS = 32

_Rule = Literal["text", "app", "none"]
# How each field of a request body is treated (the messages or input are read apart): "text" is untrusted text,
# checked as input; "app" the application's own configuration, checked with check_system=True; "none" carries no
# text a model reads (numbers, enumerations, identifiers, references to server-held objects, stored metadata).
# A field not listed (from extra_body) is "text".
_NOT_TEXT_FIELDS: tuple[str, ...] = (
    "model",
    "metadata",
    "moderation",
    "parallel_tool_calls",
    "prompt_cache_key",
    "prompt_cache_options",
    "prompt_cache_retention",
    "safety_identifier",
    "service_tier",
    "store",
    "stream",
    "stream_options",
    "temperature",
    "top_logprobs",
    "top_p",
    "user",
    # Output constraints of OpenAI-compatible servers (llama.cpp, vLLM) in extra_body: never shown to the model, and
    # whatever they make it write is checked as output.
    "grammar",
    "json_schema",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "structured_outputs",
)
_CHAT_FIELDS: dict[str, _Rule] = {
    "prediction": "text",
    **dict.fromkeys(
        ("tools", "functions", "tool_choice", "function_call", "response_format", "web_search_options"), "app"
    ),
    **dict.fromkeys(
        (
            *_NOT_TEXT_FIELDS,
            "audio",
            "frequency_penalty",
            "logit_bias",
            "logprobs",
            "max_completion_tokens",
            "max_tokens",
            "modalities",
            "n",
            "presence_penalty",
            "reasoning_effort",
            "seed",
            "stop",
            "verbosity",
        ),
        "none",
    ),
}
_RESPONSES_FIELDS: dict[str, _Rule] = {
    "prompt": "text",
    **dict.fromkeys(("instructions", "tools", "tool_choice", "text"), "app"),
    **dict.fromkeys(
        (
            *_NOT_TEXT_FIELDS,
            "access_programs",
            "background",
            "background_options",
            "context_management",
            "conversation",
            "image",
            "include",
            "max_output_tokens",
            "max_tool_calls",
            "previous_response_id",
            "reasoning",
            "truncation",
        ),
        "none",
    ),
}
# Arguments of create() that shape the HTTP request around the JSON body.
_TRANSPORT = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})
# Headers the openai client reads itself (lower-cased): they make create() return a raw or differently parsed
# response, which the output checks cannot read.
_CONTROL_HEADERS = frozenset({"x-stainless-raw-response", "____stainless_override_cast_to"})


def chat_request_pieces(
    kwargs: Mapping[str, Any], *, check_system: bool, default_query: Mapping[str, object] | None = None
) -> list[Piece]:
    """The texts of a ``chat.completions.create`` request checked as input, and its non-text parts (as skipped).
    ``default_query``: the client's own query parameters, sent with it where ``extra_query`` does not replace them."""
    body, extra = _body(kwargs)
    where = "extra_body.messages" if "messages" in extra else "messages"
    messages = body.get("messages")
    if not isinstance(messages, (list, tuple)):
        raise InputTypeError(f"{where} must be a list of messages, got {type(messages).__name__}")
    if not messages:
        raise InputError(f"{where} is empty: a chat request needs a message, and an empty one would not be checked")
    return _batched(
        message_pieces(messages, where, check_system=check_system)
        + _field_pieces(body, extra, _CHAT_FIELDS, check_system=check_system)
        + _query_pieces(kwargs, default_query)
    )


def responses_request_pieces(
    kwargs: Mapping[str, Any], *, check_system: bool, default_query: Mapping[str, object] | None = None
) -> list[Piece]:
    """The texts of a ``responses.create`` request checked as input, and its non-text parts (as skipped), as
    ``chat_request_pieces``."""
    body, extra = _body(kwargs)
    if body.get("background"):
        raise UnsupportedClientError(
            "responses.create(background=True) is not guarded: its output is read later with responses.retrieve, "
            "which the guard does not check"
        )
    where = "extra_body.input" if "input" in extra else "input"
    items = body.get("input")
    pieces: list[Piece]
    if items is None or (isinstance(items, (str, list, tuple)) and not items):
        if body.get("prompt") is None:
            raise InputError(f"{where} is empty: a response needs an input (or a prompt), and none would be checked")
        pieces = []
    elif isinstance(items, str):
        pieces = [Piece(where, items)]
    elif isinstance(items, (list, tuple)):
        pieces = _in_conversation(items, where, functools.partial(_item_pieces, check_system=check_system))
    else:
        raise InputTypeError(f"{where} must be a str or a list of input items, got {type(items).__name__}")
    return _batched(
        pieces
        + _field_pieces(body, extra, _RESPONSES_FIELDS, check_system=check_system)
        + _query_pieces(kwargs, default_query)
    )


def message_pieces(messages: Iterable[Any], where: str, *, check_system: bool) -> list[Piece]:
    """Chat messages: every string but identifiers, except in system and developer messages unless asked; each with
    the conversation before its message as context."""
    return _in_conversation(messages, where, functools.partial(_message_pieces, check_system=check_system))


def _message_pieces(message: object, at: str, *, check_system: bool) -> list[Piece]:
    fields = _fields(message, at)
    role = fields.get("role")
    if role not in _ROLES:
        raise InputTypeError(f"{at} has role {role!r}; an OpenAI message has one of {sorted(_ROLES)}")
    if role in _SYSTEM_ROLES and not check_system:
        return []
    return content_pieces(fields.get("content"), f"{at}.content") + _walk(
        {key: value for key, value in fields.items() if key != "content"}, at
    )


def _in_conversation(items: Iterable[Any], where: str, pieces_of: Callable[[object, str], list[Piece]]) -> list[Piece]:
    """Each item's pieces, with the last ``MAX_CONTEXT_TURNS`` turns with text before the item as their context:
    slices of one list of turns, so the work stays linear in the number of items."""
    turns: list[dict[str, str]] = []
    pieces: list[Piece] = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        own = pieces_of(item, at)
        if own:
            before = turns[-MAX_CONTEXT_TURNS:]
            pieces += [Piece(piece.source, piece.text, before) for piece in own]
        turn = _turn(item, at)
        if turn is not None and turn["content"]:
            turns.append(turn)
    return pieces


def content_pieces(content: object, where: str) -> list[Piece]:
    """A message content: a str, None, or content parts (text parts joined into one text, the rest walked)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [Piece(where, content)]
    if not isinstance(content, (list, tuple)):
        raise InputTypeError(f"{where} must be a str, a list of content parts or None, got {type(content).__name__}")
    texts: list[str] = []
    others: list[Piece] = []
    for k, part in enumerate(content):
        at = f"{where}[{k}]"
        fields = _fields(part, at)
        kind = fields.get("type")
        if not isinstance(kind, str):
            raise InputTypeError(f"{at} is a content part without a 'type'")
        key = _TEXT_PARTS.get(kind)
        if key is not None:
            text = fields.get(key)
            if not isinstance(text, str):
                raise InputTypeError(f"{at} is a {kind!r} part whose {key!r} is {type(text).__name__}, not str")
            texts.append(text)
            fields = {name: value for name, value in fields.items() if name != key}
        others += _walk(fields, at)
    return ([Piece(where, "\n".join(texts))] if texts else []) + others


def request_context(items: Iterable[Any], where: str) -> list[dict[str, str]]:
    """A request's messages (chat messages, or Responses message items) as the context of its output checks: each
    message's role and the text of its content, text parts joined by lines as they are checked; other items (tool
    calls, media) are left out. Read after the request's pieces, which refuse a malformed message."""
    return [turn for i, item in enumerate(items) if (turn := _turn(item, f"{where}[{i}]")) is not None]


def _turn(item: object, at: str) -> dict[str, str] | None:
    """A message's role and the text of its content; None for an item that is no message."""
    fields = _fields(item, at)
    role = fields.get("role")
    if not isinstance(role, str) or fields.get("type", "message") != "message":
        return None
    return {"role": role, "content": _content_text(fields.get("content"), f"{at}.content")}


def _content_text(content: object, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, (list, tuple)):
        return ""
    texts = []
    for k, part in enumerate(content):
        fields = _fields(part, f"{where}[{k}]")
        key = _TEXT_PARTS.get(str(fields.get("type")))
        if key is not None and isinstance(text := fields.get(key), str):
            texts.append(text)
    return "\n".join(texts)


def completion_pieces(completion: ChatCompletion) -> list[tuple[int, Piece]]:
    """Every text of each choice's message (content, refusal, reasoning, tool calls, ...) with its choice's index."""
    return [
        (choice.index, piece)
        for choice in completion.choices
        for piece in _walk(choice.message, f"choices[{choice.index}].message")
    ]


def chunk_texts(chunk: ChatCompletionChunk) -> Iterator[tuple[str, str]]:
    """The (channel, text) pairs a streamed chunk adds: every text of each choice's delta, tool calls by index."""
    for choice in chunk.choices:
        for piece in _walk(choice.delta, f"choices[{choice.index}].delta"):
            if piece.text:
                yield piece.source, piece.text


def response_output_pieces(response: Response) -> list[Piece]:
    return [
        piece
        for i, item in enumerate(response.output)
        for piece in _item_pieces(item, f"output[{i}]", check_system=True)
    ]


def _item_pieces(item: object, where: str, *, check_system: bool) -> list[Piece]:
    """One Responses-API item: a message's content, or every string of another item (calls, outputs, reasoning)."""
    fields = _fields(item, where)
    role = fields.get("role")
    if role in _SYSTEM_ROLES and not check_system:
        return []
    if fields.get("type", "message") == "message":
        if role not in _ROLES:
            raise InputTypeError(f"{where} has role {role!r}; a message has one of {sorted(_ROLES)}")
        rest = {key: value for key, value in fields.items() if key != "content"}
        return content_pieces(fields.get("content"), f"{where}.content") + _walk(rest, where)
    # A tool's output or a reasoning item's summary given as content parts is one text, like a message's content.
    parts = {key: value for key, value in fields.items() if key in ("content", "output", "summary") and _parts(value)}
    rest = {key: value for key, value in fields.items() if key not in parts}
    return [piece for key, value in parts.items() for piece in content_pieces(value, f"{where}.{key}")] + _walk(
        rest, where
    )


def _parts(value: object) -> bool:
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(part, Mapping) and isinstance(part.get("type"), str) for part in value)
    )


def _body(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    """The JSON body a create() call sends: its arguments with ``extra_body`` merged over them, as the openai client
    merges it (so that ``extra_body={"messages": ...}`` is checked as the messages it replaces), and extra_body's
    keys."""
    extra = kwargs.get("extra_body")
    if extra is None:
        extra = {}
    if not isinstance(extra, Mapping):
        raise InputTypeError(f"extra_body must be a dict, got {type(extra).__name__}")
    if "stream" in extra:
        raise UnsupportedClientError("extra_body['stream'] is not guarded: pass stream= to create() itself")
    refuse_control_headers(kwargs.get("extra_headers"), "extra_headers")
    body = {key: value for key, value in kwargs.items() if key not in _TRANSPORT}
    body.update(extra)
    return {key: value for key, value in body.items() if not isinstance(value, (NotGiven, Omit))}, frozenset(extra)


def refuse_control_headers(headers: object, where: str) -> None:
    """Refuse the openai client's own control headers (what ``with_raw_response`` sets); other headers are the app's
    transport settings (auth, beta flags, idempotency keys, a gateway's routing) and carry no text a model reads."""
    if not isinstance(headers, Mapping):
        return
    for name in headers:
        if isinstance(name, str) and name.lower() in _CONTROL_HEADERS:
            raise UnsupportedClientError(
                f"{where}[{name!r}] is not guarded: it makes the client return a raw response, which the output "
                "checks cannot read; use client.unguarded to opt out knowingly"
            )


def _query_pieces(kwargs: Mapping[str, Any], default_query: Mapping[str, object] | None) -> list[Piece]:
    """The query as sent: the client's ``default_query`` with ``extra_query`` merged over it, as the openai client
    merges them. Every string of it is input, as in an unknown body field (a server may read ``?prompt=``)."""
    query = kwargs.get("extra_query")
    if query is None or isinstance(query, (NotGiven, Omit)):
        query = {}
    if not isinstance(query, Mapping):
        raise InputTypeError(f"extra_query must be a dict, got {type(query).__name__}")
    defaults = {key: value for key, value in (default_query or {}).items() if key not in query}
    return _query_walk(defaults, "default_query") + _query_walk(query, "extra_query")


def _query_walk(value: object, where: str, depth: int = 0, key: object = None) -> list[Piece]:
    """The strings of a query value, but identifiers. Not ``_walk``: a query has no media parts, and a value that is
    not JSON-like is refused, as the client would send its ``str()`` unchecked."""
    if depth > MAX_DEPTH:
        raise InputTypeError(
            f"{where[:120]}... is nested more than {MAX_DEPTH} levels deep; the guard does not check it"
        )
    if isinstance(value, str):
        return _identifier_pieces(key, value, where) if _is_token(key, value) else [Piece(where, value)]
    if isinstance(value, Mapping):
        return [
            piece
            for name, item in value.items()
            for at in [_at(where, name)]
            for piece in (*_key_pieces(name, at), *_query_walk(item, at, depth + 1, name))
        ]
    if isinstance(value, (list, tuple)):
        return [piece for k, item in enumerate(value) for piece in _query_walk(item, f"{where}[{k}]", depth + 1)]
    if value is None or isinstance(value, (int, float, NotGiven, Omit)):
        return []
    raise InputTypeError(
        f"{where} is a {type(value).__name__}; a query value is a str, number, bool or None, or a list or dict of "
        "them (the client would send its str() unchecked)"
    )


def _field_pieces(
    body: Mapping[str, Any], extra: frozenset[str], rules: Mapping[str, _Rule], *, check_system: bool
) -> list[Piece]:
    """The texts of a request body's fields other than its messages or input (see ``_Rule``)."""
    pieces: list[Piece] = []
    for key, value in body.items():
        rule = rules.get(key, "text")
        if key in ("messages", "input") or rule == "none":
            continue
        # Keys of extra_body, or given to create() as **kwargs, are sent as the body's field names.
        where = _at("extra_body", key) if key in extra else _at("", key).removeprefix(".")
        if rule == "text":
            pieces += _key_pieces(key, where) + _walk(value, where)
        elif check_system:
            pieces += _joined(value, where)
    return pieces


def _joined(value: object, where: str) -> list[Piece]:
    """The app's own configuration (instructions, tool definitions, schemas): one text per entry, its strings joined
    by lines, which costs one check per tool rather than one per description; its keys (property names) are left
    to the request's batch of keys and identifiers, which names them."""
    entries = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
    pieces = []
    for k, entry in entries:
        at = where if k is None else f"{where}[{k}]"
        walked = _walk(entry, at)
        pieces += [piece for piece in walked if _batched_as(piece)]
        texts = [piece.text for piece in walked if piece.text and not _batched_as(piece)]
        if texts:
            pieces.append(Piece(at, "\n".join(texts)))
    return pieces


def _walk(value: object, where: str, depth: int = 0, media: bool = False) -> list[Piece]:
    """Every string in a JSON-like value, one text each (identifiers as their words, when they make an instruction),
    but log-probabilities; encoded media gets one not-text piece per part. ``media``: the value sits under a key
    that holds media objects."""
    if depth > MAX_DEPTH:
        raise InputTypeError(
            f"{where[:120]}... is nested more than {MAX_DEPTH} levels deep; the guard does not check it"
        )
    if isinstance(value, str):
        return [Piece(where, value)]
    if isinstance(value, (list, tuple)):
        return [
            piece for k, item in enumerate(value) for piece in _walk(item, f"{where}[{_index(item, k)}]", depth + 1)
        ]
    if not isinstance(value, (Mapping, pydantic.BaseModel)):
        return []  # numbers, booleans, None
    fields = _fields(value, where)
    kind = fields.get("type")
    media = media or kind in _MEDIA_TYPES
    pieces: list[Piece] = []
    for key, item in fields.items():
        at = _at(where, key)
        if key in _UNWALKED or isinstance(item, (NotGiven, Omit)):
            continue
        pieces += _key_pieces(key, at)
        if _is_token(key, item):
            pieces += _identifier_pieces(key, item, at)
            continue
        if media and key in _MEDIA_FIELDS and isinstance(item, str):
            pieces.append(Piece(at, None))
        else:
            pieces += _walk(item, at, depth + 1, media=key in _MEDIA_OBJECTS)
    if kind in _MEDIA_TYPES:
        # One not-text result per media part, named after the part (e.g. "messages[0].content[1] (image_url)"),
        # also when it names the media by a file id: the guard reads none of it.
        pieces = [piece for piece in pieces if piece.text is not None] + [Piece(f"{where} ({kind})", None)]
    return pieces


def _at(where: str, key: object) -> str:
    """The source of a field: ``where.key``, or ``where['key']`` (bounded) for a key that is not a short name."""
    return f"{where}.{key}" if _is_name(key) else f"{where}[{key!r:.40}]"


def _key_pieces(key: object, at: str) -> list[Piece]:
    """A key is sent as written (a JSON field name, a query parameter name), and a model reads what it says: a key
    that is not one token is text; one that is (an identifier) is read as its words, and checked when it makes at
    least ``_KEY_WORDS`` of them or is longer than a name. Named ``<at> (key)``. Numbers are not text; other objects
    are refused, as their ``str()`` would be sent."""
    if isinstance(key, str):
        if not _one_token(key):
            return [Piece(at + _KEY, key)]
        # "_id" says what the value is, not what the key says: tool_call_id is two words (tool call).
        words = _words(key.removesuffix("_id"))
        return [Piece(at + _KEY, " ".join(words))] if len(words) >= _KEY_WORDS or not _is_name(key) else []
    if key is None or isinstance(key, (int, float)):
        return []
    raise InputTypeError(f"{at} is a key of type {type(key).__name__}; a key is a str or a number")


def _words(identifier: str) -> list[str]:
    """The words of an identifier: split at ``_ - . /`` and where camelCase starts a word (``HTTPServerName`` ->
    HTTP, Server, Name). One pass, no regular expression: linear in the identifier's length."""
    words: list[str] = []
    start = 0
    for i, char in enumerate(identifier):
        if char in _SEPARATORS:
            if i > start:
                words.append(identifier[start:i])
            start = i + 1
        elif i > start and char.isupper():
            before = identifier[i - 1]
            after = identifier[i + 1] if i + 1 < len(identifier) else ""
            if before.islower() or before.isdigit() or (before.isupper() and after.islower()):
                words.append(identifier[start:i])
                start = i
    if start < len(identifier):
        words.append(identifier[start:])
    return words


def _identifier_pieces(key: object, value: object, at: str) -> list[Piece]:
    """An identifier or enumeration (``_is_token``) is sent as written, and a model may read what it says
    (``tool_call_id="IgnoreAllPreviousInstructions"``): read as its words and checked when they make an instruction
    (``_instruction_words``), unless it is one of the API's own enumerations. Named ``<at> (identifier)``."""
    if key in _OPAQUE_KEYS or not isinstance(value, str) or _instruction_words(value) < _KEY_WORDS:
        return []
    if value in _enumerations():
        return []
    return [Piece(at + _IDENTIFIER, " ".join(_words(value.translate(_DIGITS_APART))))]


def _instruction_words(identifier: str) -> int:
    """The words of ``_WORD_LETTERS`` letters or more in the parts of an identifier (split at ``_ - . /``) that are
    made of letters and mostly of such words, or of ``_KEY_WORDS`` or more such words and digits only
    (Ignore1All2Previous): what a sentence written as one token is made of, and random ids are not (a uuid's or a
    base62 id's letters between digits make short fragments, and few of them). Linear in the identifier's length."""
    count = 0
    for part in identifier.translate(_TO_UNDERSCORE).split("_"):
        if part.isalpha():
            long = [word for word in _words(part) if len(word) >= _WORD_LETTERS]
            count += len(long) if sum(map(len, long)) >= _WORDY * len(part) else 0
        elif part.isalnum():
            words = _words(part.translate(_DIGITS_APART))
            if len(words) >= _KEY_WORDS and all(len(word) >= _WORD_LETTERS for word in words):
                count += len(words)
    return count


@functools.cache
def _enumerations() -> frozenset[str]:
    """The string values the installed openai types define for chat messages, Responses input items and output items
    (item and part types, statuses, actions): the API's own words (``function_call_output``), not a caller's. Read
    from the types once, when an identifier first reads as an instruction."""
    values: set[str] = set()
    seen: set[int] = set()
    pending: list[object] = [ChatCompletionMessageParam, ResponseInputItemParam, ResponseOutputItem]
    while pending:
        annotation = pending.pop()
        if id(annotation) in seen:
            continue
        seen.add(id(annotation))
        if typing.get_origin(annotation) is Literal:
            values.update(arg for arg in typing.get_args(annotation) if isinstance(arg, str))
            continue
        pending += typing.get_args(annotation)
        if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
            pending += [field.annotation for field in annotation.model_fields.values()]
        elif isinstance(annotation, type) and issubclass(annotation, dict):  # a TypedDict
            try:
                pending += typing.get_type_hints(annotation).values()
            except (NameError, TypeError):  # a hint another openai release cannot resolve: its values get checked
                continue
    return frozenset(values)


def _batched_as(piece: Piece) -> str | None:
    """The suffix of a text read from a key or an identifier (checked in batches), or None."""
    return next((suffix for suffix in _BATCHED if piece.text is not None and piece.source.endswith(suffix)), None)


def _batched(pieces: list[Piece]) -> list[Piece]:
    """A request's keys and identifiers checked as text, joined by lines into one check per message (and one for the
    rest of the request) instead of one each, each join up to ``_BATCH_CHARS``. A join sits where its first member
    was, and its source names its members (``a, b, c and 2 more (keys and identifiers)``)."""
    out: list[Piece] = []
    batches: list[tuple[int, list[tuple[Piece, str]]]] = []  # position in out, members and their suffixes
    filling: dict[int, tuple[int, int]] = {}  # per context: the batch being filled, its characters
    for piece in pieces:
        suffix = _batched_as(piece)
        if suffix is None:
            out.append(piece)
            continue
        size_of = len(str(piece.text))
        batch, size = filling.get(id(piece.context), (-1, 0))
        if batch < 0 or size + size_of > _BATCH_CHARS:
            batch, size = len(batches), 0
            batches.append((len(out), []))
            out.append(piece)
        batches[batch][1].append((piece, suffix))
        filling[id(piece.context)] = (batch, size + size_of + 1)
    for position, members in batches:
        if len(members) > 1:
            named = ", ".join(piece.source.removesuffix(suffix) for piece, suffix in members[:3])
            more = f" and {len(members) - 3} more" if len(members) > 3 else ""
            kinds = " and ".join(name for suffix, name in _BATCHED.items() if any(s == suffix for _, s in members))
            text = "\n".join(str(piece.text) for piece, _ in members)
            out[position] = Piece(f"{named}{more} ({kinds})", text, members[0][0].context)
    return out


def _index(item: object, position: int) -> object:
    """A streamed tool call's own ``index`` (its deltas arrive in different chunks), else its position."""
    index = item.get("index") if isinstance(item, Mapping) else None
    return index if isinstance(index, int) and not isinstance(index, bool) else position


def _is_token(key: object, value: object) -> bool:
    """An identifier or enumeration: the value of an identifier key, one printable ASCII token."""
    return isinstance(key, str) and (key in _TOKEN_KEYS or key.endswith("_id")) and _one_token(value)


def _is_name(key: object) -> bool:
    """A key that is a name, not a text: one printable ASCII token of at most 64 characters."""
    return isinstance(key, str) and len(key) <= 64 and _one_token(key)


def _one_token(value: object) -> bool:
    return isinstance(value, str) and value.isascii() and value.isprintable() and " " not in value


def _fields(value: object, where: str) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    if isinstance(value, pydantic.BaseModel):  # e.g. a ChatCompletionMessage passed back as history
        return value.model_dump(exclude_none=True)
    raise InputTypeError(f"{where} must be a dict (or an openai model), got {type(value).__name__}")


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
    """The response with its guard results; a refusal replaces its whole output, and its id: the server holds the
    blocked output under the server's id, and a later ``previous_response_id`` naming it would feed it back."""
    values = dict(response)
    if decision.refusal is not None:
        values.update(
            id=f"resp_guard_{uuid.uuid4().hex}",
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


# What a guarded client passes through as the client's own: its configuration, and what sends no text to a model
# and returns none from one. Every other attribute that is not guarded here raises UnsupportedClientError.
_PASSTHROUGH: dict[str, frozenset[str]] = {
    "client": frozenset(
        {
            "models",
            "api_key",
            "admin_api_key",
            "organization",
            "project",
            "webhook_secret",
            "workload_identity",
            "base_url",
            "websocket_base_url",
            "timeout",
            "max_retries",
            "default_headers",
            "default_query",
            "auth_headers",
            "custom_auth",
            "platform_headers",
            "user_agent",
            "qs",
            "is_closed",
            "close",
        }
    ),
    "chat": frozenset(),
    "chat.completions": frozenset({"delete"}),
    "responses": frozenset({"delete"}),
}


class _Forwarding:
    """Forwards the attributes in ``_PASSTHROUGH`` to the wrapped object and refuses the others."""

    _kind: str

    def __init__(self, wrapped: Any) -> None:
        self._wrapped = wrapped

    def __getattr__(self, name: str) -> Any:
        if name in _PASSTHROUGH[self._kind] or (name.startswith("__") and name.endswith("__")):
            return getattr(self._wrapped, name)
        # Looked up without reading it, which would build the resource (or run a property) only to refuse it.
        if not hasattr(type(self._wrapped), name) and name not in vars(self._wrapped):
            raise AttributeError(f"{type(self._wrapped).__name__!r} object has no attribute {name!r}")
        raise UnsupportedClientError(
            f"{self._kind}.{name} is not guarded: a guarded client checks chat.completions.create and "
            f"responses.create; use client.unguarded.{'' if self._kind == 'client' else self._kind + '.'}{name} "
            "to opt out knowingly"
        )


@dataclass(frozen=True, slots=True)
class _Settings:
    """How a guarded client guards: the options of ``wrap`` that its copies (``with_options``) keep."""

    enforcer: Enforcer
    input_mode: InputMode
    check_system: bool
    media: MediaMode


class _Endpoint(_Forwarding):
    def __init__(self, wrapped: Any, client: OpenAI | AsyncOpenAI, settings: _Settings) -> None:
        super().__init__(wrapped)
        self._client = client
        self._enforcer = settings.enforcer
        self._input_mode = settings.input_mode
        self._check_system = settings.check_system
        self._media = settings.media

    def _pieces(self, request_pieces: Callable[..., list[Piece]], kwargs: Mapping[str, Any]) -> list[Piece]:
        """A request's input pieces (the client's ``default_query`` included); media refused under
        ``media="refuse"``, before anything is sent."""
        pieces = request_pieces(kwargs, check_system=self._check_system, default_query=self._client.default_query)
        unread = next((piece.source for piece in pieces if piece.text is None), None)
        if self._media == "refuse" and unread is not None:
            raise InputError(
                f"{unread} is media the guard cannot read (image, audio or file), and this client was wrapped with "
                "media='refuse'; send text, or use client.unguarded to opt out knowingly"
            )
        return pieces


class _Completions(_Endpoint):
    _kind = "chat.completions"

    def _request(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[Piece], list[dict[str, str]]]:
        """The request as sent, its input pieces, and the context of its output checks (its messages)."""
        messages = kwargs.get("messages")
        if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Iterable):
            raise InputTypeError(f"messages must be a list of messages, got {type(messages).__name__}")
        # A one-shot iterable is read once here, and the same list goes to the server.
        kwargs = {**kwargs, "messages": list(messages)}
        pieces = self._pieces(chat_request_pieces, kwargs)
        body, extra = _body(kwargs)
        context = request_context(body["messages"], "extra_body.messages" if "messages" in extra else "messages")
        return kwargs, pieces, context

    def _stream_guard(
        self, model: str, results: list[SourcedResult], context: list[dict[str, str]]
    ) -> StreamGuard[ChatCompletionChunk]:
        """Checks a stream's chunks; its decisions' results go to ``results`` (the stream's ``guard_results``)."""
        refusal = _ChunkRefusal(model)
        return StreamGuard(
            self._enforcer, refusal.texts, refusal.chunk, lambda d: results.extend(d.results), context=context
        )


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
        kwargs, pieces, context = self._request(kwargs)
        response, input_decision = _send(
            self._enforcer, self._input_mode, pieces, functools.partial(self._wrapped.create, **kwargs)
        )
        results = list(input_decision.results)
        model = str(kwargs.get("model"))
        if isinstance(response, Stream):
            chunks = _guarded_chunks(response, self._stream_guard(model, results, context))
            return GuardedStream(response, chunks, results)
        if kwargs.get("stream"):
            return GuardedStream(None, iter([_ChunkRefusal(model).chunk(input_decision.refusal or "")]), results)
        if response is None:
            return _refused_completion(model, input_decision.refusal or "", results)
        pieces_out = completion_pieces(response)
        decision = self._enforcer.check([piece for _, piece in pieces_out], "output", context)
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
        kwargs, pieces, context = self._request(kwargs)
        response, input_decision = await _asend(
            self._enforcer, self._input_mode, pieces, functools.partial(self._wrapped.create, **kwargs)
        )
        results = list(input_decision.results)
        model = str(kwargs.get("model"))
        if isinstance(response, AsyncStream):
            achunks = _aguarded_chunks(response, self._stream_guard(model, results, context))
            return GuardedAsyncStream(response, achunks, results)
        if kwargs.get("stream"):
            refusal = _ChunkRefusal(model).chunk(input_decision.refusal or "")
            return GuardedAsyncStream(None, _async_iter([refusal]), results)
        if response is None:
            return _refused_completion(model, input_decision.refusal or "", results)
        pieces_out = completion_pieces(response)
        decision = await self._enforcer.acheck([piece for _, piece in pieces_out], "output", context)
        return _checked_completion(response, pieces_out, decision, results + decision.results)


class _Responses(_Endpoint):
    _kind = "responses"

    def _request(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[Piece], Context | None]:
        """The request as sent, its input pieces, and the context of its output check (its input)."""
        if kwargs.get("stream"):
            raise UnsupportedClientError(
                "responses.create(stream=True) is not guarded; use chat.completions.create(stream=True), "
                "or responses.create without stream"
            )
        if isinstance(kwargs.get("input"), (list, tuple)):
            kwargs = {**kwargs, "input": list(kwargs["input"])}
        pieces = self._pieces(responses_request_pieces, kwargs)
        body, extra = _body(kwargs)
        items = body.get("input")
        context: Context | None = items if isinstance(items, str) else None
        if isinstance(items, (list, tuple)):
            context = request_context(items, "extra_body.input" if "input" in extra else "input")
        return kwargs, pieces, context


class GuardedResponses(_Responses):
    """``client.responses`` of a ``GuardedOpenAI``: ``create`` (not streamed) is guarded."""

    def create(self, **kwargs: Any) -> GuardedResponse:
        """``responses.create`` with the input checked before (or while) it runs and the output after."""
        kwargs, pieces, context = self._request(kwargs)
        call = functools.partial(self._wrapped.create, **kwargs)
        response, input_decision = _send(self._enforcer, self._input_mode, pieces, call)
        if response is None:
            return _refused_response(str(kwargs.get("model")), input_decision.refusal or "", input_decision.results)
        decision = self._enforcer.check(response_output_pieces(response), "output", context)
        return _checked_response(response, decision, input_decision.results + decision.results)


class GuardedAsyncResponses(_Responses):
    """``client.responses`` of a ``GuardedAsyncOpenAI``: ``create`` (not streamed) is guarded."""

    async def create(self, **kwargs: Any) -> GuardedResponse:
        """``responses.create`` with the input checked before (or while) it runs and the output after."""
        kwargs, pieces, context = self._request(kwargs)
        call = functools.partial(self._wrapped.create, **kwargs)
        response, input_decision = await _asend(self._enforcer, self._input_mode, pieces, call)
        if response is None:
            return _refused_response(str(kwargs.get("model")), input_decision.refusal or "", input_decision.results)
        decision = await self._enforcer.acheck(response_output_pieces(response), "output", context)
        return _checked_response(response, decision, input_decision.results + decision.results)


class GuardedChat(_Forwarding, Generic[C]):
    """``client.chat`` of a guarded client."""

    _kind = "chat"

    def __init__(self, wrapped: Any, completions: C) -> None:
        super().__init__(wrapped)
        self.completions = completions


class _GuardedClient(_Forwarding):
    _kind = "client"

    def __init__(self, client: OpenAI | AsyncOpenAI, settings: _Settings) -> None:
        # The client's own headers are its configuration, but for the control headers; its default_query is sent
        # with every request and checked with it, and a value the client would send as its str() is refused now.
        refuse_control_headers(client.default_headers, "default_headers")
        _query_walk(client.default_query, "default_query")
        super().__init__(client)
        self.enforcer = settings.enforcer
        self._settings = settings

    def with_options(self, **options: Any) -> Self:
        """``client.with_options(timeout=..., max_retries=...)`` (alias ``copy``): the wrapped client's copy with
        these options, guarded as this client is (same guard and options of ``wrap``)."""
        return type(self)(self._wrapped.with_options(**options), self._settings)

    copy = with_options


class GuardedOpenAI(_GuardedClient):
    """An ``openai.OpenAI`` whose ``chat.completions.create`` is guarded; see the module docstring."""

    def __init__(self, client: OpenAI, settings: _Settings) -> None:
        super().__init__(client, settings)
        self.unguarded = client
        completions = GuardedCompletions(client.chat.completions, client, settings)
        self.chat: GuardedChat[GuardedCompletions] = GuardedChat(client.chat, completions)
        self.responses = GuardedResponses(client.responses, client, settings)


class GuardedAsyncOpenAI(_GuardedClient):
    """An ``openai.AsyncOpenAI`` whose ``chat.completions.create`` is guarded; see the module docstring."""

    def __init__(self, client: AsyncOpenAI, settings: _Settings) -> None:
        super().__init__(client, settings)
        self.unguarded = client
        completions = GuardedAsyncCompletions(client.chat.completions, client, settings)
        self.chat: GuardedChat[GuardedAsyncCompletions] = GuardedChat(client.chat, completions)
        self.responses = GuardedAsyncResponses(client.responses, client, settings)


@overload
def wrap(
    client: OpenAI,
    guard: Guard,
    *,
    input_mode: InputMode = ...,
    check_system: bool = ...,
    media: MediaMode = ...,
    **options: Unpack[EnforceOptions],
) -> GuardedOpenAI: ...
@overload
def wrap(
    client: AsyncOpenAI,
    guard: Guard,
    *,
    input_mode: InputMode = ...,
    check_system: bool = ...,
    media: MediaMode = ...,
    **options: Unpack[EnforceOptions],
) -> GuardedAsyncOpenAI: ...
def wrap(
    client: OpenAI | AsyncOpenAI,
    guard: Guard,
    *,
    input_mode: InputMode = "parallel",
    check_system: bool = False,
    media: MediaMode = "allow",
    **options: Unpack[EnforceOptions],
) -> GuardedOpenAI | GuardedAsyncOpenAI:
    """Guard an OpenAI client (``guard.wrap(client, ...)`` calls this).

    Args:
        input_mode: ``"parallel"`` sends the request while the input is checked and cancels it when the input is
            blocked; ``"sequential"`` sends it only after the input passed.
        check_system: also check the app's own text: system and developer messages, Responses ``instructions``, tool
            and response-format definitions (by default they are trusted, as the app wrote them).
        media: what to do with a request carrying images, audio or files, which the guard cannot read:
            ``"allow"`` sends them unchecked (a ``skipped_non_text`` result each), ``"refuse"`` raises ``InputError``
            naming the part before anything is sent.
        options: what to do on a violation, timeouts, stream windows, decision hook: see ``guard_sdk.Enforcer``.
    """
    if input_mode not in ("parallel", "sequential"):
        raise ValueError(f"input_mode must be 'parallel' or 'sequential', got {input_mode!r}")
    if media not in ("allow", "refuse"):
        raise ValueError(f"media must be 'allow' or 'refuse', got {media!r}")
    settings = _Settings(Enforcer(guard, **options), input_mode, check_system, media)
    if isinstance(client, OpenAI):
        return GuardedOpenAI(client, settings)
    if isinstance(client, AsyncOpenAI):
        return GuardedAsyncOpenAI(client, settings)
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
