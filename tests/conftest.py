"""Session fixtures: real bundles trained from the real all-MiniLM-L6-v2 and exported by our own builder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
DEMO_DATA = ROOT / "examples" / "data" / "demo.jsonl"


@pytest.fixture(scope="session")
def demo_rows() -> list[dict]:
    return [json.loads(line) for line in DEMO_DATA.read_text().splitlines()]


@pytest.fixture(scope="session")
def multi_label_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-label (abuse, injection) model trained on the shipped demo data: good enough to test behaviour."""
    from builder.dataset import load_jsonl
    from builder.train import TrainConfig, train

    run = tmp_path_factory.mktemp("multi-run")
    train(load_jsonl(DEMO_DATA), run, TrainConfig(epochs=3, max_length=64, learning_rate=1e-4, threads=2))
    return run


@pytest.fixture(scope="session")
def multi_label_bundle(multi_label_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from builder.export import ExportConfig, export_bundle

    folder = tmp_path_factory.mktemp("bundles")
    notice = folder / "NOTICE.md"
    notice.write_text("Trained on examples/data/demo.jsonl; see examples/data/README.md for its sources.\n")
    out = folder / "demo"
    export_bundle(
        multi_label_run,
        out,
        ExportConfig(name="demo", version="1.0.0", keep_fp32=True, extra_files={"NOTICE.md": notice}),
    )
    return out


@pytest.fixture(scope="session")
def binary_bundle(demo_rows: list[dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-label model trained for a few steps only: exercises the binary path, not accuracy."""
    from builder.dataset import load_jsonl
    from builder.export import ExportConfig, export_bundle
    from builder.train import TrainConfig, train

    work = tmp_path_factory.mktemp("binary")
    data = work / "train.jsonl"
    rows = [{"text": r["text"], "labels": ["injection"] if "injection" in r["labels"] else []} for r in demo_rows[:160]]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train(load_jsonl(data), work / "run", TrainConfig(max_steps=4, max_length=32, threads=2))
    out = work / "bundle"
    # A barely trained model sits near its thresholds, where int8 flips decisions: loosen that gate only.
    export_bundle(work / "run", out, ExportConfig(name="binary", min_int8_agreement=0.0))
    return out


@pytest.fixture(scope="session")
def llm_server():
    """The embedded llama.cpp server with SmolLM2-135M-Instruct on 127.0.0.1, shared by every test that needs an LLM."""
    from builder.local_server import LocalLLMServer

    with LocalLLMServer() as server:
        yield server
