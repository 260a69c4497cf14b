"""``guard-build all``: a policy -> a guard bundle, and a report that says how far to trust it.

Training rows:

- the policy's own words: each ``violates`` line a violating row, each ``allowed`` line an allowed one, each also as
  it reads without its leading "Asking ..." (``message_form``), so that it reads like a message, and once per item
  of a list it names (``list_forms``), so that a message naming one item is as near to a row as one naming them
  all (message policies);
- its labeled seeds;
- the data engine's verified rows, when an LLM wrote them (``dataset``), among them real corpus texts that the
  debate labeled: with an endpoint, ``retrieve`` picks the corpus texts nearest the policy's two sides for the engine
  to debate (the zero-shot model's own labels on them made guards worse: benchmarks/README.md).

A message policy trains the embedding guard (``builder.train.embedding``): a linear head on the base encoder's
sentence embedding, which measured best on tens of rows. Every row trains; there is nothing left to calibrate a
threshold on, so the head's own decision boundary (0.5, the head being class-balanced) is the threshold, and the
report estimates quality by cross-validation over the message rows (seeds and generated rows) instead. A conversation
policy fine-tunes the classifier (``builder.train.classifier``), which reads the earlier turns; it keeps the usual
validation split and calibration.

The report (``POLICY_REPORT.md`` in the bundle, ``report.json`` in the work folder) says what the guard was made from
and warns when the data is too small, when the policy's lines and its examples disagree, and when generated rows are
far from every line and seed (off topic).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from guard_sdk.bundle import BundleManifest

from .._files import write_atomic
from ..data.dataset import LabeledDataset, LabeledExample, iter_text_rows
from ..data.policy import Policy
from ..errors import BuilderError
from ..export import ExportConfig, export_bundle
from ..train.classifier import TrainConfig, train
from ..train.embedding import EmbeddingGuardConfig, embed_texts, fit_heads, head_scores, train_embedding_guard
from ..train.run import TrainingRun, sentence_encoder

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "REPORT_FILE",
    "REVIEW_FILE",
    "PolicyGuardConfig",
    "PolicyReport",
    "build_policy_guard",
    "list_forms",
    "message_form",
    "policy_rows",
    "read_corpus",
    "retrieve",
]

logger = logging.getLogger("builder.recipes.policy_guard")

REPORT_FILE = "POLICY_REPORT.md"
REVIEW_FILE = "review.jsonl"
_CORPUS_CHARS = 4000
"""A corpus text is cut here: the encoder reads its first window only."""
MIN_SEEDS_PER_SIDE = 4
"""Labeled examples per side below which the report calls the data too small and gives no estimate."""
OFF_TOPIC_SIMILARITY = 0.2
"""A generated row whose cosine similarity to every line and seed of its policy is below this is off topic."""
LINES_AGREEMENT_WARNING = 0.7
"""Below this AUPRC of the lines-only head on the examples, the report says the lines and the examples disagree."""
ESTIMATE_WARNING = 0.7
"""Below this cross-validated AUPRC, the report says the guard ranks its own examples little better than chance."""

# A policy line usually describes a message ("Asking whether the user qualifies for a visa"); a message says it
# ("whether the user qualifies for a visa"). Literal alternatives, anchored: linear in the line's length.
_DESCRIBING = re.compile(
    r"^(?:asking|requests?|questions?|the user|telling|helping|giving)\b"
    r"(?: (?:the assistant|for|to|about|whether|how|if|that|with)\b)*\s*",
    re.IGNORECASE,
)


class PolicyGuardConfig(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)  # field docstrings: guard-build's help

    head: Literal["embedding", "classifier"] | None = None
    """Model kind; default: the embedding guard for a message policy, the classifier for a conversation policy (the
    embedding guard reads one text). ``epochs`` is the classifier's, ``regularization`` the embedding guard's."""
    regularization: float = Field(10.0, gt=0)
    """Inverse L2 strength of the embedding guard's head: a few rows per side want a weak pull towards zero."""
    epochs: float = Field(15.0, gt=0)
    """Classifier passes over the data (tens of rows need many)."""
    learning_rate: float = Field(1e-4, gt=0)
    """The classifier's learning rate (tens of rows make a step or two per pass)."""
    context_tokens: int = Field(48, ge=8)
    """Conversation policies: the earlier turns' last tokens the guard reads (its window is twice this)."""
    seed: int = 13
    threads: int | None = None
    progress: bool = True
    corpus: Path | None = None
    """Unlabeled real messages (a JSONL file with a "text" per line, or a folder of such files, like the seed sets):
    with an LLM that writes data, the --retrieve nearest the policy are debated into training rows; in any case the
    guard scores them, the report gives the share it flags, and ``review.jsonl`` lists the ones to label first.
    Message policies only."""
    corpus_limit: int = Field(20_000, ge=1)
    """Corpus texts read at most, an equal share from each file."""
    retrieve: int = Field(100, ge=0)
    """Corpus texts the data engine debates (with an LLM): half nearest the policy's violating side, half nearest
    its allowed side."""
    review: int = Field(25, ge=1)
    """Texts of each kind in ``review.jsonl``: the most surely flagged, and the nearest the threshold."""


class PolicyReport(BaseModel):
    """What a guard was made from and how far to trust it."""

    policy: str
    head: Literal["embedding", "classifier"]
    rows: dict[str, int]
    """Training rows by where they came from and their label."""
    unlabeled_seeds: int
    """Seeds without a label: only the data engine's debate reads them."""
    estimate_auprc: float | None
    """Cross-validated AUPRC on the labeled message rows (seeds, corpus and generated rows); None when too few."""
    estimate_recall: float | None
    estimate_fpr: float | None
    """At the bundle's threshold, cross-validated as ``estimate_auprc``."""
    lines_agreement_auprc: float | None
    """AUPRC of a head trained on the policy's lines alone, on the labeled message rows."""
    disagreeing: list[str]
    """Labeled rows that the lines-only head puts on the other side (at most five)."""
    off_topic: float | None
    """Share of the generated rows that are far from every line and seed."""
    corpus_texts: int | None = None
    corpus_flagged: float | None = None
    """Share of the corpus texts at or above the threshold."""
    threshold: float | None
    warnings: list[str]

    def render(self) -> str:
        rows = ", ".join(f"{key} {value}" for key, value in self.rows.items())
        lines = [
            f"# How the `{self.policy}` guard was made",
            "",
            f"- model: {self.head} guard; training rows: {rows}; unlabeled seeds (not trained on): {self.unlabeled_seeds}",
        ]
        if self.head == "classifier":
            # Fine-tuning per fold would multiply the build time: the bundle's own validation split says it.
            lines.append("- threshold and estimate: on the validation split, in the bundle's manifest (metrics)")
        else:
            lines += [
                f"- threshold: {self.threshold} (the head is class-balanced: 0.5 is its own boundary)",
                f"- estimate (cross-validated on the labeled examples): {_describe_estimate(self)}",
                f"- the policy's lines alone, on the labeled examples: AUPRC {_fmt(self.lines_agreement_auprc)}",
            ]
        if self.off_topic is not None:
            lines.append(f"- generated rows far from every line and seed: {self.off_topic:.0%}")
        if self.corpus_flagged is not None:
            lines.append(
                f"- corpus: {self.corpus_flagged:.1%} of {self.corpus_texts} texts flagged "
                f"({REVIEW_FILE} in the work folder: the ones to label first; labeled, they make good seeds)"
            )
        if self.disagreeing:
            lines += ["", "Examples the policy's lines alone put on the other side:", ""]
            lines += [f"- {json.dumps(text, ensure_ascii=False)}" for text in self.disagreeing]
        lines += ["", "## Warnings", ""] + ([f"- {w}" for w in self.warnings] or ["- none"])
        return "\n".join(lines) + "\n"


def message_form(line: str) -> str | None:
    """A policy line as a message would say it, or None when it reads like one already."""
    stripped = _DESCRIBING.sub("", line, count=1).strip()
    return stripped if stripped and stripped != line else None


_LIST_ITEM_WORDS = 3
"""A comma-separated part of more words reads as a clause, not as a thing listed."""
_LIST_FORMS = 12
"""At most this many forms of one line: a longer list's later items add little and weigh the line over the others."""


def list_forms(line: str) -> list[str]:
    """``line`` once per item of the longest list it names, or [] when it names none.

    A list is "A, B, C or D" or "A, B, or C": short parts between commas (one to three words, no "or"/"and"), the
    first item ending the part before them and the last following the closing "or"/"and"; the first and last items
    are as many words as the median part between commas. With fewer commas a list cannot be told from a clause.
    "Asking about a candidate's age, religion, family status or disability" gives "Asking about a candidate's age",
    "... religion", "... family status" and "... disability".
    """
    parts = line.split(", ")
    best: tuple[int, int] | None = None
    start = 1
    while start < len(parts) - 1:
        end = start
        while end < len(parts) - 1 and _list_item(parts[end]):
            end += 1
        if end > start and (best is None or end - start > best[1] - best[0]):
            best = (start, end)
        start = max(end, start + 1)
    if best is None:
        return []
    start, end = best
    middle = parts[start:end]
    width = sorted(len(item.split()) for item in middle)[(len(middle) - 1) // 2]
    first = parts[start - 1].split()
    head = parts[: start - 1] + ([" ".join(first[:-width])] if len(first) > width else [])
    closing = parts[end].split()
    if not closing:
        return []
    if closing[0] in ("or", "and"):  # "..., C, or D": the closing part is the last item
        last, rest = closing[1:], []
        if len(last) > _LIST_ITEM_WORDS + 2:
            last, rest = last[:width], last[width:]
        items = [" ".join(first[-width:]), *middle, " ".join(last)]
    else:
        joint = next((n for n, word in enumerate(closing) if word in ("or", "and")), None)
        if joint is None or not 0 < joint <= _LIST_ITEM_WORDS:
            return []
        last, rest = closing[joint + 1 : joint + 1 + width], closing[joint + 1 + width :]
        items = [" ".join(first[-width:]), *middle, " ".join(closing[:joint]), " ".join(last)]
    prefix = ", ".join(head)
    suffix = ", ".join(([" ".join(rest)] if rest else []) + parts[end + 1 :])
    return [" ".join(piece for piece in (prefix, item, suffix) if piece) for item in items if item][:_LIST_FORMS]


def _list_item(part: str) -> bool:
    words = part.split()
    return 0 < len(words) <= _LIST_ITEM_WORDS and not {"or", "and"} & set(words)


def policy_rows(policy: Policy) -> dict[str, list[LabeledExample]]:
    """The rows a policy gives by itself, by origin: its lines (message policies) and its labeled seeds."""
    rows: dict[str, list[LabeledExample]] = {"lines": [], "seeds": policy.seed_examples()}
    if policy.input == "message":
        for lines, labels in ((policy.violates, [policy.name]), (policy.allowed, [])):
            for line in lines:
                for form in (line, *list_forms(line)):
                    rows["lines"] += [
                        LabeledExample(text=text, labels=labels) for text in (form, message_form(form)) if text
                    ]
    return rows


def build_policy_guard(
    policy: Policy,
    out: str | Path,
    work: str | Path,
    *,
    dataset: LabeledDataset | None = None,
    retrieved: Collection[str] = (),
    config: PolicyGuardConfig | None = None,
    export: ExportConfig | None = None,
) -> tuple[BundleManifest, PolicyReport]:
    """Train and export ``policy``'s guard at ``out`` from its own rows and ``dataset`` (the data engine's, if any;
    its rows whose text is in ``retrieved`` count as the corpus's); ``work`` keeps the training run, the embeddings
    and ``report.json``."""
    config = config or PolicyGuardConfig()
    work = Path(work)
    head = config.head or ("embedding" if policy.input == "message" else "classifier")
    if policy.input != "message" and (head == "embedding" or config.corpus is not None):
        raise BuilderError(
            f"{policy.name} judges conversations: the embedding guard and the corpus review read single messages"
        )
    by_origin = policy_rows(policy)
    seen = {_key(ex) for rows in by_origin.values() for ex in rows}
    engine_rows = [ex for ex in (dataset.examples if dataset else []) if _key(ex) not in seen]
    retrieved = set(retrieved)
    by_origin["corpus"] = [ex for ex in engine_rows if ex.context is None and ex.text in retrieved]
    by_origin["generated"] = [ex for ex in engine_rows if not (ex.context is None and ex.text in retrieved)]
    examples = [ex for rows in by_origin.values() for ex in rows]
    positives = sum(1 for ex in examples if ex.labels)
    if not positives or positives == len(examples):
        if policy.input != "message":
            # Its lines describe conversations; read as messages they would train a guard of the latest turn alone.
            raise BuilderError(
                f"{policy.name} judges conversations, and its lines are not conversations: give it labeled seed "
                "conversations (violating and allowed ones), or an endpoint (--base-url) that writes them"
            )
        raise BuilderError(f"{policy.name}: the training rows need violating and allowed examples")
    rows_text = "".join(ex.model_dump_json() + "\n" for ex in examples)
    data = LabeledDataset(
        label_names=[policy.name], examples=examples, sha256=hashlib.sha256(rows_text.encode()).hexdigest()
    )
    export = export or ExportConfig(name=policy.name)
    export = export.model_copy(update={"description": export.description or policy.description})
    counts = {
        f"{origin} {side}": sum(1 for ex in rows if bool(ex.labels) == (side == "violating"))
        for origin, rows in by_origin.items()
        for side in ("violating", "allowed")
        if origin != "corpus" or retrieved
    }
    unlabeled = sum(1 for seed in policy.seeds if seed.label is None)
    descriptions = {policy.name: policy.description}
    if head == "embedding":
        embedding = EmbeddingGuardConfig(
            label_descriptions=descriptions,
            regularization=config.regularization,
            seed=config.seed,
            threads=config.threads,
            progress=config.progress,
            embedding_cache=work / "embeddings.npz",
        )
        if export.target_fpr is not None or export.benign_flag_rate is not None:
            raise BuilderError(
                f"{export.calibration} calibrates on a validation split, and the embedding guard of a policy trains on "
                "every row: give a threshold instead (default 0.5, the class-balanced head's own boundary)"
            )
        threshold = export.threshold or 0.5
        corpus = read_corpus(config.corpus, config.corpus_limit) if config.corpus is not None else None
        train_embedding_guard(data, work / "run", embedding, validation=data)
        # The embedding guard keeps the base encoder as it is: the report and the review embed with it (and its cache).
        encoder = sentence_encoder(embedding.base_model, embedding.max_length)
        report = _embedding_report(policy, by_origin, encoder, embedding, counts, unlabeled, threshold)
        if corpus is not None:
            report = _review_corpus(corpus, work, encoder, embedding, threshold, config.review, report)
        export = export.model_copy(update={"threshold": threshold})
    else:
        training = TrainConfig(
            label_descriptions=descriptions,
            epochs=config.epochs,
            learning_rate=config.learning_rate,
            seed=config.seed,
            threads=config.threads,
        )
        if policy.context_kind is not None:
            # The earlier turns fill up to context_tokens of the window: leave the latest turn at least as many.
            training = training.model_copy(
                update={"context_tokens": config.context_tokens, "max_length": 2 * config.context_tokens}
            )
        train(data, work / "run", training)
        report = PolicyReport(
            policy=policy.name,
            head="classifier",
            rows=counts,
            unlabeled_seeds=unlabeled,
            estimate_auprc=None,
            estimate_recall=None,
            estimate_fpr=None,
            lines_agreement_auprc=None,
            disagreeing=[],
            off_topic=None,
            threshold=None,
            warnings=_size_warnings(by_origin)
            + (
                ["--corpus: the classifier's guard does not score the corpus (no review.jsonl)"]
                if config.corpus
                else []
            ),
        )
    if TrainingRun(work / "run").info().validation_examples < 50:
        # Decision agreement on a few rows is noise (one flip of twenty is 0.95); the drift gates stay.
        export = export.model_copy(update={"min_int8_agreement": 0.0})
    write_atomic(work / "report.json", report.model_dump_json(indent=2))
    write_atomic(work / REPORT_FILE, report.render())
    export = export.model_copy(update={"extra_files": {**export.extra_files, REPORT_FILE: work / REPORT_FILE}})
    manifest = export_bundle(work / "run", out, export)
    for warning in report.warnings:
        logger.warning("%s: %s", policy.name, warning)
    return manifest, report


def _embedding_report(
    policy: Policy,
    by_origin: dict[str, list[LabeledExample]],
    encoder: SentenceTransformer,
    config: EmbeddingGuardConfig,
    counts: dict[str, int],
    unlabeled: int,
    threshold: float,
) -> PolicyReport:
    """Cross-validated estimate, lines-vs-examples agreement and off-topic share, on the embeddings training used."""
    from sklearn.metrics import average_precision_score

    lines, examples = by_origin["lines"], _labeled(by_origin)
    vectors = embed_texts(
        encoder, [ex.text for ex in lines + examples], config.encode_batch_size, False, config.embedding_cache
    )
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    line_vectors, example_vectors = vectors[: len(lines)], vectors[len(lines) :]
    line_targets = np.asarray([bool(ex.labels) for ex in lines])
    targets = np.asarray([bool(ex.labels) for ex in examples])
    warnings = _size_warnings(by_origin)

    estimate = recall = fpr = agreement = None
    disagreeing: list[str] = []
    both_sides = targets.any() and not targets.all()
    if both_sides and min(targets.sum(), (~targets).sum()) >= MIN_SEEDS_PER_SIDE:
        scores = _cross_validated(
            line_vectors, line_targets, example_vectors, targets, config.regularization, config.seed
        )
        estimate = float(average_precision_score(targets, scores))
        recall = float((scores[targets] >= threshold).mean())
        fpr = float((scores[~targets] >= threshold).mean())
        if estimate < ESTIMATE_WARNING:
            warnings.append(
                f"cross-validated on its {len(targets)} labeled examples the guard ranks them at AUPRC {estimate:.2f} "
                f"({targets.mean():.2f} is chance): on so few examples that is a rough range, but no evidence that the "
                "guard works; check the examples' labels and add labeled examples (review.jsonl helps find them)"
            )
    if both_sides and line_targets.any() and not line_targets.all():
        weight, bias = fit_heads(line_vectors, line_targets[:, None], config.regularization)
        by_lines = head_scores(example_vectors, weight, bias)[:, 0]
        agreement = float(average_precision_score(targets, by_lines))
        wrong = np.flatnonzero((by_lines >= 0.5) != targets)
        disagreeing = [examples[i].text for i in wrong[np.argsort(-np.abs(by_lines[wrong] - 0.5))][:5]]
        if agreement < LINES_AGREEMENT_WARNING:
            warnings.append(
                f"the policy's lines and its examples disagree (a head trained on the lines alone ranks the examples "
                f"at AUPRC {agreement:.2f}): reword the lines, or check the examples' labels"
            )
    off_topic = None
    if generated := by_origin["generated"]:
        before = len(examples) - len(generated)  # generated rows come last
        near = example_vectors[before:] @ np.concatenate([line_vectors, example_vectors]).T
        for i in range(len(generated)):
            near[i, len(lines) + before + i] = -1.0  # not itself
        off_topic = float((near.max(axis=1) < OFF_TOPIC_SIMILARITY).mean())
        if off_topic > 0.25:
            warnings.append(
                f"{off_topic:.0%} of the generated rows are far from every line and seed: the LLM wrote off topic; "
                "a stronger endpoint (--base-url) usually helps"
            )
    return PolicyReport(
        policy=policy.name,
        head="embedding",
        rows=counts,
        unlabeled_seeds=unlabeled,
        estimate_auprc=_round(estimate),
        estimate_recall=_round(recall),
        estimate_fpr=_round(fpr),
        lines_agreement_auprc=_round(agreement),
        disagreeing=disagreeing,
        off_topic=_round(off_topic),
        threshold=threshold,
        warnings=warnings,
    )


def read_corpus(path: Path, limit: int) -> list[str]:
    """Distinct non-blank texts of a JSONL file or of the ``*.jsonl`` files under a folder, an equal share of
    ``limit`` from each file, in file order, each file read no further than its share; rows whose text is not a str
    are skipped; errors name the file and line."""
    files = sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]
    if not files or not all(file.is_file() for file in files):
        raise BuilderError(f"--corpus {path}: no such JSONL file, nor a folder with any")
    share = max(1, limit // len(files))
    texts: dict[str, None] = {}
    for file in files:
        if len(texts) >= limit:
            break
        taken = 0
        # Stops as soon as the share is taken: the lines after it are never read.
        for row in iter_text_rows(file, non_str="skip"):
            text = row["text"][:_CORPUS_CHARS]
            if row["text"].strip() and text not in texts:
                texts[text] = None
                taken += 1
                if taken == share or len(texts) == limit:
                    break
    if not texts:
        raise BuilderError(f"--corpus {path}: no texts")
    return list(texts)


def retrieve(policy: Policy, corpus: Sequence[str], count: int, config: EmbeddingGuardConfig) -> list[str]:
    """The ``count`` corpus texts nearest the policy by the base encoder's cosine similarity: half of them nearest
    its violating side (its ``violates`` lines and violating seeds), half nearest its allowed side, each text on the
    side it is nearer to (a side short of texts leaves its share to the other). Whitespace runs become one space:
    a candidate is one message on one line."""

    if policy.input != "message":
        raise BuilderError(f"{policy.name} judges conversations: a corpus holds single messages")
    if not count or not corpus:
        return []
    rows = policy_rows(policy)
    anchors = rows["lines"] + rows["seeds"]
    vectors = embed_texts(
        sentence_encoder(config.base_model, config.max_length),
        [ex.text for ex in anchors] + list(corpus),
        config.encode_batch_size,
        config.progress,
        config.embedding_cache,
    )
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    similarity = vectors[len(anchors) :] @ vectors[: len(anchors)].T
    violating = np.asarray([bool(ex.labels) for ex in anchors])
    to_violating = similarity[:, violating].max(axis=1)  # a policy has lines on both sides
    to_allowed = similarity[:, ~violating].max(axis=1)
    nearer = to_violating >= to_allowed
    # Stable sorts: ties keep corpus order, so a corpus retrieves the same texts every time.
    by_violating = [int(i) for i in np.argsort(-to_violating, kind="stable") if nearer[i]]
    by_allowed = [int(i) for i in np.argsort(-to_allowed, kind="stable") if not nearer[i]]
    half = min(count // 2, len(by_violating))
    picked = by_violating[:half] + by_allowed[: count - half]
    picked += by_violating[half : half + count - len(picked)]
    # The corpus's own texts were embedded (the review reads the same cache); candidates get one line each.
    return list(dict.fromkeys(" ".join(corpus[i].split()) for i in picked))


def _review_corpus(
    corpus: list[str],
    work: Path,
    encoder: SentenceTransformer,
    config: EmbeddingGuardConfig,
    threshold: float,
    review: int,
    report: PolicyReport,
) -> PolicyReport:
    """Score the corpus with the trained head; write ``review.jsonl`` (most surely flagged, then nearest the
    threshold) and the flagged share into the report."""
    vectors = embed_texts(encoder, corpus, config.encode_batch_size, config.progress, config.embedding_cache)
    with np.load(TrainingRun(work / "run").head_file) as head:
        scores = head_scores(vectors, head["weight"], head["bias"])[:, 0]
    flagged = [int(i) for i in np.argsort(-scores)[:review]]
    taken = set(flagged)
    near = [int(i) for i in np.argsort(np.abs(scores - threshold)) if int(i) not in taken][:review]
    rows = [
        json.dumps({"text": corpus[i], "score": round(float(scores[i]), 4), "why": why}, ensure_ascii=False)
        for why, picked in (("flagged", flagged), ("near the threshold", near))
        for i in picked
    ]
    write_atomic(work / REVIEW_FILE, "".join(row + "\n" for row in rows))
    return report.model_copy(
        update={"corpus_texts": len(corpus), "corpus_flagged": round(float((scores >= threshold).mean()), 4)}
    )


def _cross_validated(
    line_vectors: np.ndarray,
    line_targets: np.ndarray,
    vectors: np.ndarray,
    targets: np.ndarray,
    regularization: float,
    seed: int,
) -> np.ndarray:
    """Each example scored by a head trained on the lines and the other folds' examples (ten folds at most)."""
    folds = min(10, len(targets))
    order = np.random.default_rng(seed).permutation(len(targets))
    scores = np.zeros(len(targets))
    for k in range(folds):
        held = order[k::folds]
        kept = np.setdiff1d(order, held)
        train_x = np.concatenate([line_vectors, vectors[kept]])
        train_y = np.concatenate([line_targets, targets[kept]])
        if train_y.all() or not train_y.any():
            scores[held] = 0.5
            continue
        weight, bias = fit_heads(train_x, train_y[:, None], regularization)
        scores[held] = head_scores(vectors[held], weight, bias)[:, 0]
    return scores


def _size_warnings(by_origin: dict[str, list[LabeledExample]]) -> list[str]:
    examples = _labeled(by_origin)
    violating = sum(1 for ex in examples if ex.labels)
    if min(violating, len(examples) - violating) >= MIN_SEEDS_PER_SIDE:
        return []
    message = (
        f"only {violating} violating and {len(examples) - violating} allowed labeled examples: the guard rests on the "
        f"policy's lines, which rank messages clearly worse than a few labeled seeds do (benchmarks/README.md, "
        f"'A guard from a policy's words'); add at least {MIN_SEEDS_PER_SIDE} labeled seeds per side"
    )
    return [message]


def _labeled(by_origin: dict[str, list[LabeledExample]]) -> list[LabeledExample]:
    """The labeled message rows (not the policy's lines), generated ones last."""
    return by_origin["seeds"] + by_origin["corpus"] + by_origin["generated"]


def _describe_estimate(report: PolicyReport) -> str:
    if report.estimate_auprc is None:
        return f"none (fewer than {MIN_SEEDS_PER_SIDE} labeled examples per side)"
    examples = sum(value for key, value in report.rows.items() if not key.startswith("lines "))
    return (
        f"AUPRC {report.estimate_auprc:.2f}, recall {_fmt(report.estimate_recall)}, false positives "
        f"{_fmt(report.estimate_fpr)} at the threshold, on {examples} examples (tens of examples: a rough range)"
    )


def _key(example: LabeledExample) -> str:
    return example.model_dump_json(include={"text", "context"})


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
