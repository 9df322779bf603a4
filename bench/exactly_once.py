"""What `sinks.kafka.exactly_once` costs: govpipe with the Kafka sink only, at-least-once
against exactly-once, on the same broker.

    .venv/bin/python -m bench.exactly_once [--events 100000] [--rate 2000]
                                           [--latency-seconds 10] [--commit-interval 2.0]

Starts its own Kafka broker (tests/support/infra), then for each mode, on fresh topics
(2 input partitions) and a fresh consumer group:
- throughput: N preloaded events; from govpipe's first read to the moment the group's
  committed offsets cover all N (under exactly-once, the moment the last transaction made
  them visible to read_committed readers);
- visibility latency: a paced producer at ``--rate`` stamps its send time into each
  event; a read_committed reader of the output notes when each event reaches it
  (wall clock; everything on one machine) over ``--latency-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped,unused-ignore]

from bench.events import event_values, sent_ms
from bench.kafka_io import paced_load, preload
from bench.procs import GovpipeWorker
from bench.run import percentile
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import committed_offsets, create_topics

PARTITIONS = 2


def env_for(bootstrap: str, tag: str, exactly_once: bool, key: str,
            commit_interval_s: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVPIPE_")}
    env.update({
        "GOVPIPE_SOURCE__KIND": "kafka", "GOVPIPE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "GOVPIPE_SOURCE__TOPIC": f"in-{tag}", "GOVPIPE_SOURCE__GROUP_ID": f"g-{tag}",
        "GOVPIPE_SOURCE__COMMIT_INTERVAL_S": str(commit_interval_s),
        "GOVPIPE_SERVER__LISTEN": "127.0.0.1:0", "GOVPIPE_SIGNING_KEY": key,
        "GOVPIPE_SINKS__STDOUT__ENABLED": "false", "GOVPIPE_SINKS__KAFKA__ENABLED": "true",
        "GOVPIPE_SINKS__KAFKA__TOPIC": f"out-{tag}",
        "GOVPIPE_SINKS__KAFKA__EXACTLY_ONCE": str(exactly_once).lower(),
        "GOVPIPE_DEADLETTER__KIND": "kafka", "GOVPIPE_DEADLETTER__TOPIC": f"dlq-{tag}",
    })
    return env


async def fresh(bootstrap: str, label: str) -> str:
    tag = f"{label}-{uuid.uuid4().hex[:6]}"
    await create_topics(bootstrap, [f"in-{tag}", f"out-{tag}", f"dlq-{tag}"],
                        partitions=PARTITIONS)
    return tag


async def throughput(bootstrap: str, env: dict[str, str], tag: str, events: int,
                     work: Path) -> float:
    await preload(bootstrap, f"in-{tag}", event_values(events), PARTITIONS, lambda _: None)
    worker = GovpipeWorker.start(env, work)
    try:
        started = await worker.first_consume()
        while sum((await committed_offsets(bootstrap, f"g-{tag}")).values()) < events:
            worker.check_alive()
            await asyncio.sleep(0.05)
        return events / (time.time() - started)
    finally:
        await worker.stop()


async def latency(bootstrap: str, env: dict[str, str], tag: str, rate: float,
                  seconds: float, work: Path) -> list[float]:
    count = int(rate * seconds)
    worker = GovpipeWorker.start(env, work)
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                              isolation_level="read_committed", enable_auto_commit=False)
    await reader.start()
    try:
        await worker.wait_ready()
        reader.assign([TopicPartition(f"out-{tag}", p) for p in range(PARTITIONS)])
        load = asyncio.ensure_future(paced_load(bootstrap, f"in-{tag}", rate, count))
        found: list[float] = []
        async with asyncio.timeout(seconds + 120):
            while len(found) < count:
                fetched = await reader.getmany(timeout_ms=100)
                now = time.time() * 1000
                found += [now - sent for r in (r for rs in fetched.values() for r in rs)
                          if (sent := sent_ms(r.value)) is not None]
        await load
        return found[len(found) // 5:]  # the first fifth is start-up, not steady state
    finally:
        await reader.stop()
        await worker.stop()


async def run(args: argparse.Namespace, bootstrap: str, work: Path) -> None:
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    print(f"{'mode':<16} {'events/s':>9} {'visible p50 ms':>15} {'visible p99 ms':>15}")
    for label, exactly_once in (("at-least-once", False), ("exactly-once", True)):
        tag = await fresh(bootstrap, label)
        env = env_for(bootstrap, tag, exactly_once, key, args.commit_interval)
        eps = await throughput(bootstrap, env, tag, args.events,
                               Path(tempfile.mkdtemp(dir=work)))
        tag = await fresh(bootstrap, label)
        env = env_for(bootstrap, tag, exactly_once, key, args.commit_interval)
        found = await latency(bootstrap, env, tag, args.rate, args.latency_seconds,
                              Path(tempfile.mkdtemp(dir=work)))
        print(f"{label:<16} {eps:>9,.0f} {percentile(found, 0.5):>15,.0f} "
              f"{percentile(found, 0.99):>15,.0f}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=2_000.0)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--commit-interval", type=float, default=2.0,
                        help="source.commit_interval_s (the default is 2.0)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="govpipe-eos-") as work, KafkaBroker() as broker:
        asyncio.run(run(args, broker.bootstrap, Path(work)))
    print(f"{args.events:,} events; {os.cpu_count()} CPUs; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", file=sys.stderr)


if __name__ == "__main__":
    main()
