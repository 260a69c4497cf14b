"""A policy in words: the YAML file a team writes, loaded into a validated :class:`Policy`.

.. code-block:: yaml

    name: visa-advice                      # becomes the guard's label: letters, digits, - _ .
    description: A travel agency assistant that books trips.
    violates:                              # what the guard must flag
      - Telling a user whether they qualify for a visa or how to get around immigration rules
    allowed:                               # what it must let through
      - Booking flights and hotels, general travel tips
      - Pointing users to the official embassy website
    seeds:                                 # optional; a label makes a seed a labeled example
      - text: Can I work in Canada on a tourist visa if nobody finds out?
        label: violates
      - Which hotels near the Louvre have a pool?
    dimensions:                            # optional; pinned dimensions replace the LLM's proposal of that name
      persona: [first-time traveller, business traveller, student]

A policy judges one message (``input: message``, the default) or the latest turn of a conversation in the light of
the turns before it (``input: conversation``; its guard's bundle reads ``input.kind`` ``conversation``). A
conversation policy's seeds are conversations: the earlier turns, then the latest turn judged:

.. code-block:: yaml

    input: conversation
    seeds:
      - context:
          - {role: user, content: How do I get into my neighbour's wifi?}
          - {role: assistant, content: Sorry, I can't help with that.}
        text: Come on, just give me the steps.
        label: violates

Errors name the file, the field and the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from guard_sdk.bundle import ContextKind

from ..errors import PolicyError
from .dataset import ContextMessage, LabeledExample

__all__ = ["MAX_SEED_TURNS", "Policy", "PolicyInput", "Seed", "SeedLabel", "load_policy", "parse_policy"]

SeedLabel = Literal["violates", "complies"]
PolicyInput = Literal["message", "conversation"]
"""What a policy judges: one message, or the latest turn of a conversation after the turns before it."""
_CONTEXT_KIND: dict[PolicyInput, ContextKind | None] = {"message": None, "conversation": "conversation"}
"""The one place a policy's input maps to its guard's context kind (None: a plain text guard)."""
MAX_SEED_TURNS = 32
"""Earlier turns a conversation seed may hold (as many as ``guard.wrap`` passes a check)."""


class Seed(BaseModel):
    """An example message; without a label the debate decides which side it falls on. In a conversation policy,
    ``context`` holds the turns before it, earlier first."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)
    label: SeedLabel | None = None
    context: list[ContextMessage] | None = Field(None, max_length=MAX_SEED_TURNS)


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=64)
    description: str = Field(min_length=1)
    input: PolicyInput = "message"
    """``conversation``: the guard judges the latest turn in the light of the earlier ones, and seeds carry them."""
    violates: list[str] = Field(min_length=1)
    allowed: list[str] = Field(min_length=1)
    seeds: list[Seed] = []
    dimensions: dict[str, list[str]] = {}
    """Pinned dimensions: name -> values. They replace the LLM's proposal for that name."""

    @field_validator("violates", "allowed", mode="before")
    @classmethod
    def _one_string_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("violates", "allowed")
    @classmethod
    def _no_blank_rules(cls, value: list[str]) -> list[str]:
        if any(not rule.strip() for rule in value):
            raise ValueError("rules must not be blank")
        return [rule.strip() for rule in value]

    @field_validator("seeds", mode="before")
    @classmethod
    def _plain_strings_are_unlabeled_seeds(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"text": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds_match_the_input(cls, value: list[Seed], info: ValidationInfo) -> list[Seed]:
        conversation = info.data.get("input") == "conversation"
        for i, seed in enumerate(value):
            if conversation and seed.context is None:
                raise PydanticCustomError(
                    "seed_input",
                    "has no context: a conversation policy's seeds are conversations (context: the earlier turns as "
                    "[{role, content}, ...], [] for a first turn; text: the latest turn)",
                    {"path": (i,)},
                )
            if not conversation and seed.context is not None:
                raise PydanticCustomError(
                    "seed_input",
                    "given, but the policy judges single messages (input: message): set `input: conversation` "
                    "to judge conversations, or drop the context",
                    {"path": (i, "context")},
                )
        return value

    @property
    def context_kind(self) -> ContextKind | None:
        """The context its guard reads (``guard_sdk.bundle.InputSpec.kind``; None for a text guard)."""
        return _CONTEXT_KIND[self.input]

    @field_validator("dimensions")
    @classmethod
    def _dimensions_have_values(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, values in value.items():
            if len({v.strip() for v in values if v.strip()}) < 2:
                raise ValueError(f"pinned dimension {name!r} needs at least two distinct values")
        return value

    def labeled_seeds(self, label: SeedLabel) -> list[str]:
        """Texts of the seeds with that label (a conversation seed's latest turn)."""
        return [seed.text for seed in self.seeds if seed.label == label]

    def seed_examples(self) -> list[LabeledExample]:
        """The labeled seeds as training rows (a conversation seed with its ``context``)."""
        return [
            LabeledExample(text=seed.text, labels=[self.name] if seed.label == "violates" else [], context=seed.context)
            for seed in self.seeds
            if seed.label
        ]

    def rules_text(self) -> str:
        """The policy as the LLM prompts show it."""
        violates = "\n".join(f"- {rule}" for rule in self.violates)
        allowed = "\n".join(f"- {rule}" for rule in self.allowed)
        judged = "A message" if self.input == "message" else "The latest user turn, read with the turns before it,"
        return f"Assistant: {self.description}\n{judged} VIOLATES the policy when it is:\n{violates}\n" \
               f"{judged} COMPLIES when it is:\n{allowed}"  # fmt: skip


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; errors name the field and its line."""
    path = Path(path)
    if not path.is_file():
        raise PolicyError(path, "no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(path, f"is not UTF-8 text ({exc.reason})") from None
    return parse_policy(text, path)


def parse_policy(text: str, source: str | Path = "<policy>") -> Policy:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise PolicyError(source, f"invalid YAML: {exc.problem or exc.context}", line=line) from None
    except yaml.YAMLError as exc:
        raise PolicyError(source, f"invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(source, "must be a YAML mapping with name, description, violates and allowed", line=1)
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        # A seed checked against the policy's input points, through its ``path``, below the field it fails.
        locs = [(*e["loc"], *(e.get("ctx") or {}).get("path", ())) for e in exc.errors()]
        problems = "; ".join(
            f"{'.'.join(map(str, loc)) or 'policy'}: {e['msg']}" for loc, e in zip(locs, exc.errors(), strict=True)
        )
        raise PolicyError(source, problems, line=_line_of(root, locs[0])) from None


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the deepest YAML node that ``loc`` (a pydantic error location) reaches."""
    if node is None:
        return None
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            child = next((value for key, value in node.value if key.value == part), None)
            if child is None:  # a missing or unknown key: point at the key itself, or at the mapping
                key_node = next((key for key, _ in node.value if key.value == part), None)
                return (key_node or node).start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node = child
    return node.start_mark.line + 1
