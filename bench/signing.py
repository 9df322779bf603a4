"""Micro-benchmark: the cost of turning one governance event into a signed CloudEvent.

Measures, per event, `EventProcessor.process` (decode → map → sign → serialize, exactly
the daemon's hot path) with HMAC-SHA256 and with Ed25519, against a plain
`json.dumps(json.loads(line))` of the same event bytes, in the same process and the same
rounds (interleaved, so machine noise hits every path alike). Input: the records of
examples/events.jsonl, repeated. Prints a markdown table of per-path medians over the
rounds and the ratio to the plain JSON round trip.

    .venv/bin/python bench/signing.py [--rounds 15] [--repeat 50]

Target (issue 3): HMAC path ≤ 3x the plain JSON round trip.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipeline.model import Position, Record, SignedEvent
from pipeline.processor import EventProcessor
from pipeline.signing.signers import Ed25519Signer, HmacSigner

EXAMPLES = Path(__file__).parents[1] / "examples" / "events.jsonl"
MAX_EVENT_BYTES = 1_048_576


def load_records(repeat: int) -> list[Record]:
    lines = [line for line in EXAMPLES.read_bytes().splitlines() if line.strip()]
    return [Record(line, Position("bench", 0, index))
            for index, line in enumerate(lines * repeat)]


def plain_json(records: Sequence[Record]) -> None:
    for record in records:
        json.dumps(json.loads(record.value))


def processing(processor: EventProcessor) -> Callable[[Sequence[Record]], None]:
    def run(records: Sequence[Record]) -> None:
        for record in records:
            processor.process(record)
    return run


def microseconds_per_event(path: Callable[[Sequence[Record]], None],
                           records: Sequence[Record]) -> float:
    gc.collect()
    start = time.perf_counter_ns()
    path(records)
    return (time.perf_counter_ns() - start) / 1000 / len(records)


def check_every_record_is_signed(processor: EventProcessor, records: Sequence[Record]) -> None:
    # A rejected record would be cheaper than a signed one and flatter the numbers.
    rejected = [r.position.offset for r in records if
                not isinstance(processor.process(r), SignedEvent)]
    if rejected:
        raise SystemExit(f"benchmark input has rejected records: offsets {rejected[:5]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=50, help="passes over the examples")
    args = parser.parse_args()
    records = load_records(args.repeat)
    hmac_processor = EventProcessor(HmacSigner(b"k" * 32), MAX_EVENT_BYTES)
    ed_processor = EventProcessor(Ed25519Signer(Ed25519PrivateKey.generate()), MAX_EVENT_BYTES)
    for processor in (hmac_processor, ed_processor):
        check_every_record_is_signed(processor, records)
    paths = {
        "plain `json.loads` + `json.dumps`": plain_json,
        "decode → map → sign → serialize, HMAC-SHA256": processing(hmac_processor),
        "decode → map → sign → serialize, Ed25519": processing(ed_processor),
    }
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for path in paths.values():
        path(records[:200])  # warm-up
    for _ in range(args.rounds):
        for name, path in paths.items():
            samples[name].append(microseconds_per_event(path, records))
    print_table(samples, len(records), args.rounds)


def print_table(samples: dict[str, list[float]], events: int, rounds: int) -> None:
    medians = {name: statistics.median(values) for name, values in samples.items()}
    baseline = next(iter(medians.values()))
    print(f"{events} events per round ({EXAMPLES.name}), {rounds} rounds, "
          f"Python {platform.python_version()} on {platform.machine()}\n")
    print("| path | median µs/event | min-max µs/event | vs plain JSON |")
    print("|---|---:|---:|---:|")
    for name, median in medians.items():
        low, high = min(samples[name]), max(samples[name])
        print(f"| {name} | {median:.2f} | {low:.2f}-{high:.2f} | {median / baseline:.2f}x |")


if __name__ == "__main__":
    main()
