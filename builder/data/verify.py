"""Debate verification: every candidate is argued both ways and judged.

Round 1: an advocate argues that the message violates the policy, another that it complies, and a judge reads
both and decides, with a confidence. When the judge disagrees with the label the candidate was generated for
(or, for a candidate without one, is unsure), a second round follows: each advocate answers the other's argument
and the judge decides again on the whole transcript. A verified label that differs from the intended one is
relabeled or the candidate dropped (:attr:`DebateConfig.on_mismatch`); a final confidence under
:attr:`DebateConfig.min_confidence` drops it. Every transcript is kept.

A labeled seed is the policy author's own example and its label is ground truth: it is debated once (the verdict
is recorded, and how often the judge agrees with the seeds measures the judge), never relabeled or dropped, and
gets no second round, which could not change its label.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from guard_sdk.bundle import render

from ..errors import LLMOutputError
from ..llm.client import LLMClient, Message
from .candidates import Candidate
from .policy import Policy, SeedLabel

__all__ = ["DebateConfig", "DebateStats", "Turn", "Verdict", "debate", "debate_stats"]

SYSTEM = (
    "You review messages that users send to an AI assistant, against the assistant's content policy. "
    "Answer with one JSON object and nothing else."
)
EXAMPLE_POLICY = (
    "Assistant: a pharmacy chatbot that answers questions about orders and opening hours.\n"
    "A message VIOLATES the policy when it is:\n- asking for prescription drug doses or how to get drugs without a "
    "prescription\nA message COMPLIES when it is:\n- questions about orders, delivery, opening hours, store services"
)
EXAMPLE_MESSAGE = "How many oxycodone pills can I take at once?"
EXAMPLE_ARGUMENTS = {
    "violates": "The user asks for a dose of a prescription opioid, which the policy forbids.",
    "complies": "The user may only want to know what the label says, which is general product information.",
}
EXAMPLE_JUDGEMENT = {
    "reason": "Asking how many pills to take is a dosing question about a prescription drug.",
    "verdict": "violates",
    "confidence": 90,
}
ROLE_TASK = {
    "violates": "Argue in one or two sentences that this message VIOLATES the policy.",
    "complies": "Argue in one or two sentences that this message COMPLIES with the policy.",
}
REBUTTAL = ' The other side said: "{other}". Answer that argument.'
JUDGE_TASK = (
    "Arguments so far:\n{arguments}\nDecide whether the message violates the policy or complies with it. "
    "Give a short reason, the verdict, and your confidence in percent (0 to 100)."
)


class DebateConfig(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)  # field docstrings: guard-build's help

    on_mismatch: Literal["relabel", "drop"] = "relabel"
    """What to do with a candidate whose verified label is not the one it was generated for."""
    min_confidence: float = Field(default=0.5, ge=0, le=1)
    """Judge confidence under which a candidate is dropped (and, without an intended label, debated again)."""
    extra_round: bool = True
    """Debate again when the verdict disagrees with the intended label, or is unsure without one (slower)."""
    seed: int = 13


class _Argument(BaseModel):
    argument: str = Field(json_schema_extra={"maxLength": 300})


class _Judgement(BaseModel):
    reason: str = Field(json_schema_extra={"maxLength": 300})
    verdict: SeedLabel
    confidence: Annotated[float, WithJsonSchema({"type": "integer", "minimum": 0, "maximum": 100})]
    """Percent. Asked as an integer: small models write fractions like 1.5, which a grammar cannot bound."""

    @field_validator("confidence")
    @classmethod
    def _fraction_is_a_percent(cls, value: float) -> float:
        # Strong models in plain JSON mode may still answer 0.85 for 85 %.
        value = value * 100 if 0 < value <= 1 and not float(value).is_integer() else value
        if not 0 <= value <= 100:
            raise ValueError("confidence must be a percentage from 0 to 100")
        return value


class Turn(BaseModel):
    round: int
    role: Literal["violates", "complies", "judge"]
    text: str
    verdict: SeedLabel | None = None
    confidence: float | None = None


class Verdict(BaseModel):
    """The debate's outcome for one candidate: ``label`` is None when the candidate is dropped."""

    candidate_id: str
    intended: SeedLabel | None
    first_verdict: SeedLabel | None
    verdict: SeedLabel | None
    confidence: float
    rounds: int
    label: SeedLabel | None
    dropped: str | None = None
    """Why the candidate was dropped: ``mismatch``, ``low confidence`` or ``unusable debate``."""
    given_label: bool = False
    """``label`` is the policy author's (a labeled seed), whatever the judge said."""
    transcript: list[Turn]


class DebateStats(BaseModel):
    candidates: int
    with_intended_label: int
    agreement_rate: float | None
    """Share of candidates with an intended label whose first-round verdict matched it."""
    extra_rounds: int
    flips: int
    """Final verdict differs from the intended label (labeled seeds included)."""
    relabeled: int
    """Flips whose candidate took the judge's label (never a labeled seed)."""
    labeled_seeds: int
    """Labeled seeds the judge gave a verdict on."""
    seed_agreement: int
    """Of those, how many the judge labeled as the policy author did: a measure of the judge itself."""
    dropped: dict[str, int]
    kept: int
    mean_confidence: float | None
    verdicts: dict[str, int]


def _context(policy: str, shown: str) -> str:
    return f"{policy}\n\n{shown}\n\n"


def _shown(candidate: Candidate) -> str:
    """The candidate as the debate reads it: the message, or the conversation and its latest turn."""
    if candidate.context is None:
        return f'User message: "{candidate.text}"'
    earlier = render([m.model_dump() for m in candidate.context], "conversation") or "(none)"
    return f'Conversation so far:\n{earlier}\n\nLatest user message: "{candidate.text}"'


def _few_shot(task: str, reply: dict[str, object]) -> list[Message]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": _context(EXAMPLE_POLICY, f'User message: "{EXAMPLE_MESSAGE}"') + task},
        {"role": "assistant", "content": json.dumps(reply)},
    ]


def _argument_messages(policy: Policy, text: str, side: SeedLabel, other: str | None) -> list[Message]:
    task = ROLE_TASK[side] + (REBUTTAL.format(other=other) if other else "")
    return [
        *_few_shot(ROLE_TASK[side], {"argument": EXAMPLE_ARGUMENTS[side]}),
        {"role": "user", "content": _context(policy.rules_text(), text) + task},
    ]


def _judge_messages(policy: Policy, text: str, turns: Sequence[Turn]) -> list[Message]:
    def listing(arguments: Sequence[tuple[str, str]]) -> str:
        return "\n".join(f"- for {side.upper()}: {argument}" for side, argument in arguments)

    example = listing([(side, EXAMPLE_ARGUMENTS[side]) for side in ("violates", "complies")])
    actual = listing([(t.role, t.text) for t in turns if t.role != "judge"])
    return [
        *_few_shot(JUDGE_TASK.format(arguments=example), EXAMPLE_JUDGEMENT),
        {"role": "user", "content": _context(policy.rules_text(), text) + JUDGE_TASK.format(arguments=actual)},
    ]


async def debate(policy: Policy, candidate: Candidate, llm: LLMClient, config: DebateConfig | None = None) -> Verdict:
    """Argue, judge, and on disagreement argue and judge once more. An unusable LLM reply drops the candidate
    (a labeled seed keeps its label whatever the debate gives)."""
    config = config or DebateConfig()
    given = candidate.intended if candidate.kind == "seed" else None
    turns: list[Turn] = []
    first: _Judgement | None = None
    judgement: _Judgement | None = None
    try:
        for round_number in (1, 2):
            previous = {t.role: t.text for t in turns if t.round == round_number - 1}
            violates, complies = await asyncio.gather(
                *(
                    llm.structured(
                        _argument_messages(policy, _shown(candidate), side, previous.get(_other(side))),
                        _Argument,
                        seed=config.seed + round_number,
                        max_tokens=120,
                    )
                    for side in ("violates", "complies")
                )
            )
            turns += [
                Turn(round=round_number, role="violates", text=violates.argument),
                Turn(round=round_number, role="complies", text=complies.argument),
            ]
            judgement = await llm.structured(
                _judge_messages(policy, _shown(candidate), turns),
                _Judgement,
                seed=config.seed + round_number,
                max_tokens=160,
            )
            turns.append(
                Turn(
                    round=round_number,
                    role="judge",
                    text=judgement.reason,
                    verdict=judgement.verdict,
                    confidence=judgement.confidence / 100,
                )
            )
            first = first or judgement
            disagrees = (
                judgement.verdict != candidate.intended
                if candidate.intended
                else judgement.confidence / 100 < config.min_confidence
            )
            if not (disagrees and config.extra_round) or given:
                break
    except LLMOutputError:
        judgement = None
    label: SeedLabel | None = None
    dropped: str | None = None
    if given:
        label = given  # the author's label stands; the judge's verdict is kept for the record and the seed stats
    elif judgement is None:
        dropped = "unusable debate"
    elif judgement.confidence / 100 < config.min_confidence:
        dropped = "low confidence"
    elif candidate.intended and judgement.verdict != candidate.intended and config.on_mismatch == "drop":
        dropped = "mismatch"
    else:
        label = judgement.verdict
    return Verdict(
        candidate_id=candidate.id,
        intended=candidate.intended,
        first_verdict=first.verdict if first else None,
        verdict=judgement.verdict if judgement else None,
        confidence=judgement.confidence / 100 if judgement else 0.0,
        rounds=max((t.round for t in turns), default=0),
        label=label,
        dropped=dropped,
        given_label=given is not None,
        transcript=turns,
    )


def _other(side: SeedLabel) -> SeedLabel:
    return "complies" if side == "violates" else "violates"


def debate_stats(verdicts: Sequence[Verdict]) -> DebateStats:
    with_intended = [v for v in verdicts if v.intended and v.first_verdict]
    judged = [v for v in verdicts if v.verdict]
    dropped: dict[str, int] = {}
    for v in verdicts:
        if v.dropped:
            dropped[v.dropped] = dropped.get(v.dropped, 0) + 1
    flips = [v for v in judged if v.intended and v.verdict != v.intended]
    seeds = [v for v in judged if v.given_label]
    return DebateStats(
        candidates=len(verdicts),
        with_intended_label=len(with_intended),
        agreement_rate=(
            sum(v.first_verdict == v.intended for v in with_intended) / len(with_intended) if with_intended else None
        ),
        extra_rounds=sum(v.rounds > 1 for v in verdicts),
        flips=len(flips),
        relabeled=sum(1 for v in flips if v.label is not None and not v.given_label),
        labeled_seeds=len(seeds),
        seed_agreement=sum(v.verdict == v.intended for v in seeds),
        dropped=dropped,
        kept=sum(v.label is not None for v in verdicts),
        mean_confidence=sum(v.confidence for v in judged) / len(judged) if judged else None,
        verdicts={label: sum(v.verdict == label for v in judged) for label in ("violates", "complies")},
    )
