"""CPU per event of the processing alone, Python against native-first (issue 20).

    .venv/bin/python experiments/native_hotpath/micro.py [--events 20000] [--rounds 5]

`time.process_time` over `EventProcessor.process` for the bench's events (bench.events:
every template, fresh ids), configured as bench scenario b (HMAC, detector on), in one
process, rounds interleaved; the median round per variant. Also: the native call alone on
the events it takes, and the `orjson.loads` of the body that fills `SignedEvent.attributes`.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent / "site")]

from native_first import native_first_process, native_for, python_process  # noqa: E402

from bench.events import event_values  # noqa: E402
from pipeline.detectors.tool_poisoning import ToolPoisoningDetector  # noqa: E402
from pipeline.model import Position, Record  # noqa: E402
from pipeline.ops.metrics import Metrics  # noqa: E402
from pipeline.processor import EventProcessor  # noqa: E402
from pipeline.signing.signers import HmacSigner  # noqa: E402


def per_event_us(run: Callable[[], object], count: int) -> float:
    """CPU µs per event of one call of ``run`` over ``count`` events, with the cyclic
    garbage collector off (as timeit does: its passes over the results kept would be
    charged to whichever variant happened to trigger them)."""
    gc.collect()
    gc.disable()
    try:
        started = time.process_time()
        run()
        return (time.process_time() - started) / count * 1e6
    finally:
        gc.enable()


def main() -> None:
    """Measure and print the medians."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    processor = EventProcessor(HmacSigner(b"k" * 32), 1_048_576,
                               detector=ToolPoisoningDetector(Metrics(CollectorRegistry())))
    native = native_for(processor)
    assert native is not None
    records = [Record(value, Position("in-bench", i % 2, i))
               for i, value in enumerate(event_values(args.events))]
    taken = [r for r in records if native.process(r.value, "in-bench", 0, r.position.offset,
                                                  False) is not None]
    bodies = [native_first_process(processor, r).body for r in taken]  # type: ignore[union-attr]
    variants: dict[str, tuple[Callable[[], object], int]] = {
        "python EventProcessor.process": (
            lambda: [python_process(processor, r) for r in records], len(records)),
        "native-first EventProcessor.process": (
            lambda: [native_first_process(processor, r) for r in records], len(records)),
        "  native call alone (events it takes)": (
            lambda: [native.process(r.value, "in-bench", 0, r.position.offset, False)
                     for r in taken], len(taken)),
        "  orjson.loads of the body (attributes)": (
            lambda: [orjson.loads(b) for b in bodies], len(bodies)),
    }
    found: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (run, count) in variants.items():
            found[name].append(per_event_us(run, count))
    print(f"{len(records):,} bench events, {len(taken) / len(records):.1%} on the native "
          f"path; median of {args.rounds} rounds, CPU µs per event:")
    for name, values in found.items():
        print(f"  {name:42} {statistics.median(values):6.2f}  "
              f"(rounds {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
