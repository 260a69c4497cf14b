"""The data engine: policy -> dimensions -> cells -> candidates -> curation -> debate -> balanced dataset.

    datasheet = build_dataset(load_policy("policy.yaml"), "runs/visa-data")            # embedded LLM
    datasheet = build_dataset(policy, out, llm_config=LLMConfig.resolve(base_url=..., model=...))
    datasheet = build_dataset(policy, out, retrieved=texts)  # real messages debated beside the generated ones

The output folder holds, when a run is complete:

- ``dataset.jsonl``: ``{"text", "labels": [policy name] or [], "cell", "kind", "prompt_id", "candidate_id",
  "verdict", "confidence"}`` rows, readable by :func:`builder.data.dataset.load_jsonl`;
- ``datasheet.json`` / ``datasheet.md``: counts, coverage, debate stats, curation rounds, LLM usage (summed over
  every invocation of the run, a killed one included), throughput;
- ``transcripts.jsonl``: every candidate's debate.

Those three are written last, each through a temporary file and a rename: a file there is complete. While a run
works, ``stages/`` holds its checkpoints (dimensions, cells, one journal line per finished generation prompt and
per finished debate, the LLM usage of each invocation) and ``cache/`` every LLM reply. A run killed at any point
continues from there; a run of the same policy, settings and retrieved texts sends no request at all. Changing one
of them discards the checkpoints but not the cache, so unchanged prompts stay free.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from .._files import write_atomic
from ..checkpoint import RunFolder, UsageLog, fingerprint
from ..errors import BuilderError, LLMOutputError
from ..llm.client import LLMClient, LLMConfig, LLMUsage, ResponseCache
from ..llm.local_server import EmbeddedModel, llm_endpoint
from .candidates import (
    Candidate,
    GenerationConfig,
    GenerationPrompt,
    candidates_from_reply,
    cell_prompts,
    reply_budget,
    reply_schema,
    retrieved_candidates,
    seed_candidates,
    seed_prompts,
)
from .curate import CurationConfig, CurationRound, Example, balance, filter_and_dedup
from .dimensions import (
    CoverageReport,
    Dimension,
    DimensionConfig,
    coverage_report,
    propose_dimensions,
    sample_cells,
)
from .policy import Policy, PolicyInput
from .verify import DebateConfig, DebateStats, Verdict, debate, debate_stats

__all__ = ["DataConfig", "Datasheet", "abuild_dataset", "build_dataset"]

logger = logging.getLogger("builder.data.engine")

DATASET_FILE = "dataset.jsonl"
DATASHEET_JSON = "datasheet.json"
DATASHEET_MD = "datasheet.md"
TRANSCRIPTS_FILE = "transcripts.jsonl"
OUTPUTS = (DATASET_FILE, DATASHEET_JSON, DATASHEET_MD, TRANSCRIPTS_FILE)

T = TypeVar("T")


class DataConfig(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)  # field docstrings: guard-build's help

    cells: int = Field(default=12, ge=1)
    """Cells of the dimension grid to generate for (pairwise coverage needs about values² of them)."""
    dimensions: DimensionConfig = DimensionConfig()
    generation: GenerationConfig = GenerationConfig()
    debate: DebateConfig = DebateConfig()
    curation: CurationConfig = CurationConfig()
    progress: bool = Field(default=True, exclude=True)
    """Progress bars on stderr; not part of what makes a run."""


class StageThroughput(BaseModel):
    items: int
    """Items this invocation produced (a resumed run counts only its own)."""
    seconds: float
    per_minute: float | None


class Datasheet(BaseModel):
    policy: str
    description: str
    input: PolicyInput = "message"
    """``conversation``: rows are conversations (``context``: the earlier turns; ``text``: the latest one)."""
    model: str
    created_at: str
    counts: dict[str, Any]
    unusable: dict[str, Any]
    coverage: CoverageReport
    dimensions: list[Dimension]
    debate: DebateStats
    curation: list[CurationRound]
    llm_usage: LLMUsage
    """Of the whole run: every invocation, killed ones included."""
    llm_invocations: list[LLMUsage]
    """Per invocation, oldest first; the last is the one that wrote this datasheet."""
    throughput: dict[str, StageThroughput]
    config: dict[str, Any]


def build_dataset(
    policy: Policy,
    out_dir: str | Path,
    *,
    llm_config: LLMConfig | None = None,
    config: DataConfig | None = None,
    embedded: EmbeddedModel = "smollm2",
    retrieved: Sequence[str] = (),
) -> Datasheet:
    """Run (or resume) the data engine; starts and stops the embedded LLM when no endpoint is configured."""
    with llm_endpoint(llm_config, embedded) as resolved:
        llm = LLMClient(resolved, cache_dir=Path(out_dir) / "cache")
        return llm.run(abuild_dataset(policy, out_dir, llm, config, retrieved=retrieved))


async def abuild_dataset(
    policy: Policy,
    out_dir: str | Path,
    llm: LLMClient,
    config: DataConfig | None = None,
    *,
    retrieved: Sequence[str] = (),
) -> Datasheet:
    """``retrieved``: real messages (e.g. a corpus's nearest to the policy) debated as candidates of kind
    ``retrieved``, neither paraphrased nor generated from; message policies only."""
    config = config or DataConfig()
    if retrieved and policy.input != "message":
        raise BuilderError(f"{policy.name} judges conversations: retrieved candidates are single messages")
    inputs: dict[str, Any] = {
        "policy": policy.model_dump(mode="json"),
        "config": config.model_dump(mode="json"),
        "model": llm.config.model or "",
    }
    if retrieved:  # a changed corpus restarts the run; without one, a run's fingerprint is what it was
        inputs["retrieved"] = list(retrieved)
    run = RunFolder(Path(out_dir), fingerprint(inputs), outputs=OUTPUTS)
    ResponseCache(run.out / "cache").sweep()  # its temporary files, left by a killed run
    with run.usage(llm) as usage:
        return await _build(policy, run, llm, config, usage, retrieved_candidates(retrieved))


async def _build(
    policy: Policy,
    run: RunFolder,
    llm: LLMClient,
    config: DataConfig,
    usage: UsageLog,
    retrieved: list[Candidate],
) -> Datasheet:
    throughput: dict[str, StageThroughput] = {}

    dimensions = await run.stage(
        "dimensions", list[Dimension], lambda: propose_dimensions(policy, llm, config.dimensions)
    )
    cells = sample_cells(dimensions, config.cells, config.dimensions.seed)
    run.save("cells", [cell.model_dump() for cell in cells])

    # Generation: one journal line per finished prompt.
    prompts = seed_prompts(policy, config.generation) + cell_prompts(policy, cells, config.generation)
    generation = run.journal("generation")
    done = {entry["prompt_id"] for entry in generation.entries}
    pending = [p for p in prompts if p.id not in done]
    started = time.perf_counter()
    new_candidates = 0

    async def generate_one(prompt: GenerationPrompt) -> None:
        nonlocal new_candidates
        try:
            schema = reply_schema(prompt, config.generation)
            budget = reply_budget(prompt, config.generation)
            reply = await llm.structured(prompt.messages, schema, seed=config.dimensions.seed, max_tokens=budget)
            candidates, problems = candidates_from_reply(prompt, reply)
            error = None
        except LLMOutputError as exc:
            candidates, problems, error = [], [], str(exc)
        new_candidates += len(candidates)
        generation.append(
            {
                "prompt_id": prompt.id,
                "candidates": [c.model_dump() for c in candidates],
                "problems": problems,
                "error": error,
            }
        )

    await _each(pending, generate_one, "generating", config.progress)
    throughput["generation"] = _throughput(new_candidates, time.perf_counter() - started)

    entries = generation.entries
    generated = [Candidate.model_validate(c) for entry in entries for c in entry["candidates"]]
    problems = [problem for entry in entries for problem in entry["problems"]]
    failed_prompts = sum(1 for entry in entries if entry["error"])
    # Seeds first: of a group of near-duplicates the first stays, and the user's own examples should; real texts next.
    candidates, rounds = filter_and_dedup([*seed_candidates(policy), *retrieved, *generated], config.curation)

    # Verification: one journal line (with the transcript) per finished debate.
    verification = run.journal("verification")
    verified_ids = {entry["candidate_id"] for entry in verification.entries}
    to_verify = [c for c in candidates if c.id not in verified_ids]
    started = time.perf_counter()

    async def verify_one(candidate: Candidate) -> None:
        verdict = await debate(policy, candidate, llm, config.debate)
        verification.append(verdict.model_dump())

    await _each(to_verify, verify_one, "debating", config.progress)
    by_id = {v.candidate_id: v for v in map(Verdict.model_validate, verification.entries)}
    verdicts = [by_id[c.id] for c in candidates if c.id in by_id]
    new_verified = sum(1 for c in to_verify if by_id.get(c.id) and by_id[c.id].label)
    throughput["verification"] = _throughput(new_verified, time.perf_counter() - started)

    candidate_by_id = {c.id: c for c in candidates}
    examples = [
        Example(
            text=candidate_by_id[v.candidate_id].text,
            context=candidate_by_id[v.candidate_id].context,
            label=v.label,
            cell=candidate_by_id[v.candidate_id].cell_id,
            kind=candidate_by_id[v.candidate_id].kind,
            prompt_id=candidate_by_id[v.candidate_id].prompt_id,
            candidate_id=v.candidate_id,
            verdict=v.verdict or "",
            confidence=v.confidence,
        )
        for v in verdicts
        if v.label is not None
    ]
    final, balance_round = balance(examples, config.curation)
    rounds.append(balance_round)

    datasheet = Datasheet(
        policy=policy.name,
        description=policy.description,
        input=policy.input,
        model=llm.config.model or "",
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        counts={
            "prompts": len(prompts),
            "failed_prompts": failed_prompts,
            "seeds": len(seed_candidates(policy)),
            "generated": len(generated),
            "retrieved": len(retrieved),
            "retrieved_verified": sum(1 for e in examples if e.kind == "retrieved"),
            "after_dedup": len(candidates),
            "verified": len(examples),
            "final": len(final),
            "by_label": _count(e.label for e in final),
            "by_kind": _count(e.kind for e in final),
        },
        unusable={
            "texts": len(generated) + len(problems),
            "unusable": len(problems),
            "share": len(problems) / (len(generated) + len(problems)) if generated or problems else None,
            "reasons": _count(problems),
            "failed_prompts": failed_prompts,
        },
        coverage=coverage_report(dimensions, cells, [(e.cell, e.label) for e in final if e.cell]),
        dimensions=dimensions,
        debate=debate_stats(verdicts),
        curation=rounds,
        llm_usage=usage.total,
        llm_invocations=usage.invocations,
        throughput=throughput,
        config=config.model_dump(mode="json"),
    )
    _publish(run.out, policy, final, verdicts, datasheet)
    if not final:
        raise BuilderError(
            f"no candidate survived verification and curation, so no {DATASET_FILE} was written: "
            f"see {run.out / DATASHEET_MD} (a stronger LLM, or a lower --min-confidence, usually helps)"
        )
    return datasheet


async def _each(items: Sequence[T], work: Callable[[T], Awaitable[None]], label: str, progress: bool) -> None:
    """Run ``work`` on every item concurrently (the LLM client bounds it), with a progress bar."""
    from tqdm.auto import tqdm

    with tqdm(total=len(items), desc=label, unit="item", disable=not progress or not items) as bar:

        async def tracked(item: T) -> None:
            await work(item)
            bar.update(1)

        tasks = [asyncio.ensure_future(tracked(item)) for item in items]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            # One failure (endpoint down, disk full) stops the stage; what finished is in the journal.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise


def _throughput(items: int, seconds: float) -> StageThroughput:
    return StageThroughput(
        items=items, seconds=round(seconds, 2), per_minute=round(items / seconds * 60, 2) if items else None
    )


def _count(values: Iterator[str] | Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))


def _publish(
    out: Path, policy: Policy, final: Sequence[Example], verdicts: Sequence[Verdict], sheet: Datasheet
) -> None:
    rows = [
        json.dumps(
            {
                **({} if e.context is None else {"context": [m.model_dump() for m in e.context]}),
                "text": e.text,
                "labels": [policy.name] if e.label == "violates" else [],
                "cell": e.cell,
                "kind": e.kind,
                "prompt_id": e.prompt_id,
                "candidate_id": e.candidate_id,
                "verdict": e.verdict,
                "confidence": round(e.confidence, 4),
            },
            ensure_ascii=False,
        )
        for e in final
    ]
    if rows:  # an empty dataset is not presented as one
        write_atomic(out / DATASET_FILE, "".join(row + "\n" for row in rows))
    write_atomic(out / TRANSCRIPTS_FILE, "".join(v.model_dump_json() + "\n" for v in verdicts))
    write_atomic(out / DATASHEET_MD, render_datasheet(sheet))
    # Last: a datasheet.json says the run finished.
    write_atomic(out / DATASHEET_JSON, sheet.model_dump_json(indent=2))


def render_datasheet(sheet: Datasheet) -> str:
    counts, debate_, usage, coverage = sheet.counts, sheet.debate, sheet.llm_usage, sheet.coverage

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0%}"

    lines = [
        f"# Datasheet: {sheet.policy}",
        "",
        sheet.description,
        "",
        *(
            ["Judges conversations: each row's text is the latest user turn, its context the turns before it.", ""]
            if sheet.input == "conversation"
            else []
        ),
        f"Generated by `{sheet.model}` on {sheet.created_at}.",
        "",
        "## Counts",
        "",
        "| stage | examples |",
        "|---|---|",
        *(f"| {k} | {counts[k]} |" for k in ("seeds", "generated", "after_dedup", "verified", "final")),
        "",
        f"Final by label: {counts['by_label']}; by kind: {counts['by_kind']}.",
        *(
            [
                (
                    f"Retrieved from a corpus: {counts['retrieved']} real texts, of which "
                    f"{counts['retrieved_verified']} survived curation and the debate (labeled by the debate)."
                )
            ]
            if counts.get("retrieved")
            else []
        ),
        (
            f"Unusable generated texts: {sheet.unusable['unusable']} of {sheet.unusable['texts']} "
            f"({pct(sheet.unusable['share'])}); failed prompts: {sheet.unusable['failed_prompts']}."
        ),
        "",
        "## Dimensions and coverage",
        "",
        *(f"- **{d.name}** ({d.source}): {', '.join(d.values)}" for d in sheet.dimensions),
        "",
        (
            f"Cells with data: {coverage.cells_with_data} of {coverage.cells_total}; value pairs covered by cells: "
            f"{coverage.pairs_in_cells} of {coverage.pairs_total}, with data: {coverage.pairs_with_data}."
        ),
        "",
        "| dimension | value | violates | complies |",
        "|---|---|---|---|",
        *(
            f"| {name} | {value} | {labels.get('violates', 0)} | {labels.get('complies', 0)} |"
            for name, values in coverage.dimensions.items()
            for value, labels in values.items()
        ),
        "",
        "## Debate",
        "",
        (
            f"- candidates debated: {debate_.candidates}; first-round agreement with the intended label: "
            f"{pct(debate_.agreement_rate)} (of {debate_.with_intended_label})"
        ),
        f"- second rounds: {debate_.extra_rounds}; flips: {debate_.flips}; relabeled: {debate_.relabeled}",
        f"- dropped: {debate_.dropped or 'none'}; kept: {debate_.kept}; verdicts: {debate_.verdicts}",
        f"- mean judge confidence: {'n/a' if debate_.mean_confidence is None else f'{debate_.mean_confidence:.2f}'}",
        (
            f"- labeled seeds keep their label; the judge agreed with {debate_.seed_agreement} of "
            f"{debate_.labeled_seeds} of them"
        ),
        "",
        "## Curation",
        "",
        *(f"- {r.name}: kept {r.kept}, removed {r.removed or 'none'}" for r in sheet.curation),
        "",
        "## LLM usage",
        "",
        (
            f"- over {len(sheet.llm_invocations)} invocation(s): requests: {usage.requests}, cache hits: "
            f"{usage.cache_hits}, repairs: {usage.repairs}, unusable replies: {usage.unusable_replies}"
        ),
        (
            f"- tokens: {usage.prompt_tokens} prompt, {usage.completion_tokens} completion; "
            f"request time {usage.request_seconds:.0f} s"
        ),
        f"- the last invocation: {sheet.llm_invocations[-1].requests} requests, throughput:",
        *(
            f"  - {stage}: {t.items} in {t.seconds:.0f} s ({t.per_minute or 0:.1f}/min)"
            for stage, t in sheet.throughput.items()
        ),
        "",
    ]
    return "\n".join(lines)
