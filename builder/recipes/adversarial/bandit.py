"""Beta-Bernoulli Thompson sampling over the operators, and the journaled record of one pull."""

from __future__ import annotations

import random
from collections.abc import Sequence

from pydantic import BaseModel

from ...data.verify import Verdict
from .operators import Mutation, Operator


class Pull(BaseModel):
    """One bandit pull, as journaled: the arm, the source, the candidate, its debate and the reward."""

    round: int
    index: int
    operator: Operator
    source_text: str
    source_labels: list[str]
    candidate: Mutation
    verdict: Verdict | None = None
    dropped: str | None = None
    """``generation: ...``, ``mismatch``, ``low confidence`` or ``unusable debate``; None when verified."""
    score: float | None = None
    """The current model's highest label score on the candidate."""
    flagged: bool | None = None
    reward: int = 0
    labels: list[str] | None = None
    """The labels the candidate joins the training data with (reward 1 only)."""


class ArmState(BaseModel):
    operator: Operator
    pulls: int
    rewards: int
    alpha: float
    beta: float

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


class ThompsonBandit:
    """Beta-Bernoulli Thompson sampling over named arms; ``discount`` shrinks evidence toward the prior."""

    def __init__(self, arms: Sequence[Operator], prior: tuple[float, float] = (1.0, 1.0)) -> None:
        self.prior = prior
        self.arms = {arm: ArmState(operator=arm, pulls=0, rewards=0, alpha=prior[0], beta=prior[1]) for arm in arms}

    def choose(self, rng: random.Random) -> Operator:
        draws = {arm: rng.betavariate(s.alpha, s.beta) for arm, s in self.arms.items()}
        return max(draws, key=lambda arm: draws[arm])

    def update(self, arm: Operator, reward: int) -> None:
        state = self.arms[arm]
        state.pulls += 1
        state.rewards += reward
        state.alpha += reward
        state.beta += 1 - reward

    def discount(self, factor: float) -> None:
        a0, b0 = self.prior
        for state in self.arms.values():
            state.alpha = a0 + factor * (state.alpha - a0)
            state.beta = b0 + factor * (state.beta - b0)

    def snapshot(self) -> list[ArmState]:
        return [state.model_copy() for state in self.arms.values()]
