"""Data engine measurements with an embedded model: unusable share of generated text with a naive prompt vs the
engineered prompts, throughput (candidates and verified examples per minute) and debate agreement/flip rates.

    python -m benchmarks.data_engine --policy examples/policies/visa-advice.yaml --embedded smollm2 \\
        --out benchmarks/results/data_engine_smollm2.json

Resumable: the run folder (``--work``) keeps the data engine's checkpoints and LLM cache; throughput counts only
the work an invocation did itself, so measure on a fresh ``--work``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from pathlib import Path

from builder.dimensions import DimensionConfig, propose_dimensions, sample_cells
from builder.generate import (
    INTENDED,
    TASKS,
    GenerationConfig,
    candidates_from_reply,
    cell_prompts,
    reply_schema,
    text_problem,
)
from builder.llm import LLMClient
from builder.pipeline import DataConfig, build_dataset, llm_endpoint
from builder.policy import load_policy


def naive_texts(reply: str) -> list[str]:
    """What a user of a naive prompt would get out of a free-text reply: one message per non-empty line."""
    lines = [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip().strip('"') for line in reply.splitlines()]
    return [line for line in lines if line]


async def unusable_share(llm: LLMClient, policy_path: str, cells: int, per_prompt: int) -> dict[str, object]:
    import openai

    policy = load_policy(policy_path)
    dims = await propose_dimensions(policy, llm, DimensionConfig(max_dimensions=3, values_per_dimension=3))
    grid = sample_cells(dims, cells)
    config = GenerationConfig(per_prompt=per_prompt)
    engineered = cell_prompts(policy, grid, config)
    client = openai.AsyncOpenAI(base_url=llm.config.base_url, api_key=llm.config.api_key or "none", timeout=300)
    results: dict[str, dict[str, int]] = {}
    for variant in ("naive", "engineered"):
        usable = unusable = empty_prompts = 0
        started = time.perf_counter()
        for prompt in engineered:
            if variant == "naive":
                ask = f"{policy.rules_text()}\n\nSituation: {grid[int(prompt.cell_id[1:])].describe()}\n" + TASKS[
                    prompt.kind
                ].format(n=per_prompt)
                reply = await client.chat.completions.create(
                    model=llm.config.model or "",
                    messages=[{"role": "user", "content": ask}],
                    max_tokens=300,
                    temperature=0.8,
                    seed=13,
                )
                texts = naive_texts(reply.choices[0].message.content or "")
                problems = [p for p in (text_problem(t) for t in texts) if p]
                good = len(texts) - len(problems)
            else:
                parsed = await llm.structured(prompt.messages, reply_schema(prompt, config), seed=13, max_tokens=400)
                kept, problems = candidates_from_reply(prompt, parsed.messages)
                good = len(kept)
            usable += good
            unusable += len(problems)
            empty_prompts += good == 0
        results[variant] = {
            "prompts": len(engineered),
            "texts": usable + unusable,
            "usable": usable,
            "unusable": unusable,
            "prompts_without_usable_text": empty_prompts,
            "seconds": round(time.perf_counter() - started, 1),
        }
    await client.close()
    for result in results.values():
        result["unusable_share"] = round(result["unusable"] / max(1, result["texts"]), 3)  # type: ignore[assignment]
    return {"kinds": list(INTENDED), "cells": cells, "per_prompt": per_prompt, **results}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--policy", default="examples/policies/visa-advice.yaml")
    parser.add_argument("--embedded", choices=["smollm2", "gemma3"], default="smollm2")
    parser.add_argument("--work", default=".cache/data-engine-bench")
    parser.add_argument("--out", required=True)
    parser.add_argument("--cells", type=int, default=2)
    parser.add_argument("--per-prompt", type=int, default=3)
    parser.add_argument("--skip-pipeline", action="store_true", help="measure the unusable share only")
    args = parser.parse_args()

    report: dict[str, object] = {"policy": args.policy, "embedded": args.embedded}
    with llm_endpoint(None, args.embedded) as config:
        llm = LLMClient(config, cache_dir=Path(args.work) / f"prompt-cache-{args.embedded}")
        report["unusable"] = asyncio.run(unusable_share(llm, args.policy, args.cells, args.per_prompt))
        print(json.dumps(report["unusable"], indent=2), flush=True)
        if not args.skip_pipeline:
            data = DataConfig(
                cells=args.cells,
                dimensions=DimensionConfig(max_dimensions=3, values_per_dimension=3),
                generation=GenerationConfig(per_prompt=args.per_prompt, paraphrases_per_seed=1),
            )
            sheet = build_dataset(
                load_policy(args.policy),
                Path(args.work) / f"run-{args.embedded}",
                llm_config=config,
                config=data,
            )
            report["pipeline"] = {
                "counts": sheet.counts,
                "unusable": sheet.unusable,
                "debate": sheet.debate.model_dump(),
                "throughput": {k: v.model_dump() for k, v in sheet.throughput.items()},
                "llm_usage": sheet.llm_usage.model_dump(),
            }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
