"""Micro-benchmark: the tool-poisoning detector's cost per event (issue 7: aim < 20 µs).

Times `ToolPoisoningDetector.mark` alone on the unsigned CloudEvents of
examples/events.jsonl (mapped once, outside the timing; a few of the examples are poisoned,
most are ordinary audit records), over several rounds, and prints the median of this
process's CPU time per event (stable on a busy machine, unlike wall time).

    .venv/bin/python bench/detector.py [--rounds 15] [--repeat 200]
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from pipeline.cloudevents.mapping import to_cloudevent
from pipeline.detectors.tool_poisoning import ALERTS, ToolPoisoningDetector
from pipeline.ops.metrics import Metrics

EXAMPLES = Path(__file__).parents[1] / "examples" / "events.jsonl"


def load_cloudevents(repeat: int) -> list[dict[str, Any]]:
    lines = [line for line in EXAMPLES.read_text(encoding="utf-8").splitlines() if line]
    events = [to_cloudevent(json.loads(line)) for line in lines]
    return [copy.deepcopy(event) for event in events * repeat]


def microseconds_per_event(detector: ToolPoisoningDetector,
                           events: list[dict[str, Any]]) -> float:
    gc.collect()
    # CPU time of this process: other work on the machine does not count against it.
    start = time.process_time_ns()
    for event in events:
        detector.count(detector.mark(event))
    return (time.process_time_ns() - start) / 1000 / len(events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=200, help="passes over the examples")
    args = parser.parse_args()
    events = load_cloudevents(args.repeat)
    detector = ToolPoisoningDetector(Metrics(CollectorRegistry()))
    microseconds_per_event(detector, events)  # warm-up, and marks the flagged ones
    clean = [event for event in events if ALERTS not in event]
    groups = {"all examples": events, "clean events only": clean,
              "flagged events only": [event for event in events if ALERTS in event]}
    print(f"tool-poisoning detector, {len(events) // args.repeat} examples x {args.repeat}, "
          f"{args.rounds} rounds, Python {platform.python_version()} on "
          f"{platform.machine()} (CPU time of this process)")
    for name, group in groups.items():
        samples = [microseconds_per_event(detector, group) for _ in range(args.rounds)]
        print(f"  {name}: median {statistics.median(samples):.2f} µs/event "
              f"(min {min(samples):.2f}, max {max(samples):.2f}; {len(group)} events)")


if __name__ == "__main__":
    main()
