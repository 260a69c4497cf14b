"""Policy files: validation with field names and lines, and the shipped example policies."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.data.policy import Policy, load_policy, parse_policy
from builder.errors import BuilderError, PolicyError

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples" / "policies").glob("*.yaml"))

GOOD = """\
name: visa-advice
description: A travel agency assistant.
violates:
  - Telling a user whether they qualify for a visa
allowed: Booking flights and hotels
seeds:
  - text: Can I work on a tourist visa?
    label: violates
  - Which hotels have a pool?
dimensions:
  persona: [student, retiree]
"""


def test_a_policy_loads_with_seeds_labeled_or_not():
    policy = parse_policy(GOOD)
    assert policy.name == "visa-advice"
    assert policy.allowed == ["Booking flights and hotels"]  # one string is a one-rule list
    assert [(s.text, s.label) for s in policy.seeds] == [
        ("Can I work on a tourist visa?", "violates"),
        ("Which hotels have a pool?", None),
    ]
    assert policy.labeled_seeds("violates") == ["Can I work on a tourist visa?"]
    assert policy.dimensions == {"persona": ["student", "retiree"]}
    assert "VIOLATES" in policy.rules_text() and "Booking flights" in policy.rules_text()


def test_a_policy_without_seeds_or_dimensions_is_valid():
    policy = parse_policy("name: p\ndescription: d\nviolates: [x]\nallowed: [y]\n")
    assert policy.seeds == [] and policy.dimensions == {}


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        (GOOD.replace("label: violates", "label: maybe"), r"seeds\.0\.label: Input should be 'violates' or", 8),
        (GOOD.replace("name: visa-advice", "name: visa advice"), r"name: String should match pattern", 1),
        (GOOD + "colour: blue\n", r"colour: Extra inputs are not permitted", 12),
        (GOOD.replace("  persona: [student, retiree]", "  persona: [student]"), r"at least two distinct values", 11),
        (GOOD.replace("allowed: Booking flights and hotels\n", ""), r"allowed: Field required", 1),
        (GOOD.replace("violates:\n  - Telling", "violates: [\n  - Telling"), r"invalid YAML", 4),
        (GOOD.replace("  - Which hotels have a pool?", "  - ''"), r"seeds\.1\.text: String should have at least", 9),
        ("- just\n- a list\n", r"must be a YAML mapping", 1),
    ],
)
def test_errors_name_the_field_and_the_line(tmp_path: Path, text: str, message: str, line: int):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=message) as caught:
        load_policy(path)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert isinstance(caught.value, BuilderError)


def test_unreadable_files_are_policy_errors(tmp_path: Path):
    with pytest.raises(PolicyError, match="no such file"):
        load_policy(tmp_path / "missing.yaml")
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(tmp_path / "latin1.yaml")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_policies_are_valid_and_seeded(path: Path):
    policy = load_policy(path)
    assert isinstance(policy, Policy) and policy.name == path.stem
    assert len(policy.seeds) >= 4
    assert {"violates", "complies"} <= {s.label for s in policy.seeds}


def test_there_are_at_least_three_example_policies():
    assert len(EXAMPLES) >= 3
