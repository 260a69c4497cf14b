"""The rounds: score, propose, verify, reward, retrain, evaluate; checkpointed, so that a killed run continues."""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from guard_sdk import normalize

from ..._files import write_atomic
from ...checkpoint import Journal, RunFolder, fingerprint
from ...data.candidates import (
    Candidate,
    GenerationConfig,
    GenerationPrompt,
    Messages,
    candidates_from_reply,
    reply_schema,
)
from ...data.dataset import LabeledDataset, LabeledExample, load_jsonl
from ...data.policy import Policy, SeedLabel
from ...data.verify import DebateConfig, debate
from ...errors import BuilderError, LLMOutputError
from ...llm.client import LLMClient, LLMConfig
from ...llm.local_server import EmbeddedModel, llm_endpoint
from ...train.classifier import TrainConfig
from ...train.embedding import EmbeddingGuardConfig
from ...train.run import ModelKind, TrainingRun
from .bandit import ArmState, Pull, ThompsonBandit
from .operators import (
    LLM_OPERATORS,
    OPERATORS,
    Mutation,
    Operator,
    look_alike_prompt,
    obfuscate,
    paraphrase_prompt,
    role_play_wrap,
    split_across_turns,
)
from .report import AdversarialReport, EvalSet, RoundReport, ScoredRun, measure, render_report

logger = logging.getLogger("builder.recipes.adversarial")


HOLDOUT_FILE = "holdout.jsonl"
TRAIN_FILE = "train.jsonl"
RUN_DIR = "run"
ROUND_REPORT = "report.json"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
TRANSCRIPTS_FILE = "transcripts.jsonl"
OUTPUTS = (HOLDOUT_FILE, REPORT_JSON, REPORT_MD, TRANSCRIPTS_FILE)


class AdversarialConfig(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)  # field docstrings: guard-build's help

    rounds: int = Field(3, ge=1)
    """Adversarial rounds after round 0 (the model trained on the input data alone)."""
    candidates_per_round: int = Field(8, ge=1)
    """Bandit pulls per round: each proposes, verifies and scores one candidate."""
    operators: list[Operator] = list(OPERATORS)
    """The mutation operators: the bandit's arms."""
    prior: tuple[float, float] = (1.0, 1.0)
    """Beta(alpha, beta) prior of every arm's reward rate."""
    discount: float = Field(0.5, ge=0, le=1)
    """Between rounds each posterior's evidence is multiplied by this (1: keep all, 0: back to the prior): the
    retrained model has learned from an arm's successes, so they predict its future less."""
    source_sample: int = Field(256, ge=1)
    """Training examples the current model scores each round to choose sources from."""
    source_pool: int = Field(24, ge=1)
    """Sources are drawn among this many lowest-margin sampled examples of the label an operator needs."""
    max_source_chars: int = Field(300, ge=20)
    """LLM operators only take sources up to this long (a small model cannot rewrite a long document)."""
    max_chars: int = Field(300, ge=20)
    """Longest generated message."""
    holdout_fraction: float = Field(0.15, gt=0, lt=1)
    model_kind: ModelKind = "embedding"
    """``embedding`` (default: retrains in seconds to minutes) or ``classifier`` (fine-tunes the encoder)."""
    embedding: EmbeddingGuardConfig = EmbeddingGuardConfig(progress=False)
    classifier: TrainConfig = TrainConfig(epochs=1.0)
    debate: DebateConfig = DebateConfig(on_mismatch="drop")
    seed: int = 13
    progress: bool = Field(default=True, exclude=True)
    """Progress bars on stderr."""

    @field_validator("operators")
    @classmethod
    def _some_distinct_operators(cls, value: list[Operator]) -> list[Operator]:
        if not value:
            raise ValueError("give at least one operator")
        return list(dict.fromkeys(value))


async def _generate(prompt: GenerationPrompt, llm: LLMClient, config: AdversarialConfig, seed: int) -> Mutation:
    """One message from the LLM through generate.py's capped schema and its usability filter."""
    generation = GenerationConfig(per_prompt=1, paraphrases_per_seed=1, max_chars=config.max_chars)
    schema = reply_schema(prompt, generation)
    intended = prompt.intended or "complies"
    try:
        reply = await llm.structured(prompt.messages, schema, seed=seed, max_tokens=20 + config.max_chars // 4 + 5)
    except LLMOutputError as exc:
        return Mutation(text=None, intended=intended, problem=f"unusable LLM reply: {exc}")
    if not isinstance(reply, Messages):  # adversarial rounds refuse conversation policies: never a conversation
        return Mutation(text=None, intended=intended, problem="the reply holds conversations, not a message")
    # The first message is the mutation.
    candidates, problems = candidates_from_reply(prompt, Messages(messages=reply.messages[:1]))
    if not candidates:
        return Mutation(text=None, intended=intended, problem=problems[0] if problems else "no message")
    return Mutation(text=candidates[0].text, intended=intended)


# -- the run ---------------------------------------------------------------------------------------------------------


def run_adversarial(
    data: str | Path,
    policy: Policy,
    out_dir: str | Path,
    *,
    llm_config: LLMConfig | None = None,
    config: AdversarialConfig | None = None,
    eval_sets: Sequence[EvalSet] = (),
    embedded: EmbeddedModel = "smollm2",
) -> AdversarialReport:
    """Run (or resume) adversarial rounds on the training file ``data``; starts and stops the embedded LLM when no
    endpoint is configured."""
    dataset = _check_inputs(data, config or AdversarialConfig(), eval_sets)
    with llm_endpoint(llm_config, embedded) as resolved:
        llm = LLMClient(resolved, cache_dir=Path(out_dir) / "cache")
        return llm.run(arun_adversarial(dataset, policy, out_dir, llm, config, eval_sets))


def _check_inputs(
    data: str | Path | LabeledDataset, config: AdversarialConfig, eval_sets: Sequence[EvalSet]
) -> LabeledDataset:
    """Everything that can be wrong with the inputs, said before any model or LLM starts."""
    dataset = data if isinstance(data, LabeledDataset) else load_jsonl(data)
    violating = sum(1 for ex in dataset.examples if ex.labels)
    compliant = len(dataset.examples) - violating
    if violating < 4 or compliant < 4:
        raise BuilderError(
            f"adversarial rounds need at least 4 violating and 4 compliant examples; the data has {violating} and "
            f"{compliant}"
        )
    for eval_set in eval_sets:
        eval_set.load()
    if len({s.name for s in eval_sets}) < len(eval_sets):
        raise BuilderError("eval set names must be distinct")
    return dataset


async def arun_adversarial(
    data: str | Path | LabeledDataset,
    policy: Policy,
    out_dir: str | Path,
    llm: LLMClient,
    config: AdversarialConfig | None = None,
    eval_sets: Sequence[EvalSet] = (),
) -> AdversarialReport:
    config = config or AdversarialConfig()
    dataset = _check_inputs(data, config, eval_sets)
    started = time.perf_counter()
    out = Path(out_dir)
    inputs = {
        "data": dataset.sha256,
        "policy": policy.model_dump(mode="json"),
        # Not the number of rounds: asking for more extends a finished run.
        "config": config.model_dump(mode="json", exclude={"rounds"}),
        "model": llm.config.model or "",
    }
    run = RunFolder(out, fingerprint(inputs), outputs=OUTPUTS, folders=("rounds",))
    with run.usage(llm) as usage:
        reports = await _rounds(dataset, policy, run, llm, config, eval_sets)
    pulls = [Pull.model_validate(entry) for entry in run.journal("pulls").entries]
    report = AdversarialReport(
        policy=policy.name,
        model=llm.config.model or "",
        model_kind=config.model_kind,
        data_sha256=dataset.sha256,
        rounds=reports,
        final_run=str(out / "rounds" / str(config.rounds) / RUN_DIR),
        llm_usage=usage.total,
        llm_invocations=usage.invocations,
        seconds=round(time.perf_counter() - started, 1),
        config=config.model_dump(mode="json"),
    )
    write_atomic(
        out / TRANSCRIPTS_FILE,
        "".join(p.model_dump_json() + "\n" for p in pulls if p.round <= config.rounds),
    )
    write_atomic(out / REPORT_MD, render_report(report))
    write_atomic(out / REPORT_JSON, report.model_dump_json(indent=2))
    return report


async def _rounds(
    dataset: LabeledDataset,
    policy: Policy,
    run: RunFolder,
    llm: LLMClient,
    config: AdversarialConfig,
    eval_sets: Sequence[EvalSet],
) -> list[RoundReport]:
    out = run.out
    threads = config.embedding.threads if config.model_kind == "embedding" else config.classifier.threads
    if threads:  # scoring runs before any training when a run resumes
        import torch

        torch.set_num_threads(threads)
    # The holdout: a fixed split of the input, never trained on, so that rounds are compared on the same rows.
    train_set, holdout = dataset.split(config.holdout_fraction, config.seed)
    if not (out / HOLDOUT_FILE).is_file():
        _write_rows(out / HOLDOUT_FILE, holdout.examples)
    if not (out / "rounds" / "0" / TRAIN_FILE).is_file():
        _write_rows(out / "rounds" / "0" / TRAIN_FILE, train_set.examples)
    evaluation = [(s.name, *s.load()) for s in eval_sets]
    journal = run.journal("pulls")
    bandit = ThompsonBandit(config.operators, config.prior)
    reports: list[RoundReport] = []
    for number in range(config.rounds + 1):
        folder = out / "rounds" / str(number)
        adversarial_seconds = 0.0
        requests_before = llm.usage.requests
        if number:
            previous = out / "rounds" / str(number - 1)
            if number > 1:
                bandit.discount(config.discount)
            started = time.perf_counter()
            pulls = await _pull_round(number, previous, policy, llm, journal, bandit, config)
            adversarial_seconds = time.perf_counter() - started
            if not (folder / TRAIN_FILE).is_file():
                rows = load_jsonl(previous / TRAIN_FILE, dataset.label_names).examples
                known = {_key(ex.text) for ex in rows}
                hard = [ex for ex in _hard_examples(pulls, number) if _key(ex.text) not in known]
                _write_rows(folder / TRAIN_FILE, [*rows, *hard])
        else:
            pulls = []
        run_dir = folder / RUN_DIR
        train_seconds = _train_round(folder, run_dir, dataset.label_names, config)
        reports.append(
            _evaluate_round(
                number, folder, run_dir, holdout, evaluation, pulls, bandit.snapshot(), train_seconds,
                adversarial_seconds, llm.usage.requests - requests_before, config,
            )
        )  # fmt: skip
        logger.info("round %d: %s", number, reports[-1].model_dump(include={"mean_reward", "added", "holdout"}))
    return reports


def _write_rows(path: Path, examples: Sequence[LabeledExample]) -> None:
    write_atomic(path, "".join(json.dumps(ex.model_dump(), ensure_ascii=False) + "\n" for ex in examples))


async def _pull_round(
    number: int,
    previous: Path,
    policy: Policy,
    llm: LLMClient,
    journal: Journal,
    bandit: ThompsonBandit,
    config: AdversarialConfig,
) -> list[Pull]:
    """This round's pulls: journaled ones are replayed into the bandit, the missing ones made (one journal line
    each, so a killed run loses at most the pull in progress)."""
    done = {entry["index"]: Pull.model_validate(entry) for entry in journal.entries if entry["round"] == number}
    model: ScoredRun | None = None
    sources: dict[str, list[tuple[float, LabeledExample]]] = {}
    pulls: list[Pull] = []
    from tqdm.auto import tqdm

    bar = tqdm(total=config.candidates_per_round, desc=f"round {number}", unit="pull", disable=not config.progress)
    for index in range(config.candidates_per_round):
        rng = random.Random(f"{config.seed}-{number}-{index}")
        operator = bandit.choose(rng)
        if index in done:
            pull = done[index]
            if pull.operator != operator:
                raise BuilderError(
                    f"the journal of round {number} does not replay (pull {index}); delete {previous.parent.parent}"
                )
        else:
            if model is None:
                model = ScoredRun(previous / RUN_DIR)
                sources = _sources(model, load_jsonl(previous / TRAIN_FILE, model.labels), config, number)
            pull = await _pull(number, index, operator, rng, model, sources, policy, llm, config)
            journal.append(pull.model_dump(mode="json"))
        bandit.update(pull.operator, pull.reward)
        pulls.append(pull)
        bar.update(1)
    bar.close()
    return pulls


def _sources(
    model: ScoredRun, train_set: LabeledDataset, config: AdversarialConfig, number: int
) -> dict[str, list[tuple[float, LabeledExample]]]:
    """Per source kind, the sampled training examples the current model is least sure of, closest first."""
    rng = random.Random(f"{config.seed}-{number}-sources")
    sample = rng.sample(train_set.examples, min(config.source_sample, len(train_set.examples)))
    _, _, margins = model.decide([ex.text for ex in sample])
    ranked = sorted(zip(margins.tolist(), range(len(sample)), strict=True))
    pools: dict[str, list[tuple[float, LabeledExample]]] = {}
    for kind, wanted, short in (
        ("violating", True, False),
        ("violating-short", True, True),
        ("compliant", False, False),
    ):
        pools[kind] = [
            (margin, sample[i])
            for margin, i in ranked
            if bool(sample[i].labels) == wanted and (not short or len(sample[i].text) <= config.max_source_chars)
        ][: config.source_pool]
    return pools


async def _pull(
    number: int,
    index: int,
    operator: Operator,
    rng: random.Random,
    model: ScoredRun,
    sources: dict[str, list[tuple[float, LabeledExample]]],
    policy: Policy,
    llm: LLMClient,
    config: AdversarialConfig,
) -> Pull:
    pull_id = f"adv-r{number}-{index}-{operator}"
    seed = config.seed + 1000 * number + index
    if operator == "split-turns":
        kind = rng.choice(["violating", "compliant"])
    else:
        kind = "violating-short" if operator in LLM_OPERATORS else "violating"
    pool = sources[kind] or sources["violating"]
    source = rng.choice(pool)[1] if pool else None
    if source is None:
        mutation = Mutation(text=None, intended="violates", problem=f"no {kind} source")
        return Pull(round=number, index=index, operator=operator, source_text="", source_labels=[],
                    candidate=mutation, dropped=f"generation: {mutation.problem}")  # fmt: skip
    label: SeedLabel = "violates" if source.labels else "complies"
    if operator == "obfuscate":
        mutation = obfuscate(source.text, rng)
    elif operator == "role-play":
        mutation = role_play_wrap(source.text, rng)
    elif operator == "split-turns":
        mutation = split_across_turns(source.text, label, rng)
    elif operator == "paraphrase":
        mutation = await _generate(paraphrase_prompt(source.text, label, pull_id), llm, config, seed)
    else:
        words = model.trigger_words(source.text)
        mutation = await _generate(look_alike_prompt(source.text, words, pull_id), llm, config, seed)
        mutation.detail = f"trigger words: {', '.join(words)}"
        if mutation.text and words and not any(w in mutation.text.lower() for w in words):
            mutation = mutation.model_copy(update={"text": None, "problem": "reuses none of the trigger words"})
    pull = Pull(
        round=number, index=index, operator=operator, source_text=source.text, source_labels=source.labels,
        candidate=mutation,
    )  # fmt: skip
    if mutation.text is None:
        pull.dropped = f"generation: {mutation.problem}"
        return pull
    candidate = Candidate(
        id=pull_id,
        text=mutation.text,
        kind="boundary" if operator == "benign-look-alike" else "paraphrase",
        intended=mutation.intended,
        cell_id=None,
        prompt_id=pull_id,
    )
    verdict = await debate(policy, candidate, llm, config.debate)
    pull.verdict = verdict
    score, flagged, _ = model.decide([mutation.text])
    pull.score, pull.flagged = round(float(score[0]), 6), bool(flagged[0])
    if verdict.label is None:
        pull.dropped = verdict.dropped or "unusable debate"
    elif verdict.label != mutation.intended:
        pull.dropped = "mismatch"
    else:
        pull.reward = int((verdict.label == "violates") != pull.flagged)
        if pull.reward:
            pull.labels = list(source.labels) if verdict.label == "violates" else []
    return pull


def _key(text: str) -> str:
    return " ".join(normalize(text).text.lower().split())


def _hard_examples(pulls: Sequence[Pull], number: int) -> list[LabeledExample]:
    """The round's rewarded candidates as training rows, each text once."""
    rows: list[LabeledExample] = []
    seen: set[str] = set()
    for pull in pulls:
        if pull.reward and pull.candidate.text is not None and pull.labels is not None:
            key = _key(pull.candidate.text)
            if key in seen:
                continue
            seen.add(key)
            rows.append(
                LabeledExample(
                    text=pull.candidate.text,
                    labels=pull.labels,
                    source=f"adversarial:{pull.operator}",
                    round=number,
                    verdict=pull.verdict.verdict if pull.verdict else None,
                    confidence=round(pull.verdict.confidence, 4) if pull.verdict else None,
                )
            )
    return rows


def _train_round(folder: Path, run_dir: Path, labels: list[str], config: AdversarialConfig) -> float:
    """Train on the round's file unless a finished run of exactly that file is there; returns its train time."""
    data = load_jsonl(folder / TRAIN_FILE, labels)
    run_config = config.embedding if config.model_kind == "embedding" else config.classifier
    run = TrainingRun(run_dir)
    if info := run.trained_on(data):
        return info.train_seconds
    if config.model_kind == "embedding":
        shutil.rmtree(run_dir, ignore_errors=True)  # nothing to resume: it retrains from the start in minutes
    return run.train(data, run_config.model_copy(update={"seed": config.seed})).train_seconds


def _evaluate_round(
    number: int,
    folder: Path,
    run_dir: Path,
    holdout: LabeledDataset,
    evaluation: Sequence[tuple[str, list[str], np.ndarray]],
    pulls: Sequence[Pull],
    arms: list[ArmState],
    train_seconds: float,
    adversarial_seconds: float,
    llm_requests: int,
    config: AdversarialConfig,
) -> RoundReport:
    path = folder / ROUND_REPORT
    names = [name for name, _, _ in evaluation]
    if path.is_file():
        saved = RoundReport.model_validate_json(path.read_text())
        if list(saved.eval) == names:
            return saved
    model = ScoredRun(run_dir)
    holdout_set = (
        "holdout",
        [ex.text for ex in holdout.examples],
        np.asarray([bool(ex.labels) for ex in holdout.examples]),
    )
    measured = measure(model, [holdout_set, *evaluation])
    rows = load_jsonl(folder / TRAIN_FILE, model.labels).examples
    added = [ex for ex in rows if getattr(ex, "round", None) == number]
    verified = [p for p in pulls if p.verdict is not None and p.dropped is None]
    dropped: dict[str, int] = {}
    for pull in pulls:
        if pull.dropped:
            reason = pull.dropped.split(":")[0]
            dropped[reason] = dropped.get(reason, 0) + 1
    report = RoundReport(
        round=number,
        arms=arms if number else [],
        pulls={a.operator: sum(p.operator == a.operator for p in pulls) for a in arms} if number else {},
        posterior_means={a.operator: round(a.mean, 4) for a in arms} if number else {},
        mean_reward=round(sum(p.reward for p in pulls) / len(pulls), 4) if pulls else None,
        candidates=sum(p.candidate.text is not None for p in pulls),
        verified=len(verified),
        dropped=dict(sorted(dropped.items())),
        hard=sum(p.reward for p in pulls),
        added=len(added),
        added_by_label=dict(sorted(Counter("+".join(ex.labels) or "(none)" for ex in added).items())),
        train_examples=len(rows),
        thresholds={name: round(float(t), 6) for name, t in zip(model.labels, model.thresholds, strict=True)},
        holdout=measured.pop("holdout"),
        eval=measured,
        train_seconds=train_seconds,
        adversarial_seconds=round(adversarial_seconds, 1),
        llm_requests=llm_requests,
    )
    write_atomic(path, report.model_dump_json(indent=2))
    return report
