"""Zero-shot guards from a policy's words: the base encoder against one pretrained on the policy-task bank.

    guard-build pretrain --out runs/pretrain --threads 2
    python -m benchmarks.zero_shot --model runs/pretrain [--threads 2]

A text's score is ``max_j cos(x, violates_j) - max_k cos(x, allowed_k)`` on normalised sentence embeddings. Reported
for each encoder (all-MiniLM-L6-v2, and ``--model``'s ``model/``):

- held-out tasks: the tasks ``guard-build pretrain`` kept out of training (``pretrain.json``). Each task's lines are
  the ``violates`` lines, the first line of up to three sibling tasks of its source the ``allowed`` ones; its texts are
  the positives, the other held-out tasks' texts of the same source the negatives. AUPRC per task, mean per source and
  over all tasks. This is the number to choose settings by.
- the example policies (``examples/policies``, held-out texts in ``heldout/``): the lines score, and a balanced
  logistic regression on the embeddings of the lines and the labeled seeds. For reporting only.

Writes ``results/zero_shot/zero_shot.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ._common import RESULTS, ROOT, TRAIN_DIR, log, machine_info, markdown_table, write_json

OUT = RESULTS / "zero_shot"
POLICIES = ROOT / "examples" / "policies"
TEXTS_PER_TASK = 40
SIBLING_LINES = 3


class _Encoder:
    def __init__(self, path: str, threads: int | None) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)
        self.model = SentenceTransformer(path, device="cpu")
        self.model.max_seq_length = 128
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        from guard_sdk import normalize

        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            vectors = self.model.encode(
                [normalize(t).text for t in missing], batch_size=64, normalize_embeddings=True, convert_to_numpy=True
            )
            self.cache.update(zip(missing, vectors))
        return np.stack([self.cache[t] for t in texts])


def _lines_score(encode: _Encoder, texts: list[str], violates: list[str], allowed: list[str]) -> np.ndarray:
    x = encode(texts)
    return np.asarray((x @ encode(violates).T).max(1) - (x @ encode(allowed).T).max(1))


def heldout_tasks(encode: _Encoder, tasks: list[Any]) -> dict[str, Any]:
    from sklearn.metrics import average_precision_score

    by_source: dict[str, list[Any]] = defaultdict(list)
    for task in tasks:
        by_source[task.source].append(task)
    per_task: dict[str, float] = {}
    for source, group in sorted(by_source.items()):
        rng = random.Random(source)
        texts = {task.name: rng.sample(task.texts, min(TEXTS_PER_TASK, len(task.texts))) for task in group}
        for task in group:
            siblings = [other for other in group if other.name != task.name]
            allowed = [other.lines[0] for other in rng.sample(siblings, min(SIBLING_LINES, len(siblings)))]
            pool = [(text, other.name == task.name) for other in group for text in texts[other.name]]
            scores = _lines_score(encode, [text for text, _ in pool], task.lines, allowed)
            per_task[task.name] = float(average_precision_score([label for _, label in pool], scores))
    per_source = {
        source: float(np.mean([per_task[t.name] for t in group])) for source, group in sorted(by_source.items())
    }
    return {"mean": float(np.mean(list(per_task.values()))), "per_source": per_source, "per_task": per_task}


def example_policies(encode: _Encoder) -> dict[str, dict[str, float]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score

    from builder.data.policy import load_policy

    results = {}
    for path in sorted(POLICIES.glob("*.yaml")):
        policy = load_policy(path)
        rows = [json.loads(line) for line in (POLICIES / "heldout" / f"{path.stem}.jsonl").open()]
        texts, labels = [r["text"] for r in rows], [bool(r["labels"]) for r in rows]
        lines = _lines_score(encode, texts, list(policy.violates), list(policy.allowed))
        positives = list(policy.violates) + [s.text for s in policy.seeds if s.label == "violates"]
        negatives = list(policy.allowed) + [s.text for s in policy.seeds if s.label == "complies"]
        head = LogisticRegression(class_weight="balanced", max_iter=1000)
        head.fit(encode(positives + negatives), [1] * len(positives) + [0] * len(negatives))
        results[path.stem] = {
            "lines": float(average_precision_score(labels, lines)),
            "lines+seeds LR": float(average_precision_score(labels, head.decision_function(encode(texts)))),
        }
    return results


def main() -> None:
    from builder.recipes.policy_tasks import load_tasks
    from builder.recipes.pretrain import INFO_FILE, PretrainInfo
    from builder.train.run import base_model_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="guard-build pretrain's output folder")
    parser.add_argument("--seeds", default=str(TRAIN_DIR), help="seed sets folder (the one pretrain read)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    info = PretrainInfo.model_validate_json((Path(args.model) / INFO_FILE).read_text())
    held = set(info.heldout_tasks)
    tasks = [task for task in load_tasks(Path(args.seeds)) if task.name in held]
    encoders = {"base": base_model_path(None), "pretrained": str(Path(args.model) / "model")}
    report: dict[str, Any] = {"machine": machine_info(), "pretrain": info.model_dump(), "encoders": {}}
    for name, path in encoders.items():
        log(f"{name}: {path}")
        encode = _Encoder(path, args.threads)
        report["encoders"][name] = {"heldout_tasks": heldout_tasks(encode, tasks), "policies": example_policies(encode)}
    OUT.mkdir(parents=True, exist_ok=True)
    write_json(OUT / "zero_shot.json", report)
    (OUT / "zero_shot.md").write_text(_markdown(report))
    print(_markdown(report))


def _markdown(report: dict[str, Any]) -> str:
    encoders = report["encoders"]
    names = list(encoders)
    sources = list(encoders[names[0]]["heldout_tasks"]["per_source"])
    rows: list[list[object]] = [
        [f"held-out tasks: {source}", *(round(encoders[n]["heldout_tasks"]["per_source"][source], 3) for n in names)]
        for source in sources
    ]
    rows.append(
        ["**held-out tasks: mean over tasks**", *(round(encoders[n]["heldout_tasks"]["mean"], 3) for n in names)]
    )
    policies = list(encoders[names[0]]["policies"])
    for method in ("lines", "lines+seeds LR"):
        rows += [[f"{p}: {method}", *(round(encoders[n]["policies"][p][method], 3) for n in names)] for p in policies]
        means = [round(float(np.mean([encoders[n]["policies"][p][method] for p in policies])), 3) for n in names]
        rows.append([f"**example policies: {method}, mean**", *means])
    pretrain = report["pretrain"]
    header = (
        f"Pretraining: {pretrain['pairs']} pairs of {pretrain['training_tasks']} tasks, batch {pretrain['batch_size']}, "
        f"max_length {pretrain['max_length']}, {pretrain['train_seconds']:.0f} s; "
        f"{len(pretrain['heldout_tasks'])} tasks held out.\n\n"
    )
    return header + markdown_table(["AUPRC", *names], rows) + "\n"


if __name__ == "__main__":
    main()
