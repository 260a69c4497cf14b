"""Accuracy of the default pack (``guard-build pack``) against its targets, with ``benchmarks.accuracy``.

    python -m benchmarks.pack [--pack DIR] [--name pack] [--no-loso]

``content-safety`` is scored on OpenAI Moderation and XSTest, ``prompt-injection`` on deepset and on the benign
texts with trigger words ("ignore", "instructions", ...) that the pack's data recipe held out of training
(``<pack>-work/data/heldout``; every row is safe, so its false-positive rate is 1 - accuracy), ``answer-safety`` on
``xstest_responses`` in an output check as ``Guard.default()`` runs it: each answer with the request it answers,
gated by ``content-safety`` (``input.request_gate``). For comparison the answers are also scored without the gate,
alone, and the way pack 0.4.0 did, by ``content-safety`` reading the answer alone. Each set is scored
by the highest score among the guard's labels, as ``Guard`` flags. Then ``benchmarks.loso`` scores the recipe on
whole sources held out of training (``--no-loso`` skips it). Writes ``<name>.json`` and ``<name>.md``.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import accuracy, loso
from ._common import EVAL_DIR, RESULTS, markdown_table, write_json

# (what, set, metric, target, better): the targets of the default-pack issue.
TARGETS: list[tuple[str, str, str, float, str]] = [
    ("content-safety", "openai_moderation", "auprc", 0.91, ">="),
    ("content-safety", "xstest", "f1", 0.92, ">="),
    ("content-safety", "xstest", "fpr", 0.04, "<="),
    ("prompt-injection", "deepset_prompt_injections", "test_accuracy", 0.99, ">="),
    ("prompt-injection", "benign_trigger_words", "fpr", 0.05, "<="),
    ("answer-safety", "xstest_responses", "auprc", 0.80, ">="),
    ("answer-safety", "xstest_responses", "fpr", 0.05, "<="),
]


def _value(sets: dict[str, Any], name: str, metric: str) -> float | None:
    result = sets[name]
    if metric == "test_accuracy":
        return result.get("splits", {}).get("test", result["overall"])["accuracy"]
    return result["overall"][metric]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from builder.recipes.pack import default_work_dir
    from guard_sdk import IneffectiveOptionWarning, default_pack_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pack", type=Path, default=None, help="pack folder (default: guard_sdk.default_pack_dir())")
    parser.add_argument("--heldout", type=Path, help="held-out folder (default: <pack>-work/data/heldout)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="pack")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--no-loso", action="store_true", help="skip the leave-one-source-out table")
    args = parser.parse_args(argv)
    pack = args.pack or default_pack_dir()
    heldout = args.heldout or default_work_dir(pack) / "data" / "heldout"
    common = ["--out", str(args.out)] + (["--threads", str(args.threads)] if args.threads else [])
    runs = {
        "content-safety": accuracy.main(
            ["--bundle", str(pack / "content-safety"), "--eval-dir", str(EVAL_DIR), "--sets", "openai_moderation"]
            + ["xstest", "--name", f"{args.name}_content_safety", *common]
        ),
        "prompt-injection": accuracy.main(
            ["--bundle", str(pack / "prompt-injection"), "--eval-dir", str(EVAL_DIR)]
            + ["--sets", "deepset_prompt_injections", "--name", f"{args.name}_prompt_injection", *common]
        ),
        "prompt-injection (held out)": accuracy.main(
            ["--bundle", str(pack / "prompt-injection"), "--eval-dir", str(heldout)]
            + ["--name", f"{args.name}_trigger_words", *common]
        ),
        "answer-safety": accuracy.main(
            ["--bundle", str(pack / "answer-safety"), "--bundle", str(pack / "content-safety")]
            + ["--eval-dir", str(EVAL_DIR), "--sets", "xstest_responses"]
            + ["--stage", "output", "--name", f"{args.name}_answer_safety", *common]
        ),
    }
    sets = {name: result for run in runs.values() for name, result in run["sets"].items()}
    # The same answers without the request gate, without their requests, and read by content-safety alone (how pack
    # 0.4.0 checked answers).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IneffectiveOptionWarning)  # the gate is left out on purpose
        ungated = accuracy.main(
            ["--bundle", str(pack / "answer-safety"), "--eval-dir", str(EVAL_DIR), "--sets", "xstest_responses"]
            + ["--stage", "output", "--name", f"{args.name}_answer_safety_ungated", *common]
        )
    alone = accuracy.main(
        ["--bundle", str(pack / "answer-safety"), "--eval-dir", str(EVAL_DIR), "--sets", "xstest_responses"]
        + ["--stage", "output", "--context", "none", "--name", f"{args.name}_answer_safety_alone", *common]
    )
    by_text_guard = accuracy.main(
        ["--bundle", str(pack / "content-safety"), "--eval-dir", str(EVAL_DIR), "--sets", "xstest_responses"]
        + ["--context", "none", "--name", f"{args.name}_answers_by_content_safety", *common]
    )
    answers = {
        "answer-safety, answer with its request, gated by content-safety": sets["xstest_responses"]["overall"],
        "answer-safety, answer with its request, no gate": ungated["sets"]["xstest_responses"]["overall"],
        "answer-safety, answer alone": alone["sets"]["xstest_responses"]["overall"],
        "content-safety, answer alone (pack 0.4.0's output check)": by_text_guard["sets"]["xstest_responses"][
            "overall"
        ],
    }
    rows = []
    for guard, name, metric, target, better in TARGETS:
        value = _value(sets, name, metric)
        met = value is not None and (value >= target if better == ">=" else value <= target)
        rows.append([guard, name, metric, f"{better} {target}", value, "yes" if met else "no"])
    result: dict[str, Any] = {
        "pack": str(pack),
        "bundles": {guard: run["bundles"] for guard, run in runs.items()},
        "targets": rows,
        "sets": sets,
        "answers": answers,
    }
    parts = [markdown_table(["guard", "set", "metric", "target", "measured", "met"], rows), ""]
    parts += [
        "xstest_responses, output check:",
        "",
        markdown_table(
            ["how", "AUPRC", "recall", "FPR", "F1"],
            [[how, m["auprc"], m["recall"], m["fpr"], m["f1"]] for how, m in answers.items()],
        ),
        "",
    ]
    if not args.no_loso:
        result["loso"] = loso.main(
            ["--data", str(heldout.parent), "--out", str(args.out), "--name", f"{args.name}_loso"]
        )
        parts.append(f"Leave-one-source-out: {args.name}_loso.md")
    write_json(args.out / f"{args.name}.json", result)
    (args.out / f"{args.name}.md").write_text("\n".join(parts) + "\n")
    print("\n".join(parts))
    return result


if __name__ == "__main__":
    main()
