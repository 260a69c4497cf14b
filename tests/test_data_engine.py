"""The data engine on the real llama.cpp server, on a tiny budget: stages, kill and resume, a free re-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.cli import main as cli_main
from builder.data.candidates import (
    GenerationConfig,
    Messages,
    candidates_from_reply,
    cell_prompts,
    seed_prompts,
    text_problem,
)
from builder.data.curate import CurationConfig, Example, balance
from builder.data.dataset import load_jsonl
from builder.data.dimensions import Dimension, DimensionConfig, coverage_report, propose_dimensions, sample_cells
from builder.data.engine import DataConfig, Datasheet, build_dataset
from builder.data.policy import parse_policy
from builder.data.verify import DebateConfig
from builder.llm.client import LLMClient, LLMConfig, ResponseCache

ROOT = Path(__file__).resolve().parent.parent

POLICY = """\
name: salary-disclosure
description: The internal HR assistant of a company; it answers questions about leave, payroll dates and benefits.
violates:
  - Asking for the salary or bonus of another named employee
allowed:
  - Questions about one's own payslip, leave and benefits
seeds:
  - text: How much does Priya in marketing earn?
    label: violates
  - text: When is the next payday?
    label: complies
dimensions:
  persona: [new hire, team manager]
  phrasing: [direct question, casual chat]
"""

# Two pinned dimensions (no dimension request), one cell, one generation request, at most four candidates to debate.
TINY = DataConfig(
    cells=1,
    dimensions=DimensionConfig(max_dimensions=2, values_per_dimension=2),
    generation=GenerationConfig(per_prompt=2, kinds=["violating"], paraphrases_per_seed=0),
    # The machinery is under test here, not a 135M model's judgement: keep what it decides, however unsure.
    debate=DebateConfig(extra_round=False, min_confidence=0.0),
    progress=False,
)


def _llm_config(server) -> LLMConfig:
    return LLMConfig(base_url=server.base_url, model=server.model, structured_output="schema", max_concurrency=1)


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def test_cells_cover_every_pair_of_values():
    dimensions = [
        Dimension(name="topic", values=["a", "b", "c", "d"], source="pinned"),
        Dimension(name="persona", values=["x", "y", "z"], source="pinned"),
        Dimension(name="phrasing", values=["p", "q", "r", "s"], source="pinned"),
    ]
    cells = sample_cells(dimensions, 16)
    assert cells == sample_cells(dimensions, 16), "deterministic for a seed"
    assert len({tuple(c.values.values()) for c in cells}) == 16
    report = coverage_report(dimensions, cells, [(c.id, "violates") for c in cells[:3]])
    assert report.pairs_in_cells == report.pairs_total == 4 * 3 + 4 * 4 + 3 * 4
    assert report.cells_with_data == 3 and len(report.empty_cells) == 13
    # Fewer cells than a full cover: every value still appears (stratified), as evenly as possible.
    few = sample_cells(dimensions, 4)
    assert {c.values["topic"] for c in few} == {"a", "b", "c", "d"}


def test_prompts_without_seeds_fall_back_to_the_built_in_example():
    policy = parse_policy("name: p\ndescription: a bank bot\nviolates: [investment advice]\nallowed: [balances]\n")
    cells = sample_cells([Dimension(name="persona", values=["a", "b"], source="pinned")], 2)
    prompts = cell_prompts(policy, cells, GenerationConfig())
    assert len(prompts) == 6 and seed_prompts(policy, GenerationConfig()) == []
    assert all("pharmacy" in p.messages[1]["content"] for p in prompts)
    seeded = parse_policy(
        POLICY.replace("  - text: When", "  - text: Can I see Tom's bonus?\n    label: violates\n  - text: When")
    )
    violating = cell_prompts(seeded, cells, GenerationConfig())[0]
    assert "How much does Priya in marketing earn?" in violating.messages[2]["content"]


def test_unusable_text_is_recognised():
    assert text_problem("") == "empty"
    assert text_problem("hi there") == "too short"
    assert text_problem("Here are 3 messages that violate the policy:") is not None
    assert text_problem("pay pay pay pay pay pay pay pay pay") == "repetitive"
    assert text_problem("How much does Priya earn?", ["how much does priya earn"]) == "copied from the prompt"
    assert text_problem("Can you tell me what my colleague Tom earns per year?") is None
    prompt = cell_prompts(
        parse_policy(POLICY),
        sample_cells([Dimension(name="persona", values=["a", "b"], source="pinned")], 1),
        GenerationConfig(),
    )[0]
    kept, problems = candidates_from_reply(
        prompt, Messages(messages=["What is Tom's salary, exactly?", "What is Tom's salary exactly", ""])
    )
    assert [c.text for c in kept] == ["What is Tom's salary, exactly?"]
    assert problems == ["repeated in the same reply", "empty"]


def test_balance_drops_generated_rows_before_retrieved_ones():
    def example(i: int, kind: str, label: str) -> Example:
        return Example(
            text=f"message {i}", label=label, cell=None, kind=kind, prompt_id="p", candidate_id=str(i),
            verdict=label, confidence=0.9,
        )  # fmt: skip

    rows = [
        example(0, "compliant", "complies"),
        example(1, "violating", "violates"),
        example(2, "boundary", "violates"),
    ]
    rows += [example(3, "retrieved", "violates"), example(4, "retrieved", "violates")]
    kept, balance_round = balance(rows, CurationConfig(max_label_ratio=2.0))
    assert sorted(e.candidate_id for e in kept) == ["0", "3", "4"]
    assert balance_round.removed == {"label balance (violates)": 2}
    kept, _ = balance([*rows, example(5, "retrieved", "violates")], CurationConfig(max_label_ratio=2.0))
    assert [e.kind for e in kept].count("retrieved") == 2  # once the generated rows are gone, real ones go too


def test_dimensions_keep_pins_and_ask_the_llm_for_the_rest(llm_server, tmp_path: Path):
    import asyncio

    policy = parse_policy(POLICY)
    policy = policy.model_copy(update={"dimensions": {"persona": ["new hire", "team manager"]}})

    async def propose() -> tuple[list[Dimension], int]:
        async with LLMClient(_llm_config(llm_server), cache_dir=tmp_path / "cache") as llm:
            config = DimensionConfig(max_dimensions=2, values_per_dimension=3)
            return await propose_dimensions(policy, llm, config), llm.usage.requests + llm.usage.cache_hits

    dimensions, calls = asyncio.run(propose())
    assert dimensions[0] == Dimension(name="persona", values=["new hire", "team manager"], source="pinned")
    assert len(dimensions) == 2 and dimensions[1].source in ("llm", "default")
    assert 2 <= len(dimensions[1].values) <= 3
    assert calls >= 1


def test_a_killed_run_resumes_and_a_rerun_is_free(llm_server, tmp_path: Path):
    out = tmp_path / "data"
    (tmp_path / "policy.yaml").write_text(POLICY)
    script = f"""
import sys
from builder.llm.client import LLMConfig
from builder.data.engine import DataConfig, build_dataset
from builder.data.policy import load_policy
config = DataConfig.model_validate_json(sys.argv[1])
config.progress = False
llm = LLMConfig.model_validate_json(sys.argv[2])
build_dataset(load_policy({str(tmp_path / "policy.yaml")!r}), {str(out)!r}, llm_config=llm, config=config)
"""
    child = subprocess.Popen(
        [sys.executable, "-c", script, TINY.model_dump_json(), _llm_config(llm_server).model_dump_json()],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    verification = out / "stages" / "verification.jsonl"
    cache = ResponseCache(out / "cache")
    deadline = time.monotonic() + 600  # seconds on a busy machine; ~20 s on an idle one
    try:  # kill it in the middle of the first debate: the generation reply and one argument are cached
        while len(cache) < 2 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.poll() is None, "the run finished before it could be killed"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    cached_before, debated_before = len(cache), _lines(verification)
    assert cached_before >= 2 and _lines(out / "stages" / "generation.jsonl") == 1
    assert not (out / "dataset.jsonl").exists() and not (out / "datasheet.json").exists()
    # A write cut by the kill can leave a temporary file, never a half-written entry under its real name.
    assert all(cache.get(entry.stem) for entry in (out / "cache").glob("??/*.json") if not entry.name.startswith("."))

    sheet = build_dataset(parse_policy(POLICY), out, llm_config=_llm_config(llm_server), config=TINY)
    killed, resumed = sheet.llm_invocations
    # Every request of the resumed run was a new one: nothing done before the kill was asked again.
    assert len(cache) == cached_before + resumed.requests
    assert resumed.cache_hits >= 1, "the argument cached before the kill was reused"
    # The killed invocation's requests count in the run's usage: every cached reply was paid for once.
    assert killed.requests == cached_before and sheet.llm_usage.requests == len(cache)
    assert sheet.llm_usage.completion_tokens == killed.completion_tokens + resumed.completion_tokens > 0
    journal = [json.loads(line) for line in verification.read_text().splitlines()]
    assert len(journal) > debated_before
    assert not list(out.rglob(".tmp-*")) and not list(out.rglob("*.tmp")), "the resumed run swept temporary files"
    assert len({entry["candidate_id"] for entry in journal}) == len(journal), "no candidate debated twice"
    assert sheet.debate.candidates == len(journal) == sheet.counts["after_dedup"]

    dataset = load_jsonl(out / "dataset.jsonl", ["salary-disclosure"])
    rows = [json.loads(line) for line in (out / "dataset.jsonl").read_text().splitlines()]
    assert len(rows) == sheet.counts["final"] == len(dataset.examples) > 0
    given = {seed.text: seed.label for seed in parse_policy(POLICY).seeds}
    for row in rows:
        assert {"text", "labels", "cell", "kind", "prompt_id", "verdict", "confidence"} <= set(row)
        # The policy author's label is ground truth; everything else takes the judge's verdict.
        label = given[row["text"]] if row["kind"] == "seed" else row["verdict"]
        assert row["labels"] == (["salary-disclosure"] if label == "violates" else [])
    seeds = [entry for entry in journal if entry["candidate_id"].startswith("seed-")]
    assert len(seeds) == 2 and all(s["given_label"] and s["label"] == s["intended"] and not s["dropped"] for s in seeds)
    assert _lines(out / "transcripts.jsonl") == len(journal)
    stored = Datasheet.model_validate_json((out / "datasheet.json").read_text())
    assert stored.coverage.cells_total == 1 and stored.dimensions[0].source == "pinned"
    assert 0.0 <= (stored.debate.agreement_rate or 0.0) <= 1.0
    assert stored.unusable["texts"] == stored.counts["generated"] + stored.unusable["unusable"]
    judged_seeds = [s for s in seeds if s["verdict"]]
    assert stored.debate.labeled_seeds == len(judged_seeds)
    assert stored.debate.seed_agreement == sum(s["verdict"] == s["intended"] for s in judged_seeds)
    assert "## Debate" in (out / "datasheet.md").read_text()

    before = (out / "dataset.jsonl").read_bytes()
    again = build_dataset(parse_policy(POLICY), out, llm_config=_llm_config(llm_server), config=TINY)
    assert again.llm_invocations[-1].requests == 0, "a re-run of a finished run sends no request"
    assert len(again.llm_invocations) == 3
    assert again.llm_usage.requests == sheet.llm_usage.requests
    assert (out / "dataset.jsonl").read_bytes() == before


def test_cli_reports_bad_input_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndescription: d\nviolates: [a]\nallowed: [b]\nseeds:\n  - text: hi\n    label: sometimes\n")
    assert cli_main(["data", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert f"{bad}:7: seeds.0.label" in capsys.readouterr().err

    good = tmp_path / "good.yaml"
    good.write_text(POLICY)
    closed = "http://127.0.0.1:9/v1"  # the discard port: nothing listens on it here
    code = cli_main(["data", str(good), "--out", str(tmp_path / "o"), "--base-url", closed, "--model", "m",
                     "--no-progress"])  # fmt: skip
    assert code == 2
    assert "cannot reach the LLM endpoint http://127.0.0.1:9/v1" in capsys.readouterr().err
    assert not (tmp_path / "o" / "dataset.jsonl").exists()
