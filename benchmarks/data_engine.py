"""Data engine measurements with an embedded model, on a small sample:

- **unusable share** of generated text for three prompt variants on the same cells: ``naive`` (zero-shot: the task
  and the reply format in one user turn; no system prompt, no example, no constrained decoding), ``few-shot`` (the
  engineered prompt without constrained decoding) and ``engineered`` (what the data engine sends: system prompt, one
  worked example, a JSON schema that llama.cpp turns into a grammar). One request per prompt, no repair turn. A reply
  that is empty, not JSON or off-schema delivers none of the messages it was asked for: they all count as unusable;
  each parsed message then passes the data engine's quality filter (:func:`builder.data.candidates.text_problem`).
- **speed** of each variant (requests, completion tokens, seconds) and of the judge;
- **judge agreement with the policy's labeled seeds** (one debate round each; the author's label is ground truth);
- optionally (``--pipeline``) a full data engine run: candidates and verified examples per minute, debate agreement
  and flip rates.

    python -m benchmarks.data_engine --policy examples/policies/visa-advice.yaml --embedded smollm2 \\
        --out benchmarks/results/data_engine_smollm2.json

No request is cached here (every number is a live request); ``--pipeline`` keeps its run folder in ``--work`` and
counts only the work an invocation did itself, so measure it on a fresh ``--work``. The sample is the same for
every model: cells from the policy's pinned dimensions, completed with the builder's default dimensions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import openai
from pydantic import BaseModel

from builder.data.candidates import (
    INTENDED,
    SYSTEM,
    TASKS,
    GenerationConfig,
    GenerationPrompt,
    Messages,
    candidates_from_reply,
    cell_prompts,
    reply_budget,
    reply_schema,
    seed_candidates,
)
from builder.data.dimensions import DEFAULT_DIMENSIONS, Cell, Dimension, sample_cells
from builder.data.engine import DataConfig, build_dataset
from builder.data.policy import Policy, load_policy
from builder.data.verify import DebateConfig, debate
from builder.llm.client import LLMClient, LLMConfig, Message, parse_reply
from builder.llm.local_server import EmbeddedModel, llm_endpoint

Variant = Literal["naive", "few-shot", "engineered"]
VARIANTS: tuple[Variant, ...] = ("naive", "few-shot", "engineered")
NAIVE_FORMAT = 'Reply in JSON: {"messages": ["...", "..."]}'


class VariantResult(BaseModel):
    prompts: int
    requested: int
    """Messages asked for: prompts x per-prompt."""
    replies_unusable: dict[str, int]
    """Replies that delivered nothing, by reason (empty, not JSON, off-schema)."""
    parsed: int
    filtered: dict[str, int]
    """Parsed messages that the quality filter dropped, by reason."""
    usable: int
    unusable_share: float
    """1 - usable / requested."""
    completion_tokens: int
    seconds: float
    usable_per_minute: float


class JudgeResult(BaseModel):
    labeled_seeds: int
    agreed: int
    verdicts: list[tuple[str, str | None]]
    """(author's label, judge's verdict) per seed: a judge that always says one thing agrees with that side only."""
    unusable_debates: int
    seconds: float


def sample(policy: Policy, cells: int) -> list[Cell]:
    """Cells that do not depend on the model: pinned dimensions, then the builder's defaults up to two."""
    dimensions = [Dimension(name=name, values=values, source="pinned") for name, values in policy.dimensions.items()]
    for name, values in DEFAULT_DIMENSIONS.items():
        if len(dimensions) >= 2:
            break
        dimensions.append(Dimension(name=name, values=values[:3], source="default"))
    return sample_cells(dimensions, cells)


def naive_messages(policy: Policy, cell: Cell, kind: str, count: int) -> list[Message]:
    ask = f"{policy.rules_text()}\n\nSituation: {cell.describe()}\n{TASKS[kind].format(n=count)}\n{NAIVE_FORMAT}"
    return [{"role": "user", "content": ask}]


def why_unusable(content: str) -> str:
    try:
        parse_reply(content, Messages)
    except ValueError as exc:
        message = str(exc)
        return "empty" if "empty" in message else "not JSON" if "not JSON" in message else "off-schema"
    return "usable"


async def measure_variant(
    client: openai.AsyncOpenAI,
    model: str,
    policy: Policy,
    prompts: list[tuple[Cell, GenerationPrompt]],
    variant: Variant,
    config: GenerationConfig,
    seeds: list[int],
) -> VariantResult:
    replies_unusable: Counter[str] = Counter()
    filtered: Counter[str] = Counter()
    parsed = usable = tokens = 0
    started = time.perf_counter()
    for seed in seeds:
        for cell, prompt in prompts:
            # The pipeline's token budget for the engineered variant; the same room for the others.
            request: dict[str, Any] = {
                "model": model,
                "messages": prompt.messages,
                "temperature": 0.8,
                "max_tokens": reply_budget(prompt, config),
                "seed": seed,
            }
            if variant == "naive":
                request["messages"] = naive_messages(policy, cell, prompt.kind, config.per_prompt)
            if variant == "engineered":  # what LLMConfig(structured_output="schema") sends
                schema = reply_schema(prompt, config).model_json_schema()
                request["response_format"] = {"type": "json_object", "schema": schema}
            reply = await client.chat.completions.create(**request)
            tokens += reply.usage.completion_tokens if reply.usage else 0
            content = reply.choices[0].message.content or ""
            reason = why_unusable(content)
            if reason != "usable":
                replies_unusable[reason] += 1
                continue
            reply_ = parse_reply(content, Messages)
            texts = reply_.messages
            kept, problems = candidates_from_reply(prompt, reply_)
            parsed += len(texts)
            filtered.update(problems)
            # A reply with more messages than asked for gets no credit for the extra ones.
            usable += min(len(kept), config.per_prompt)
    seconds = time.perf_counter() - started
    requested = len(prompts) * len(seeds) * config.per_prompt
    return VariantResult(
        prompts=len(prompts) * len(seeds),
        requested=requested,
        replies_unusable=dict(replies_unusable),
        parsed=parsed,
        filtered=dict(filtered),
        usable=usable,
        unusable_share=round(1 - usable / requested, 3),
        completion_tokens=tokens,
        seconds=round(seconds, 1),
        usable_per_minute=round(usable / seconds * 60, 1),
    )


async def judge_seeds(policy: Policy, endpoint: LLMConfig, limit: int | None = None) -> JudgeResult:
    """One debate round on every labeled seed, uncached: how often the judge agrees with the author."""
    seeds = [c for c in seed_candidates(policy) if c.intended][:limit]
    started = time.perf_counter()
    verdicts: list[tuple[str, str | None]] = []
    async with LLMClient(endpoint) as llm:
        for seed in seeds:
            verdict = await debate(policy, seed, llm, DebateConfig(extra_round=False))
            verdicts.append((seed.intended or "", verdict.verdict))
    return JudgeResult(
        labeled_seeds=len(seeds),
        agreed=sum(given == judged for given, judged in verdicts),
        verdicts=verdicts,
        unusable_debates=sum(judged is None for _, judged in verdicts),
        seconds=round(time.perf_counter() - started, 1),
    )


async def measure(
    policy: Policy, endpoint: LLMConfig, args: argparse.Namespace, report: dict[str, Any], save: Callable[[], None]
) -> None:
    """Fill ``report["prompts"]`` one part at a time and save after each: a slow model's partial results survive."""
    config = GenerationConfig(per_prompt=args.per_prompt)
    grid = sample(policy, args.cells)
    prompts = [(cell, prompt) for cell in grid for prompt in cell_prompts(policy, [cell], config)]
    part: dict[str, Any] = {
        "cells": [cell.describe() for cell in grid],
        "kinds": list(INTENDED),
        "per_prompt": args.per_prompt,
        "seeds": args.seeds,
        "variants": {},
    }
    report["prompts"] = part
    part["judge"] = (await judge_seeds(policy, endpoint, args.judge_seeds)).model_dump()
    save()
    client = openai.AsyncOpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key or "none", timeout=1800)
    try:
        for variant in args.variants:
            result = await measure_variant(client, endpoint.model or "", policy, prompts, variant, config, args.seeds)
            part["variants"][variant] = result.model_dump()
            save()
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--policy", default="examples/policies/visa-advice.yaml")
    parser.add_argument("--embedded", choices=["smollm2", "gemma3"], default="smollm2")
    parser.add_argument("--out", required=True)
    parser.add_argument("--cells", type=int, default=2)
    parser.add_argument("--per-prompt", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[13, 14], help="sampling seeds: one sample each")
    parser.add_argument("--variants", nargs="*", choices=VARIANTS, default=list(VARIANTS), help="none: judge only")
    parser.add_argument("--judge-seeds", type=int, help="judge only the first N labeled seeds (default: all)")
    parser.add_argument("--pipeline", action="store_true", help="also run the data engine on --cells")
    parser.add_argument("--work", default=".cache/data-engine-bench", help="the --pipeline run folder")
    args = parser.parse_args()

    embedded: EmbeddedModel = args.embedded
    policy = load_policy(args.policy)
    report: dict[str, Any] = {
        "policy": args.policy,
        "embedded": embedded,
        "system_prompt": SYSTEM,
        "load_average_before": os.getloadavg(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        report["load_average_after"] = os.getloadavg()
        out.write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2), flush=True)

    with llm_endpoint(None, embedded) as endpoint:
        asyncio.run(measure(policy, endpoint, args, report, save))
        if args.pipeline:
            data = DataConfig(cells=args.cells, generation=GenerationConfig(per_prompt=args.per_prompt))
            sheet = build_dataset(policy, Path(args.work) / f"run-{embedded}", llm_config=endpoint, config=data)
            report["pipeline"] = {
                "counts": sheet.counts,
                "unusable": sheet.unusable,
                "debate": sheet.debate.model_dump(),
                "throughput": {k: v.model_dump() for k, v in sheet.throughput.items()},
                "llm_usage": sheet.llm_usage.model_dump(),
            }
            save()


if __name__ == "__main__":
    main()
