"""Dimension mapping: the axes along which messages to the guarded assistant differ, and the cells to fill.

The LLM proposes dimension names (topic, persona, phrasing, ...) and values for each; the policy's pinned
dimensions replace proposals of the same name and are never sent to the LLM. Cells are combinations of one value
per dimension, chosen greedily so that every pair of values of two dimensions appears in some cell (pairwise
coverage) before any combination repeats a value more than needed (stratified fill).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Annotated

from pydantic import BaseModel, Field, WithJsonSchema

from ..errors import LLMOutputError
from ..llm.client import LLMClient, Message
from .policy import Policy

__all__ = [
    "Cell",
    "CoverageReport",
    "Dimension",
    "DimensionConfig",
    "coverage_report",
    "propose_dimensions",
    "sample_cells",
]

# Used when the LLM proposes too little; generic enough to make sense for any assistant's users.
DEFAULT_DIMENSIONS: dict[str, list[str]] = {
    "phrasing": ["direct question", "indirect request", "hypothetical scenario", "short casual chat"],
    "persona": ["first-time user", "frustrated customer", "expert professional", "curious student"],
    "register": ["formal", "casual", "terse", "emotional"],
}

SYSTEM = (
    "You help build test data for an AI assistant's content policy. You answer with one JSON object and "
    "nothing else. Keep every value short: two to five plain words."
)

# One worked example on another assistant, so that small models see the exact shape wanted.
EXAMPLE_POLICY = (
    "Assistant: a pharmacy chatbot that answers questions about orders and opening hours.\n"
    "A message VIOLATES the policy when it is:\n- asking for prescription drug doses or how to get drugs without a "
    "prescription\nA message COMPLIES when it is:\n- questions about orders, delivery, opening hours, store services"
)
EXAMPLE_NAMES = ["topic", "user situation", "phrasing", "urgency"]
EXAMPLE_VALUES = {
    "topic": ["painkiller doses", "order delivery", "antibiotics without prescription", "store opening hours"],
}


class DimensionConfig(BaseModel):
    max_dimensions: int = Field(default=4, ge=1, le=8)
    values_per_dimension: int = Field(default=4, ge=2, le=10)
    seed: int = 13


class Dimension(BaseModel):
    name: str
    values: list[str] = Field(min_length=2)
    source: str
    """``pinned`` (policy file), ``llm`` (proposed) or ``default`` (the builder's fallback)."""


class Cell(BaseModel):
    id: str
    values: dict[str, str]

    def describe(self) -> str:
        return "; ".join(f"{name}: {value}" for name, value in self.values.items())


def _short_list(most: int) -> WithJsonSchema:
    """Schema-only limits (the grammar enforces them; validation stays lenient): small models loop without them."""
    return WithJsonSchema(
        {"type": "array", "items": {"type": "string", "minLength": 2, "maxLength": 40}, "minItems": 1, "maxItems": most}
    )


class _DimensionNames(BaseModel):
    dimensions: Annotated[list[str], _short_list(6)]


class _DimensionValues(BaseModel):
    values: Annotated[list[str], _short_list(10)]


def _names_messages(policy: Policy, count: int) -> list[Message]:
    ask = "{policy}\n\nName {count} dimensions along which messages that users send to this assistant differ."
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": ask.format(policy=EXAMPLE_POLICY, count=4)},
        {"role": "assistant", "content": json.dumps({"dimensions": EXAMPLE_NAMES})},
        {"role": "user", "content": ask.format(policy=policy.rules_text(), count=count)},
    ]


def _values_messages(policy: Policy, dimension: str, count: int) -> list[Message]:
    ask = (
        "{policy}\n\nDimension: {dimension}\nList {count} different values of this dimension for messages users "
        "send to this assistant. Include values that lead to violations and values that are allowed."
    )
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": ask.format(policy=EXAMPLE_POLICY, dimension="topic", count=4)},
        {"role": "assistant", "content": json.dumps({"values": EXAMPLE_VALUES["topic"]})},
        {"role": "user", "content": ask.format(policy=policy.rules_text(), dimension=dimension, count=count)},
    ]


def clean_value(value: str, *, max_words: int = 6) -> str | None:
    """A usable short label, or None (empty, too long, markup, or copied from the worked example)."""
    text = re.sub(r"\s+", " ", value).strip().strip(".,;:-").strip()
    if not text or len(text) > 60 or len(text.split()) > max_words or re.search(r"[{}\[\]<>\"`]", text):
        return None
    if sum(ch.isalpha() for ch in text) < max(2, len(text) // 2):
        return None
    copied = {v.lower() for v in itertools.chain(EXAMPLE_NAMES, *EXAMPLE_VALUES.values())}
    return None if text.lower() in copied and text.lower() not in DEFAULT_DIMENSIONS else text


def _distinct(values: Sequence[str], limit: int) -> list[str]:
    seen: dict[str, str] = {}
    for value in values:
        if (cleaned := clean_value(value)) and cleaned.lower() not in seen:
            seen[cleaned.lower()] = cleaned
    return list(seen.values())[:limit]


async def propose_dimensions(policy: Policy, llm: LLMClient, config: DimensionConfig | None = None) -> list[Dimension]:
    """Pinned dimensions first, then the LLM's proposals, then defaults until there are at least two."""
    config = config or DimensionConfig()
    dimensions = [
        Dimension(name=name, values=_distinct(values, len(values)) or values, source="pinned")
        for name, values in policy.dimensions.items()
    ]
    taken = {d.name.lower() for d in dimensions}
    wanted = config.max_dimensions - len(dimensions)
    names: list[str] = []
    if wanted > 0:
        try:
            proposed = await llm.structured(
                _names_messages(policy, wanted), _DimensionNames, seed=config.seed, max_tokens=120
            )
            names = [n for n in _distinct(proposed.dimensions, 6) if n.lower() not in taken][:wanted]
        except LLMOutputError:
            names = []

    async def values_for(name: str) -> Dimension | None:
        try:
            reply = await llm.structured(
                _values_messages(policy, name, config.values_per_dimension),
                _DimensionValues,
                seed=config.seed,
                max_tokens=40 + 15 * config.values_per_dimension,
            )
        except LLMOutputError:
            reply = _DimensionValues(values=["", ""])
        values = _distinct(reply.values, config.values_per_dimension)
        if len(values) >= 2:
            return Dimension(name=name, values=values, source="llm")
        if name.lower() in DEFAULT_DIMENSIONS:
            values = DEFAULT_DIMENSIONS[name.lower()][: config.values_per_dimension]
            return Dimension(name=name, values=values, source="default")
        return None

    proposed_dimensions = await asyncio.gather(*(values_for(name) for name in names))
    dimensions += [d for d in proposed_dimensions if d is not None]
    for name, values in DEFAULT_DIMENSIONS.items():
        if len(dimensions) >= min(2, config.max_dimensions):
            break
        if name not in {d.name.lower() for d in dimensions}:
            dimensions.append(Dimension(name=name, values=values[: config.values_per_dimension], source="default"))
    return dimensions


def sample_cells(dimensions: Sequence[Dimension], count: int, seed: int = 13) -> list[Cell]:
    """``count`` cells: greedy pairwise cover first (each row takes the most uncovered pairs), then the least-used
    values. Deterministic for a seed."""
    rng = random.Random(seed)
    names = [d.name for d in dimensions]
    uncovered = _all_pairs(dimensions)
    use: Counter[tuple[str, str]] = Counter()
    rows: list[dict[str, str]] = []
    seen: set[tuple[str, ...]] = set()
    total = 1
    for d in dimensions:
        total *= len(d.values)
    while len(rows) < min(count, total):
        best: dict[str, str] | None = None
        best_score: tuple[int, int] = (-1, 0)
        for _ in range(40):
            row = _greedy_row(dimensions, uncovered, use, rng)
            key = tuple(row[n] for n in names)
            if key in seen:
                continue
            covered = sum(1 for pair in _row_pairs(row, names) if pair in uncovered)
            balance = -sum(use[(n, row[n])] for n in names)
            if (covered, balance) > best_score:
                best, best_score = row, (covered, balance)
        if best is None:  # every sampled row exists already: take any unused combination
            best = next(
                dict(zip(names, combo, strict=True))
                for combo in itertools.product(*(d.values for d in dimensions))
                if combo not in seen
            )
        seen.add(tuple(best[n] for n in names))
        uncovered -= set(_row_pairs(best, names))
        use.update((n, best[n]) for n in names)
        rows.append(best)
    return [Cell(id=f"c{i:03d}", values=row) for i, row in enumerate(rows)]


def _all_pairs(dimensions: Sequence[Dimension]) -> set[tuple[tuple[str, str], tuple[str, str]]]:
    return {
        ((a.name, va), (b.name, vb))
        for a, b in itertools.combinations(dimensions, 2)
        for va in a.values
        for vb in b.values
    }


def _row_pairs(row: Mapping[str, str], names: Sequence[str]) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    return [((a, row[a]), (b, row[b])) for a, b in itertools.combinations(names, 2)]


def _greedy_row(
    dimensions: Sequence[Dimension],
    uncovered: set[tuple[tuple[str, str], tuple[str, str]]],
    use: Counter[tuple[str, str]],
    rng: random.Random,
) -> dict[str, str]:
    """Starts from an uncovered pair (so that every row adds one), then the other dimensions in random order, each
    taking the value that covers most new pairs with those chosen so far."""
    order = list(dimensions)
    rng.shuffle(order)
    row: dict[str, str] = {}
    if uncovered:
        (name_a, value_a), (name_b, value_b) = rng.choice(sorted(uncovered))
        row = {name_a: value_a, name_b: value_b}
    for dimension in order:
        if dimension.name in row:
            continue

        def gain(value: str, name: str = dimension.name) -> tuple[int, int, float]:
            new = sum(
                1
                for other, chosen in row.items()
                if ((other, chosen), (name, value)) in uncovered or ((name, value), (other, chosen)) in uncovered
            )
            return new, -use[(name, value)], rng.random()

        row[dimension.name] = max(dimension.values, key=gain)
    return {d.name: row[d.name] for d in dimensions}


class CoverageReport(BaseModel):
    dimensions: dict[str, dict[str, dict[str, int]]]
    """dimension -> value -> label -> examples."""
    pairs_total: int
    pairs_in_cells: int
    pairs_with_data: int
    cells_total: int
    cells_with_data: int
    empty_cells: list[str]


def coverage_report(
    dimensions: Sequence[Dimension], cells: Sequence[Cell], examples: Sequence[tuple[str, str]]
) -> CoverageReport:
    """``examples`` are (cell id, label) pairs of the final dataset; seeds and their paraphrases have no cell."""
    by_id = {cell.id: cell for cell in cells}
    counts: dict[str, dict[str, dict[str, int]]] = {d.name: {value: {} for value in d.values} for d in dimensions}
    filled: set[str] = set()
    for cell_id, label in examples:
        cell = by_id.get(cell_id)
        if cell is None:
            continue
        filled.add(cell_id)
        for name, value in cell.values.items():
            bucket = counts.setdefault(name, {}).setdefault(value, {})
            bucket[label] = bucket.get(label, 0) + 1
    names = [d.name for d in dimensions]
    in_cells = {pair for cell in cells for pair in _row_pairs(cell.values, names)}
    with_data = {pair for cell in cells if cell.id in filled for pair in _row_pairs(cell.values, names)}
    return CoverageReport(
        dimensions=counts,
        pairs_total=len(_all_pairs(dimensions)),
        pairs_in_cells=len(in_cells),
        pairs_with_data=len(with_data),
        cells_total=len(cells),
        cells_with_data=len(filled),
        empty_cells=[cell.id for cell in cells if cell.id not in filled],
    )
