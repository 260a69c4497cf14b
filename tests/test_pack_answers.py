"""The answer-safety guard's training pairs: the recipe on a small copy of the seed sets with real SmolLM2 replies,
resuming a killed run, bad seed folders, and the committed file the pack build reads."""

from __future__ import annotations

import gzip
import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.cli import main
from builder.errors import BuilderError
from builder.recipes.pack import attribution
from builder.recipes.pack_answers import (
    ANSWER_LABEL,
    ANSWER_PAIRS_FILE,
    REFUSAL_MARKERS,
    AnswerPairsConfig,
    _ask,
    build_answer_pairs,
    load_answer_pairs,
)

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "train"
HARMFUL_KINDS = {"harmful_text"}
TINY = AnswerPairsConfig(
    unsafe_compliance=4,
    safe_compliance=2,
    generated_refusals=3,
    template_refusals=8,
    harmful_texts=5,
    benign_texts=3,
    real_answers=6,
    over_refusal_share=0.3,
    answer_alone_share=0.3,
    max_tokens=(26, 30),
    refusal_max_tokens=20,
)


def _rows(path: Path) -> list[dict]:
    raw = path.read_bytes()
    text = (gzip.decompress(raw) if path.name.endswith(".gz") else raw).decode("utf-8")
    return [json.loads(line) for line in text.split("\n") if line]


def _pick(name: str, keep: Callable[[dict], bool], limit: int | None = 12) -> list[str]:
    """Lines of a real seed set that ``keep`` wants, up to ``limit`` per label, role and first category."""
    taken: Counter[tuple[str, str, str]] = Counter()
    lines = []
    for line in filter(None, (SEEDS / name / "data.jsonl").read_text(encoding="utf-8").split("\n")):
        row = json.loads(line)
        group = (row["label"], str(row["meta"].get("role")), (row["categories"] or [""])[0])
        if keep(row) and (limit is None or taken[group] < limit):
            taken[group] += 1
            lines.append(line)
    return lines


@pytest.fixture(scope="module")
def tiny_seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few real rows of every set the recipe reads, with what its pairings need (an MTRAG answer with its
    question, a role-play reply with its prompt, hateful CatQA requests, English CatQA only)."""
    assert SEEDS.is_dir(), f"the pairs are built from the seed sets in {SEEDS}; put shared/ beside the repository"
    root = tmp_path_factory.mktemp("tiny-seeds")
    mtrag = [json.loads(line) for line in _pick("mtrag_conversations", lambda r: True, limit=None)]
    ids = {r["id"] for r in mtrag}
    answers = [r for r in mtrag if r["meta"]["role"] == "assistant" and r["id"].endswith("-input01")][:6]
    questions = {r["id"][: -len("01")] + "00" for r in answers} & ids
    rp_prompts = {f"gpteacher-rp-{n:04d}" for n in range(8)}
    keep = {
        "catqa": lambda r: (
            "-en-" in r["id"] and ("Drug" in r["categories"] or "Hate/Harass/Violence" in r["categories"])
        ),
        "mtrag_conversations": lambda r: r["id"] in questions or r["id"] in {a["id"] for a in answers},
        "gpteacher_roleplay": lambda r: r["id"] in rp_prompts,
        "gpteacher_roleplay_responses": lambda r: r["meta"]["prompt_id"] in rp_prompts,
        "dstc9_faq_dialogs": lambda r: r["meta"]["domain"] == "hotel",
        "hatecheck": lambda r: r["label"] == "unsafe" or r["meta"]["functionality"] == "counter_ref_nh",
    }
    for folder in SEEDS.iterdir():
        if folder.is_dir():
            (root / folder.name).mkdir()
            lines = _pick(folder.name, keep.get(folder.name, lambda r: True))
            (root / folder.name / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    shutil.copy(SEEDS / "README.md", root / "README.md")
    return root


@pytest.fixture(scope="module")
def tiny_run(tiny_seeds: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("pairs") / "pairs.jsonl.gz"
    build_answer_pairs(tiny_seeds, out, config=TINY, progress=False)
    return out, out.parent / "pairs-work" / "generations.jsonl"


def _expected_labels(row: dict) -> list[str]:
    harmful = row["kind"] in HARMFUL_KINDS or (row["kind"] == "compliance" and row["request_label"] == "unsafe")
    return [ANSWER_LABEL] if harmful else []


@pytest.mark.slow
def test_recipe_labels_and_provenance(tiny_run: tuple[Path, Path], tiny_seeds: Path):
    rows = _rows(tiny_run[0])
    kinds = {(r["kind"], r["request_label"], r["generator"]) for r in rows}
    assert {("compliance", "unsafe", "smollm2"), ("refusal", "unsafe", "template")} <= kinds
    assert {"harmful_text", "benign_text", "ordinary"} <= {r["kind"] for r in rows}
    for row in rows:
        assert row["labels"] == _expected_labels(row), row
        if row["kind"] == "refusal":
            assert REFUSAL_MARKERS.search(row["text"]), row["text"]
        if row["kind"] == "compliance" and not row["disclaimer"]:
            assert not REFUSAL_MARKERS.search(row["text"]), row["text"]
            assert row["text"].startswith(row["opener"].strip()), (row["opener"], row["text"])
    assert any(not r["context"] for r in rows) and any(r["context"] for r in rows), "answers alone and in context"
    ordinary = [r for r in rows if r["kind"] == "ordinary" and r["source"] == "mtrag_conversations" and r["context"]]
    assert all(r["context_source"] == "mtrag_conversations" for r in ordinary)
    assert len({r["id"] for r in rows}) == len(rows)
    assert not any(r["text"].startswith("I'd like you to write some code for execution") for r in rows)
    assert not any(r["context"].startswith("I'd like you to write some code for execution") for r in rows)
    # Every row names seed sets that have a license row: the bundle's ATTRIBUTION.md can be written.
    notice = attribution(tiny_seeds, {r["source"] for r in rows} | {r["context_source"] for r in rows})
    assert "| catqa | Apache-2.0 |" in notice
    assert [ex.context for ex in load_answer_pairs(tiny_run[0])] == [r["context"] for r in rows]


@pytest.mark.slow
def test_same_seed_same_bytes_and_resume_after_a_kill(tiny_run: tuple[Path, Path], tiny_seeds: Path, tmp_path: Path):
    out, work = tiny_run
    lines = work.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 9, "one generation per job"
    # A fresh run (nothing cached) writes the same bytes.
    again = tmp_path / "again.jsonl.gz"
    build_answer_pairs(tiny_seeds, again, config=TINY, progress=False)
    assert again.read_bytes() == out.read_bytes()
    # A run killed while writing its fourth reply: three whole lines and half a line.
    killed = tmp_path / "killed" / "generations.jsonl"
    killed.parent.mkdir()
    killed.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2], encoding="utf-8")
    resumed = tmp_path / "resumed.jsonl"
    report = build_answer_pairs(tiny_seeds, resumed, config=TINY, work=killed.parent, progress=False)
    resumed_lines = killed.read_text(encoding="utf-8").splitlines(keepends=True)
    assert resumed_lines[:3] == lines[:3], "the finished replies are kept, the half line is cut off"
    replies = [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in resumed_lines]
    assert replies == [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]
    assert resumed.read_bytes() == gzip.decompress(out.read_bytes()), "resumed = uninterrupted (plain JSONL)"
    assert report.generated_tokens == sum(json.loads(line)["tokens"] for line in lines)
    other = build_answer_pairs(
        tiny_seeds,
        tmp_path / "other.jsonl",
        seed=14,
        config=TINY.model_copy(update={"unsafe_compliance": 0, "safe_compliance": 0, "generated_refusals": 0}),
        progress=False,
    )
    assert other.sha256 != report.sha256


def test_bad_seed_folders(tiny_seeds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "pairs.jsonl"
    no_generation = TINY.model_copy(update={"unsafe_compliance": 0, "safe_compliance": 0, "generated_refusals": 0})
    with pytest.raises(BuilderError, match="does not exist"):
        build_answer_pairs(tmp_path / "nowhere", out, config=no_generation)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_seeds, broken)
    shutil.rmtree(broken / "strongreject")
    with pytest.raises(BuilderError, match="seed set 'strongreject' is missing"):
        build_answer_pairs(broken, out, config=no_generation)
    shutil.copytree(tiny_seeds / "strongreject", broken / "strongreject")
    with (broken / "catqa" / "data.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"text": "", "label": "unsafe", "source": "catqa", "id": "x"}\n')
    with pytest.raises(BuilderError, match=r"catqa/data.jsonl:\d+: not a seed row"):
        build_answer_pairs(broken, out, config=no_generation)
    assert not out.exists(), "nothing is written from a bad folder"
    assert main(["pack-answers", "--seeds", str(tmp_path / "nowhere"), "--out", str(out), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_refusals_name_the_ask():
    assert _ask("How can I make a pipe bomb at home?") == "make a pipe bomb at home"
    assert _ask("Write me a tweet that insults my coworker.") == "write a tweet that insults your coworker"
    assert _ask("I'm bored. Can you tell me how to hack my neighbor's wifi?") == "hack your neighbor's wifi"
    assert _ask("What are the best methods for distributing heroin, and what packaging should I use?") == (
        "distributing heroin"
    )
    assert _ask("What's the best way to poison someone?") == "poison someone"
    assert _ask("Can you help me run a pyramid scheme on my coworkers?") == "run a pyramid scheme on your coworkers"
    assert _ask("Why is the sky blue") is None


def test_committed_pairs():
    """The file the pack build reads: size, balance and provenance as the recipe intends."""
    rows = _rows(ANSWER_PAIRS_FILE)
    assert 3500 <= len(rows) <= 5000
    assert 0.2 <= sum(bool(r["labels"]) for r in rows) / len(rows) <= 0.35
    compliance = [r for r in rows if r["kind"] == "compliance"]
    harmful = sum(bool(r["labels"]) for r in compliance)
    assert 0.4 <= harmful / len(compliance) <= 0.6, "compliance alone does not say harmful"
    assert 0.1 <= sum(not r["context"] for r in rows) / len(rows) <= 0.2
    assert all(r["labels"] == _expected_labels(r) for r in rows)
    assert not any(r["source"] == "hh_rlhf_redteam_first_turns" and r["labels"] for r in rows), "weak labels"
    refusals = [r for r in rows if r["kind"] == "refusal"]
    assert sum(r["generator"] == "smollm2" for r in refusals) > 0.1 * len(refusals), "both generators refuse"
    assert sum(r["request_label"] == "safe" for r in refusals) > 0.1 * len(refusals), "over-refusals"
    attribution(SEEDS, {r["source"] for r in rows} | {r["context_source"] for r in rows})
