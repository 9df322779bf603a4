"""Sink throughput against real peers: events/s per sink, batches of 500, median of 3 runs.

    .venv/bin/python -m bench.sinks [--events 20000] [--batch 500] [--runs 3]

Peers: an OpenTelemetry Collector (OTLP gRPC and HTTP → file exporter) and a single-node
Kafka broker, both from tests/support/infra (built/fetched once per machine), and /dev/null
for stdout. Events are the examples with fresh ids, signed beforehand: only `send` is
timed, one batch in flight at a time, as the dispatcher drives a sink; one warm-up run per
sink is not recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from typing import BinaryIO, Literal

from pipeline.model import Position, Record, SignedEvent
from pipeline.processor import EventProcessor
from pipeline.signing.signers import HmacSigner
from sinks.base import Sink
from sinks.kafka import KafkaSink
from sinks.otlp.sink import OtlpOptions, OtlpSink
from sinks.stdout import StdoutSink
from tests.support.events import TEST_KEY, example_lines
from tests.support.infra.collector import Collector
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import create_topics

SinkFactory = Callable[[], Awaitable[Sink]]


def make_events(count: int) -> list[SignedEvent]:
    """``count`` signed events: the examples over and over, each with a fresh event_id."""
    processor = EventProcessor(HmacSigner(TEST_KEY), max_event_bytes=1 << 20)
    templates = [json.loads(line) for line in example_lines()]
    events: list[SignedEvent] = []
    for offset in range(count):
        obj = dict(templates[offset % len(templates)], event_id=uuid.uuid4().hex)
        result = processor.process(Record(json.dumps(obj).encode(), Position("b", 0, offset)))
        assert isinstance(result, SignedEvent), result
        events.append(result)
    return events


async def timed_run(factory: SinkFactory, events: Sequence[SignedEvent], batch: int) -> float:
    """Events per second for one fresh sink sending every batch in turn (start excluded)."""
    sink = await factory()
    try:
        await sink.send(events[:1])  # connect outside the timed part
        started = time.perf_counter()
        for start in range(0, len(events), batch):
            await sink.send(events[start:start + batch])
        elapsed = time.perf_counter() - started
    finally:
        await sink.aclose()
    return len(events) / elapsed


def factories(
    collector: Collector, broker: KafkaBroker, devnull: BinaryIO
) -> dict[str, SinkFactory]:
    """One sink factory per benchmarked sink, each against its real peer."""

    async def otlp(protocol: Literal["grpc", "http/protobuf"], endpoint: str) -> Sink:
        return OtlpSink(OtlpOptions(endpoint=endpoint, protocol=protocol))

    async def kafka(mode: Literal["structured", "binary"]) -> Sink:
        topic = f"bench-{mode}-{uuid.uuid4().hex[:8]}"
        await create_topics(broker.bootstrap, [topic])
        return KafkaSink(broker.bootstrap, topic, content_mode=mode)

    async def stdout() -> Sink:
        return StdoutSink(stream=devnull)

    return {
        "otlp grpc": lambda: otlp("grpc", collector.grpc_endpoint),
        "otlp http/protobuf": lambda: otlp("http/protobuf", collector.http_endpoint),
        "kafka structured": lambda: kafka("structured"),
        "kafka binary": lambda: kafka("binary"),
        "stdout (/dev/null)": stdout,
    }


async def bench(sinks: dict[str, SinkFactory], events: Sequence[SignedEvent], batch: int,
                runs: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    for name, factory in sinks.items():
        # One unrecorded run first: the broker's JIT and the collector's buffers warm up.
        await timed_run(factory, events, batch)
        results[name] = [await timed_run(factory, events, batch) for _ in range(runs)]
        print(f"  {name}: {', '.join(f'{r:,.0f}' for r in results[name])} events/s",
              flush=True)
    return results


def table(results: dict[str, list[float]], events: int, batch: int) -> str:
    lines = [f"| sink | events/s (median of {len(next(iter(results.values())))}) | runs |",
             "|---|---:|---|"]
    for name, rates in results.items():
        runs = ", ".join(f"{r:,.0f}" for r in rates)
        lines.append(f"| {name} | {statistics.median(rates):,.0f} | {runs} |")
    lines.append(f"\n{events:,} events, batches of {batch}; {os.cpu_count()} CPUs, "
                 f"Python {platform.python_version()}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    events = make_events(args.events)
    with ExitStack() as stack:
        collector = stack.enter_context(Collector())
        broker = stack.enter_context(KafkaBroker())
        devnull = stack.enter_context(open(os.devnull, "wb"))
        sinks = factories(collector, broker, devnull)
        results = asyncio.run(bench(sinks, events, args.batch, args.runs))
    print(table(results, args.events, args.batch))


if __name__ == "__main__":
    main()
