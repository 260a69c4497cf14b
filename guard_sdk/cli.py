"""``guard check``: check texts from the command line; prints one JSON result per text. ``guard trust``: pins.

guard check "some text"                         one text, with the default pack (built by `guard-build pack`)
guard check --bundle DIR "some text"            one text, with the bundle in DIR
guard check --bundle DIR < texts.jsonl          JSONL on stdin: {"text": ...} objects or bare JSON strings
guard check --stage output --context "the request" "the answer"   an answer, judged with its request
guard check --bundle A --bundle B --fail-on-flag "text"   exit status 1 when any text is flagged
guard check --trust trust.json "some text"      refuse bundles whose guard.json is not pinned there
guard trust DIR... > trust.json                 the pins of bundles you trust: {"name@version": sha256 of guard.json}
guard pack                                      where the default pack was found, its version, labels and thresholds
guard pack verify                               re-check the sha256 of every file of the default pack
guard serve [--bundle DIR] [--upstream URL]     an HTTP service: moderations, checks, a guarded chat proxy (`[server]`)
guard triton-repo --bundle DIR --out REPO       a Triton model repository (ONNX Runtime backend) for DIR's model
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO, get_args

from . import _serve_cli
from ._bundle import GuardBundle, file_sha256, read_trust
from ._context import Context, validate
from ._errors import BundleError, GuardError, InputTypeError
from ._guard import Guard
from ._pack import PACK_DISTRIBUTION, find_default_pack
from ._result import CheckResult, Stage
from ._runtime import Device

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="guard", description="Check texts with guard bundles.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="check one text, or JSONL texts from stdin")
    check.add_argument("text", nargs="?", help="the text to check; omit (or '-') to read JSONL from stdin")
    check.add_argument(
        "--bundle", action="append", help="a bundle folder (repeat for several); default: the default pack"
    )
    check.add_argument("--stage", choices=get_args(Stage), default="input")
    check.add_argument(
        "--context",
        help='what the text answers, for guards that read it (the request); JSONL rows give it as "context"',
    )
    check.add_argument("--device", choices=get_args(Device), default="auto")
    check.add_argument("--threads", type=int, default=None)
    check.add_argument(
        "--texts-per-batch",
        "--batch-size",  # its old name
        type=int,
        default=32,
        help="texts per check_batch call when reading stdin",
    )
    check.add_argument("--fail-on-flag", action="store_true", help="exit with status 1 when any text is flagged")
    check.add_argument("--trust", help="a JSON file of guard.json pins (from `guard trust`); unpinned bundles fail")
    pins = commands.add_parser("trust", help="print the guard.json pins of bundles, for Guard(trust=...)")
    pins.add_argument("bundles", nargs="*", help="bundle folders; default: the default pack")
    pack = commands.add_parser("pack", help="where the default pack was found, its version, labels and thresholds")
    pack.add_subparsers(dest="pack_command").add_parser(
        "verify", help="re-check the sha256 of every file of the default pack; exit status 1 on a mismatch"
    )
    _serve_cli.add_arguments(commands.add_parser("serve", help="serve guards over HTTP (needs guard-sdk[server])"))
    repo = commands.add_parser("triton-repo", help="write a Triton model repository for a bundle's ONNX model")
    repo.add_argument("--bundle", required=True, help="the bundle folder")
    repo.add_argument("--out", required=True, help="the model repository (created if missing)")
    repo.add_argument("--model-name", help="default: <bundle name>-<16 digits of the model's sha256>")
    repo.add_argument("--precision", choices=["int8", "fp32"], help="default: the manifest's")
    repo.add_argument("--max-batch", type=int, default=64, help="most windows in one batch")
    repo.add_argument("--preferred-batch", type=int, help="the batch size dynamic batching waits for")
    repo.add_argument("--max-queue-delay-us", type=int, default=500)
    repo.add_argument("--no-dynamic-batching", action="store_true", help="run each request alone")
    repo.add_argument("--instances", type=int, default=1, help="model instances")
    repo.add_argument("--gpu", action="store_true", help="instances on GPUs (KIND_GPU), not on CPUs")
    args = parser.parse_args(argv)

    if args.command == "serve":
        return _serve_cli.run(args)
    if args.command == "triton-repo":
        return _triton_repo(args)
    if args.command == "trust":
        return _trust(args.bundles)
    if args.command == "pack":
        return _verify_pack() if args.pack_command == "verify" else _show_pack()
    try:
        trust = read_trust(args.trust) if args.trust else None
    except (ValueError, TypeError) as exc:
        return _error(exc)
    try:
        options = {"device": args.device, "threads": args.threads, "trust": trust}
        # No build from here: a first `guard check` should not start a minutes-long build unasked.
        guard = Guard(args.bundle, **options) if args.bundle else Guard.default(build=False, **options)
        results: list[CheckResult] = []
        if args.text is not None and args.text != "-":
            results = _print(guard.check_batch([args.text], stage=args.stage, contexts=[args.context]), sys.stdout)
        else:
            rows = _read_jsonl(sys.stdin)
            while batch := list(itertools.islice(rows, args.texts_per_batch)):
                texts, contexts = [text for text, _ in batch], [context for _, context in batch]
                results += _print(guard.check_batch(texts, stage=args.stage, contexts=contexts), sys.stdout)
    except (GuardError, _InputLineError) as exc:
        return _error(exc)
    return 1 if args.fail_on_flag and any(r.flagged for r in results) else 0


def _triton_repo(args: argparse.Namespace) -> int:
    from .triton import write_model_repository

    try:
        folder = write_model_repository(
            args.bundle,
            args.out,
            model_name=args.model_name,
            precision=args.precision,
            max_batch_size=args.max_batch,
            dynamic_batching=not args.no_dynamic_batching,
            preferred_batch_size=args.preferred_batch,
            max_queue_delay_us=args.max_queue_delay_us,
            instances=args.instances,
            gpu=args.gpu,
        )
    except (GuardError, ValueError, OSError) as exc:
        return _error(exc)
    print(folder)
    return 0


def _trust(folders: Sequence[str]) -> int:
    try:
        # Loaded and verified: a pin vouches for a bundle whose files match its manifest.
        bundles = [GuardBundle.load(folder) for folder in folders or find_default_pack(build=False).bundles]
    except GuardError as exc:
        return _error(exc)
    pins = {bundle.manifest.id: bundle.manifest_sha256 for bundle in bundles}
    if len(pins) < len({bundle.manifest_sha256 for bundle in bundles}):
        return _error(ValueError("two different bundles have the same name@version; one pin cannot cover both"))
    print(json.dumps(pins, indent=2))
    return 0


_SOURCES = {
    "env": "the folder GUARD_SDK_PACK_DIR names",
    "package": f"the installed package {PACK_DISTRIBUTION}",
    "cache": "the cache folder `guard-build pack` writes",
}


def _show_pack() -> int:
    try:
        location = find_default_pack(build=False)
        # Names, links and unlisted files are checked; hashing every file is `guard pack verify`'s job.
        bundles = [GuardBundle.load(folder, verify=False) for folder in location.bundles]
    except GuardError as exc:
        return _error(exc)
    print(f"default pack {location.version or '(version unknown: no pack.json)'}, from {_SOURCES[location.source]}")
    print(f"  {location.folder}")
    for bundle in bundles:
        manifest = bundle.manifest
        print(f"{manifest.id}: stages {', '.join(manifest.stages)}; reads {manifest.input.kind}")
        width = max(len(label.name) for label in manifest.labels)
        for label in manifest.labels:
            sentence = "" if label.sentence_threshold is None else f", a sentence {label.sentence_threshold:.4f}"
            print(f"  {label.name:<{width}}  threshold {label.threshold:.4f}{sentence}")
    return 0


def _verify_pack() -> int:
    try:
        location = find_default_pack(build=False)
    except GuardError as exc:
        return _error(exc)
    failed = False
    for folder in location.bundles:
        try:
            bundle = GuardBundle.load(folder)
        except BundleError as exc:
            print(f"guard: error: {exc}", file=sys.stderr)
            failed = True
            continue
        print(f"{bundle.manifest.id}: its {len(bundle.manifest.files)} files match their sha256 in guard.json")
    if location.source == "package":
        # pip's RECORD also covers guard.json and pack.json, which no manifest hashes.
        for problem in _record_problems():
            print(f"guard: error: {problem}", file=sys.stderr)
            failed = True
    if failed:
        print(f"guard: the default pack in {location.folder} is damaged or was changed; reinstall it", file=sys.stderr)
        return 1
    print(f"the default pack in {location.folder} is intact")
    return 0


def _record_problems() -> list[str]:
    """Files of the installed pack distribution that differ from the sha256 pip recorded for them."""
    import importlib.metadata

    problems = []
    for file in importlib.metadata.distribution(PACK_DISTRIBUTION).files or []:
        if file.hash is None:  # RECORD itself, and what pip compiled
            continue
        path = Path(str(file.locate()))
        if not path.is_file():
            problems.append(f"{path} is missing (listed in {PACK_DISTRIBUTION}'s RECORD)")
        elif file.hash.mode != "sha256":
            problems.append(f"{path}: RECORD has a {file.hash.mode} hash, not sha256")
        elif base64.urlsafe_b64encode(bytes.fromhex(file_sha256(path))).rstrip(b"=").decode() != file.hash.value:
            problems.append(f"{path} does not match its sha256 in {PACK_DISTRIBUTION}'s RECORD")
    return problems


def _error(exc: Exception) -> int:
    print(f"guard: error: {exc}", file=sys.stderr)
    return 2


class _InputLineError(ValueError):
    pass


def _read_jsonl(stream: TextIO) -> Iterator[tuple[str, Context | None]]:
    """(text, context) per line: a JSON string, or an object with a "text" string and an optional "context" (a
    request, or a list of messages)."""
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _InputLineError(f"stdin line {number}: not JSON ({exc.msg})") from None
        text = row.get("text") if isinstance(row, dict) else row
        if not isinstance(text, str):
            raise _InputLineError(f'stdin line {number}: expected a JSON string or an object with a "text" string')
        context = row.get("context") if isinstance(row, dict) else None
        try:
            validate(context)
        except InputTypeError as exc:
            raise _InputLineError(f"stdin line {number}: {exc}") from None
        yield text, context


def _print(results: list[CheckResult], stream: TextIO) -> list[CheckResult]:
    stream.writelines(result.model_dump_json() + "\n" for result in results)
    stream.flush()
    return results


if __name__ == "__main__":
    raise SystemExit(main())
