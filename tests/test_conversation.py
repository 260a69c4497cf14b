"""Guards that read conversations (input ``conversation``): the latest turn judged in the light of the earlier ones.

The conversation bundle (tests/conftest.py) is fine-tuned from MiniLM on turns whose follow-ups are generic and whose
questions are the same either way: only the assistant's earlier answer (a refusal or not) decides. The wrapper test
runs the real openai client against the embedded llama.cpp server.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import openai
import pytest

from builder.data.dataset import load_jsonl
from builder.errors import BuilderError, DatasetError
from builder.train.classifier import TrainConfig, train
from guard_sdk import Guard, GuardBundle, GuardViolation
from guard_sdk.bundle import CONTEXT_CHARS, context_text, render
from guard_sdk.integrations.openai import MAX_CONTEXT_TURNS, chat_request_pieces, responses_request_pieces

LABEL = "asks-again"


@pytest.fixture(scope="module")
def conversations(conversation_bundle: Path) -> Guard:
    guard = Guard(conversation_bundle, device="cpu", threads=2)
    guard.warmup()
    return guard


def history(question: str, reply: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]


def test_the_bundle_reads_conversations_and_checks_input(conversation_bundle: Path):
    manifest = GuardBundle.load(conversation_bundle).manifest
    assert (manifest.input.kind, manifest.input.context_tokens, manifest.stages) == ("conversation", 32, ["input"])


def test_the_earlier_turns_decide_whether_the_latest_is_flagged(conversations: Guard, conversation_texts: Any):
    t = conversation_texts
    refused = conversations.check(t.follow_up, context=history(t.question, t.refusal))
    assert refused.score(LABEL).flagged
    helped = conversations.check(t.follow_up, context=history(t.question, t.answer))
    assert not helped.score(LABEL).flagged
    assert not conversations.check(t.follow_up).score(LABEL).flagged, "without the history, a follow-up is benign"
    assert not conversations.check(t.follow_up, context=[]).score(LABEL).flagged


def test_training_reads_a_conversation_as_the_runtime_does(conversations: Guard, tmp_path: Path):
    context = [
        {"role": "system", "content": "Answer in ﬁve words."},  # NFKC: "ﬁ" is "fi"
        {"role": "assistant", "content": None},
        {"role": "user", "content": "Hello there"},
    ]
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        json.dumps({"context": context, "text": "again", "labels": [LABEL]})
        + "\n"
        + json.dumps({"context": [], "text": "first", "labels": []})
        + "\n"
    )
    dataset = load_jsonl(rows)
    assert dataset.context_kind() == "conversation"
    runtime = conversations._contexts([context, []], {"conversation"}, 2)["conversation"]
    assert dataset.rendered_contexts() == runtime == ["system: Answer in five words.\nuser: Hello there", ""]


# ---------------------------------------------------------------------------------------------------------------------
# guard.wrap


def test_wrap_judges_each_message_after_the_turns_before_it(
    conversations: Guard, llm_server: Any, conversation_texts: Any
):
    t = conversation_texts
    client = conversations.wrap(openai.OpenAI(base_url=llm_server.base_url, api_key="local"))
    ask = {"model": llm_server.model, "temperature": 0, "max_tokens": 8}
    helped = [*history(t.question, t.answer), {"role": "user", "content": t.follow_up}]
    allowed = client.chat.completions.create(messages=helped, **ask)
    inputs = [r for r in allowed.guard_results if r.stage == "input"]
    assert [r.source for r in inputs] == [f"messages[{i}].content" for i in range(3)]
    assert not any(r.flagged for r in inputs)

    refused = [*history(t.question, t.refusal), {"role": "user", "content": t.follow_up}]
    with pytest.raises(GuardViolation) as blocked:
        client.chat.completions.create(messages=refused, **ask)
    assert blocked.value.stage == "input"
    assert [r.source for r in blocked.value.violations] == ["messages[2].content"]

    async def ask_async() -> Any:
        aclient = conversations.wrap(
            openai.AsyncOpenAI(base_url=llm_server.base_url, api_key="local"),
            on_fail="refuse",
            input_mode="sequential",
        )
        return await aclient.chat.completions.create(messages=refused, **ask)

    assert asyncio.run(ask_async()).choices[0].finish_reason == "content_filter"


def test_a_message_reads_at_most_the_last_turns_before_it():
    n = 100_000
    messages = [{"role": ("user", "assistant")[i % 2], "content": f"turn {i}"} for i in range(n)]
    pieces = chat_request_pieces({"model": "m", "messages": messages}, check_system=False)
    assert len(pieces) == n
    contexts = [piece.context or [] for piece in pieces]
    assert [len(context) for context in contexts[:3]] == [0, 1, 2]
    assert {len(context) for context in contexts[MAX_CONTEXT_TURNS:]} == {MAX_CONTEXT_TURNS}
    assert [turn["content"] for turn in contexts[-1]] == [f"turn {i}" for i in range(n - 1 - MAX_CONTEXT_TURNS, n - 1)]
    assert contexts[-1][0] is contexts[-2][1], "the contexts are slices of one list of turns"


def test_a_conversation_of_any_length_is_read_from_its_end(
    conversations: Guard, conversation_bundle: Path, conversation_texts: Any
):
    t = conversation_texts
    earlier = [
        {"role": "user", "content": "Tell me about the weather."},
        {"role": "assistant", "content": "Sunny. " * 500},
    ]
    last = [*earlier, *history(t.question, t.refusal)]
    long = [*earlier * 100, {"role": "assistant", "content": None}, *last]  # 350,000 characters, over max_chars
    assert sum(len(m["content"] or "") for m in long) > conversations.max_chars
    # The guard keeps the last 32 tokens: the same as those of the last turns alone, which hold more than that.
    result = conversations.check(t.follow_up, context=long)
    assert result.score(LABEL).flagged and result.scores == conversations.check(t.follow_up, context=last).scores
    small = Guard(conversation_bundle, device="cpu", threads=2, max_chars=1_000)  # as `conversations`, but max_chars
    assert small.check(t.follow_up, context=long).scores == result.scores, "read from its last max_chars characters"


def test_context_text_renders_only_the_turns_its_characters_hold():
    import random

    rng = random.Random(0)
    for _ in range(200):
        turns = [
            {
                "role": rng.choice(["user", "assistant", "tool"]),
                "content": rng.choice([None, "", "x" * rng.randrange(9000)]),
            }
            for _ in range(rng.randrange(12))
        ]
        assert context_text(turns, "conversation") == render(turns, "conversation")[-CONTEXT_CHARS:]
    assert context_text("y" * 20_000, "exchange") == "y" * CONTEXT_CHARS


def test_turns_without_text_and_items_that_are_no_message_are_left_out():
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "weather"}'}}
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
        {"role": "user", "content": [{"type": "text", "text": "And"}, {"type": "text", "text": "tomorrow?"}]},
    ]
    pieces = chat_request_pieces({"model": "m", "messages": messages}, check_system=False)
    assert pieces[-1].source == "messages[4].content" and pieces[-1].text == "And\ntomorrow?"
    assert [turn["content"] for turn in pieces[-1].context or []] == ["Be brief.", "Hi", "Sunny"]

    items = [
        {"role": "user", "content": "Hi"},
        {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": '{"q": "weather"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "Sunny"},
        {"role": "user", "content": [{"type": "input_text", "text": "And tomorrow?"}]},
    ]
    pieces = responses_request_pieces({"model": "m", "input": items}, check_system=False)
    assert pieces[-1].source == "input[3].content"
    assert pieces[-1].context == [{"role": "user", "content": "Hi"}]


# ---------------------------------------------------------------------------------------------------------------------
# What the builder refuses


def test_the_builder_refuses_mixed_or_malformed_contexts(tmp_path: Path):
    rows = [
        {
            "context": "a request" if i % 2 else history("q", "a"),
            "text": f"text {i}",
            "labels": [LABEL] if i % 3 else [],
        }
        for i in range(8)
    ]
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = TrainConfig(max_steps=1, max_length=64, context_tokens=24)
    with pytest.raises(BuilderError, match=r"4 examples have a str context .* and 4 a list of messages"):
        train(load_jsonl(data), tmp_path / "run", config)
    assert not (tmp_path / "run").exists()

    for message in ({"role": "user"}, {"role": "", "content": "x"}, {"role": "user", "content": "x", "name": "bob"}):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({**rows[0], "context": [message]}) + "\n")
        with pytest.raises(DatasetError, match=r"bad.jsonl:2: invalid row \(context"):
            load_jsonl(bad)
