"""Signed records at a steady rate through one `govpipe run` with
`source.require_signature` and the default nonce settings:

    .venv/bin/python -m bench.inbound_rate [--rate 5000] [--seconds 60] [--senders 8]

Starts its own Kafka broker (tests/support/infra), a 4-partition input topic and one
`govpipe run` (stdout sink to /dev/null). A paced producer signs every record (one of
`--senders` senders, uuid4 nonces, as `pipeline.publisher` does) and sends `--rate` a
second for `--seconds`. Prints what govpipe counted (records, verification results,
rejections), how long it took to read the last record after the producer finished, and
govpipe's peak RSS (VmHWM), so the memory the nonces cost is seen with the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer

from bench.events import event_values
from bench.procs import GovpipeWorker, vm_hwm_mb
from pipeline.inbound.signed_string import signature_headers
from pipeline.inbound.verifier import wall_clock_ms
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import create_topics

TICK_S = 0.02


async def paced_signed(bootstrap: str, topic: str, key: bytes, rate: float, seconds: float,
                       senders: int) -> int:
    """Send signed records at `rate` a second for `seconds`; how many were sent."""
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
                sender = f"agent-{n % senders}"
                headers = signature_headers(key, uuid.uuid4().hex, wall_clock_ms(), sender,
                                            value)
                pending.append(await producer.send(topic, value, key=sender.encode(),
                                                   headers=headers))
            sent = due
            if len(pending) > 20_000:
                await asyncio.gather(*pending)
                pending.clear()
            await asyncio.sleep(TICK_S)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count


def metric(text: str, name: str) -> dict[str, float]:
    """Every sample of `name` in a Prometheus text page, by its label text."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name):
            labels, _, value = line.rpartition(" ")
            found[labels[len(name):] or "total"] = float(value)
    return found


async def measure(args: argparse.Namespace, work: Path) -> None:
    key = secrets.token_bytes(32)
    (work / "inbound.key").write_text(base64.b64encode(key).decode())
    with KafkaBroker() as broker:
        topic = f"inbound-rate-{uuid.uuid4().hex[:8]}"
        await create_topics(broker.bootstrap, [topic], partitions=4)
        env = dict(os.environ, GOVPIPE_SIGNING_KEY=base64.b64encode(
            secrets.token_bytes(32)).decode(), GOVPIPE_SOURCE__KIND="kafka",
            GOVPIPE_KAFKA__BOOTSTRAP_SERVERS=broker.bootstrap, GOVPIPE_SOURCE__TOPIC=topic,
            GOVPIPE_SOURCE__REQUIRE_SIGNATURE="true",
            GOVPIPE_SOURCE__INBOUND_KEY_FILE=str(work / "inbound.key"),
            GOVPIPE_DEADLETTER__KIND="file", GOVPIPE_DEADLETTER__PATH=str(work / "dlq"),
            GOVPIPE_SERVER__LISTEN="127.0.0.1:0")
        worker = GovpipeWorker.start(env, work)
        try:
            await worker.wait_ready()
            sent = await paced_signed(broker.bootstrap, topic, key, args.rate, args.seconds,
                                      args.senders)
            produced_at = time.monotonic()
            while True:
                page = await worker._get("/metrics")
                read = metric(page, "govpipe_source_records_total").get("total", 0)
                if read >= sent:
                    break
                await asyncio.sleep(0.5)
            caught_up_s = time.monotonic() - produced_at
            peak = vm_hwm_mb(worker.pid)
        finally:
            await worker.stop()
    print(f"sent {sent} signed records at {args.rate:.0f}/s for {args.seconds:.0f}s; "
          f"govpipe read them all {caught_up_s:.1f}s after the producer finished")
    print("verification:", metric(page, "govpipe_inbound_verification_total"))
    print("rejected:", metric(page, "govpipe_source_rejected_total"))
    print(f"govpipe peak RSS {peak:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--senders", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="govpipe-inbound-") as work:
        asyncio.run(measure(args, Path(work)))


if __name__ == "__main__":
    main()
