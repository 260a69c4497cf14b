"""The builder's one door to an LLM: typed JSON replies from any OpenAI-compatible endpoint.

    config = LLMConfig.resolve(base_url="http://127.0.0.1:8080/v1", model="local")
    async with LLMClient(config, cache_dir="runs/visa/cache") as llm:
        reply = await llm.structured(messages, Ideas)      # an ``Ideas`` instance, validated by pydantic
    with LLMClient(config) as llm:
        reply = llm.structured_sync(messages, Ideas)       # the same from synchronous code

- **Endpoint** from arguments, else a config file (YAML/JSON with ``base_url``, ``model``, ``api_key``), else the
  environment (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``, ``OPENAI_MODEL``).
- **Structured output**: ``schema`` sends ``response_format={"type": "json_object", "schema": ...}`` (llama.cpp
  turns it into a grammar), ``json`` plain JSON mode (OpenAI and most servers), ``grammar`` a GBNF grammar in
  ``extra_body`` (llama.cpp). Every reply is parsed leniently (``strict=False``: llama.cpp may put raw newlines in
  strings) and validated by pydantic; a malformed reply gets repair turns that quote the error.
- **Transport**: bounded concurrency, per-request timeout, and the openai client's own retries with exponential
  backoff on connection errors, 429 and 5xx. Errors come out as :class:`~builder.errors.LLMError` subclasses.
- **Cache**: every HTTP request is keyed by model + messages + parameters and its reply stored on disk, written
  atomically (a killed run never leaves half an entry). A re-run sends no request and gets the same replies.
- **Accounting**: :class:`LLMUsage` counts requests, cache hits, tokens, repairs and unusable replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from typing_extensions import Self

from .._files import write_atomic
from ..errors import LLMAuthenticationError, LLMConnectionError, LLMError, LLMOutputError

if TYPE_CHECKING:
    import openai

__all__ = ["LLMClient", "LLMConfig", "LLMUsage", "Message", "ResponseCache", "StructuredOutput"]

T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")
Message = dict[str, str]
StructuredOutput = Literal["schema", "json", "grammar"]

REPAIR_PROMPT = (
    "Your reply could not be used: {error}. Reply again with only one JSON object that matches the schema, "
    "no other text."
)


class LLMConfig(BaseModel):
    """Where the LLM is and how to talk to it."""

    model_config = ConfigDict(use_attribute_docstrings=True)  # field docstrings: guard-build's help

    base_url: str | None = None
    """OpenAI-compatible endpoint, e.g. ``http://127.0.0.1:8080/v1``; None: the builder starts the embedded one."""
    api_key: str | None = None
    model: str | None = None
    """Model name at that endpoint."""
    structured_output: StructuredOutput = "json"
    max_concurrency: int = Field(default=4, ge=1)
    """Requests in flight at once."""
    timeout: float = Field(default=120.0, gt=0)
    """Seconds for one request, queueing on the server included."""
    max_retries: int = Field(default=3, ge=0)
    """Transport retries with exponential backoff (connection errors, 408, 409, 429, 5xx)."""
    max_repairs: int = Field(default=2, ge=0)
    """Extra turns asking the model to fix a reply that is not valid JSON for the schema."""
    temperature: float = Field(default=0.8, ge=0)
    max_tokens: int = Field(default=400, ge=1)

    @classmethod
    def resolve(cls, config_file: str | Path | None = None, **overrides: Any) -> LLMConfig:
        """Arguments (non-None ``overrides``) win over the config file, which wins over the environment."""
        values: dict[str, Any] = {
            key: value
            for key, value in {
                "base_url": os.environ.get("OPENAI_BASE_URL"),
                "api_key": os.environ.get("OPENAI_API_KEY"),
                "model": os.environ.get("OPENAI_MODEL"),
            }.items()
            if value
        }
        if config_file is not None:
            path = Path(config_file)
            try:
                loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as exc:
                raise LLMError(f"cannot read the LLM config file {path}: {exc}") from None
            if not isinstance(loaded, dict):
                raise LLMError(f"the LLM config file {path} must be a mapping (base_url, model, api_key, ...)")
            values.update(loaded)
        values.update({key: value for key, value in overrides.items() if value is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise LLMError(f"invalid LLM settings: {exc}") from None


class LLMUsage(BaseModel):
    """What a run cost; tokens count live requests only (cache hits cost nothing)."""

    requests: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    repairs: int = 0
    """Repair turns sent after a malformed reply."""
    unusable_replies: int = 0
    """Structured calls that still had no valid JSON after every repair turn."""
    request_seconds: float = 0.0

    def __add__(self, other: LLMUsage) -> LLMUsage:
        return self._combine(other, 1)

    def __sub__(self, other: LLMUsage) -> LLMUsage:
        return self._combine(other, -1)

    def _combine(self, other: LLMUsage, sign: int) -> LLMUsage:
        return LLMUsage(**{name: getattr(self, name) + sign * getattr(other, name) for name in LLMUsage.model_fields})


class ResponseCache:
    """Replies on disk, one JSON file per request key, each written to a temporary file and renamed into place."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @staticmethod
    def key(request: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            entry = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # absent, or damaged by something other than us: ask again
            return None
        return entry if isinstance(entry, dict) and "content" in entry else None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        write_atomic(self._path(key), json.dumps(entry, ensure_ascii=False), what="the LLM cache entry")

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("??/[!.]*.json")) if self.folder.is_dir() else 0

    def sweep(self) -> int:
        """Remove temporary files that a killed writer left; call it when no other process writes here."""
        stale = list(self.folder.glob("??/.tmp-*")) if self.folder.is_dir() else []
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)


class LLMClient:
    """Structured chat completions with cache, bounded concurrency and accounting; async and sync twins."""

    def __init__(self, config: LLMConfig, cache_dir: str | Path | None = None) -> None:
        if not config.base_url or not config.model:
            raise LLMError("no LLM endpoint configured: give a base URL and a model name (or use the embedded one)")
        self.config = config
        self.cache = ResponseCache(cache_dir) if cache_dir is not None else None
        self.usage = LLMUsage()
        self.on_usage: Callable[[LLMUsage], None] | None = None
        """Called with a copy of :attr:`usage` after every change, e.g. to persist it as it grows."""
        self._usage_lock = threading.Lock()
        self._sync_client: openai.OpenAI | None = None
        self._async_client: openai.AsyncOpenAI | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- public API --------------------------------------------------------------------------------------------

    async def structured(self, messages: Sequence[Message], schema: type[T], *, seed: int = 0, **params: Any) -> T:
        """Ask for one JSON object matching ``schema``; ``seed`` (and ``params``) make distinct cached samples."""
        exchange = self._exchange(messages, schema, seed, params)
        request = next(exchange)
        while True:
            content = await self._acomplete(request)
            try:
                request = exchange.send(content)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def structured_sync(self, messages: Sequence[Message], schema: type[T], *, seed: int = 0, **params: Any) -> T:
        exchange = self._exchange(messages, schema, seed, params)
        request = next(exchange)
        while True:
            content = self._complete(request)
            try:
                request = exchange.send(content)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._sync_client is not None:
            self._sync_client.close()
            self._sync_client = None
        # The async client belongs to the loop that made it; it is closed by `aclose` or dropped with that loop.
        self._async_client = None

    async def aclose(self) -> None:
        if self._async_client is not None:
            await self._async_client.close()
            self._async_client = None
        self.close()

    def run(self, work: Awaitable[R]) -> R:
        """Run async work that uses this client on a new event loop and close the client, in that loop and after."""

        async def closing() -> R:
            try:
                return await work
            finally:
                await self.aclose()

        try:
            return asyncio.run(closing())
        finally:
            self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the protocol, free of I/O: yields requests, receives reply texts, returns the validated object -----------

    def _exchange(
        self, messages: Sequence[Message], schema: type[T], seed: int, params: dict[str, Any]
    ) -> Generator[dict[str, Any], str, T]:
        conversation = [dict(message) for message in messages]
        error = ""
        for attempt in range(self.config.max_repairs + 1):
            if attempt:
                self._count(repairs=1)
            content = yield self._request(conversation, schema, seed, params)
            try:
                return parse_reply(content, schema)
            except ValueError as exc:
                error = str(exc)
            conversation += [
                {"role": "assistant", "content": content},
                {"role": "user", "content": REPAIR_PROMPT.format(error=error)},
            ]
        self._count(unusable_replies=1)
        raise LLMOutputError(
            f"{self.config.model} gave no valid {schema.__name__} after {self.config.max_repairs + 1} tries: {error}"
        )

    def _request(
        self, messages: list[Message], schema: type[BaseModel], seed: int, params: dict[str, Any]
    ) -> dict[str, Any]:
        json_schema = schema.model_json_schema()
        request: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
            "seed": seed,
            **params,
        }
        mode = self.config.structured_output
        if mode == "schema":
            request["response_format"] = {"type": "json_object", "schema": json_schema}
        elif mode == "json":
            request["response_format"] = {"type": "json_object"}
        else:
            request["extra_body"] = {"grammar": schema_to_gbnf(json_schema)}
        return request

    # -- transport -----------------------------------------------------------------------------------------------

    def _cached(self, request: dict[str, Any]) -> tuple[str, str | None]:
        key = ResponseCache.key(request)
        if self.cache is not None and (entry := self.cache.get(key)) is not None:
            self._count(cache_hits=1)
            return key, str(entry["content"])
        return key, None

    def _record(self, key: str, response: Any, started: float) -> str:
        content = (response.choices[0].message.content or "") if response.choices else ""
        usage = response.usage
        # Counted before it is cached: a process killed in between paid for a reply it will have to ask again.
        self._count(
            requests=1,
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            request_seconds=time.perf_counter() - started,
        )
        if self.cache is not None:
            self.cache.put(key, {"content": content, "finish_reason": response.choices[0].finish_reason
                                 if response.choices else None})  # fmt: skip
        return content

    def _complete(self, request: dict[str, Any]) -> str:
        key, content = self._cached(request)
        if content is not None:
            return content
        if self._sync_client is None:
            import openai

            self._sync_client = openai.OpenAI(**self._client_options())
        started = time.perf_counter()
        with self._translate_errors():
            response = self._sync_client.chat.completions.create(**request)
        return self._record(key, response, started)

    async def _acomplete(self, request: dict[str, Any]) -> str:
        key, content = self._cached(request)
        if content is not None:
            return content
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._async_client is None or self._semaphore is None:
            import openai

            # Both belong to one event loop; a new asyncio.run gets new ones.
            self._loop = loop
            self._async_client = openai.AsyncOpenAI(**self._client_options())
            self._semaphore = asyncio.Semaphore(self.config.max_concurrency)
        async with self._semaphore:
            started = time.perf_counter()
            with self._translate_errors():
                response = await self._async_client.chat.completions.create(**request)
        return self._record(key, response, started)

    def _client_options(self) -> dict[str, Any]:
        return {
            "base_url": self.config.base_url,
            # Local servers ignore the key, but the client insists on one.
            "api_key": self.config.api_key or "none",
            "timeout": self.config.timeout,
            "max_retries": self.config.max_retries,
        }

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        import openai

        where = self.config.base_url
        try:
            yield
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise LLMAuthenticationError(
                f"{where} refused the API key (HTTP {exc.status_code}): check --api-key or OPENAI_API_KEY"
            ) from exc
        except openai.APITimeoutError as exc:
            raise LLMConnectionError(
                f"{where} did not answer within {self.config.timeout:.0f} s ({self.config.max_retries} retries)"
            ) from exc
        except openai.APIConnectionError as exc:
            raise LLMConnectionError(
                f"cannot reach the LLM endpoint {where} ({self.config.max_retries} retries): {exc.__cause__ or exc}"
            ) from exc
        except openai.NotFoundError as exc:
            raise LLMError(f"{where} has no model {self.config.model!r} (HTTP 404): check --model") from exc
        except openai.APIStatusError as exc:
            hint = (
                "; the server may not support this structured output mode, try another one"
                if exc.status_code in (400, 422, 500)
                else ""
            )
            raise LLMError(f"{where} answered HTTP {exc.status_code}: {exc.message}{hint}") from exc

    def _count(self, **amounts: float) -> None:
        with self._usage_lock:
            for name, amount in amounts.items():
                setattr(self.usage, name, getattr(self.usage, name) + amount)
            # Under the lock, so that listeners see the changes in order.
            if self.on_usage is not None:
                self.on_usage(self.usage.model_copy())


def parse_reply(content: str | None, schema: type[T]) -> T:
    """Validate a reply; ``ValueError`` says what is wrong in words a repair turn can quote."""
    text = (content or "").strip()
    if not text:
        raise ValueError("the reply was empty")
    if text.startswith("```"):  # models in plain-prompt mode like to fence their JSON
        text = text.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(text, strict=False)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the reply is not JSON ({exc.msg} at character {exc.pos})") from None
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'reply'}: {e['msg']}" for e in exc.errors()[:3])
        raise ValueError(f"the JSON does not match the schema ({problems})") from None


def schema_to_gbnf(json_schema: dict[str, Any]) -> str:
    """A llama.cpp GBNF grammar for a JSON schema (llama-cpp-python's converter, imported only here)."""
    try:
        from llama_cpp.llama_grammar import json_schema_to_gbnf
    except ImportError as exc:
        raise LLMError('structured_output="grammar" needs llama-cpp-python to write the grammar') from exc
    return str(json_schema_to_gbnf(json.dumps(json_schema)))
