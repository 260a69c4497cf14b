"""The policy-task bank from seed sets, and pretraining the encoder on its (line, text) pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.errors import BuilderError
from builder.recipes.policy_tasks import load_tasks, split_tasks
from builder.recipes.pretrain import training_batches

INTENTS = ["translate", "book_flight", "pto_balance", "weather", "timer", "oos"]
FUNCTIONALITIES = ["slur_h", "threat_dir_h", "profanity_nh", "derog_dehum_h"]


def _seed_sets(folder: Path) -> Path:
    """Two small seed sets in the shared/train format: intents (one, oos, without a meaning) and HateCheck cases."""
    rows = {
        "clinc150_queries": [
            {"text": f"{intent.replace('_', ' ')} request {i}", "meta": {"intent": intent}}
            for intent in INTENTS
            for i in range(10)
        ],
        "hatecheck": [
            {"text": f"case {name} {i}", "meta": {"functionality": name}} for name in FUNCTIONALITIES for i in range(9)
        ],
    }
    for source, items in rows.items():
        (folder / source).mkdir(parents=True)
        lines = [
            json.dumps({"label": "safe", "source": source, "id": f"{source}-{n}", **item})
            for n, item in enumerate(items)
        ]
        (folder / source / "data.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_every_named_category_is_a_task_with_lines_and_texts(tmp_path: Path):
    tasks = load_tasks(_seed_sets(tmp_path / "seeds"))
    assert [t.name for t in tasks] == sorted(
        [f"clinc150_queries/{i}" for i in INTENTS if i != "oos"] + [f"hatecheck/{f}" for f in FUNCTIONALITIES]
    )
    by_name = {t.name: t for t in tasks}
    assert by_name["clinc150_queries/pto_balance"].lines[0] == "Asking the assistant about paid time off balance"
    assert by_name["hatecheck/threat_dir_h"].lines[0] == "Direct threats of violence against a protected group"
    for task in tasks:
        assert len(task.lines) >= 3 and len(set(task.lines)) == len(task.lines)
        assert len(task.texts) >= 9 and len(set(task.texts)) == len(task.texts)

    with pytest.raises(BuilderError, match="holds no seed set with labeled categories"):
        load_tasks(tmp_path / "empty")


def test_held_out_tasks_are_whole_tasks_apart_from_training(tmp_path: Path):
    tasks = load_tasks(_seed_sets(tmp_path / "seeds"))
    training, heldout = split_tasks(tasks, 0.2, seed=13)
    assert {t.name for t in training}.isdisjoint({t.name for t in heldout})
    assert sorted(t.name for t in training + heldout) == [t.name for t in tasks]
    # At least two of each source, so that a held-out task has a sibling to be told from.
    assert sorted(t.source for t in heldout) == ["clinc150_queries"] * 2 + ["hatecheck"] * 2
    assert split_tasks(tasks, 0.2, seed=13) == (training, heldout), "the split is the seed's"
    assert split_tasks(tasks, 0.2, seed=14) != (training, heldout)


def test_a_batch_never_holds_two_pairs_of_one_task(tmp_path: Path):
    tasks = load_tasks(_seed_sets(tmp_path / "seeds"))
    task_of_text = {text: task for task in tasks for text in task.texts}
    batches = training_batches(tasks, pairs_per_task=5, batch_size=4, seed=0)
    pairs = [pair for batch in batches for pair in batch]
    assert len(pairs) == 5 * len(tasks) and len(set(pairs)) == len(pairs)
    for batch in batches:
        assert 2 <= len(batch) <= 4
        assert len({task_of_text[text].name for text, _ in batch}) == len(batch)
        assert all(line in task_of_text[text].lines for text, line in batch)
    assert training_batches(tasks, 5, 4, seed=0) == batches


@pytest.mark.slow
def test_pretrain_writes_a_model_that_base_model_accepts(tmp_path: Path):
    from sentence_transformers import SentenceTransformer

    from builder.cli import main
    from builder.recipes.pretrain import pretrain_encoder
    from builder.train.run import base_model_path

    seeds, out = _seed_sets(tmp_path / "seeds"), tmp_path / "pretrain"
    args = ["pretrain", "--out", str(out), "--seeds", str(seeds), "--pairs-per-task", "2", "--batch-size", "4"]
    assert main([*args, "--max-length", "16", "--threads", "2", "--no-progress"]) == 0
    info = json.loads((out / "pretrain.json").read_text())
    assert info["training_tasks"] == 5 and info["pairs"] == 10
    assert sorted(info["heldout_tasks"]) == sorted(t.name for t in split_tasks(load_tasks(seeds))[1])
    model = SentenceTransformer(base_model_path(str(out / "model")), device="cpu")
    assert model.encode(["translate this"]).shape == (1, 384)
    assert pretrain_encoder([], out).pairs == 10, "a finished run is reused as it is"
