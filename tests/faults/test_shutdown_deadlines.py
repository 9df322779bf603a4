"""Waits on the network are bounded: SIGTERM exits on time whatever the broker does, and a
dead-letter that cannot be written stops reading instead of growing without bound."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.support.identities import assert_reconciled
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import committed_offsets, create_topics, produce_fast
from tests.support.metrics import metric_value
from tests.support.processes import GovpipeProcess, run_env
from tests.support.waiting import eventually_async

pytestmark = pytest.mark.integration

SHUTDOWN_S = 5.0
# What "a small margin" past shutdown.timeout_s allows: the closing steps (up to ~5 s more)
# and process start-up noise on a loaded machine. The old code was still running 120 s on.
EXIT_WITHIN_S = SHUTDOWN_S + 15.0


async def test_sigterm_exits_on_time_while_the_broker_is_frozen(
        own_broker: KafkaBroker, tmp_path: Path) -> None:
    # Was: the final commit in the source's close had no time limit; with the broker
    # unreachable the daemon hung until it came back.
    bootstrap, topic = own_broker.bootstrap, "in"
    await create_topics(bootstrap, [topic])
    await produce_fast(bootstrap, topic, (b'{"not": "an event"' for _ in range(10)))
    env = run_env(bootstrap, topic, f"g-{uuid.uuid4().hex[:8]}", tmp_path,
                  GOVPIPE_SHUTDOWN__TIMEOUT_S=str(SHUTDOWN_S),
                  GOVPIPE_DEADLETTER__KIND="kafka")
    daemon = GovpipeProcess(env, tmp_path, "run")
    broker_pid = own_broker.pid
    assert broker_pid is not None
    try:
        await daemon.start()
        await eventually_async(lambda: records_read(daemon, 10), 60)
        os.kill(broker_pid, signal.SIGSTOP)  # connections stay open, nothing answers
        sent = time.monotonic()
        code = await daemon.terminate(timeout_s=120)
        took = time.monotonic() - sent
        print(f"\nbroker frozen: exit {code} {took:.1f}s after SIGTERM "
              f"(shutdown.timeout_s {SHUTDOWN_S:.0f})")
        assert took < EXIT_WITHIN_S, f"exited {took:.1f}s after SIGTERM"
        assert code in (0, 1), daemon.log.read_text()[-2000:]
    finally:
        os.kill(broker_pid, signal.SIGCONT)
        await daemon.ensure_stopped()


PENDING_CAP, BAD_RECORDS = 300, 5_000
FETCH = 500  # records one Kafka fetch may hand over (pipeline.sources.kafka.MAX_RECORDS)


async def test_a_failing_kafka_dead_letter_stops_reading_and_catches_up_after(
        own_broker: KafkaBroker, tmp_path: Path) -> None:
    # Was: the writer's backlog grew with the outage (offsets were held, memory was not).
    bootstrap, topic, dlq = own_broker.bootstrap, "in", "dlq"
    await create_topics(bootstrap, [topic])
    # Every entry is bigger than this topic takes: each write fails until it is raised.
    await create_topics(bootstrap, [dlq], configs={"max.message.bytes": "100"})
    await produce_fast(bootstrap, topic, (b"not json %d" % n for n in range(BAD_RECORDS)))
    group = f"g-{uuid.uuid4().hex[:8]}"
    env = run_env(bootstrap, topic, group, tmp_path, GOVPIPE_DEADLETTER__KIND="kafka",
                  GOVPIPE_DEADLETTER__TOPIC=dlq,
                  GOVPIPE_DEADLETTER__MAX_PENDING=str(PENDING_CAP))
    daemon = GovpipeProcess(env, tmp_path, "run")
    try:
        await daemon.start()
        await eventually_async(lambda: paused_for_deadletter(daemon), 60)
        await asyncio.sleep(3)  # it would read on if it were not paused
        text = await daemon.scrape()
        read = metric_value(text, "govpipe_source_records_total")
        print(f"\ndead-letter refusing: read {read:.0f} of {BAD_RECORDS}, pending "
              f"{metric_value(text, 'govpipe_deadletter_pending'):.0f} (cap {PENDING_CAP})")
        assert read <= PENDING_CAP + FETCH, f"read {read} records with the dead-letter down"
        assert metric_value(text, "govpipe_deadletter_pending") <= PENDING_CAP + FETCH
        assert metric_value(text, "govpipe_deadletter_errors_total") > 0
        assert_reconciled(text)
        assert all(offset == 0 for offset in (await committed_offsets(bootstrap, group)
                                              ).values())

        await raise_max_message_bytes(bootstrap, dlq)
        await eventually_async(lambda: dead_lettered(daemon, BAD_RECORDS), 120)
        text = await daemon.settled_scrape()
        assert metric_value(text, "govpipe_deadletter_pending") == 0
        assert_reconciled(text)
        assert await daemon.terminate() == 0
        assert await committed_offsets(bootstrap, group) == {0: BAD_RECORDS}
    finally:
        await daemon.ensure_stopped()


async def records_read(daemon: GovpipeProcess, count: int) -> bool:
    return await daemon.value("govpipe_source_records_total") >= count


async def dead_lettered(daemon: GovpipeProcess, count: int) -> bool:
    return await daemon.value("govpipe_deadletter_written_total") >= count


async def paused_for_deadletter(daemon: GovpipeProcess) -> bool:
    return await daemon.value("govpipe_source_paused_total", cause="deadletter_backlog") >= 1


async def raise_max_message_bytes(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(
            ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": "1048588"})])
    finally:
        await admin.close()
