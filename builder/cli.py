"""``guard-build``: the builder's command line.

guard-build train --data train.jsonl --out runs/injection [--labels injection] [--epochs 3] [--head embedding]
guard-build multitask --data pack.jsonl --instructions labels.yaml --out runs/mt   # one model, many policies
guard-build instruct --bundle bundles/mt --policy new.yaml --out bundles/new        # zero-shot, instruction only
guard-build export --run runs/injection --out bundles/injection --name injection [--version 0.1.0]
guard-build data policy.yaml --out runs/visa-data [--base-url URL --model NAME --api-key KEY] [--corpus FILE]
guard-build all policy.yaml --out bundles/visa [--work runs/visa]      # (data ->) train -> export, with a report
guard-build pack [--seeds shared/train] [--out DIR] [--wheel DIR]     # the default pack (+ its guard-sdk-pack wheel)
guard-build pack-wheel --pack FOLDER --out DIR                         # the guard-sdk-pack wheel of a built pack
guard-build pack-answers [--seeds shared/train] [--out FILE]           # the response guard's (request, answer) pairs
guard-build adversarial policy.yaml --data train.jsonl --out runs/adv [--rounds 3] [--candidates 8]
                                    [--eval NAME=PATH[:SPLIT]] [LLM options as for data]   # bandit-guided hard rounds
guard-build pretrain --out runs/pretrain [--seeds shared/train]     # an encoder that reads policy lines (zero-shot)
guard-build merge --task runs/hate --task runs/violence [--donor runs/multitask] --out runs/merged [--method ties]

Each command's options are its config models' fields (``builder._flags``): a field added to a config is an option.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from pydantic import ValidationError

from guard_sdk import GuardError, default_pack_dir

from ._flags import Flags, add_flags
from .data.candidates import GenerationConfig
from .data.curate import CurationConfig
from .data.dataset import LabeledDataset, load_jsonl, read_texts, write_jsonl
from .data.dimensions import DimensionConfig
from .data.engine import DataConfig, build_dataset
from .data.policy import load_policy
from .data.verify import DebateConfig
from .errors import BuilderError
from .export import ExportConfig, export_bundle
from .llm.client import LLMConfig
from .recipes.adversarial import AdversarialConfig, EvalSet, render_report, run_adversarial
from .recipes.pack import PackConfig, build_pack, default_work_dir, pack_datasets
from .recipes.pack_answers import ANSWER_PAIRS_FILE, AnswerPairsConfig, build_answer_pairs
from .recipes.pack_wheel import write_pack_wheel
from .recipes.policy_guard import REPORT_FILE, PolicyGuardConfig, build_policy_guard, read_corpus, retrieve
from .recipes.policy_tasks import load_tasks, split_tasks
from .recipes.pretrain import PretrainConfig, pretrain_encoder
from .train.classifier import TrainConfig, train
from .train.distill import DistillConfig, distill_encoder
from .train.embedding import EmbeddingGuardConfig
from .train.merge import MergeConfig, SearchConfig, merge_runs
from .train.run import RunConfig, TrainingRun

if TYPE_CHECKING:
    from .data.engine import Datasheet
    from .data.policy import Policy

    _Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["main"]

# Which config fields each command offers, and where an option keeps a name other than its field's.
_TRAINING = Flags(TrainConfig, exclude=["label_descriptions"])
# train --head embedding: the run's options; --batch-size and --learning-rate stay the classifier's.
_EMBEDDING = Flags(
    EmbeddingGuardConfig, [*(n for n in RunConfig.model_fields if n != "label_descriptions"), "triplet_epochs"]
)
_MULTITASK = replace(_TRAINING, defaults={"max_length": 256})
_EXPORT = Flags(ExportConfig, exclude=["extra_files"])
_LLM = Flags(
    LLMConfig,
    ["base_url", "model", "api_key", "structured_output", "max_concurrency", "timeout"],
    names={"max_concurrency": "concurrency"},
    unset=True,
)
_DATA = Flags(
    DataConfig,
    ["cells", "progress"],
    nested={
        "dimensions": Flags(DimensionConfig, ["seed"]),
        "generation": Flags(
            GenerationConfig,
            ["per_prompt", "paraphrases_per_seed", "max_turns"],
            names={"paraphrases_per_seed": "paraphrases"},
        ),
        "debate": Flags(DebateConfig, ["on_mismatch", "min_confidence", "seed"]),
        "curation": Flags(CurationConfig, ["seed"]),
    },
)
_POLICY_GUARD = Flags(
    PolicyGuardConfig,
    [
        "head",
        "regularization",
        "epochs",
        "learning_rate",
        "context_tokens",
        "seed",
        "threads",
        "progress",
        "corpus",
        "corpus_limit",
        "retrieve",
        "review",
    ],
)
# guard-build data: the corpus texts it debates.
_RETRIEVAL = Flags(
    PolicyGuardConfig,
    ["corpus", "corpus_limit", "retrieve"],
    help={"corpus": 'unlabeled real messages (a JSONL file with a "text" per line, or a folder of such files)'},
)
_ALL_EXPORT = Flags(ExportConfig, exclude=["name", "description", "extra_files"])
_PACK = Flags(
    PackConfig,
    names={"seed_sets": "seeds", "model_kind": "head"},
    help={"seed_sets": "seed sets folder (default: $GUARD_SDK_SEEDS, else shared/train beside the repository)"},
)
_ANSWERS = Flags(AnswerPairsConfig, exclude=["max_tokens"])
_DISTILL = Flags(DistillConfig)
_PRETRAIN = Flags(PretrainConfig)
_ADVERSARIAL = Flags(
    AdversarialConfig,
    exclude=["prior"],
    names={"candidates_per_round": "candidates", "model_kind": "head"},
    nested={
        "embedding": Flags(
            EmbeddingGuardConfig, ["threads"], help={"threads": "torch threads for training and scoring"}
        ),
        "classifier": Flags(TrainConfig, ["epochs", "threads"], help={"epochs": "classifier only"}),
        "debate": Flags(DebateConfig, ["min_confidence", "extra_round"], names={"extra_round": "second-round"}),
    },
)
_MERGE = Flags(MergeConfig, names={"tasks": "task", "donors": "donor"}, nested={"search": Flags(SearchConfig)})


def _seeds_default() -> str:
    return os.environ.get("GUARD_SDK_SEEDS", str(Path(__file__).resolve().parents[2] / "shared" / "train"))


def _names(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",")] if text else None


def _add_llm_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the LLM is, shared by every command that asks one."""
    llm = parser.add_argument_group("LLM endpoint (default: OPENAI_* variables, else the embedded model)")
    add_flags(llm, _LLM)
    llm.add_argument("--llm-config", help="YAML/JSON file with base_url, model, api_key, max_concurrency, ...")
    llm.add_argument("--embedded", choices=["smollm2", "gemma3"], default="smollm2", help="model when no endpoint")


def _llm_config(args: argparse.Namespace) -> LLMConfig:
    """Options given win over --llm-config, which wins over the OPENAI_* variables."""
    return LLMConfig.resolve(args.llm_config, **_LLM.values(args))


def _add_train(commands: _Commands) -> None:
    fit = commands.add_parser("train", help="fine-tune an encoder on a labeled JSONL file")
    fit.add_argument("--data", required=True, help='JSONL rows {"text": ..., "labels": [...]}')
    fit.add_argument("--out", required=True, help="run folder (checkpoints, model/, validation.jsonl); resumes")
    fit.add_argument("--labels", help="comma-separated label names (default: the labels seen in the data)")
    add_flags(fit, _TRAINING, _EMBEDDING)
    fit.add_argument(
        "--head",
        choices=["classifier", "embedding"],
        default="classifier",
        help="classifier: fine-tune the encoder (the options above); embedding: the base model's sentence embedding "
        "and a linear head per label (builder.train.embedding)",
    )
    fit.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> None:
    config = _EMBEDDING.build(args) if args.head == "embedding" else _TRAINING.build(args)
    info = TrainingRun(args.out).train(load_jsonl(args.data, _names(args.labels)), config)
    print(info.model_dump_json(indent=2))


def _add_multitask(commands: _Commands) -> None:
    multitask = commands.add_parser(
        "multitask", help="train one model on many policies, each example paired with its policy's instruction"
    )
    multitask.add_argument("--out", required=True, help="run folder; then 'guard-build export --run OUT'")
    multitask.add_argument("--data", help="multi-label JSONL: one task per label named in --instructions")
    multitask.add_argument("--instructions", help="YAML/JSON mapping of label -> what violates it (with --data)")
    multitask.add_argument(
        "--policy-data",
        action="append",
        default=[],
        metavar="POLICY.yaml=DATA.jsonl",
        help="a policy and its dataset (e.g. from 'guard-build data'): one more task; repeatable",
    )
    multitask.add_argument("--per-task", type=int, default=600, help="examples per task, half of them violations")
    multitask.add_argument("--skip", action="append", default=[], help="leave this task out (to check it zero-shot)")
    add_flags(multitask, _MULTITASK)
    multitask.set_defaults(handler=_multitask)


def _multitask(args: argparse.Namespace) -> None:
    config = _MULTITASK.build(args)
    info = train(_multitask_data(args), args.out, config)
    print(info.model_dump_json(indent=2))


def _multitask_data(args: argparse.Namespace) -> LabeledDataset:
    """The tasks named on the command line, paired with their instructions, written beside the run."""
    import yaml

    from .train.multitask import binary_tasks, multitask_dataset, policy_instruction, task_instruction

    tasks = []
    if bool(args.data) != bool(args.instructions):
        raise BuilderError("--data and --instructions go together: the instructions name the labels to learn")
    if args.data:
        try:
            described = yaml.safe_load(Path(args.instructions).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise BuilderError(f"--instructions {args.instructions}: {exc}") from None
        if not isinstance(described, dict) or not all(isinstance(v, str) for v in described.values()):
            raise BuilderError(f"--instructions {args.instructions} must map each label to a text")
        dataset = load_jsonl(args.data)
        instructions = {name: task_instruction(name, text) for name, text in described.items()}
        tasks += binary_tasks(dataset, instructions, per_task=args.per_task, seed=args.seed)
    for pair in args.policy_data:
        policy_file, sep, data_file = pair.partition("=")
        if not sep:
            raise BuilderError(f"--policy-data takes POLICY.yaml=DATA.jsonl, got {pair!r}")
        policy = _message_policy(policy_file, "multitask")
        dataset = load_jsonl(data_file, [policy.name])
        tasks += binary_tasks(
            dataset, {policy.name: policy_instruction(policy)}, per_task=args.per_task, seed=args.seed
        )
    tasks = [task for task in tasks if task.name not in args.skip]
    if not tasks:
        raise BuilderError("no tasks: give --data with --instructions, or --policy-data")
    data = multitask_dataset(tasks)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    write_jsonl(Path(args.out) / "tasks.jsonl", data.examples)
    return data


def _add_instruct(commands: _Commands) -> None:
    instruct = commands.add_parser(
        "instruct", help="zero-shot: a bundle checking new policies with a multi-task guard and their instructions"
    )
    instruct.add_argument("--bundle", required=True, help="a multi-task guard bundle")
    instruct.add_argument("--policy", required=True, action="append", help="policy YAML; repeatable")
    instruct.add_argument("--out", required=True, help="bundle folder to write")
    instruct.add_argument("--name", help="bundle name (default: the policy's; required for several)")
    instruct.add_argument("--version", default="0.1.0")
    instruct.add_argument("--max-length", type=int, help="window of instruction + text (default: the bundle's)")
    instruct.add_argument("--overwrite", action="store_true")
    instruct.set_defaults(handler=_instruct)


def _instruct(args: argparse.Namespace) -> None:
    from .train.multitask import instruct_bundle

    manifest = instruct_bundle(
        args.bundle,
        [_message_policy(path, "instruct") for path in args.policy],
        args.out,
        name=args.name,
        version=args.version,
        max_length=args.max_length,
        overwrite=args.overwrite,
    )
    print(f"wrote {manifest.id} to {args.out}")
    print(manifest.metrics.model_dump_json(indent=2))


def _add_export(commands: _Commands) -> None:
    export = commands.add_parser("export", help="export a training run as a guard bundle")
    export.add_argument("--run", required=True, help="the --out folder of 'guard-build train'")
    export.add_argument("--out", required=True, help="bundle folder to write")
    add_flags(export, _EXPORT)
    export.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> None:
    manifest = export_bundle(args.run, args.out, _EXPORT.build(args))
    print(f"wrote {manifest.id} to {args.out}")
    print(manifest.metrics.model_dump_json(indent=2))


def _add_data_arguments(parser: argparse.ArgumentParser, *more: Flags[Any]) -> None:
    """The data engine's options, shared by ``data`` and ``all`` (with ``more``, whose options may share theirs)."""
    parser.add_argument("policy", help="policy YAML (name, description, violates, allowed, seeds, dimensions)")
    _add_llm_arguments(parser)
    add_flags(parser, _DATA, *more)


def _build_data(args: argparse.Namespace, out: str, retrieved: Sequence[str] = ()) -> tuple[Policy, Datasheet]:
    policy = load_policy(args.policy)
    llm_config = _llm_config(args)
    sheet = build_dataset(
        policy, out, llm_config=llm_config, config=_DATA.build(args), embedded=args.embedded, retrieved=retrieved
    )
    now = sheet.llm_invocations[-1]
    print(
        f"wrote {sheet.counts['final']} examples {sheet.counts['by_label']} to {Path(out) / 'dataset.jsonl'} "
        f"({now.requests} LLM requests, {now.cache_hits} cached; {sheet.llm_usage.requests} requests in all "
        f"{len(sheet.llm_invocations)} invocation(s) of this run)",
        file=sys.stderr,
    )
    return policy, sheet


def _retrieved(policy: Policy, config: PolicyGuardConfig, embeddings: Path) -> list[str]:
    """The corpus texts nearest the policy, for the data engine to debate (none without a corpus)."""
    if config.corpus is None:
        return []
    embedding = EmbeddingGuardConfig(progress=config.progress, embedding_cache=embeddings)
    texts = retrieve(policy, read_corpus(config.corpus, config.corpus_limit), config.retrieve, embedding)
    print(f"retrieved {len(texts)} texts from {config.corpus} for the debate", file=sys.stderr)
    return texts


def _message_policy(path: str, command: str) -> Policy:
    """A policy for a command whose guards read single messages: a conversation policy is refused by name."""
    policy = load_policy(path)
    if policy.input != "message":
        raise BuilderError(
            f"{path}: guard-build {command} builds guards that read single messages, and this policy judges "
            f"conversations (input: {policy.input}); use guard-build data/all"
        )
    return policy


def _add_data(commands: _Commands) -> None:
    data = commands.add_parser("data", help="build a verified dataset from a policy (resumes; LLM replies cached)")
    _add_data_arguments(data, _RETRIEVAL)
    data.add_argument("--out", required=True, help="folder: dataset.jsonl, datasheet.md/json, transcripts, cache")
    data.set_defaults(handler=_data)


def _data(args: argparse.Namespace) -> None:
    retrieved = _retrieved(load_policy(args.policy), _RETRIEVAL.build(args), Path(args.out) / "embeddings.npz")
    _build_data(args, args.out, retrieved)


def _add_all(commands: _Commands) -> None:
    everything = commands.add_parser(
        "all",
        help="policy -> (LLM-written data ->) trained model -> guard bundle, with a report on how far to trust it",
    )
    _add_data_arguments(everything, _POLICY_GUARD, _ALL_EXPORT)
    everything.add_argument(
        "--generate",
        action=argparse.BooleanOptionalAction,
        help="have the LLM write and verify training data (default: only when an endpoint is configured; the "
        "embedded models write data that measured worse than none)",
    )
    everything.add_argument("--out", required=True, help="bundle folder to write")
    everything.add_argument("--work", help="folder for the dataset, training run and report (default: OUT.work)")
    everything.set_defaults(handler=_all)


def _all(args: argparse.Namespace) -> None:
    work = Path(args.work or f"{args.out}.work")
    policy = load_policy(args.policy)
    generate = args.generate if args.generate is not None else bool(_llm_config(args).base_url)
    config = _POLICY_GUARD.build(args)
    dataset = None
    retrieved: list[str] = []
    if generate:
        # The guard's embedding cache: the review and the training read the same texts' embeddings.
        retrieved = _retrieved(policy, config, work / "embeddings.npz")
        _build_data(args, str(work / "data"), retrieved)
        dataset = load_jsonl(work / "data" / "dataset.jsonl", [policy.name])
    else:
        print(
            "no LLM endpoint configured: the guard is made from the policy's lines and labeled seeds, and --corpus "
            "texts are only scored for review (--base-url for an endpoint that writes data and debates the corpus's "
            "nearest texts, --generate for the embedded model)",
            file=sys.stderr,
        )
    manifest, report = build_policy_guard(
        policy,
        args.out,
        work,
        dataset=dataset,
        retrieved=retrieved,
        config=config,
        export=_ALL_EXPORT.build(args, name=policy.name, description=policy.description),
    )
    print(report.render())
    print(f"wrote {manifest.id} to {args.out} (report: {Path(args.out) / REPORT_FILE})")


def _add_pack(commands: _Commands) -> None:
    pack = commands.add_parser(
        "pack", help="build the default pack (content-safety, prompt-injection, answer-safety) from seed sets"
    )
    pack.add_argument("--out", help="pack folder (default: guard_sdk.default_pack_dir(), where Guard.default() looks)")
    pack.add_argument("--work", help="data and training runs (default: OUT-work); a killed build resumes from it")
    add_flags(pack, replace(_PACK, defaults={"seed_sets": _seeds_default()}))
    pack.add_argument("--data-only", action="store_true", help="write the two training files and stop")
    pack.add_argument("--wheel", help="then write the pack's guard-sdk-pack wheel into this folder (as pack-wheel)")
    pack.set_defaults(handler=_pack)


def _pack(args: argparse.Namespace) -> None:
    config = _PACK.build(args)
    out = Path(args.out) if args.out else default_pack_dir()
    work = Path(args.work) if args.work else default_work_dir(out)
    if args.data_only:
        if args.wheel:
            raise ValueError("--wheel needs the built pack: leave out --data-only")
        print(pack_datasets(config, work / "data").model_dump_json(indent=2))
        return
    for bundle in build_pack(config, out, work):
        print(f"wrote {bundle}")
    if args.wheel:
        print(f"wrote {write_pack_wheel(out, Path(args.wheel))}")


def _add_pack_wheel(commands: _Commands) -> None:
    pack_wheel = commands.add_parser(
        "pack-wheel", help="write the guard-sdk-pack wheel (pip install it for Guard.default()) of a built pack"
    )
    pack_wheel.add_argument("--pack", help="the built pack folder (default: guard_sdk.default_pack_dir())")
    pack_wheel.add_argument("--out", required=True, help="folder to write the wheel into")
    pack_wheel.set_defaults(handler=_pack_wheel)


def _pack_wheel(args: argparse.Namespace) -> None:
    print(f"wrote {write_pack_wheel(Path(args.pack) if args.pack else default_pack_dir(), Path(args.out))}")


def _add_pack_answers(commands: _Commands) -> None:
    answers = commands.add_parser(
        "pack-answers",
        help="the answer-safety guard's (request, answer) training pairs: seed requests, SmolLM2 answers, templates",
    )
    answers.add_argument("--seeds", default=_seeds_default(), help="seed sets folder (as for pack)")
    answers.add_argument(
        "--out",
        default=str(ANSWER_PAIRS_FILE),
        help="JSONL file, gzip-compressed if it ends in .gz (default: %(default)s)",
    )
    answers.add_argument(
        "--work", help="generations, appended as they come (default: beside OUT); a killed run resumes"
    )
    answers.add_argument("--seed", type=int, default=13)
    add_flags(answers, _ANSWERS)
    answers.add_argument("--no-progress", action="store_true", help="no progress bar")
    answers.set_defaults(handler=_pack_answers)


def _pack_answers(args: argparse.Namespace) -> None:
    report = build_answer_pairs(
        Path(args.seeds),
        Path(args.out),
        seed=args.seed,
        config=_ANSWERS.build(args),
        work=Path(args.work) if args.work else None,
        progress=not args.no_progress,
        on_status=lambda line: print(line, file=sys.stderr),
    )
    print(report.model_dump_json(indent=2))


def _add_distill(commands: _Commands) -> None:
    distill = commands.add_parser(
        "distill", help="a shallower student of the base encoder that reproduces its sentence embedding (faster guards)"
    )
    distill.add_argument("--texts", action="append", required=True, help="JSONL file with a text per row; repeatable")
    distill.add_argument("--out", required=True, help="folder: model/ (a sentence-transformers model), distill.json")
    add_flags(distill, _DISTILL)
    distill.set_defaults(handler=_distill)


def _distill(args: argparse.Namespace) -> None:
    config = _DISTILL.build(args)
    texts = [text for path in args.texts for text in read_texts(path)]
    print(distill_encoder(texts, args.out, config).model_dump_json(indent=2))
    print(f"train a guard on it with --base-model {Path(args.out) / 'model'}", file=sys.stderr)


def _add_pretrain(commands: _Commands) -> None:
    pretrain = commands.add_parser(
        "pretrain", help="fine-tune the base encoder on (policy line, text) pairs of the seed sets' categories"
    )
    pretrain.add_argument("--out", required=True, help="folder: model/ (a sentence-transformers model), pretrain.json")
    pretrain.add_argument("--seeds", default=_seeds_default(), help="seed sets folder (as for pack)")
    add_flags(pretrain, _PRETRAIN)
    pretrain.set_defaults(handler=_pretrain)


def _pretrain(args: argparse.Namespace) -> None:
    config = _PRETRAIN.build(args)
    training, heldout = split_tasks(load_tasks(Path(args.seeds)), config.heldout_fraction, config.seed)
    info = pretrain_encoder(training, args.out, config, heldout=[task.name for task in heldout])
    print(info.model_dump_json(indent=2, exclude={"heldout_tasks"}))
    print(f"train a guard on it with --base-model {Path(args.out) / 'model'}", file=sys.stderr)


def _add_adversarial(commands: _Commands) -> None:
    adversarial = commands.add_parser(
        "adversarial", help="rounds of bandit-chosen hard examples, debate-verified, retraining each round (resumes)"
    )
    adversarial.add_argument("policy", help="policy YAML: what the debate verifies candidates against")
    adversarial.add_argument("--data", required=True, help='training JSONL rows {"text": ..., "labels": [...]}')
    adversarial.add_argument("--out", required=True, help="folder: rounds/<r>/run (models), report.md/json, cache")
    add_flags(adversarial, _ADVERSARIAL)
    adversarial.add_argument(
        "--eval", action="append", default=[], metavar="NAME=PATH[:SPLIT]", help="extra set measured every round"
    )
    _add_llm_arguments(adversarial)
    adversarial.set_defaults(handler=_adversarial)


def _adversarial(args: argparse.Namespace) -> None:
    policy = _message_policy(args.policy, "adversarial")
    config = _ADVERSARIAL.build(args)
    eval_sets = [EvalSet.parse(spec) for spec in args.eval]
    report = run_adversarial(
        args.data, policy, args.out, llm_config=_llm_config(args), config=config, eval_sets=eval_sets,
        embedded=args.embedded,
    )  # fmt: skip
    print(render_report(report))
    print(f"the last round's model: {report.final_run} (export it with guard-build export --run)", file=sys.stderr)


def _add_merge(commands: _Commands) -> None:
    merge = commands.add_parser(
        "merge", help="merge single-policy runs into one multi-label run, searching the merge coefficients"
    )
    merge.add_argument("--out", required=True, help="run folder to write (model/, validation.jsonl, merge.json)")
    add_flags(merge, _MERGE)
    merge.set_defaults(handler=_merge)


def _merge(args: argparse.Namespace) -> None:
    report = merge_runs(args.out, _MERGE.build(args))
    print(report.summary.model_dump_json(indent=2))
    merged = report.points[report.best].label_f1 if report.best is not None else None
    print(f"single-policy F1 {report.single_f1}; merged F1 {merged}", file=sys.stderr)


_COMMANDS = (
    _add_train,
    _add_multitask,
    _add_instruct,
    _add_export,
    _add_data,
    _add_all,
    _add_pack,
    _add_pack_wheel,
    _add_pack_answers,
    _add_distill,
    _add_pretrain,
    _add_adversarial,
    _add_merge,
)


def _parser() -> argparse.ArgumentParser:
    """``guard-build``'s parser: each subcommand's parsed arguments carry its handler as ``handler``."""
    parser = argparse.ArgumentParser(prog="guard-build", description="Build guard bundles.")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        args.handler(args)
    except (BuilderError, GuardError, ValidationError, ValueError) as exc:
        print(f"guard-build: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
