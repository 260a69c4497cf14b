"""``guard check``: check texts from the command line; prints one JSON result per text. ``guard trust``: pins.

guard check "some text"                         one text, with the default pack (built by `guard-build pack`)
guard check --bundle DIR "some text"            one text, with the bundle in DIR
guard check --bundle DIR < texts.jsonl          JSONL on stdin: {"text": ...} objects or bare JSON strings
guard check --stage output --context "the request" "the answer"   an answer, judged with its request
guard check --bundle A --bundle B --fail-on-flag "text"   exit status 1 when any text is flagged
guard check --trust trust.json "some text"      refuse bundles whose guard.json is not pinned there
guard trust DIR... > trust.json                 the pins of bundles you trust: {"name@version": sha256 of guard.json}
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterator, Sequence
from typing import TextIO, get_args

from ._bundle import GuardBundle, read_trust
from ._context import Context, validate
from ._errors import GuardError, InputTypeError
from ._guard import Guard
from ._pack import ensure_default_pack
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
    check.add_argument("--batch-size", type=int, default=32, help="texts per batch when reading stdin")
    check.add_argument("--fail-on-flag", action="store_true", help="exit with status 1 when any text is flagged")
    check.add_argument("--trust", help="a JSON file of guard.json pins (from `guard trust`); unpinned bundles fail")
    pins = commands.add_parser("trust", help="print the guard.json pins of bundles, for Guard(trust=...)")
    pins.add_argument("bundles", nargs="*", help="bundle folders; default: the default pack")
    args = parser.parse_args(argv)

    if args.command == "trust":
        return _trust(args.bundles)
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
            while batch := list(itertools.islice(rows, args.batch_size)):
                texts, contexts = [text for text, _ in batch], [context for _, context in batch]
                results += _print(guard.check_batch(texts, stage=args.stage, contexts=contexts), sys.stdout)
    except (GuardError, _InputLineError) as exc:
        return _error(exc)
    return 1 if args.fail_on_flag and any(r.flagged for r in results) else 0


def _trust(folders: Sequence[str]) -> int:
    try:
        # Loaded and verified: a pin vouches for a bundle whose files match its manifest.
        bundles = [GuardBundle.load(folder) for folder in folders or ensure_default_pack(build=False)]
    except GuardError as exc:
        return _error(exc)
    pins = {bundle.manifest.id: bundle.manifest_sha256 for bundle in bundles}
    if len(pins) < len({bundle.manifest_sha256 for bundle in bundles}):
        return _error(ValueError("two different bundles have the same name@version; one pin cannot cover both"))
    print(json.dumps(pins, indent=2))
    return 0


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
