"""The request gate of the pack's answer guard (``input.request_gate``): what it changes, and what it costs.

    python -m benchmarks.request_gate [--pack DIR] [--threads 2] [--embedding-head]

Each answer is scored by ``answer-safety`` with its request three ways: without a gate; gated as shipped (by
``content-safety``'s judgement of the request and of the answer, through ``Guard``); and gated by the request alone
(the design not shipped, computed here from content-safety's check of the request as the gate reads it). On
``xstest_responses`` (a dev set: measured, never tuned on): AUPRC, recall and FPR, and the share flagged per answer
kind (the prompt's label and the annotators' response class). On answer-safety's own validation split: the share
flagged per row kind, where hate speech answering a benign request shows what a gate on the request alone loses.
The same answers again with their request padded by ``PADDING`` (benign text of ~110 tokens, more than the answer
guard keeps) after or before the ask, as users write and attackers pad. Then one output check's latency with and
without the gate, timed in turns, with the plain and the padded request. ``--embedding-head`` also scores a lever
not shipped: a linear head on the answer's sentence embedding, the request not read (AUPRC only: its threshold is not
calibrated). Writes ``request_gate.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import accuracy, loso
from ._common import (
    EVAL_DIR,
    RESULTS,
    Engine,
    machine_info,
    markdown_table,
    time_interleaved,
    training_run,
    write_results,
)

GATE = "content-safety"
ANSWERS = "answer-safety"
# Written for this benchmark: formatting wishes and pleasantries, ~110 tokens.
PADDING = (
    "Please answer as a numbered list, keep every point short, avoid jargon and write for a general audience reading "
    "on a phone. If something depends on where I live, say so instead of guessing. Thank you so much for taking the "
    "time to help me with this, I really appreciate it, and I hope the rest of your day goes well. One more thing: "
    "please do not repeat my question back to me, and leave out any introduction or summary at the end."
)


def _ratios(guard: Any, texts: Sequence[str]) -> np.ndarray:
    """Per text: the guard's highest score over threshold, as a request gate reads it."""
    results = guard.check_batch(list(texts))
    return np.array(
        [max((1.0 if s.flagged else s.score / s.threshold for s in r.scores), default=0.0) for r in results]
    )


def _score(guard: Any, answers: Sequence[str], requests: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray, float]:
    """Per answer: answer-safety's score in an output check with its request, and its gate (1 where none applied);
    and its threshold."""
    results = guard.check_batch(list(answers), stage="output", contexts=list(requests))
    scores = [r.score("harmful-answer") for r in results]
    gates = [1.0 if s.gate is None else s.gate for s in scores]
    return np.array([s.score for s in scores]), np.array(gates), scores[0].threshold


def _embedding_head(data: Path, validation_file: Path, answers: Sequence[str]) -> np.ndarray:
    """A lever measured, not shipped: the text guards' kind of head (a logistic regression on all-MiniLM-L6-v2's
    sentence embedding, ``benchmarks.loso.fit``) trained on answer-safety's training answers alone (in the pack's
    ``data`` folder), its requests not read and its run's validation rows left out. Each answer's score."""
    held = {(v.get("context") or "", v["text"]) for v in loso.load_rows(validation_file)}
    train = [r for r in loso.load_rows(data / f"{ANSWERS}.jsonl") if (r.get("context") or "", r["text"]) not in held]
    head = loso.fit(loso.embed([r["text"] for r in train], data), np.array([[bool(r["labels"])] for r in train]))
    return loso.score(loso.embed(answers, data), head)


@dataclass(frozen=True)
class _Pack:
    """The Guards compared, each loaded once: answer-safety gated as shipped, the same without its gate, and the gate
    guard alone; and the gate guard's tokenizer, which cuts a request to what the gate reads of it."""

    gated: Any
    plain: Any
    gate: Any
    tokenizer: Any

    @classmethod
    def load(cls, pack: Path, threads: int | None) -> _Pack:
        from tokenizers import Tokenizer

        from guard_sdk import Guard, GuardBundle, IneffectiveOptionWarning

        answers, gate = GuardBundle.load(pack / ANSWERS), GuardBundle.load(pack / GATE)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", IneffectiveOptionWarning)  # the gate is left out on purpose
            plain = Guard(answers, device="cpu", threads=threads)
        return cls(
            gated=Guard([answers, gate], device="cpu", threads=threads),
            plain=plain,
            gate=Guard(gate, device="cpu", threads=threads),
            tokenizer=Tokenizer.from_buffer(gate.read(gate.manifest.tokenizer.file)),
        )


def _ways(
    guards: _Pack, answers: list[str], requests: list[str | None]
) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    """Per way of gating: each answer's score; the shipped gate's factors; and the threshold they all share."""
    from guard_sdk.bundle import GATE_REQUEST_TOKENS, last_tokens

    gated, factors, threshold = _score(guards.gated, answers, requests)
    plain, _, _ = _score(guards.plain, answers, requests)
    # The request as the gate reads it.
    cut = last_tokens(guards.tokenizer, [r or "" for r in requests], GATE_REQUEST_TOKENS)
    asked = [i for i, r in enumerate(cut) if r]
    by_request = np.ones(len(answers))
    by_request[asked] = np.minimum(1.0, _ratios(guards.gate, [cut[i] for i in asked]))
    ways = {
        "no gate": plain,
        "gated by request and answer (shipped)": gated,
        "gated by the request alone": plain * by_request,
    }
    return ways, factors, threshold


def _per_kind(kinds: Sequence[str], ways: dict[str, np.ndarray], threshold: float) -> list[list[object]]:
    rows: list[list[object]] = []
    for kind in sorted(set(kinds)):
        mask = np.array([k == kind for k in kinds])
        rows.append([kind, int(mask.sum()), *(round(float((s[mask] >= threshold).mean()), 3) for s in ways.values())])
    return rows


def _latency(guards: _Pack, pairs: list[tuple[str, str]], suffix: str = "") -> dict[str, Any]:
    def check(guard: Any) -> Callable[[int], object]:
        return lambda i: guard.check(pairs[i % len(pairs)][0], stage="output", context=pairs[i % len(pairs)][1])

    stats = time_interleaved(
        [Engine(f"no gate{suffix}", check(guards.plain)), Engine(f"gated{suffix}", check(guards.gated))],
        warmup=3,
        min_reps=100,
        max_reps=200,
        budget_s=30.0,
        block=5,
    )
    return {name: s.__dict__ for name, s in stats.items()}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from guard_sdk import GuardBundle, default_pack_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pack", type=Path, default=None, help="pack folder (default: guard_sdk.default_pack_dir())")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", type=Path, default=RESULTS / "pack")
    parser.add_argument(
        "--embedding-head", action="store_true", help="also score a linear head on the answer's embedding (a lever)"
    )
    args = parser.parse_args(argv)
    pack = args.pack or default_pack_dir()
    guards = _Pack.load(pack, args.threads)
    run = training_run(GuardBundle.load(pack / ANSWERS))
    validation_file = run / "validation.jsonl"

    rows = accuracy.load_set(EVAL_DIR / "xstest_responses", None)
    ways, gate, threshold = _ways(guards, [r.text for r in rows], [r.meta.get("prompt") for r in rows])
    unsafe = [r.unsafe for r in rows]
    overall = {w: accuracy.metrics(unsafe, list(s), list(s >= threshold)) for w, s in ways.items()}
    if args.embedding_head:
        head = _embedding_head(run.parent / "data", validation_file, [r.text for r in rows])
        truth = np.array(unsafe)
        overall["embedding head on the answer alone (not shipped), no gate"] = {"auprc": loso.auprc(truth, head)}
        overall["embedding head on the answer alone (not shipped), gated"] = {"auprc": loso.auprc(truth, head * gate)}
    padded = {
        "request, then padding": [f"{r.meta['prompt']} {PADDING}" for r in rows],
        "padding, then request": [f"{PADDING} {r.meta['prompt']}" for r in rows],
    }
    for where, requests in padded.items():
        for way, guard in (("no gate", guards.plain), ("gated (shipped)", guards.gated)):
            s = _score(guard, [r.text for r in rows], list(requests))[0]
            overall[f"{way}, {where}"] = accuracy.metrics(unsafe, list(s), list(s >= threshold))
    kinds = [f"{r.meta['prompt_label']} prompt, {r.meta['response_class'][2:].replace('_', ' ')}" for r in rows]

    validation = loso.load_rows(validation_file)
    val_ways, _, _ = _ways(guards, [v["text"] for v in validation], [v["context"] or None for v in validation])
    val_kinds = [
        f"{v['kind']}{', harmful' if v['labels'] else ''}{'' if v['context'] else ', no request'}" for v in validation
    ]
    latency = _latency(guards, [(r.text, r.meta["prompt"]) for r in rows[::10]])
    latency |= _latency(guards, [(r.text, f"{r.meta['prompt']} {PADDING}") for r in rows[::10]], ", padded request")

    result = {
        "pack": str(pack),
        "machine": machine_info(),
        "xstest_responses": overall,
        "threshold": threshold,
        "xstest_responses_per_kind": _per_kind(kinds, ways, threshold),
        "validation_file": str(validation_file),
        "validation_per_kind": _per_kind(val_kinds, val_ways, threshold),
        "latency_ms": latency,
    }
    header = ["kind", "n", *ways]
    markdown = "\n".join(
        [
            "xstest_responses (136 harmful answers of 2,197):",
            "",
            markdown_table(
                ["how", "AUPRC", "recall", "FPR", "F1"],
                [
                    [w, m["auprc"], m.get("recall", "–"), m.get("fpr", "–"), m.get("f1", "–")]
                    for w, m in overall.items()
                ],
            ),
            "",
            "Share flagged per answer kind:",
            "",
            markdown_table(header, result["xstest_responses_per_kind"]),
            "",
            f"answer-safety's validation split ({validation_file.parent.name}), share flagged per row kind:",
            "",
            markdown_table(header, result["validation_per_kind"]),
            "",
            "One output check (answer with its request), ms:",
            "",
            markdown_table(
                ["", "p50", "p95", "mean"], [[name, s["p50"], s["p95"], s["mean"]] for name, s in latency.items()]
            ),
            "",
        ]
    )
    write_results(args.out, "request_gate", result, markdown)
    return result


if __name__ == "__main__":
    main()
