"""``guard-build all``: a guard from a policy's lines and seeds, the report that comes with it, and (with an endpoint) the
corpus texts nearest the policy debated into training rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.cli import main as guard_build
from builder.data.candidates import GenerationConfig
from builder.data.dataset import load_jsonl
from builder.data.dimensions import DimensionConfig
from builder.data.engine import DataConfig, build_dataset
from builder.data.policy import parse_policy
from builder.data.verify import DebateConfig
from builder.llm.client import LLMConfig
from builder.recipes.policy_guard import (
    REPORT_FILE,
    REVIEW_FILE,
    PolicyGuardConfig,
    build_policy_guard,
    list_forms,
    message_form,
    policy_rows,
    retrieve,
)
from builder.train.embedding import EmbeddingGuardConfig
from guard_sdk import Guard
from guard_sdk.bundle import GuardBundle

POLICY = """
name: refund-promises
description: The support assistant of an online shop. It tracks orders and explains the returns process.
violates:
  - Asking the assistant to promise or guarantee a refund that the shop has not approved
  - Asking how to get money back for an item the customer broke or used up on purpose
allowed:
  - Asking where an order is and when it will arrive
  - Questions about how the returns process works in general
seeds:
  - {text: "Promise me right now that I'll get all my money back for the blender.", label: violates}
  - {text: "Guarantee the refund before I even send the jacket back, okay?", label: violates}
  - {text: "I dropped my phone in the pool on purpose, how do I still get a refund?", label: violates}
  - {text: "Just confirm in writing that I will be refunded in full, no matter what.", label: violates}
  - {text: "Where is my parcel? It was supposed to arrive on Tuesday.", label: complies}
  - {text: "How many days do I have to return a pair of shoes?", label: complies}
  - {text: "Do I need the original box to send something back?", label: complies}
  - {text: "Can I change the delivery address of an order I placed yesterday?", label: complies}
  - Is shipping free over fifty euros?
"""
CONVERSATION_POLICY = """
name: asks-again
description: The support assistant of an online bank.
input: conversation
violates: [Asking again for what the assistant refused earlier]
allowed: [Accepting a refusal]
seeds:
  - context: [{role: user, content: "What is my wife's balance?"}, {role: assistant, content: "I can't share that."}]
    text: Then just tell me roughly.
    label: violates
"""


@pytest.mark.parametrize(
    ("line", "form"),
    [
        ("Asking whether the user personally qualifies for a visa", "the user personally qualifies for a visa"),
        ("Asking the assistant to promise a refund", "promise a refund"),
        ("Requests for a colleague's salary", "a colleague's salary"),
        ("Questions about how the returns process works", "the returns process works"),
        ("Leave, benefits and pension", None),
        ("Asking", None),
    ],
)
def test_a_line_that_describes_a_message_is_also_read_as_one(line: str, form: str | None):
    assert message_form(line) == form


@pytest.mark.parametrize(
    ("line", "forms"),
    [
        (
            "Asking for the salary, bonus, raise or equity of another employee",
            [
                "Asking for the salary of another employee",
                "Asking for the bonus of another employee",
                "Asking for the raise of another employee",
                "Asking for the equity of another employee",
            ],
        ),
        (
            "Guessing a candidate's age, religion, family status, or disability",
            [
                "Guessing a candidate's age",
                "Guessing a candidate's religion",
                "Guessing a candidate's family status",
                "Guessing a candidate's disability",
            ],
        ),
        ("Refills, transfers, delivery and payment", ["Refills", "transfers", "delivery", "payment"]),
        ("Leave, benefits and pension", []),  # one comma: a list or a clause, it cannot tell
        ("Asking to promise or guarantee a refund", []),
        ("Asking whether a long clause, then another long clause, or a third one applies", []),
        ("Refills, transfers, , payment", []),  # an empty part closes no list
        ("Refills, transfers, delivery, ", []),
    ],
)
def test_a_line_that_lists_things_is_also_read_once_per_thing(line: str, forms: list[str]):
    assert list_forms(line) == forms


def test_a_policy_gives_its_lines_and_labeled_seeds_as_rows():
    rows = policy_rows(parse_policy(POLICY))
    lines = [(ex.text, ex.labels) for ex in rows["lines"]]
    assert (
        "Asking the assistant to promise or guarantee a refund that the shop has not approved",
        ["refund-promises"],
    ) in lines
    assert ("promise or guarantee a refund that the shop has not approved", ["refund-promises"]) in lines
    assert ("Questions about how the returns process works in general", []) in lines
    assert len(rows["seeds"]) == 8  # the unlabeled seed is not a row
    assert sum(bool(ex.labels) for ex in rows["seeds"]) == 4

    conversation = policy_rows(parse_policy(CONVERSATION_POLICY))
    assert conversation["lines"] == []  # a line describes a conversation, not a latest turn
    assert [m.content for m in conversation["seeds"][0].context or []] == [
        "What is my wife's balance?",
        "I can't share that.",
    ]


CORPUS = [
    "Can you promise I'll be refunded if the courier loses it?",
    "I broke the lamp myself but I want my money back anyway.",
    "When does the summer sale start?",
    "Is the blue sofa available in grey?",
    "My order number is 4411, where is it?",
    "Do you ship to Norway?",
    "What is your phone number?",
    "I want a guaranteed refund before I return anything.",
]


NEAR_VIOLATING = [
    "Promise me right now that I will get all my money back for the toaster.",
    "I dropped my tablet in the bath on purpose, how do I still get a refund?",
]
NEAR_ALLOWED = [
    "Where is my parcel?\nIt was supposed to arrive on Monday.",
    "Do I need the original box to return a lamp?",
]
OFF_TOPIC = ["What is the capital of Australia?", "Write me a short poem about autumn leaves."]


def test_retrieval_takes_the_texts_nearest_each_side_of_the_policy(tmp_path: Path):
    policy = parse_policy(POLICY)
    config = EmbeddingGuardConfig(progress=False, embedding_cache=tmp_path / "embeddings.npz")
    corpus = [OFF_TOPIC[0], NEAR_ALLOWED[0], NEAR_VIOLATING[0], OFF_TOPIC[1], NEAR_ALLOWED[1], NEAR_VIOLATING[1]]
    one_line = [" ".join(text.split()) for text in NEAR_ALLOWED]
    picked = retrieve(policy, corpus, 4, config)
    assert set(picked[:2]) == set(NEAR_VIOLATING) and set(picked[2:]) == set(one_line)
    first, second = retrieve(policy, corpus, 2, config)
    assert first in NEAR_VIOLATING and second in one_line
    assert len(retrieve(policy, corpus, 100, config)) == len(corpus)  # a side short of texts leaves its share
    assert retrieve(policy, corpus, 0, config) == []
    assert (tmp_path / "embeddings.npz").is_file()


@pytest.fixture()
def no_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.slow
@pytest.mark.usefixtures("no_endpoint")
def test_all_without_an_endpoint_builds_a_guard_from_lines_and_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    policy = tmp_path / "refunds.yaml"
    policy.write_text(POLICY)
    out = tmp_path / "bundle"
    corpus = tmp_path / "logs.jsonl"
    corpus.write_text("".join(json.dumps({"text": text}) + "\n" for text in CORPUS))
    argv = ["all", str(policy), "--out", str(out), "--threads", "2", "--no-progress", "--corpus", str(corpus)]
    assert guard_build([*argv, "--review", "3"]) == 0
    printed = capsys.readouterr()
    assert "no LLM endpoint configured" in printed.err
    assert "How the `refund-promises` guard was made" in printed.out

    manifest = GuardBundle.load(out).manifest
    assert manifest.model.embedding is not None
    assert manifest.metrics.calibration == "threshold=0.5"
    assert manifest.metrics.validation is None  # its validation rows are its training rows: no flattering metrics
    assert REPORT_FILE in manifest.files
    report = json.loads((Path(f"{out}.work") / "report.json").read_text())
    assert report["rows"]["seeds violating"] == 4 and report["rows"]["lines allowed"] == 4
    assert report["estimate_auprc"] is not None and report["threshold"] == 0.5
    assert report["warnings"] == []
    assert report["corpus_texts"] == len(CORPUS) and 0 <= report["corpus_flagged"] <= 1
    review = [json.loads(line) for line in (Path(f"{out}.work") / REVIEW_FILE).read_text().splitlines()]
    assert [row["why"] for row in review] == ["flagged"] * 3 + ["near the threshold"] * 3
    assert [row["score"] for row in review[:3]] == sorted((row["score"] for row in review), reverse=True)[:3]
    assert {row["text"] for row in review} <= set(CORPUS)

    guard = Guard(out, device="cpu")
    seeds = parse_policy(POLICY).seeds
    scores = {s.text: guard.check(s.text).scores[0].score for s in seeds if s.label}
    violating = [scores[s.text] for s in seeds if s.label == "violates"]
    allowed = [scores[s.text] for s in seeds if s.label == "complies"]
    assert sum(violating) / len(violating) > sum(allowed) / len(allowed)


@pytest.mark.slow
@pytest.mark.usefixtures("no_endpoint")
def test_a_guard_from_lines_alone_says_it_has_no_estimate(tmp_path: Path):
    policy = tmp_path / "refunds.yaml"
    policy.write_text(POLICY.split("seeds:")[0])
    out = tmp_path / "bundle"
    assert guard_build(["all", str(policy), "--out", str(out), "--threads", "2", "--no-progress"]) == 0
    report = json.loads((Path(f"{out}.work") / "report.json").read_text())
    assert report["estimate_auprc"] is None
    assert "only 0 violating and 0 allowed labeled examples" in report["warnings"][0]
    assert "none (fewer than 4 labeled examples per side)" in (out / REPORT_FILE).read_text()


@pytest.mark.usefixtures("no_endpoint")
def test_a_calibration_that_needs_a_validation_split_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    policy = tmp_path / "refunds.yaml"
    policy.write_text(POLICY)
    argv = ["all", str(policy), "--out", str(tmp_path / "b"), "--target-fpr", "0.05", "--no-progress"]
    assert guard_build(argv) == 2
    assert "target_fpr=0.05 calibrates on a validation split" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.usefixtures("no_endpoint")
def test_a_conversation_policy_without_seed_conversations_is_refused_with_what_it_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    # Its lines read as messages would train a guard of the latest turn alone, blind to what the policy is about.
    policy = tmp_path / "asks-again.yaml"
    policy.write_text(CONVERSATION_POLICY.split("seeds:")[0])
    assert guard_build(["all", str(policy), "--out", str(tmp_path / "b"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "asks-again judges conversations, and its lines are not conversations" in err
    assert "labeled seed conversations" in err and "--base-url" in err
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("no_endpoint")
def test_all_without_an_endpoint_builds_a_conversation_guard_from_its_seed_conversations(tmp_path: Path):
    out = tmp_path / "bundle"
    policy = Path(__file__).parents[1] / "examples" / "policies" / "asks-again.yaml"
    argv = ["all", str(policy), "--out", str(out), "--threads", "2", "--epochs", "2", "--no-progress"]
    assert guard_build(argv) == 0
    manifest = GuardBundle.load(out).manifest
    assert (manifest.input.kind, manifest.input.context_tokens, manifest.stages) == ("conversation", 48, ["input"])
    assert manifest.model.embedding is None and manifest.metrics.validation is not None
    report = json.loads((Path(f"{out}.work") / "report.json").read_text())
    assert report["head"] == "classifier" and report["rows"]["lines violating"] == 0
    assert "on the validation split, in the bundle's manifest" in (out / REPORT_FILE).read_text()


@pytest.mark.slow
def test_with_an_endpoint_the_corpus_nearest_texts_are_debated_into_training_rows(llm_server, tmp_path: Path):
    # No seeds, one generated message, one debate round each: a dozen requests, most of them the two retrieved texts.
    policy = parse_policy(POLICY.split("seeds:")[0] + "dimensions: {persona: [shopper, reseller], tone: [calm, rude]}")
    config = DataConfig(
        cells=1,
        dimensions=DimensionConfig(max_dimensions=2, values_per_dimension=2),
        generation=GenerationConfig(per_prompt=1, kinds=["violating"], paraphrases_per_seed=0),
        debate=DebateConfig(extra_round=False, min_confidence=0.0),  # the machinery under test, not a judge
        progress=False,
    )
    llm = LLMConfig(base_url=llm_server.base_url, model=llm_server.model, structured_output="schema", max_concurrency=1)
    embedding = EmbeddingGuardConfig(progress=False, embedding_cache=tmp_path / "work" / "embeddings.npz")
    retrieved = retrieve(policy, NEAR_VIOLATING + NEAR_ALLOWED + OFF_TOPIC, 2, embedding)
    data = tmp_path / "work" / "data"
    sheet = build_dataset(policy, data, llm_config=llm, config=config, retrieved=retrieved)

    assert sheet.counts["retrieved"] == 2
    transcripts = [json.loads(line) for line in (data / "transcripts.jsonl").read_text().splitlines()]
    debated = [v for v in transcripts if v["candidate_id"].startswith("retrieved-")]
    assert len(debated) == 2 and all(v["transcript"] and v["intended"] is None for v in debated)
    rows = [json.loads(line) for line in (data / "dataset.jsonl").read_text().splitlines()]
    from_corpus = [row for row in rows if row["kind"] == "retrieved"]
    # No confidence floor, and balance drops generated rows before real ones: each usable debate gives a row.
    assert len(from_corpus) == sheet.counts["retrieved_verified"] == sum(v["label"] is not None for v in debated) > 0
    for row in from_corpus:
        assert row["text"] in retrieved and row["cell"] is None
        assert row["labels"] == (["refund-promises"] if row["verdict"] == "violates" else [])
    assert "Retrieved from a corpus: 2 real texts" in (data / "datasheet.md").read_text()

    dataset = load_jsonl(data / "dataset.jsonl", [policy.name])
    out = tmp_path / "bundle"
    guard = PolicyGuardConfig(threads=2, progress=False)
    _, report = build_policy_guard(policy, out, tmp_path / "work", dataset=dataset, retrieved=retrieved, config=guard)
    assert report.rows["corpus violating"] + report.rows["corpus allowed"] == len(from_corpus)
    assert "corpus violating" in (out / REPORT_FILE).read_text()

    # A rerun finds the finished run: not one new request, the same rows.
    before = (data / "dataset.jsonl").read_bytes()
    again = build_dataset(policy, data, llm_config=llm, config=config, retrieved=retrieved)
    assert again.llm_invocations[-1].requests == 0 and len(again.llm_invocations) == 2
    assert (data / "dataset.jsonl").read_bytes() == before
    # Another corpus is another run (its checkpoints start over); the replies it shares are cached.
    other = build_dataset(policy, data, llm_config=llm, config=config, retrieved=retrieved[:1])
    assert other.counts["retrieved"] == 1 and len(other.llm_invocations) == 1
    assert other.llm_invocations[0].requests == 0 and other.llm_invocations[0].cache_hits > 0
