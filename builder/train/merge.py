"""Merge single-policy fine-tunes into one multi-label model (UniGuard's search-based merging).

Why: an application with N policies would otherwise run N single-policy guards, N encoder passes per check. Every
fine-tune of the same base differs from it by a *task vector* ``τ_i = θ_i − θ_base``; adding task vectors back into
the base gives one encoder that serves every policy, and the single-policy heads (one linear row each) stack into one
multi-label head. The result is an ordinary ``BertForSequenceClassification`` run folder, so ``export_bundle`` writes
a normal bundle and the runtime changes nothing: one pass instead of N.

Merged, shared encoder (every weight except each run's ``classifier.*`` head), with per-source coefficients ``λ_i``:

- ``linear``: weight averaging, ``θ = Σ w_i θ_i / Σ w_i`` (= ``θ_base + Σ (w_i / Σ w) τ_i``).
- ``task_arithmetic``: ``θ = θ_base + Σ λ_i τ_i``.
- ``ties`` (TIES-merging): each ``τ_i`` is trimmed to its top ``density`` share of entries by magnitude (over the
  whole vector) and scaled by ``λ_i``; each entry's sign is elected as the sign of the sum of those trimmed vectors;
  the entry is the mean of the trimmed values that agree with that sign (a disjoint mean: zeros and dissenters do not
  dilute it). With equal ``λ_i = λ`` this is the paper's ``θ_base + λ · TIES(τ)``.

*Donor* runs (e.g. the multi-task model) add their encoder's task vector only; their head is not used.

The coefficients are searched to maximise the mean, over labels, of the best-threshold F1 of each label on its own
task's validation split (a task's rows only carry *its* label, so a label is never scored on rows it is unknown for).
Search: a grid over the shared parameters (one ``λ`` for every source; ``× density`` for TIES), then coordinate
ascent on each source's ``λ`` (``± step``, halved after a round without improvement) until ``max_evals``. Every
tried point is recorded in ``merge.json``. Deterministic; no random restarts.

Caveat: the same validation rows then calibrate the bundle's thresholds in export, so validation F1 of a searched merge
is optimistic (a few dozen points are tried on a few hundred rows). ``SearchConfig.holdout_fraction`` keeps a share
of each task's rows out of the search and reports the chosen point's F1 on them; judge a merge on data no step saw.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from guard_sdk import normalize

from ..data.dataset import LabeledDataset, LabeledExample, load_jsonl
from ..errors import BuilderError
from .run import DEFAULT_BASE_MODEL_NAME, TrainingInfo, TrainingRun, default_base_model

if TYPE_CHECKING:
    import torch

__all__ = [
    "MERGE_FILE",
    "MergeConfig",
    "MergeError",
    "MergeMethod",
    "MergePoint",
    "MergeReport",
    "MergeSource",
    "MergeSummary",
    "SearchConfig",
    "merge_runs",
    "merge_vectors",
    "ties_merge",
    "trim",
]

logger = logging.getLogger("builder.train.merge")

MERGE_FILE = "merge.json"
"""The full record of a merge run (every tried point), beside ``model/`` and ``validation.jsonl``."""
HEAD_PREFIX = "classifier."
MergeMethod = Literal["linear", "task_arithmetic", "ties"]
HEAD_COSINE_WARNING = 0.9


class MergeError(BuilderError):
    """The runs cannot be merged (different base, architecture, head kind or overlapping labels)."""


class SearchConfig(BaseModel):
    """Grid over the shared parameters, then coordinate ascent on each source's coefficient."""

    model_config = ConfigDict(use_attribute_docstrings=True)  # field docstrings: guard-build's help

    scales: list[float] = [0.2, 0.4, 0.6, 0.8, 1.0]
    """Grid values of the one ``λ`` every source gets first (task arithmetic, TIES; linear starts from equal weights)."""
    densities: list[float] = [0.1, 0.2, 0.4]
    """TIES: grid values of the share of each task vector's entries kept."""
    step: float = Field(0.2, gt=0)
    """First coordinate-ascent step on one source's ``λ``; halved after a round without improvement."""
    min_step: float = Field(0.05, gt=0)
    max_lambda: float = Field(2.0, gt=0)
    max_evals: int = Field(40, ge=1)
    """Tried points in all (grid included)."""
    holdout_fraction: float = Field(0.0, ge=0, lt=1)
    """Share of each task's validation rows kept out of the search; the chosen point is reported on them."""
    seed: int = 13


class MergeConfig(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)  # field docstrings: guard-build's help

    tasks: list[Path] = Field(min_length=1)
    """Fine-tuned run folders (``builder.train.classifier``) whose encoders are merged and whose heads are stacked."""
    donors: list[Path] = []
    """Run folders whose encoder task vectors are merged in too; their heads are not used (e.g. the multi-task guard)."""
    method: MergeMethod = "ties"
    coefficients: list[float] | None = None
    """One ``λ`` per source (tasks, then donors): merge with these and do not search."""
    density: float | None = Field(None, gt=0, le=1)
    """TIES with fixed ``coefficients``: share of each task vector kept (default 0.2)."""
    search: SearchConfig = SearchConfig()
    base_model: str | None = None
    """The base folder the runs were fine-tuned from; default: the one their ``guard_training.json`` names."""
    labels_from: Path | None = None
    """The multi-label JSONL the tasks were cut from: labels the merged validation split for every label (without it
    a task's row is only known for its own label and counts as negative for the others in export's calibration)."""
    threads: int | None = None
    batch_size: int = Field(32, ge=1)
    overwrite: bool = False

    @model_validator(mode="after")
    def _check(self) -> MergeConfig:
        sources = len(self.tasks) + len(self.donors)
        if self.coefficients is not None and len(self.coefficients) != sources:
            raise ValueError(f"coefficients: {len(self.coefficients)} given for {sources} sources (tasks, then donors)")
        if self.coefficients is not None and any(c < 0 for c in self.coefficients):
            raise ValueError("coefficients must be >= 0")
        if self.density is not None and self.method != "ties":
            raise ValueError("density only applies to method 'ties'")
        return self


class MergeSource(BaseModel):
    run: str
    role: Literal["task", "donor"]
    labels: list[str]
    """The head rows it contributes (a donor: none)."""
    data_sha256: str


class MergePoint(BaseModel):
    """One tried point of the search and what it scored."""

    phase: Literal["fixed", "grid", "coordinate"]
    coefficients: list[float]
    density: float | None
    objective: float
    """Mean over labels of the best-threshold F1 on the search rows."""
    label_f1: dict[str, float]
    seconds: float


class MergeSummary(BaseModel):
    """What ``guard_training.json`` records under ``merge``, and so the bundle's manifest under ``training.merge``."""

    method: MergeMethod
    search: Literal["fixed", "grid+coordinate"]
    coefficients: dict[str, float]
    """``λ`` per source run folder, as searched (linear: weights)."""
    task_vector_scales: dict[str, float]
    """What each source's task vector is multiplied by (linear: the normalised weight)."""
    density: float | None
    sources: list[MergeSource]
    objective: float | None
    evaluations: int


class MergeReport(BaseModel):
    summary: MergeSummary
    info: TrainingInfo
    points: list[MergePoint]
    best: int | None
    """Index in ``points`` of the chosen point (``None`` when merged with fixed coefficients and nothing to score)."""
    single_f1: dict[str, float]
    """Each label's own fine-tune, best-threshold F1 on the same search rows: what merging gives up."""
    holdout_f1: dict[str, float] | None = None
    single_holdout_f1: dict[str, float] | None = None
    head_cosine_max: float | None
    """Largest cosine similarity between two stacked head rows. Near 1: the runs started from the same head (same
    seed) and barely moved it, so every task vector writes "positive" along one direction and the merged labels
    collapse into one score; train each policy with its own seed."""
    search_rows: int
    holdout_rows: int
    seconds: float


# ---------------------------------------------------------------------------------------------------------------------
# The merge formulas, on flat task vectors (every encoder weight concatenated).


def trim(vector: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the top ``density`` share of entries by magnitude (ties at the cut are kept), zero the rest."""
    import torch

    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if density >= 1:
        return vector.clone()
    keep = max(1, round(density * vector.numel()))
    cut = torch.kthvalue(vector.abs().reshape(-1), vector.numel() - keep + 1).values
    return torch.where(vector.abs() >= cut, vector, torch.zeros_like(vector))


def ties_merge(trimmed: Sequence[torch.Tensor], coefficients: Sequence[float]) -> torch.Tensor:
    """TIES on already trimmed task vectors: scale by ``λ_i``, elect each entry's sign, disjoint mean."""
    import torch

    scaled = torch.stack([c * t for c, t in zip(coefficients, trimmed)])
    sign = torch.sign(scaled.sum(dim=0))
    agree = (torch.sign(scaled) == sign) & (scaled != 0)
    count = agree.sum(dim=0).clamp(min=1)
    return (scaled * agree).sum(dim=0) / count


def merge_vectors(
    base: torch.Tensor,
    vectors: Sequence[torch.Tensor],
    coefficients: Sequence[float],
    method: MergeMethod,
    density: float | None = None,
    *,
    trimmed: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """The merged flat encoder from the flat base and task vectors (see the module docstring for the formulas)."""
    if len(vectors) != len(coefficients):
        raise ValueError(f"{len(coefficients)} coefficients for {len(vectors)} task vectors")
    if method == "ties":
        kept = trimmed if trimmed is not None else [trim(v, density or 1.0) for v in vectors]
        return base + ties_merge(kept, coefficients)
    scales = _task_vector_scales(coefficients, method)
    merged = base.clone()
    for scale, vector in zip(scales, vectors):
        if scale:
            merged.add_(vector, alpha=scale)
    return merged


def _task_vector_scales(coefficients: Sequence[float], method: MergeMethod) -> list[float]:
    if method == "linear":
        total = float(sum(coefficients))
        return [c / total if total else 0.0 for c in coefficients]
    return [float(c) for c in coefficients]


# ---------------------------------------------------------------------------------------------------------------------
# Loading and checking the runs.


class _Run(TrainingRun):
    """A finished fine-tuned classifier run, as a task (its labels are merged) or a donor (its encoder only)."""

    def __init__(self, folder: Path, role: Literal["task", "donor"]) -> None:
        super().__init__(folder)
        self.role = role
        try:
            self.recorded = self.info()
        except BuilderError as exc:
            raise MergeError(str(exc)) from None
        if self.recorded.model_kind != "classifier":
            raise MergeError(
                f"{folder} is an {self.recorded.model_kind!r} run: only fine-tuned classifiers "
                "(builder.train.classifier) can be merged"
            )
        if role == "task" and self.recorded.instructions:
            raise MergeError(
                f"{folder} is a multi-task run (its one output reads (instruction, text) pairs): it can only be a donor"
            )
        self.config = json.loads((self.model_dir / "config.json").read_text())


_ARCHITECTURE_KEYS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "type_vocab_size",
    "hidden_act",
)


def _check_runs(tasks: list[_Run], donors: list[_Run]) -> None:
    runs = tasks + donors
    bases = {run.recorded.base_model for run in runs}
    if len(bases) > 1:
        listing = "; ".join(f"{run.folder}: {run.recorded.base_model}" for run in runs)
        raise MergeError(f"the runs were fine-tuned from different base models, so their weights do not add: {listing}")
    first = runs[0]
    for run in runs[1:]:
        diff = {
            key: (first.config.get(key), run.config.get(key))
            for key in _ARCHITECTURE_KEYS
            if first.config.get(key) != run.config.get(key)
        }
        if diff:
            raise MergeError(f"{run.folder} has another architecture than {first.folder}: {diff}")
    seen: dict[str, Path] = {}
    for run in tasks:
        for name in run.recorded.label_names:
            if name in seen:
                raise MergeError(
                    f"label {name!r} comes from two task runs ({seen[name]} and {run.folder}): one head row per label"
                )
            seen[name] = run.folder


def _resolve_base(recorded: str, override: str | None) -> str:
    if override:
        return override
    if recorded == DEFAULT_BASE_MODEL_NAME:
        return default_base_model()
    if not Path(recorded).is_dir():
        raise MergeError(f"the runs' base model {recorded!r} is not a local folder: pass base_model")
    return recorded


class _Layout:
    """Which state-dict entries form the shared encoder, and where each sits in the flat vector."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self.keys = [k for k, v in state.items() if not k.startswith(HEAD_PREFIX) and v.is_floating_point()]
        self.fixed = [k for k, v in state.items() if not k.startswith(HEAD_PREFIX) and not v.is_floating_point()]
        self.shapes = {k: tuple(state[k].shape) for k in self.keys + self.fixed}

    def flatten(self, state: dict[str, torch.Tensor], where: Path | str) -> torch.Tensor:
        import torch

        missing = [k for k in self.keys + self.fixed if k not in state]
        extra = [k for k in state if not k.startswith(HEAD_PREFIX) and k not in self.shapes]
        wrong = [k for k in self.keys + self.fixed if k in state and tuple(state[k].shape) != self.shapes[k]]
        if missing or extra or wrong:
            raise MergeError(
                f"{where}: its encoder's weights differ from the base's (missing {missing[:3]}, unexpected "
                f"{extra[:3]}, other shapes {wrong[:3]}): not a fine-tune of this base"
            )
        return torch.cat([state[k].detach().reshape(-1).float() for k in self.keys])

    def load_into(self, model: torch.nn.Module, flat: torch.Tensor) -> None:
        params = model.state_dict()
        offset = 0
        for key in self.keys:
            size = params[key].numel()
            params[key].copy_(flat[offset : offset + size].view(params[key].shape))
            offset += size


def _load_state(model_dir: str | Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _load_base(base: str, num_layers: int | None) -> tuple[dict[str, torch.Tensor], Any]:
    from transformers import AutoModelForSequenceClassification

    model, loading = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=1,
        output_loading_info=True,
        **({"num_hidden_layers": num_layers} if num_layers else {}),
    )
    missing = [k for k in loading["missing_keys"] if not k.startswith(HEAD_PREFIX)]
    if missing:
        raise MergeError(
            f"the base checkpoint {base} lacks encoder weights {missing[:4]}: fine-tunes started from random values "
            "there, so they have no task vector"
        )
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, model.config


# ---------------------------------------------------------------------------------------------------------------------
# Scoring a merged encoder on the validation rows.


class _Scorer:
    """Pre-tokenised rows in length-sorted batches; ``logits(model)`` runs them through a model once."""

    def __init__(self, tokenizer: Any, texts: list[str], max_length: int, batch_size: int) -> None:
        texts = [normalize(t).text for t in texts]
        lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        self.batches = []
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in index], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            )
            self.batches.append((index, batch))
        self.rows = len(texts)

    def logits(self, model: torch.nn.Module) -> np.ndarray:
        import torch

        out: np.ndarray | None = None
        with torch.inference_mode():
            for index, batch in self.batches:
                logits = model(**batch).logits.numpy()
                if out is None:
                    out = np.zeros((self.rows, logits.shape[1]), dtype=np.float32)
                out[index] = logits
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def _best_f1(truth: np.ndarray, scores: np.ndarray) -> float:
    """The F1 at the best threshold (what export's max-F1 calibration would pick on these rows)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(truth, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(f1.max())


class _Rows(BaseModel):
    """Rows of the validation splits used for one purpose (search or holdout): per label, which rows and truths."""

    texts: list[str]
    label_rows: dict[str, list[int]]
    label_truth: dict[str, list[bool]]


def _rows(tasks: list[_Run], validations: list[LabeledDataset], pick: list[list[int]]) -> _Rows:
    texts: list[str] = []
    label_rows: dict[str, list[int]] = {}
    label_truth: dict[str, list[bool]] = {}
    for run, validation, chosen in zip(tasks, validations, pick):
        start = len(texts)
        texts += [validation.examples[i].text for i in chosen]
        for name in run.recorded.label_names:
            label_rows[name] = list(range(start, len(texts)))
            label_truth[name] = [name in validation.examples[i].labels for i in chosen]
    return _Rows(texts=texts, label_rows=label_rows, label_truth=label_truth)


def _split_rows(tasks: list[_Run], validations: list[LabeledDataset], search: SearchConfig) -> tuple[_Rows, _Rows]:
    """The tasks' validation rows, split at random into those the search scores and those held out from it."""
    rng = random.Random(search.seed)
    search_pick, holdout_pick = [], []
    for validation in validations:
        order = list(range(len(validation.examples)))
        rng.shuffle(order)
        cut = round(len(order) * search.holdout_fraction)
        holdout_pick.append(sorted(order[:cut]))
        search_pick.append(sorted(order[cut:]))
    return _rows(tasks, validations, search_pick), _rows(tasks, validations, holdout_pick)


def _label_f1(
    logits: np.ndarray, rows: _Rows, labels: list[str], only: Sequence[str] | None = None
) -> dict[str, float]:
    out = {}
    for name in only or labels:
        j = labels.index(name)
        out[name] = round(
            _best_f1(np.asarray(rows.label_truth[name]), logits[rows.label_rows[name], j].astype(np.float64)), 4
        )
    return out


# ---------------------------------------------------------------------------------------------------------------------
# The search.


def _search(
    evaluate: Callable[[list[float], float | None, str], MergePoint],
    sources: int,
    method: MergeMethod,
    search: SearchConfig,
) -> tuple[list[MergePoint], int]:
    points: list[MergePoint] = []
    seen: set[tuple[tuple[float, ...], float | None]] = set()

    def tried(coefficients: list[float], density: float | None, phase: str) -> MergePoint | None:
        key = (tuple(round(c, 6) for c in coefficients), density)
        if key in seen or len(points) >= search.max_evals:
            return None
        seen.add(key)
        point = evaluate(coefficients, density, phase)
        points.append(point)
        logger.info("merge %s %s density=%s: %.4f", phase, point.coefficients, density, point.objective)
        return point

    if method == "linear":
        grid: list[tuple[list[float], float | None]] = [([1.0] * sources, None)]
    elif method == "task_arithmetic":
        grid = [([s] * sources, None) for s in search.scales]
    else:
        grid = [([s] * sources, d) for d in search.densities for s in search.scales]
    for coefficients, density in grid:
        tried(coefficients, density, "grid")
    best = max(range(len(points)), key=lambda i: (points[i].objective, -i))

    step = search.step
    while step >= search.min_step - 1e-12 and len(points) < search.max_evals:
        improved = False
        for i in range(sources):
            for delta in (step, -step):
                coefficients = list(points[best].coefficients)
                coefficients[i] = round(min(search.max_lambda, max(0.0, coefficients[i] + delta)), 6)
                point = tried(coefficients, points[best].density, "coordinate")
                if point is not None and point.objective > points[best].objective + 1e-9:
                    best = len(points) - 1
                    improved = True
                    break
            if len(points) >= search.max_evals:
                break
        if not improved:
            step /= 2
    return points, best


# ---------------------------------------------------------------------------------------------------------------------


def merge_runs(out_dir: str | Path, config: MergeConfig) -> MergeReport:
    """Merge ``config.tasks`` (and ``config.donors``) into one multi-label run folder at ``out_dir``."""
    import torch

    started = time.perf_counter()
    out = TrainingRun(out_dir)
    if out.model_dir.exists() and not config.overwrite:
        raise MergeError(f"{out.folder} already holds a run; choose another folder or pass overwrite")
    if config.threads:
        torch.set_num_threads(config.threads)
    tasks = [_Run(Path(p), "task") for p in config.tasks]
    donors = [_Run(Path(p), "donor") for p in config.donors]
    runs = tasks + donors
    _check_runs(tasks, donors)
    merger = _Merger(tasks, donors, config)

    validations = [run.validation(run.recorded.label_names) for run in tasks]
    search_rows, holdout_rows = _split_rows(tasks, validations, config.search)
    searching = config.coefficients is None
    if searching:
        _check_scorable(search_rows, "search")
    scorer = merger.scorer(search_rows)

    def evaluate(coefficients: list[float], density: float | None, phase: str) -> MergePoint:
        began = time.perf_counter()
        merger.load(coefficients, density)
        scores = merger.label_f1(scorer, search_rows)
        return MergePoint(
            phase=phase,  # type: ignore[arg-type]
            coefficients=[round(c, 6) for c in coefficients],
            density=density,
            objective=round(float(np.mean(list(scores.values()))), 6),
            label_f1=scores,
            seconds=round(time.perf_counter() - began, 2),
        )

    if searching:
        points, best = _search(evaluate, len(runs), config.method, config.search)
        coefficients, density = points[best].coefficients, points[best].density
    else:
        coefficients = list(config.coefficients or [])
        density = (config.density or 0.2) if config.method == "ties" else None
        points = [evaluate(coefficients, density, "fixed")] if _scorable(search_rows) else []
        best = 0 if points else None

    single = merger.singles(search_rows) if _scorable(search_rows) else {}
    holdout = single_holdout = None
    if holdout_rows.texts and _scorable(holdout_rows):
        single_holdout = merger.singles(holdout_rows)
        merger.load(coefficients, density)
        holdout = merger.label_f1(merger.scorer(holdout_rows), holdout_rows)
    merger.load(coefficients, density)

    sources = [
        MergeSource(
            run=str(run.folder),
            role=run.role,
            labels=run.recorded.label_names if run.role == "task" else [],
            data_sha256=run.recorded.data_sha256,
        )
        for run in runs
    ]
    summary = MergeSummary(
        method=config.method,
        search="grid+coordinate" if searching else "fixed",
        coefficients={str(run.folder): c for run, c in zip(runs, coefficients)},
        task_vector_scales={
            str(run.folder): round(s, 6) for run, s in zip(runs, _task_vector_scales(coefficients, config.method))
        },
        density=density,
        sources=sources,
        objective=points[best].objective if best is not None else None,
        evaluations=len(points),
    )
    merged_validation = _merged_validation(tasks, validations, merger.labels, config.labels_from)
    info = TrainingInfo(
        base_model=runs[0].recorded.base_model,
        label_names=merger.labels,
        label_descriptions={k: v for run in tasks for k, v in run.recorded.label_descriptions.items()},
        problem_type="binary" if len(merger.labels) == 1 else "multi_label",
        max_length=merger.max_length,
        data_sha256=hashlib.sha256(json.dumps([s.data_sha256 for s in sources]).encode()).hexdigest(),
        train_examples=sum(run.recorded.train_examples for run in runs),
        validation_examples=len(merged_validation),
        seed=config.search.seed,
        epochs=0.0,
        steps=0,
        examples_per_second=0.0,
        train_seconds=round(time.perf_counter() - started, 1),
        final_loss=None,
        num_layers=merger.model.config.num_hidden_layers,
        merge=summary.model_dump(mode="json"),
    )
    out.folder.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out.model_dir, ignore_errors=True)
    merger.model.save_pretrained(out.model_dir)
    merger.tokenizer.save_pretrained(out.model_dir)
    out.write_validation(merged_validation)
    out.finish(info)
    report = MergeReport(
        summary=summary,
        info=info,
        points=points,
        best=best,
        single_f1=single,
        holdout_f1=holdout,
        single_holdout_f1=single_holdout,
        head_cosine_max=merger.head_cosine,
        search_rows=len(search_rows.texts),
        holdout_rows=len(holdout_rows.texts),
        seconds=round(time.perf_counter() - started, 1),
    )
    (out.folder / MERGE_FILE).write_text(report.model_dump_json(indent=2))
    return report


class _Merger:
    """The base encoder, every run's task vector, and one model with the tasks' heads stacked, into which merged
    encoders are loaded to be scored."""

    def __init__(self, tasks: list[_Run], donors: list[_Run], config: MergeConfig) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        runs = tasks + donors
        self.tasks, self.config = tasks, config
        layers = {run.recorded.num_layers for run in runs}
        base_dir = _resolve_base(runs[0].recorded.base_model, config.base_model)
        base_state, _ = _load_base(base_dir, runs[0].recorded.num_layers if len(layers) == 1 else None)
        self.layout = layout = _Layout(base_state)
        self.base = layout.flatten(base_state, base_dir)
        states = [_load_state(run.model_dir) for run in runs]
        self.vectors = [layout.flatten(state, run.folder) - self.base for state, run in zip(states, runs)]
        for key in layout.fixed:
            for state, run in zip(states, runs):
                if not torch.equal(state[key], base_state[key]):
                    raise MergeError(f"{run.folder}: buffer {key} differs from the base's")
        _check_vocabulary(base_dir, runs)

        self.labels = [name for run in tasks for name in run.recorded.label_names]
        heads = [(states[i][HEAD_PREFIX + "weight"], states[i][HEAD_PREFIX + "bias"]) for i in range(len(tasks))]
        for (weight, _), run in zip(heads, tasks):
            if weight.shape != (len(run.recorded.label_names), base_state[HEAD_PREFIX + "weight"].shape[1]):
                raise MergeError(f"{run.folder}: only a single linear classifier head can be stacked ({weight.shape})")
        del states
        self.head_cosine = _head_cosine_max(torch.cat([w for w, _ in heads]))
        if self.head_cosine is not None and self.head_cosine > HEAD_COSINE_WARNING:
            logger.warning(
                "two task heads have cosine similarity %.3f: the runs share their head's initialisation (same seed?), "
                "so their task vectors push one direction and the merged labels will score alike; train each policy "
                "with its own seed",
                self.head_cosine,
            )

        model_config = AutoConfig.from_pretrained(tasks[0].model_dir)
        model_config.num_labels = len(self.labels)
        model_config.id2label = dict(enumerate(self.labels))
        model_config.label2id = {name: i for i, name in enumerate(self.labels)}
        model_config.problem_type = "multi_label_classification"
        self.model = AutoModelForSequenceClassification.from_config(model_config).eval()
        head_state = {
            HEAD_PREFIX + "weight": torch.cat([w for w, _ in heads]),
            HEAD_PREFIX + "bias": torch.cat([b for _, b in heads]),
        }
        self.model.load_state_dict({**base_state, **head_state}, strict=True)
        self.tokenizer = AutoTokenizer.from_pretrained(tasks[0].model_dir)
        self.max_length = max(run.recorded.max_length for run in tasks)
        self._trimmed: dict[float, list[torch.Tensor]] = {}

    def merged(self, coefficients: Sequence[float], density: float | None) -> torch.Tensor:
        if self.config.method != "ties":
            return merge_vectors(self.base, self.vectors, coefficients, self.config.method)
        density = density or 1.0
        if density not in self._trimmed:
            self._trimmed.clear()  # one density's trimmed vectors at a time: N x 90 MB each
            self._trimmed[density] = [trim(v, density) for v in self.vectors]
        return merge_vectors(self.base, self.vectors, coefficients, "ties", density, trimmed=self._trimmed[density])

    def load(self, coefficients: Sequence[float], density: float | None) -> None:
        self.layout.load_into(self.model, self.merged(coefficients, density))

    def scorer(self, rows: _Rows) -> _Scorer:
        return _Scorer(self.tokenizer, rows.texts, self.max_length, self.config.batch_size)

    def label_f1(self, scorer: _Scorer, rows: _Rows, only: Sequence[str] | None = None) -> dict[str, float]:
        """Each label's best F1 on its rows, for the model as loaded."""
        return _label_f1(scorer.logits(self.model), rows, self.labels, only)

    def singles(self, rows: _Rows) -> dict[str, float]:
        """Each task's own fine-tune (its encoder alone, its own head row) on its own rows."""
        scores: dict[str, float] = {}
        scorer = self.scorer(rows)
        for i, run in enumerate(self.tasks):
            self.layout.load_into(self.model, self.base + self.vectors[i])
            scores.update(self.label_f1(scorer, rows, run.recorded.label_names))
        return scores


def _head_cosine_max(rows: torch.Tensor) -> float | None:
    import torch

    if rows.shape[0] < 2:
        return None
    unit = rows / rows.norm(dim=1, keepdim=True).clamp(min=1e-12)
    cosine = unit @ unit.T - 2 * torch.eye(rows.shape[0])
    return round(float(cosine.max()), 4)


def _check_vocabulary(base_dir: str, runs: list[_Run]) -> None:
    from transformers import AutoTokenizer

    vocabulary = AutoTokenizer.from_pretrained(base_dir).get_vocab()
    for run in runs:
        if AutoTokenizer.from_pretrained(run.model_dir).get_vocab() != vocabulary:
            raise MergeError(f"{run.folder}: its tokenizer's vocabulary differs from the base's")


def _scorable(rows: _Rows) -> bool:
    return bool(rows.texts) and all(0 < sum(truth) < len(truth) for truth in rows.label_truth.values())


def _check_scorable(rows: _Rows, purpose: str) -> None:
    for name, truth in rows.label_truth.items():
        if not 0 < sum(truth) < len(truth):
            raise MergeError(
                f"label {name!r}: its task's validation rows for the {purpose} hold only one class "
                f"({sum(truth)} of {len(truth)} positive), so F1 cannot guide the {purpose}"
            )


def _merged_validation(
    tasks: list[_Run], validations: list[LabeledDataset], labels: list[str], labels_from: Path | None
) -> list[LabeledExample]:
    """Every task's validation rows once; labels from ``labels_from`` when given, else the union of what is known."""
    known: dict[str, set[str]] | None = None
    if labels_from is not None:
        source = load_jsonl(labels_from)
        known = {}
        for ex in source.examples:
            known.setdefault(ex.text, set()).update(label for label in ex.labels if label in labels)
    else:
        logger.warning(
            "merged validation split: a task's rows are labeled for its own label only (pass labels_from to label "
            "them fully); export's calibration counts them as negatives for the other labels"
        )
    rows: dict[str, dict[str, Any]] = {}
    for run, validation in zip(tasks, validations):
        for ex in validation.examples:
            row = rows.setdefault(ex.text, {**ex.model_dump(), "labels": [], "merge_tasks": []})
            row["merge_tasks"].append(
                run.recorded.label_names[0] if len(run.recorded.label_names) == 1 else str(run.folder)
            )
            row["labels"] = sorted(set(row["labels"]) | set(ex.labels))
    out = []
    for text, row in rows.items():
        if known is not None and text in known:
            row["labels"] = sorted(set(row["labels"]) | known[text])
        row["labels"] = [name for name in labels if name in row["labels"]]
        out.append(LabeledExample(**row))
    return out
