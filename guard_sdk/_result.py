"""The result of one check: the same shape for check, acheck, check_batch and the CLI's JSON."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, computed_field

from ._text import NormalizationNote
from ._views import ViewKind

__all__ = ["CheckResult", "LabelScore", "Stage", "Status"]

Stage = Literal["input", "output"]
Status = Literal["checked", "empty", "skipped_non_text", "error"]


class LabelScore(BaseModel):
    """One label of one bundle, scored on the window of the text where it scored highest."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    label: str
    score: float
    threshold: float
    flagged: bool
    bundle: str
    """``name@version`` of the bundle that produced the score."""
    window: tuple[int, int]
    """[start, end) character offsets, in the text as given, of the window with the highest score."""
    view: ViewKind = "text"
    """What that window was read from: the whole text, one of its sentences, or what an encoding in it decodes to
    (``leetspeak``, ``spaced``, ``base64``, ``hidden`` for Unicode tag characters)."""
    gate: float | None = None
    """An answer guard with a request gate (``input.request_gate``), checked with a request: the factor (0 to 1) its
    score was scaled by, the gate guard's judgement of the request and answer; None otherwise."""


class CheckResult(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    stage: Stage
    status: Status
    scores: list[LabelScore]
    latency_ms: float
    error: str | None = None
    normalized: list[NormalizationNote] = []
    """What normalisation changed before scoring, e.g. ``invisible_removed`` or ``hidden_text``."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def flagged(self) -> bool:
        """True when any label reached its threshold, or when the check failed (fail-closed)."""
        return self.status == "error" or any(s.flagged for s in self.scores)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def allowed(self) -> bool:
        return not self.flagged

    @property
    def violations(self) -> list[LabelScore]:
        return [s for s in self.scores if s.flagged]

    def score(self, label: str) -> LabelScore:
        for s in self.scores:
            if s.label == label:
                return s
        raise KeyError(f"no label {label!r}; this result has {[s.label for s in self.scores]}")
