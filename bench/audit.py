"""Benchmark: `govpipe audit` over files, the way an auditor runs it.

Writes an input of N JSON lines (the records of examples/events.jsonl with unique ids, one
line in 1000 not JSON), the signed output `govpipe run` would write for it (the daemon's
own `EventProcessor`, positions named `stdin`) and its signed file dead-letter, then times
`govpipe audit --input … --output … --deadletter …` as a subprocess and prints events/s.

    .venv/bin/python bench/audit.py [--events 1000000] [--alg hmac|ed25519] [--dir DIR]

Target (issue 17): a million events in under a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from pipeline.deadletter.entry import DeadLetterEntry
from pipeline.deadletter.file import FileDeadLetter
from pipeline.model import Position, Record, SignedEvent
from pipeline.processor import EventProcessor
from pipeline.signing.signers import Ed25519Signer, HmacSigner, Signer

EXAMPLES = Path(__file__).parents[1] / "examples" / "events.jsonl"
GOVPIPE = Path(sys.executable).parent / "govpipe"


def input_lines(count: int) -> list[bytes]:
    examples = [json.loads(line) for line in EXAMPLES.read_bytes().splitlines() if line.strip()]
    lines = []
    for number in range(count):
        if number % 1000 == 999:
            lines.append(b"{not json")
            continue
        event = dict(examples[number % len(examples)])
        event["event_id"] = f"bench-{number:09d}"
        lines.append(json.dumps(event, separators=(",", ":")).encode())
    return lines


def signer_and_key(alg: str, directory: Path) -> tuple[Signer, Path]:
    key_file = directory / "key"
    if alg == "ed25519":
        private = Ed25519PrivateKey.generate()
        key_file.write_bytes(private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8,
                                                   NoEncryption()))
        return Ed25519Signer(private), key_file
    key = secrets.token_bytes(32)
    key_file.write_text(base64.b64encode(key).decode())
    return HmacSigner(key), key_file


def write_trail(directory: Path, count: int, signer: Signer) -> None:
    processor = EventProcessor(signer, 1 << 20)
    entries = []
    with (directory / "in.jsonl").open("wb") as inp, (directory / "out.jsonl").open("wb") as out:
        for number, line in enumerate(input_lines(count), start=1):
            inp.write(line + b"\n")
            result = processor.process(Record(line, Position("stdin", 0, number, kind="line")))
            if isinstance(result, SignedEvent):
                out.write(result.body + b"\n")
            else:
                entries.append(DeadLetterEntry(origin="source", reason=result.reason,
                                               error=result.detail,
                                               position=result.record.position, value=line))
    asyncio.run(FileDeadLetter(directory / "deadletter", signer).write(entries))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--alg", choices=("hmac", "ed25519"), default="hmac")
    parser.add_argument("--dir", type=Path, help="keep the files here (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.dir or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        signer, key_file = signer_and_key(args.alg, directory)
        write_trail(directory, args.events, signer)
        started = time.perf_counter()
        done = subprocess.run(
            [str(GOVPIPE), "audit", "--key", str(key_file), "--input",
             str(directory / "in.jsonl"), "--input-name", "stdin", "--output",
             str(directory / "out.jsonl"), "--deadletter", str(directory / "deadletter")],
            capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - started
    print(done.stdout.splitlines()[-1] if done.stdout else done.stderr)
    print(f"{args.alg}: {args.events} events audited in {elapsed:.1f} s: "
          f"{args.events / elapsed:,.0f} events/s (exit {done.returncode})")


if __name__ == "__main__":
    main()
