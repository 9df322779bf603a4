"""Signed records at a steady rate through one `govpipe run` with
`source.require_signature` and the default nonce settings:

    .venv/bin/python -m bench.inbound_rate [--rate 5000] [--seconds 60] [--senders 8]

Starts its own Kafka broker (tests/support/infra), a 4-partition input topic and one
`govpipe run` (stdout sink to /dev/null). A paced producer signs every record (one of
`--senders` senders, uuid4 nonces, as `pipeline.publisher` does: bench/producer_signing.py)
and sends `--rate` a second for `--seconds`. Prints what govpipe counted (records,
verification results, rejections), how long it took to read the last record after the
producer finished, and govpipe's peak RSS (VmHWM), so the memory the nonces cost is seen
with the rest.

Then the restart: `--copies` of the first records are sent again (same headers, same
partition) and a second `govpipe run` in the same group starts; it prints how long the
nonce rebuild of the four partitions took, how many nonces it recalled, and how many of
the copies were caught as replays.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.events import event_values
from bench.procs import GovpipeWorker, samples, vm_hwm_mb
from bench.producer_signing import ProducerSigner
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import create_topics

TICK_S = 0.02


Sent = tuple[bytes, bytes, list[tuple[str, bytes]]]  # value, key, headers


async def paced_signed(bootstrap: str, topic: str, signer: ProducerSigner, rate: float,
                       seconds: float, kept: list[Sent]) -> int:
    """Send signed records at `rate` a second for `seconds`; how many were sent. The first
    `len(kept)` records sent are written into `kept`."""
    values = event_values(10_000)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                enable_idempotence=True)
    await producer.start()
    count = int(rate * seconds)
    try:
        pending: list[asyncio.Future[object]] = []
        started, sent = time.monotonic(), 0
        while sent < count:
            due = min(count, int((time.monotonic() - started) * rate) + 1)
            for n in range(sent, due):
                value = values[n % len(values)]
                sender, headers = signer.sender(n).encode(), signer.headers(value, n)
                if n < len(kept):
                    kept[n] = (value, sender, headers)
                pending.append(await producer.send(topic, value, key=sender, headers=headers))
            sent = due
            if len(pending) > 20_000:
                await asyncio.gather(*pending)
                pending.clear()
            await asyncio.sleep(TICK_S)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count


def daemon_env(broker: KafkaBroker, topic: str, work: Path) -> dict[str, str]:
    return dict(os.environ, GOVPIPE_SIGNING_KEY=base64.b64encode(
        secrets.token_bytes(32)).decode(), GOVPIPE_SOURCE__KIND="kafka",
        GOVPIPE_KAFKA__BOOTSTRAP_SERVERS=broker.bootstrap, GOVPIPE_SOURCE__TOPIC=topic,
        GOVPIPE_SOURCE__REQUIRE_SIGNATURE="true",
        GOVPIPE_SOURCE__INBOUND_KEY_FILE=str(work / "inbound.key"),
        GOVPIPE_DEADLETTER__KIND="file", GOVPIPE_DEADLETTER__PATH=str(work / "dlq"),
        GOVPIPE_SERVER__LISTEN="127.0.0.1:0")


async def read_until(worker: GovpipeWorker, count: float) -> str:
    """The /metrics page once govpipe has read `count` records."""
    while True:
        page = await worker.metrics()
        if samples(page, "govpipe_source_records_total").get("total", 0) >= count:
            return page
        await asyncio.sleep(0.5)


def rebuilt(log: Path) -> list[dict[str, Any]]:
    lines = log.read_bytes().splitlines() if log.exists() else []
    return [entry for line in lines if line.startswith(b"{")
            and (entry := json.loads(line)).get("message") == "nonces rebuilt"]


async def steady_rate(args: argparse.Namespace, broker: KafkaBroker, topic: str,
                      signer: ProducerSigner, work: Path, kept: list[Sent]) -> None:
    worker = GovpipeWorker.start(daemon_env(broker, topic, work), work)
    try:
        await worker.wait_ready()
        sent = await paced_signed(broker.bootstrap, topic, signer, args.rate, args.seconds,
                                  kept)
        produced_at = time.monotonic()
        page = await read_until(worker, sent)
        caught_up_s = time.monotonic() - produced_at
        peak = vm_hwm_mb(worker.pid)
    finally:
        await worker.stop()
    print(f"sent {sent} signed records at {args.rate:.0f}/s for {args.seconds:.0f}s; "
          f"govpipe read them all {caught_up_s:.1f}s after the producer finished")
    print("verification:", samples(page, "govpipe_inbound_verification_total"))
    print("rejected:", samples(page, "govpipe_source_rejected_total"))
    print(f"govpipe peak RSS {peak:.0f} MiB")


async def restart(broker: KafkaBroker, topic: str, work: Path, kept: list[Sent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, value, key=key, headers=headers)
                               for value, key, headers in kept])
    finally:
        await producer.stop()
    again = work / "restart"
    again.mkdir()
    started = time.monotonic()
    worker = GovpipeWorker.start(daemon_env(broker, topic, work), again)
    try:
        done = rebuilt(worker.log)
        while sum(len(entry["partitions"]) for entry in done) < 4:
            worker.check_alive()
            await asyncio.sleep(0.2)
            done = rebuilt(worker.log)
        rebuild_s = time.monotonic() - started
        page = await read_until(worker, len(kept))
        peak = vm_hwm_mb(worker.pid)
    finally:
        await worker.stop()
    recalled = sum(int(str(entry["recalled"])) for entry in done)
    print(f"restart: nonces of 4 partitions rebuilt {rebuild_s:.1f}s after start "
          f"({recalled} recalled); peak RSS {peak:.0f} MiB")
    print(f"restart: {len(kept)} copies sent again, rejected:",
          samples(page, "govpipe_source_rejected_total"))


async def measure(args: argparse.Namespace, work: Path) -> None:
    signer = ProducerSigner.with_key_file(work / "inbound.key", args.senders)
    kept: list[Sent] = [(b"", b"", [])] * args.copies
    with KafkaBroker() as broker:
        topic = f"inbound-rate-{uuid.uuid4().hex[:8]}"
        await create_topics(broker.bootstrap, [topic], partitions=4)
        await steady_rate(args, broker, topic, signer, work, kept)
        await restart(broker, topic, work, kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--copies", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="govpipe-inbound-") as work:
        asyncio.run(measure(args, Path(work)))


if __name__ == "__main__":
    main()
