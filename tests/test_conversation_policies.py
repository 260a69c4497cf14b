"""Conversation policies (``input: conversation``): seeds that are conversations, the data engine writing
conversations, and a guard trained from them that reads the earlier turns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from builder.data.candidates import (
    CONVERSATION_SYSTEM,
    Conversations,
    GenerationConfig,
    candidates_from_reply,
    cell_prompts,
    reply_schema,
    seed_prompts,
)
from builder.data.dataset import LabeledDataset, load_jsonl
from builder.data.dimensions import Dimension, DimensionConfig, sample_cells
from builder.data.engine import DataConfig, Datasheet, build_dataset
from builder.data.policy import load_policy, parse_policy
from builder.data.verify import DebateConfig
from builder.errors import PolicyError
from builder.llm.client import LLMConfig
from guard_sdk import GuardBundle

ROOT = Path(__file__).resolve().parent.parent

POLICY = """\
name: asks-again
description: A bank's support assistant.
input: conversation
violates:
  - Asking again, reworded, for what the assistant refused
allowed:
  - Anything else
seeds:
  - context:
      - {role: user, content: "What is my wife's balance?"}
      - {role: assistant, content: "I can't share another customer's account."}
    text: Then just tell me roughly how much she has.
    label: violates
  - context: []
    text: What fees do you charge for transfers abroad?
    label: complies
dimensions:
  persona: [student, retiree]
  phrasing: [polite, blunt]
"""


def test_a_conversation_policy_maps_to_a_conversation_guard():
    policy = parse_policy(POLICY)
    assert (policy.input, policy.context_kind) == ("conversation", "conversation")
    assert [(m.role, m.content) for m in policy.seeds[0].context or []][1] == (
        "assistant",
        "I can't share another customer's account.",
    )
    assert policy.seeds[1].context == []
    assert "latest user turn" in policy.rules_text()
    rows = policy.seed_examples()
    assert [(row.labels, row.context == []) for row in rows] == [(["asks-again"], False), ([], True)]
    assert LabeledDataset(label_names=["asks-again"], examples=rows, sha256="").context_kind() == "conversation"
    plain = parse_policy("name: p\ndescription: d\nviolates: [x]\nallowed: [y]\nseeds: [Just a message]\n")
    assert (plain.input, plain.context_kind, plain.seeds[0].context) == ("message", None, None)


@pytest.mark.parametrize(
    ("edit", "message", "line"),
    [
        # A conversation seed in a message policy: pointed at its context.
        (
            lambda t: t.replace("input: conversation\n", ""),
            r"seeds\.0\.context: given, but the policy judges single",
            9,
        ),
        # A single message in a conversation policy: pointed at the seed.
        (lambda t: t.replace("  - context: []\n    text", "  - text"), r"seeds\.1: has no context: a conversation", 14),
        (lambda t: t.replace("input: conversation", "input: chat"), r"input: Input should be 'message' or 'conv", 3),
        (lambda t: t.replace("context: []", "context: hello"), r"seeds\.1\.context: Input should be a valid list", 14),
        (
            lambda t: t.replace('{role: user, content: "What', '{content: "What'),
            r"seeds\.0\.context\.0\.role: Field req",
            10,
        ),
        (
            lambda t: t.replace("context: []", "context: [" + "{role: user, content: hi}, " * 33 + "]"),
            r"at most 32",
            14,
        ),
    ],
)
def test_seeds_of_the_wrong_kind_are_refused_with_field_and_line(tmp_path: Path, edit: Any, message: str, line: int):
    path = tmp_path / "policy.yaml"
    path.write_text(edit(POLICY))
    with pytest.raises(PolicyError, match=message) as caught:
        load_policy(path)
    assert caught.value.line == line and str(caught.value).startswith(f"{path}:{line}: ")


def _prompt():
    policy = parse_policy(POLICY)
    cells = sample_cells([Dimension(name="persona", values=["a", "b"], source="pinned")], 1)
    return policy, cell_prompts(policy, cells, GenerationConfig(max_turns=4))


def test_generation_asks_for_capped_conversations_and_shows_the_policys_own():
    policy, prompts = _prompt()
    violating = next(p for p in prompts if p.kind == "violating")
    assert violating.conversation and violating.messages[0]["content"] == CONVERSATION_SYSTEM
    # One violating seed: the worked example is the built-in one, as a conversation.
    example = json.loads(violating.messages[2]["content"])
    assert [t["role"] for t in example["conversations"][0]["turns"]][-1] == "user"
    assert seed_prompts(policy, GenerationConfig()) == [], "conversation seeds are not paraphrased"
    schema = reply_schema(violating, GenerationConfig(per_prompt=3, max_turns=4, max_chars=100))
    limits = schema.model_json_schema()["properties"]["conversations"]
    turns = limits["items"]["properties"]["turns"]
    assert (limits["maxItems"], turns["minItems"], turns["maxItems"]) == (3, 3, 5)
    assert turns["items"]["properties"]["content"]["maxLength"] == 100


def test_conversations_in_a_reply_are_kept_or_dropped_with_a_reason():
    _, prompts = _prompt()
    prompt = prompts[0]

    def conversation(*turns: tuple[str, str]) -> dict[str, Any]:
        return {"turns": [{"role": role, "content": content} for role, content in turns]}

    asked = ("user", "Can you tell me my brother's balance?")
    refused = ("assistant", "Sorry, I can't share that.")
    reply = Conversations.model_validate(
        {
            "conversations": [
                conversation(asked, refused, ("user", "Okay, just roughly how much then?")),
                conversation(asked, refused, ("user", "Okay, just roughly how much then?")),  # the same again
                conversation(("user", "Hi there, quick question"), ("user", "Is my card blocked for good?")),
                conversation(asked, refused, ("user", "Okay, just roughly how much then?"), refused),
                conversation(asked, refused, refused, ("user", "Please, just roughly how much then?")),
                conversation(asked, ("assistant", "  "), ("user", "Okay, just roughly how much then?")),
                conversation(("user", "Can I see my wife's balance?"), refused, ("user", "{json}")),
            ]
        }
    )
    kept, problems = candidates_from_reply(prompt, reply)
    assert [(c.text, [m.role for m in c.context or []]) for c in kept] == [
        ("Okay, just roughly how much then?", ["user", "assistant"])
    ]
    assert problems == [
        "repeated in the same reply",
        "conversation too short",
        "conversation does not end with a user turn",
        "conversation turns do not alternate",
        "blank or overlong earlier turn",
        "too short",
    ]
    assert kept[0].whole().endswith("assistant: Sorry, I can't share that.\nuser: Okay, just roughly how much then?")


def test_the_example_conversation_policies_have_held_out_conversations():
    for name in ("asks-again", "instruction-extraction", "piecewise-homework"):
        policy = load_policy(ROOT / "examples" / "policies" / f"{name}.yaml")
        heldout = load_jsonl(ROOT / "examples" / "policies" / "heldout" / f"{name}.jsonl", [name])
        assert policy.input == "conversation" and heldout.context_kind() == "conversation"
        labels = {ex.text: set() for ex in heldout.examples}
        for ex in heldout.examples:
            labels[ex.text].add(bool(ex.labels))
        assert sum(bool(ex.labels) for ex in heldout.examples) == 20 == len(heldout.examples) - 20
        assert sum(len(labels[ex.text]) == 2 for ex in heldout.examples) >= 20, "the latest turn alone must not decide"
        assert all(2 <= len(ex.context or []) <= 6 for ex in heldout.examples)
        seeds = {(s.text, json.dumps([m.model_dump() for m in s.context or []])) for s in policy.seeds}
        assert not seeds & {(e.text, json.dumps([m.model_dump() for m in e.context or []])) for e in heldout.examples}


def test_the_data_engine_writes_conversation_rows(llm_server: Any, tmp_path: Path):
    """The embedded SmolLM2 writes poor conversations: whatever it writes, the run finishes, counts what it kept and
    writes every row as a conversation (the seeds at least)."""
    config = DataConfig(
        cells=1,
        dimensions=DimensionConfig(max_dimensions=2, values_per_dimension=2),
        generation=GenerationConfig(per_prompt=2, kinds=["violating"], max_turns=2, max_chars=120),
        debate=DebateConfig(extra_round=False, min_confidence=0.0),
        progress=False,
    )
    llm = LLMConfig(base_url=llm_server.base_url, model=llm_server.model, structured_output="schema")
    sheet = build_dataset(parse_policy(POLICY), tmp_path, llm_config=llm, config=config)
    assert sheet.input == "conversation"
    assert sheet.counts["prompts"] == 1 and sheet.counts["seeds"] == 2
    assert sheet.unusable["texts"] == sheet.counts["generated"] + sheet.unusable["unusable"]
    dataset = load_jsonl(tmp_path / "dataset.jsonl", ["asks-again"])
    assert dataset.context_kind() == "conversation" and len(dataset.examples) == sheet.counts["final"]
    rows = [json.loads(line) for line in (tmp_path / "dataset.jsonl").read_text().splitlines()]
    seeds = {row["text"]: row for row in rows if row["kind"] == "seed"}
    assert seeds["Then just tell me roughly how much she has."]["context"][0]["role"] == "user"
    assert seeds["What fees do you charge for transfers abroad?"]["context"] == []
    assert all(len(row["context"]) >= 2 for row in rows if row["kind"] != "seed")
    assert "Judges conversations" in (tmp_path / "datasheet.md").read_text()
    assert Datasheet.model_validate_json((tmp_path / "datasheet.json").read_text()).input == "conversation"


@pytest.mark.slow
def test_a_conversation_policys_seeds_train_a_conversation_guard(tmp_path: Path):
    from builder.data.dataset import write_jsonl
    from builder.export import ExportConfig, export_bundle
    from builder.train.classifier import TrainConfig, train

    policy = load_policy(ROOT / "examples" / "policies" / "asks-again.yaml")
    write_jsonl(tmp_path / "seeds.jsonl", policy.seed_examples())
    config = TrainConfig(epochs=2, max_length=64, context_tokens=32, threads=2)
    train(load_jsonl(tmp_path / "seeds.jsonl", [policy.name]), tmp_path / "run", config)
    gates = ExportConfig(
        name=policy.name, version="0.1.0", max_int8_diff=1.0, max_int8_mean_diff=1.0, min_int8_agreement=0
    )
    export_bundle(tmp_path / "run", tmp_path / "bundle", gates)
    manifest = GuardBundle.load(tmp_path / "bundle").manifest
    assert (manifest.input.kind, manifest.input.context_tokens) == ("conversation", 32)
    assert [label.name for label in manifest.labels] == ["asks-again"]


@pytest.mark.parametrize(
    "argv",
    [
        ["instruct", "--bundle", "b", "--policy", "{policy}", "--out", "o"],
        ["adversarial", "{policy}", "--data", "d.jsonl", "--out", "o"],
        ["multitask", "--out", "o", "--policy-data", "{policy}=d.jsonl"],
    ],
    ids=lambda argv: argv[0],
)
def test_commands_that_read_single_messages_refuse_a_conversation_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
):
    from builder.cli import main

    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    assert main([arg.format(policy=path) for arg in argv]) == 2
    assert f"{path}: guard-build {argv[0]} builds guards that read single messages" in capsys.readouterr().err
