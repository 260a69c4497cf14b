"""The LLM layer against the real llama.cpp server on 127.0.0.1: structured replies, cache, accounting, errors."""

from __future__ import annotations

import asyncio
import resource
import signal
import socket
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from builder.errors import (
    CacheWriteError,
    LLMAuthenticationError,
    LLMConnectionError,
    LLMError,
    LLMOutputError,
)
from builder.llm.client import LLMClient, LLMConfig, ResponseCache, parse_reply

MESSAGES = [
    {"role": "system", "content": "You answer with one JSON object."},
    {"role": "user", "content": "Name two colours."},
    {"role": "assistant", "content": '{"colours": ["red", "blue"]}'},
    {"role": "user", "content": "Name three fruits."},
]


class Colours(BaseModel):
    colours: list[str] = Field(min_length=1, max_length=5)


def _client(server, tmp_path: Path, **settings) -> LLMClient:
    settings = {"structured_output": "schema", "max_tokens": 60, **settings}
    config = LLMConfig(base_url=server.base_url, model=server.model, **settings)
    return LLMClient(config, cache_dir=tmp_path / "cache")


def test_structured_reply_is_validated_cached_and_counted(llm_server, tmp_path: Path):
    llm = _client(llm_server, tmp_path)
    first = llm.structured_sync(MESSAGES, Colours, seed=1)
    assert isinstance(first, Colours) and first.colours
    assert llm.usage.requests == 1 and llm.usage.cache_hits == 0
    assert llm.usage.prompt_tokens > 0 and llm.usage.completion_tokens > 0
    assert len(llm.cache) == 1

    # Same request from the async twin and from a fresh client: served from disk, identical, no request.
    async def ask_async() -> Colours:
        async with llm:
            return await llm.structured(MESSAGES, Colours, seed=1)

    again = asyncio.run(ask_async())
    fresh = _client(llm_server, tmp_path)
    assert again == first == fresh.structured_sync(MESSAGES, Colours, seed=1)
    assert llm.usage.requests == 1 and llm.usage.cache_hits == 1
    assert fresh.usage.requests == 0 and fresh.usage.cache_hits == 1

    # Another seed is another sample: a new request and a new entry.
    llm.structured_sync(MESSAGES, Colours, seed=2)
    assert llm.usage.requests == 2 and len(llm.cache) == 2


def test_json_mode_and_grammar_mode_also_give_valid_objects(llm_server, tmp_path: Path):
    for mode in ("json", "grammar"):
        llm = _client(llm_server, tmp_path / mode, structured_output=mode)
        try:
            reply = llm.structured_sync(MESSAGES, Colours, seed=3)
        except LLMOutputError:  # plain JSON mode cannot force the schema on a 135M model; it must say so cleanly
            assert mode == "json"
            assert llm.usage.unusable_replies == 1
        else:
            assert reply.colours


def test_concurrent_calls_share_the_bound(llm_server, tmp_path: Path):
    llm = _client(llm_server, tmp_path, max_concurrency=2)

    async def many() -> list[Colours]:
        async with llm:
            return await asyncio.gather(*(llm.structured(MESSAGES, Colours, seed=s) for s in range(3)))

    replies = asyncio.run(many())
    assert len(replies) == 3 and llm.usage.requests == 3


def test_malformed_replies_get_repair_turns_then_a_clear_error(llm_server, tmp_path: Path):
    # Two tokens cannot hold a JSON object: every reply is cut short, each repair turn too.
    llm = _client(llm_server, tmp_path, max_repairs=1, structured_output="json", max_tokens=2)
    with pytest.raises(LLMOutputError, match=r"no valid Colours after 2 tries: the reply is not JSON"):
        llm.structured_sync(MESSAGES, Colours)
    assert llm.usage.requests == 2 and llm.usage.repairs == 1 and llm.usage.unusable_replies == 1
    # The failure replays from the cache, free and identical.
    again = _client(llm_server, tmp_path, max_repairs=1, structured_output="json", max_tokens=2)
    with pytest.raises(LLMOutputError):
        again.structured_sync(MESSAGES, Colours)
    assert again.usage.requests == 0 and again.usage.cache_hits == 2


def test_a_schema_the_model_cannot_meet_is_reported(llm_server, tmp_path: Path):
    class Impossible(BaseModel):
        answer: Literal["4b1d7e"]

    llm = _client(llm_server, tmp_path, structured_output="json", max_repairs=0)
    with pytest.raises(LLMOutputError, match="does not match the schema"):
        llm.structured_sync(MESSAGES, Impossible)


def test_parse_reply_names_the_problem():
    with pytest.raises(ValueError, match="empty"):
        parse_reply("  ", Colours)
    with pytest.raises(ValueError, match="not JSON"):
        parse_reply("Sure! Here are three fruits: apple, pear, plum.", Colours)
    with pytest.raises(ValueError, match=r"colours: Field required"):
        parse_reply('{"fruits": ["apple"]}', Colours)
    # Raw newlines inside strings (llama.cpp does this) and code fences are accepted.
    assert parse_reply('```json\n{"colours": ["dark\nred"]}\n```', Colours).colours == ["dark\nred"]


def test_unreachable_endpoint_is_a_connection_error(tmp_path: Path):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    llm = LLMClient(LLMConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=1, timeout=5))
    with pytest.raises(LLMConnectionError, match=rf"cannot reach the LLM endpoint http://127.0.0.1:{port}/v1"):
        llm.structured_sync(MESSAGES, Colours)
    assert llm.usage.requests == 0


@pytest.mark.llm  # starts a server of its own, with an API key
def test_wrong_api_key_is_an_authentication_error(tmp_path: Path):
    from builder.llm.local_server import LocalLLMServer

    with LocalLLMServer(api_key="right-key") as server:
        wrong = LLMClient(LLMConfig(base_url=server.base_url, model=server.model, api_key="wrong", max_retries=0))
        with pytest.raises(LLMAuthenticationError, match="refused the API key"):
            wrong.structured_sync(MESSAGES, Colours)
        right = LLMClient(
            LLMConfig(base_url=server.base_url, model=server.model, api_key="right-key", structured_output="schema")
        )
        assert right.structured_sync(MESSAGES, Colours, max_tokens=40).colours


def test_config_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    monkeypatch.setenv("OPENAI_MODEL", "env-model")
    file = tmp_path / "llm.yaml"
    file.write_text("model: file-model\nmax_concurrency: 3\n")
    config = LLMConfig.resolve(file, model=None, api_key="from-args")
    assert (config.base_url, config.api_key, config.model, config.max_concurrency) == (
        "http://127.0.0.1:1/v1",
        "from-args",
        "file-model",
        3,
    )
    file.write_text("- not a mapping\n")
    with pytest.raises(LLMError, match="must be a mapping"):
        LLMConfig.resolve(file)
    with pytest.raises(LLMError, match="no LLM endpoint configured"):
        LLMClient(LLMConfig())


def test_a_failed_cache_write_leaves_no_partial_entry(tmp_path: Path):
    """A write that runs out of room (here: the file size limit, as on a full disk) raises and leaves nothing."""
    cache = ResponseCache(tmp_path / "cache")
    key = ResponseCache.key({"model": "m", "messages": []})
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, hard))
    try:
        with pytest.raises(CacheWriteError, match="cannot write the LLM cache entry"):
            cache.put(key, {"content": "x" * 10_000})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert cache.get(key) is None
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []
    cache.put(key, {"content": "ok"})
    assert cache.get(key) == {"content": "ok"} and len(cache) == 1
