"""``POST /v1/moderations`` in the shape of OpenAI's Moderation API, from the bundles' labels.

A label named like an OpenAI category (or mapped to one in ``ServerSettings.categories``) reports as that category;
labels of several bundles on one category report the highest score, flagged when any of them is. OpenAI categories
no bundle covers are ``false`` / ``0.0`` with no applied input types (``[]``): not checked, which is not "safe".
Every other label is an extra key of ``categories``, ``category_scores`` and ``category_applied_input_types``.
``flagged`` is the check's own decision. Texts are checked at the ``input`` stage.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from .._result import CheckResult
from ._errors import APIError
from ._settings import OPENAI_CATEGORIES

__all__ = ["Categories", "ModerationRequest", "moderation_response", "moderation_texts"]


class ModerationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI may add options; none changes what a guard does

    input: str | list[str | dict[str, Any]]
    model: str | None = None


def moderation_texts(request: ModerationRequest) -> list[str]:
    """The texts of a request: a str, a list of str, or a list of multi-modal parts of which only text is checked."""
    if isinstance(request.input, str):
        return [request.input]
    if not request.input:
        raise APIError(
            400, "input is an empty list: give a text or a list of texts", code="invalid_input", param="input"
        )
    texts = []
    for i, item in enumerate(request.input):
        if isinstance(item, str):
            texts.append(item)
        elif item.get("type") == "text" and isinstance(item.get("text"), str):
            texts.append(item["text"])
        elif item.get("type") == "image_url":
            # Refused, not skipped: a moderation that silently ignored an image would report it as not flagged.
            raise APIError(
                400,
                f"input[{i}] is an image; this server's guards read text only: send the text parts alone",
                code="unsupported_input",
                param=f"input[{i}]",
            )
        else:
            raise APIError(
                400,
                f'input[{i}] must be a str or a {{"type": "text", "text": "..."}} part',
                code="invalid_input",
                param=f"input[{i}]",
            )
    return texts


class Categories:
    """Where each label of a Guard reports."""

    def __init__(self, labels: Iterable[str], renamed: Mapping[str, str]) -> None:
        self.renamed = dict(renamed)
        self.covered = {self.renamed.get(label, label) for label in labels}

    def moderation(self, result: CheckResult) -> dict[str, Any]:
        flags: dict[str, bool] = dict.fromkeys(OPENAI_CATEGORIES, False)
        scores: dict[str, float] = dict.fromkeys(OPENAI_CATEGORIES, 0.0)
        applied: dict[str, list[str]] = {category: [] for category in OPENAI_CATEGORIES}
        for category in self.covered:
            flags[category], scores[category], applied[category] = False, 0.0, ["text"]
        for score in result.scores:
            category = self.renamed.get(score.label, score.label)
            flags[category] = flags.get(category, False) or score.flagged
            scores[category] = max(scores.get(category, 0.0), score.score)
            applied[category] = ["text"]
        return {
            "flagged": result.flagged,
            "categories": flags,
            "category_scores": scores,
            "category_applied_input_types": applied,
        }


def moderation_response(model: str, results: list[CheckResult], categories: Categories) -> dict[str, Any]:
    return {
        "id": f"modr-{uuid.uuid4().hex}",
        "model": model,
        "results": [categories.moderation(result) for result in results],
    }
