"""`govpipe verify`: check signed CloudEvents (JSON lines) against a set of keys."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from pipeline.cloudevents.codec import decode_object
from pipeline.cloudevents.mapping import InvalidEvent
from pipeline.signing.keys import KeySet, VerificationKey, load_verification_key
from pipeline.signing.signers import SigningKeyError
from pipeline.signing.verification import Verifier

EXIT_FAILED = 1
EXIT_USAGE = 2
NOT_JSON = "not_json"
# Lines are whole events; no size cap beyond what the reader holds in memory.
_NO_LIMIT = sys.maxsize
# "ID=FILE" names an HMAC key whose agtkeyid was set with signing.key_id; a prefix with a
# path separator is a file name ("./a=b" is the file "a=b").
_KEY_WITH_ID = re.compile(r"^(?P<id>[A-Za-z0-9._:-]+)=(?P<path>.+)$")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verify = commands.add_parser(
        "verify", help="verify signed CloudEvents",
        description="Check each signed CloudEvent (JSON lines, from INPUT or stdin) against "
                    "the keys; print `verified N, failed M` and exit 1 when M > 0. Each "
                    "failure goes to stderr as `ID: REASON` (REASON: bad_signature, "
                    "unknown_key, unsupported_alg, unsigned, not_json; `line N` when the "
                    "line has no id).")
    verify.add_argument("--key", action="append", required=True, metavar="[ID=]FILE",
                        help="an HMAC key file (base64) or an Ed25519 public (or private) key "
                             "PEM; repeat for key rotation. ID= names an HMAC key signed "
                             "under a custom signing.key_id")
    verify.add_argument("input", nargs="?", type=Path, metavar="INPUT",
                        help="JSON-lines file of signed CloudEvents (default: stdin)")
    verify.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    try:
        keys = KeySet(load_key(spec) for spec in args.key)
    except SigningKeyError as exc:
        print(f"govpipe: {exc}", file=sys.stderr)
        return EXIT_USAGE
    verifier = Verifier(keys)
    try:
        if args.input is None:
            verified, failed = check_lines(verifier, sys.stdin.buffer)
        else:
            with args.input.open("rb") as stream:
                verified, failed = check_lines(verifier, stream)
    except OSError as exc:
        print(f"govpipe: cannot read {args.input}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    print(f"verified {verified}, failed {failed}")
    return EXIT_FAILED if failed else 0


def load_key(spec: str) -> VerificationKey:
    """A verification key from `[ID=]FILE`, as `--key` takes it."""
    match = _KEY_WITH_ID.match(spec)
    if match and not Path(spec).exists():
        return load_verification_key(Path(match["path"]), match["id"])
    return load_verification_key(Path(spec))


def check_lines(verifier: Verifier, lines: Iterable[bytes]) -> tuple[int, int]:
    """(verified, failed) over JSON lines; each failure is reported on stderr."""
    verified = failed = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        label, reason = _check_line(verifier, line, number)
        if reason is None:
            verified += 1
        else:
            failed += 1
            print(f"{label}: {reason}", file=sys.stderr)
    return verified, failed


def _check_line(verifier: Verifier, line: bytes, number: int) -> tuple[str, str | None]:
    try:
        event = decode_object(line, _NO_LIMIT)
    except InvalidEvent:
        return f"line {number}", NOT_JSON
    event_id = event.get("id")
    label = event_id if isinstance(event_id, str) and event_id else f"line {number}"
    if not label.isprintable():
        # An id is attacker-controlled text: no forged lines or terminal escapes on stderr.
        label = json.dumps(label)
    return label, verifier.failure(event)
