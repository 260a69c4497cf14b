"""guard-build's options come from the config models: every option of the hand-written CLI still parses, to the
same config values, and a new config field is an option without more code. Nothing here trains: the command lines
are parsed and their configs built, as each subcommand's handler builds them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from builder import cli
from builder._flags import Flags, add_flags
from builder.errors import BuilderError

# Every option `guard-build <command> --help` listed before the options were derived from the configs.
OPTIONS_BEFORE = {
    "train": "--base-model --batch-size --context-tokens --data --epochs --head --labels --learning-rate --max-length "
    "--max-steps --num-layers --out --seed --threads --triplet-epochs --validation-fraction",
    "multitask": "--base-model --batch-size --context-tokens --data --epochs --instructions --learning-rate "
    "--max-length --max-steps --num-layers --out --per-task --policy-data --seed --skip --threads --validation-fraction",
    "instruct": "--bundle --max-length --name --out --overwrite --policy --version",
    "export": "--benign-flag-rate --description --keep-fp32 --max-int8-diff --max-int8-mean-diff --min-int8-agreement "
    "--name --out --overwrite --run --stages --target-fpr --threshold --version",
    "data": "--api-key --base-url --cells --concurrency --corpus --corpus-limit --embedded --llm-config --max-turns "
    "--min-confidence --model --no-progress --on-mismatch --out --paraphrases --per-prompt --retrieve --seed "
    "--structured-output --timeout",
    "all": "--api-key --base-url --benign-flag-rate --cells --concurrency --context-tokens --corpus --corpus-limit "
    "--embedded --epochs --generate --head --learning-rate "
    "--keep-fp32 --llm-config --max-int8-diff --max-int8-mean-diff --max-turns --min-confidence --min-int8-agreement "
    "--model --no-generate --no-progress --on-mismatch --out --overwrite --paraphrases --per-prompt --regularization "
    "--retrieve --review --seed --stages --structured-output --target-fpr --threads --threshold --timeout --version --work",
    "pack": "--answer-epochs --base-model --benign-flag-rate --data-only --epochs --head --out --seed --seeds --threads "
    "--triplet-epochs --wheel --work",
    "pack-wheel": "--out --pack",
    "pack-answers": "--no-progress --out --seed --seeds --threads --work",
    "distill": "--base-model --epochs --max-texts --num-layers --out --seed --texts --threads",
    "pretrain": "--base-model --batch-size --epochs --heldout-fraction --max-length --no-progress --out "
    "--pairs-per-task --seed --seeds --threads",
    "adversarial": "--api-key --base-url --candidates --concurrency --data --discount --embedded --epochs --eval --head "
    "--llm-config --min-confidence --model --no-progress --no-second-round --operators --out --rounds --seed "
    "--structured-output --threads --timeout",
    "merge": "--base-model --coefficients --density --donor --holdout-fraction --labels-from --max-evals --method "
    "--out --overwrite --task --threads",
}


def _parse(*argv: str) -> argparse.Namespace:
    return cli._parser().parse_args(argv)


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli._parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(commands.choices)


def test_every_command_keeps_its_options():
    subparsers = _subparsers()
    assert set(subparsers) == set(OPTIONS_BEFORE)
    for command, options in OPTIONS_BEFORE.items():
        offered = {option for action in subparsers[command]._actions for option in action.option_strings}
        assert set(options.split()) <= offered, (command, set(options.split()) - offered)


@pytest.mark.parametrize("command", sorted(OPTIONS_BEFORE))
def test_help_of_every_command(command: str, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    assert f"usage: guard-build {command}" in capsys.readouterr().out


def test_train_options():
    args = _parse(
        "train", "--data", "d.jsonl", "--out", "run", "--labels", "a, b", "--base-model", "/models/m",
        "--epochs", "2.5", "--max-steps", "7", "--batch-size", "4", "--learning-rate", "1e-4", "--max-length", "64",
        "--validation-fraction", "0.2", "--seed", "5", "--threads", "2", "--num-layers", "3",
        "--context-tokens", "32", "--triplet-epochs", "1.5", "--weight-decay", "0.0",
    )  # fmt: skip
    assert cli._names(args.labels) == ["a", "b"] and args.head == "classifier"
    config = cli._TRAINING.build(args)
    assert config.model_dump(exclude={"label_descriptions"}) == {
        "base_model": "/models/m", "max_length": 64, "validation_fraction": 0.2, "seed": 5, "threads": 2,
        "epochs": 2.5, "max_steps": 7, "batch_size": 4, "learning_rate": 1e-4, "weight_decay": 0.0,
        "warmup_ratio": 0.1, "save_steps": 200, "num_layers": 3, "context_tokens": 32,
    }  # fmt: skip
    # --head embedding: the run options shared with the classifier, the embedding's own batch size and rate.
    embedding = cli._EMBEDDING.build(_parse("train", "--data", "d", "--out", "o", "--head", "embedding",
                                            "--seed", "3", "--max-length", "96", "--triplet-epochs", "1.5",
                                            "--batch-size", "9"))  # fmt: skip
    assert (embedding.seed, embedding.max_length, embedding.triplet_epochs) == (3, 96, 1.5)
    assert (embedding.encode_batch_size, embedding.learning_rate, embedding.progress) == (64, 2e-5, True)


def test_multitask_keeps_its_longer_window():
    args = _parse("multitask", "--out", "o", "--policy-data", "p.yaml=d.jsonl", "--policy-data", "q.yaml=e.jsonl",
                  "--skip", "hate", "--per-task", "50", "--epochs", "1")  # fmt: skip
    config = cli._MULTITASK.build(args)
    assert (config.max_length, config.epochs) == (256, 1.0)
    assert (args.policy_data, args.skip, args.per_task) == (["p.yaml=d.jsonl", "q.yaml=e.jsonl"], ["hate"], 50)
    assert cli._MULTITASK.build(_parse("multitask", "--out", "o", "--max-length", "200")).max_length == 200


def test_export_options():
    args = _parse(
        "export", "--run", "r", "--out", "b", "--name", "inj", "--version", "0.2.0", "--description", "d",
        "--keep-fp32", "--benign-flag-rate", "0.05", "--max-int8-diff", "0.3", "--max-int8-mean-diff", "0.03",
        "--min-int8-agreement", "0.9", "--stages", "input, output", "--overwrite", "--no-per-channel",
    )  # fmt: skip
    config = cli._EXPORT.build(args)
    assert (config.name, config.version, config.description) == ("inj", "0.2.0", "d")
    assert config.keep_fp32 and config.overwrite and not config.per_channel
    assert (config.benign_flag_rate, config.target_fpr) == (0.05, None)
    assert (config.max_int8_diff, config.max_int8_mean_diff, config.min_int8_agreement) == (0.3, 0.03, 0.9)
    assert config.stages == ["input", "output"]
    repeated = cli._EXPORT.build(_parse("export", "--run", "r", "--out", "b", "--name", "n", "--stages", "output",
                                        "--stages", "input"))  # fmt: skip
    assert repeated.stages == ["output", "input"]
    plain = cli._EXPORT.build(_parse("export", "--run", "r", "--out", "b", "--name", "n"))
    assert plain.stages is None and plain.per_channel and plain.version == "0.1.0"


def test_data_and_all_options(monkeypatch: pytest.MonkeyPatch):
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)
    data = (
        "p.yaml", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--api-key", "k",
        "--structured-output", "schema", "--concurrency", "3", "--timeout", "30", "--embedded", "gemma3",
        "--cells", "5", "--per-prompt", "6", "--paraphrases", "2", "--on-mismatch", "drop",
        "--min-confidence", "0.7", "--seed", "21", "--no-progress",
    )  # fmt: skip
    args = _parse("data", *data, "--out", "o")
    config = cli._DATA.build(args)
    assert (config.cells, config.progress) == (5, False)
    assert (config.generation.per_prompt, config.generation.paraphrases_per_seed) == (6, 2)
    assert (config.debate.on_mismatch, config.debate.min_confidence, config.debate.extra_round) == ("drop", 0.7, True)
    # One --seed for every stage, as before.
    assert config.dimensions.seed == config.debate.seed == config.curation.seed == 21
    llm = cli._llm_config(args)
    assert (llm.base_url, llm.model, llm.api_key, llm.structured_output) == (
        "http://127.0.0.1:9/v1",
        "m",
        "k",
        "schema",
    )
    assert (llm.max_concurrency, llm.timeout, args.embedded) == (3, 30.0, "gemma3")

    every = _parse("all", *data, "--out", "b", "--epochs", "2", "--threads", "2", "--version", "0.3.0",
                   "--target-fpr", "0.05", "--stages", "input", "--keep-fp32")  # fmt: skip
    training = cli._POLICY_GUARD.build(every)
    # --seed and --no-progress reach the data engine's stages and the training alike.
    assert (training.epochs, training.seed, training.threads, training.head, training.progress) == (
        2.0,
        21,
        2,
        None,
        False,
    )
    assert cli._POLICY_GUARD.build(_parse("all", "p.yaml", "--out", "b", "--head", "classifier")).head == "classifier"
    export = cli._ALL_EXPORT.build(every, name="visa", description="advice")
    assert (export.name, export.version, export.target_fpr, export.stages, export.keep_fp32) == (
        "visa", "0.3.0", 0.05, ["input"], True,
    )  # fmt: skip
    assert cli._DATA.build(every).dimensions.seed == 21


def test_llm_options_leave_the_rest_to_the_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_MODEL", "from-env")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    settings = tmp_path / "llm.yaml"
    settings.write_text("max_concurrency: 2\ntimeout: 9\n")
    llm = cli._llm_config(_parse("data", "p.yaml", "--out", "o", "--llm-config", str(settings), "--timeout", "5"))
    assert (llm.model, llm.max_concurrency, llm.timeout) == ("from-env", 2, 5.0)


def test_pack_options(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GUARD_SDK_SEEDS", "/seeds/from/env")
    assert cli._PACK.build(_parse("pack")).seed_sets == Path("/seeds/from/env")
    args = _parse(
        "pack", "--seeds", "/seeds", "--out", "p", "--work", "w", "--head", "classifier", "--epochs", "2",
        "--triplet-epochs", "1", "--answer-epochs", "3", "--base-model", "/m", "--seed", "8",
        "--benign-flag-rate", "0.02", "--threads", "2", "--data-only", "--boundary-copies", "4",
    )  # fmt: skip
    config = cli._PACK.build(args)
    assert (config.seed_sets, config.model_kind, config.epochs, config.triplet_epochs) == (
        Path("/seeds"),
        "classifier",
        2,
        1,
    )
    assert (config.answer_epochs, config.base_model, config.seed, config.benign_flag_rate) == (3, "/m", 8, 0.02)
    assert (config.threads, config.boundary_copies, config.max_length) == (2, 4, 128)
    assert (args.out, args.work, args.data_only, args.wheel) == ("p", "w", True, None)
    wheel = _parse("pack-wheel", "--pack", "p", "--out", "dist")
    assert (wheel.pack, wheel.out) == ("p", "dist")


def test_pack_answers_options():
    args = _parse("pack-answers", "--seeds", "s", "--out", "a.jsonl", "--work", "w", "--seed", "3", "--threads", "2",
                  "--no-progress", "--real-answers", "10")  # fmt: skip
    config = cli._ANSWERS.build(args)
    assert (config.threads, config.real_answers, config.unsafe_compliance, config.max_tokens) == (2, 10, 700, (60, 90))
    assert (args.seeds, args.out, args.work, args.seed, args.no_progress) == ("s", "a.jsonl", "w", 3, True)


def test_distill_options():
    args = _parse("distill", "--texts", "a.jsonl", "--texts", "b.jsonl", "--out", "o", "--num-layers", "2",
                  "--base-model", "/m", "--epochs", "3", "--max-texts", "100", "--seed", "1", "--threads", "2")  # fmt: skip
    config = cli._DISTILL.build(args)
    assert (config.num_layers, config.base_model, config.epochs, config.max_texts) == (2, "/m", 3.0, 100)
    assert (config.seed, config.threads, config.progress, args.texts) == (1, 2, True, ["a.jsonl", "b.jsonl"])


def test_adversarial_options():
    defaults = cli._ADVERSARIAL.build(_parse("adversarial", "p.yaml", "--data", "d", "--out", "o"))
    # The nested configs' defaults are AdversarialConfig's: one epoch, debates that drop mismatches, quiet embedding.
    assert (defaults.classifier.epochs, defaults.debate.on_mismatch, defaults.embedding.progress) == (
        1.0,
        "drop",
        False,
    )
    args = _parse(
        "adversarial", "p.yaml", "--data", "d", "--out", "o", "--rounds", "2", "--candidates", "4",
        "--operators", "paraphrase, role-play,", "--head", "classifier", "--epochs", "2", "--discount", "0.3",
        "--min-confidence", "0.8", "--no-second-round", "--eval", "x=a.jsonl", "--eval", "y=b.jsonl:test",
        "--seed", "6", "--threads", "3", "--no-progress",
    )  # fmt: skip
    config = cli._ADVERSARIAL.build(args)
    assert (config.rounds, config.candidates_per_round, config.operators) == (2, 4, ["paraphrase", "role-play"])
    assert (config.model_kind, config.discount, config.seed, config.progress) == ("classifier", 0.3, 6, False)
    assert (config.classifier.epochs, config.classifier.threads, config.embedding.threads) == (2.0, 3, 3)
    assert (config.debate.min_confidence, config.debate.extra_round, config.debate.on_mismatch) == (0.8, False, "drop")
    assert (config.embedding.progress, args.eval) == (False, ["x=a.jsonl", "y=b.jsonl:test"])


def test_merge_options():
    args = _parse(
        "merge", "--task", "r1", "--task", "r2", "--donor", "d1", "--out", "o", "--method", "ties",
        "--coefficients", "0.5,0.7,1", "--density", "0.3", "--max-evals", "9", "--holdout-fraction", "0.2",
        "--labels-from", "l.jsonl", "--base-model", "/m", "--threads", "2", "--overwrite",
    )  # fmt: skip
    config = cli._MERGE.build(args)
    assert (config.tasks, config.donors) == ([Path("r1"), Path("r2")], [Path("d1")])
    assert (config.method, config.coefficients, config.density) == ("ties", [0.5, 0.7, 1.0], 0.3)
    assert (config.search.max_evals, config.search.holdout_fraction, config.search.scales) == (
        9,
        0.2,
        [0.2, 0.4, 0.6, 0.8, 1.0],
    )
    assert (config.labels_from, config.base_model, config.threads, config.overwrite) == (Path("l.jsonl"), "/m", 2, True)
    plain = cli._MERGE.build(_parse("merge", "--task", "r1", "--out", "o"))
    assert (plain.donors, plain.coefficients, plain.method) == ([], None, "ties")


def test_instruct_options():
    args = _parse("instruct", "--bundle", "b", "--policy", "p.yaml", "--policy", "q.yaml", "--out", "o",
                  "--name", "n", "--max-length", "200", "--overwrite")  # fmt: skip
    assert (args.policy, args.name, args.version, args.max_length, args.overwrite) == (
        ["p.yaml", "q.yaml"], "n", "0.1.0", 200, True,
    )  # fmt: skip


def test_bad_values_name_the_option(capsys: pytest.CaptureFixture[str]):
    # Validation stays in the models; the CLI reports it against the option, exit code 2 as before, nothing runs.
    assert cli.main(["train", "--data", "missing.jsonl", "--out", "o", "--epochs", "0"]) == 2
    assert "guard-build: error: --epochs: Input should be greater than 0 (got 0.0)" in capsys.readouterr().err
    assert cli.main(["export", "--run", "r", "--out", "o", "--name", "bad name"]) == 2
    assert "guard-build: error: --name: String should match pattern" in capsys.readouterr().err
    assert cli.main(["export", "--run", "r", "--out", "o", "--name", "n", "--stages", "input,sideways"]) == 2
    assert "--stages: Input should be 'input' or 'output' (got 'sideways')" in capsys.readouterr().err
    assert cli.main(["merge", "--task", "r", "--out", "o", "--coefficients", "1,2"]) == 2
    assert "guard-build: error: coefficients: 2 given for 1 sources" in capsys.readouterr().err
    # A nested config's error names the option too.
    adversarial = _parse("adversarial", "p.yaml", "--data", "d", "--out", "o", "--min-confidence", "2")
    with pytest.raises(BuilderError, match=r"--min-confidence: Input should be less than or equal to 1 \(got 2\.0\)"):
        cli._ADVERSARIAL.build(adversarial)
    # argparse's own checks are unchanged: its message and exit code 2.
    with pytest.raises(SystemExit) as exited:
        cli.main(["data", "p.yaml", "--out", "o", "--on-mismatch", "keep"])
    assert exited.value.code == 2
    assert "argument --on-mismatch: invalid choice: 'keep' (choose from 'relabel', 'drop')" in capsys.readouterr().err


class _Knobs(BaseModel):
    """A config the CLI has never seen."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    size: int = Field(3, ge=1)
    """How big."""
    ratio: float | None = None
    mode: Literal["fast", "exact"] = "exact"
    verbose: bool = False
    cache: bool = True
    tags: list[str] = []
    inputs: list[Path] = []


def test_a_new_field_is_an_option():
    parser = argparse.ArgumentParser()
    flags = Flags(_Knobs)
    add_flags(parser, flags)
    assert "How big (default: 3)" in parser.format_help()
    knobs = flags.build(parser.parse_args([]))
    assert knobs == _Knobs()
    knobs = flags.build(
        parser.parse_args(["--size", "5", "--ratio", "0.5", "--mode", "fast", "--verbose", "--no-cache",
                           "--tags", "a,b", "--tags", "c", "--inputs", "x,y", "--inputs", "z"])
    )  # fmt: skip
    assert knobs == _Knobs(size=5, ratio=0.5, mode="fast", verbose=True, cache=False, tags=["a", "b", "c"],
                           inputs=[Path("x,y"), Path("z")])  # fmt: skip
    with pytest.raises(BuilderError, match=r"--size: Input should be greater than or equal to 1 \(got 0\)"):
        flags.build(parser.parse_args(["--size", "0"]))
