"""Issue 17.3/17.4: `sinks.kafka.exactly_once = true` through a SIGKILL, a broker restart
and a rebalance between two replicas: a read_committed reader of the output and the
dead-letter topic sees every input record exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.faults.exactly_once_checks import (
    assert_audit_clean,
    assert_exactly_once,
    input_values,
    publish,
    read_committed,
    setup_topics,
)
from tests.support.events import copies_by_id
from tests.support.identities import assert_reconciled
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import committed_offsets, produce_paced
from tests.support.metrics import metric_value
from tests.support.processes import GovpipeProcess, run_env
from tests.support.waiting import eventually, eventually_async

pytestmark = pytest.mark.integration

OUTAGE_S = 10.0


def eos_env(bootstrap: str, group: str, tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The Kafka sink alone (unless `overrides` enable more), exactly-once, on "in" → "out"
    with the dead-letter on "dlq"."""
    return run_env(bootstrap, "in", group, tmp_path, **{
        "GOVPIPE_SINKS__STDOUT__ENABLED": "false", "GOVPIPE_SINKS__KAFKA__ENABLED": "true",
        "GOVPIPE_SINKS__KAFKA__TOPIC": "out", "GOVPIPE_SINKS__KAFKA__EXACTLY_ONCE": "true",
        "GOVPIPE_SINKS__KAFKA__BATCH_SIZE": "200", "GOVPIPE_DEADLETTER__KIND": "kafka",
        "GOVPIPE_DEADLETTER__TOPIC": "dlq", **overrides})


async def all_committed(bootstrap: str, group: str, count: int) -> None:
    async def done() -> bool:
        return sum((await committed_offsets(bootstrap, group)).values()) == count
    await eventually_async(done, 120)


async def test_sigkill_mid_stream_then_restart_exactly_once(own_broker: KafkaBroker,
                                                            tmp_path: Path) -> None:
    bootstrap, group, count = own_broker.bootstrap, "eos-crash", 20_000
    await setup_topics(bootstrap, partitions=2)
    await publish(bootstrap, count, "k")
    env = eos_env(bootstrap, group, tmp_path)
    first, second = GovpipeProcess(env, tmp_path, "first"), GovpipeProcess(env, tmp_path,
                                                                           "second")
    try:
        await first.start()
        delivered = 0.0
        while delivered < 3_000:
            delivered = await first.value("govpipe_sink_delivered_total", sink="kafka")
        await first.kill()
        assert delivered < count, "the kill must land mid-stream"
        committed_at_kill = sum((await committed_offsets(bootstrap, group)).values())
        await second.start()
        await all_committed(bootstrap, group, count)
        final = await second.settled_scrape()
        assert_reconciled(final)
        assert await second.terminate() == 0
    finally:
        await first.ensure_stopped()
        await second.ensure_stopped()
    seen = await read_committed(bootstrap)
    assert_exactly_once(seen, count, "k")
    audited = await assert_audit_clean(bootstrap, tmp_path, count)
    # The second run reads from the offset the first one's last transaction committed (a
    # transaction the kill caught after its commit request may complete after the kill:
    # at least the offset seen then), and counts each record it read once.
    read = metric_value(final, "govpipe_source_records_total")
    assert read <= count - committed_at_kill
    assert read == (metric_value(final, "govpipe_sink_delivered_total", sink="kafka")
                    + metric_value(final, "govpipe_deadletter_written_total"))
    print(f"\nexactly-once SIGKILL after {delivered:.0f} delivered: {len(seen.output)} ids "
          f"once each, {sum(seen.deadletter.values())} dead-letter entries once each; "
          f"records on the output incl. aborted {seen.output_uncommitted}; audit: {audited}")


async def test_stdout_beside_exactly_once_stays_at_least_once(own_broker: KafkaBroker,
                                                               tmp_path: Path) -> None:
    """The offsets wait for stdout too; after a SIGKILL stdout may repeat what the dead
    run printed, the Kafka output still holds every id once."""
    bootstrap, group, count = own_broker.bootstrap, "eos-mixed", 10_000
    await setup_topics(bootstrap, partitions=2)
    await publish(bootstrap, count, "m")
    env = eos_env(bootstrap, group, tmp_path, GOVPIPE_SINKS__STDOUT__ENABLED="true",
                  GOVPIPE_SINKS__STDOUT__BATCH_SIZE="200")
    first, second = GovpipeProcess(env, tmp_path, "first"), GovpipeProcess(env, tmp_path,
                                                                           "second")
    try:
        await first.start()
        await delivered_at_least(first, 1_500)
        await first.kill()
        await second.start()
        await all_committed(bootstrap, group, count)
        assert_reconciled(await second.settled_scrape())
        assert await second.terminate() == 0
    finally:
        await first.ensure_stopped()
        await second.ensure_stopped()
    seen = await read_committed(bootstrap)
    assert_exactly_once(seen, count, "m")
    printed = copies_by_id(first.lines() + second.lines())
    assert set(printed) == set(seen.output)  # every id on stdout, at least once
    repeated = sum(len(c) - 1 for c in printed.values())
    print(f"\nexactly-once beside stdout: Kafka output {len(seen.output)} ids once each; "
          f"stdout repeated {repeated} lines after the kill")


async def test_broker_restart_mid_stream_exactly_once(own_broker: KafkaBroker,
                                                      tmp_path: Path) -> None:
    bootstrap, group, count = own_broker.bootstrap, "eos-outage", 20_000
    await setup_topics(bootstrap, partitions=3)
    await publish(bootstrap, count, "b")
    daemon = GovpipeProcess(eos_env(bootstrap, group, tmp_path,
                                    GOVPIPE_SINKS__KAFKA__TIMEOUT_S="5"), tmp_path, "run")
    try:
        await daemon.start()
        delivered = 0.0
        while delivered < 2_000:
            delivered = await daemon.value("govpipe_sink_delivered_total", sink="kafka")
        own_broker.stop()
        assert delivered < count, "the broker must stop mid-stream"
        during = await daemon.scrape()
        assert_reconciled(during)
        await asyncio.sleep(OUTAGE_S)
        assert daemon.running, "the daemon died during the outage"
        own_broker.start()
        await all_committed(bootstrap, group, count)
        final = await daemon.settled_scrape()
        assert_reconciled(final)
        assert await daemon.terminate() == 0
    finally:
        await daemon.ensure_stopped()
    seen = await read_committed(bootstrap)
    assert_exactly_once(seen, count, "b")
    audited = await assert_audit_clean(bootstrap, tmp_path, count)
    # One process throughout: each record counted once, however often its transaction
    # was tried.
    assert metric_value(final, "govpipe_sink_delivered_total", sink="kafka") == len(seen.output)
    print(f"\nexactly-once broker restart after {delivered:.0f} delivered: "
          f"{len(seen.output)} ids once each; records on the output incl. aborted "
          f"{seen.output_uncommitted}; records read "
          f"{metric_value(final, 'govpipe_source_records_total'):.0f}; audit: {audited}")


async def test_two_replicas_rebalance_and_kill_exactly_once(own_broker: KafkaBroker,
                                                            tmp_path: Path) -> None:
    bootstrap, group, count = own_broker.bootstrap, "eos-replicas", 60_000
    await setup_topics(bootstrap, partitions=4)
    env = eos_env(bootstrap, group, tmp_path)
    first, second = GovpipeProcess(env, tmp_path, "a"), GovpipeProcess(env, tmp_path, "b")
    stream: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    try:
        await first.start()
        # A steady stream (~20 s): the second replica joins, then the first is killed,
        # each while records flow.
        stream = asyncio.ensure_future(produce_paced(
            bootstrap, "in", input_values(count, "r"), per_second=3_000))
        await delivered_at_least(first, 2_000)
        await second.start()
        await eventually(lambda: _assigned(second) > 0, 60)
        await delivered_at_least(second, 200)
        assert not stream.done(), "the kill must land mid-stream"
        await first.kill()
        await eventually(lambda: _assigned(second) == 4, 60, 0.2)
        await stream
        await all_committed(bootstrap, group, count)
        final = await second.settled_scrape()
        assert_reconciled(final)
        assert await second.terminate() == 0
    finally:
        stream.cancel()
        await first.ensure_stopped()
        await second.ensure_stopped()
    seen = await read_committed(bootstrap)
    assert_exactly_once(seen, count, "r")
    audited = await assert_audit_clean(bootstrap, tmp_path, count)
    print(f"\nexactly-once rebalance then kill: {len(seen.output)} ids once each; records "
          f"on the output incl. aborted {seen.output_uncommitted}; audit: {audited}")


async def delivered_at_least(daemon: GovpipeProcess, events: int) -> None:
    async def enough() -> bool:
        return await daemon.value("govpipe_sink_delivered_total", sink="kafka") >= events
    await eventually_async(enough, 60)


def _assigned(daemon: GovpipeProcess) -> int:
    """Partitions in the daemon's latest `partitions assigned` log line."""
    latest = [e for e in daemon.log_entries() if e.get("message") == "partitions assigned"]
    return len(latest[-1]["partitions"]) if latest else 0
