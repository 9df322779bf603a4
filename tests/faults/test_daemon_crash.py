"""Issue 8.3 and 8.4: `govpipe run` SIGKILLed mid-stream.

- Restarted alone: every id reaches the Kafka sink's topic at least once, and every
  duplicate there is byte-identical to its first copy (the stdout twin of this test is
  tests/integration/test_kafka_crash.py).
- Two replicas in one consumer group, one killed: the survivor takes every partition, no id
  is missing, and the counters of both replicas reconcile.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.events import copies_by_id, event_ids, event_value
from tests.support.identities import assert_reconciled, identity_gaps
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import (
    committed_offsets,
    consume_to_end,
    create_topics,
    produce_fast,
    produce_paced,
)
from tests.support.metrics import metric_value
from tests.support.processes import GovpipeProcess, run_env
from tests.support.waiting import eventually, eventually_async

pytestmark = pytest.mark.integration


async def test_sigkill_then_restart_duplicates_on_kafka_are_byte_identical(
        own_broker: KafkaBroker, tmp_path: Path) -> None:
    bootstrap, topic, out_topic, group = own_broker.bootstrap, "in", "out", "crash"
    count = 20_000
    await create_topics(bootstrap, [topic, out_topic], partitions=2)
    await produce_fast(bootstrap, topic, (event_value(n, "k") for n in range(count)))
    env = run_env(bootstrap, topic, group, tmp_path, GOVPIPE_SINKS__STDOUT__ENABLED="false",
                  GOVPIPE_SINKS__KAFKA__ENABLED="true", GOVPIPE_SINKS__KAFKA__TOPIC=out_topic,
                  GOVPIPE_SINKS__KAFKA__BATCH_SIZE="200")
    first, second = GovpipeProcess(env, tmp_path, "first"), GovpipeProcess(env, tmp_path,
                                                                           "second")
    try:
        await first.start()
        delivered_before_kill = 0.0
        while delivered_before_kill < 3_000:
            delivered_before_kill = await first.value("govpipe_sink_delivered_total",
                                                      sink="kafka")
        await first.kill()
        assert delivered_before_kill < count, "the kill must land mid-stream"
        committed_at_kill = sum((await committed_offsets(bootstrap, group)).values())

        await second.start()

        async def all_committed() -> bool:
            return sum((await committed_offsets(bootstrap, group)).values()) == count
        await eventually_async(all_committed, 120)
        final = await second.settled_scrape()
        assert_reconciled(final)
        assert await second.terminate() == 0
    finally:
        await first.ensure_stopped()
        await second.ensure_stopped()

    records = await consume_to_end(bootstrap, out_topic)
    copies = copies_by_id(r.value for r in records)
    assert set(copies) == event_ids(count, "k")
    duplicated = {i: c for i, c in copies.items() if len(c) > 1}
    assert all(len(set(c)) == 1 for c in duplicated.values()), "a duplicate differs"
    assert duplicated, "a kill mid-stream redelivers the uncommitted tail"
    re_read = metric_value(final, "govpipe_source_records_total")
    assert re_read == count - committed_at_kill
    print(f"\nSIGKILL after {delivered_before_kill:.0f} delivered, {committed_at_kill} committed;"
          f" records on topic {len(records)}, distinct {len(copies)}, ids duplicated "
          f"{len(duplicated)}, extra copies {len(records) - len(copies)}, all byte-identical")


async def test_two_replicas_one_killed_the_survivor_takes_every_partition(
        own_broker: KafkaBroker, tmp_path: Path) -> None:
    bootstrap, topic, group, partitions = own_broker.bootstrap, "in", "replicas", 4
    count = 40_000
    await create_topics(bootstrap, [topic], partitions=partitions)
    env = run_env(bootstrap, topic, group, tmp_path, GOVPIPE_SINKS__STDOUT__BATCH_SIZE="100")
    doomed, survivor = GovpipeProcess(env, tmp_path, "a"), GovpipeProcess(env, tmp_path, "b")
    stream: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    try:
        await doomed.start()
        await survivor.start()
        await eventually(lambda: _assigned(doomed) > 0 and _assigned(survivor) > 0
                         and _assigned(doomed) + _assigned(survivor) == partitions, 60)
        # A steady stream (~10 s), so the kill lands while both replicas are busy.
        stream = asyncio.create_task(produce_paced(
            bootstrap, topic, [event_value(n, "r") for n in range(count)], per_second=4_000))
        await eventually(lambda: len(doomed.lines()) >= 2_000, 60)
        doomed_last = await doomed.scrape()
        survivor_before = await survivor.scrape()
        await doomed.kill()
        assert len(doomed.lines()) < count
        await eventually(lambda: _assigned(survivor) == partitions, 60, 0.2)
        await stream

        expected = event_ids(count, "r")
        await eventually(lambda: set(copies_by_id(doomed.lines() + survivor.lines()))
                         >= expected, 120, 0.5)
        survivor_final = await survivor.settled_scrape()
        assert await survivor.terminate() == 0
    finally:
        stream.cancel()
        await doomed.ensure_stopped()
        await survivor.ensure_stopped()

    for scrape in (doomed_last, survivor_before, survivor_final):
        assert_reconciled(scrape)
    combined = {name: identity_gaps(doomed_last)[name] + identity_gaps(survivor_final)[name]
                for name in identity_gaps(survivor_final)}
    assert all(gap == 0 for gap in combined.values()), combined
    assert sum((await committed_offsets(bootstrap, group)).values()) == count
    lines_a, lines_b = doomed.lines(), survivor.lines()
    # The survivor's counters match its output exactly; the killed one's last scrape is a
    # lower bound of what it wrote (it kept writing until the kill).
    assert metric_value(survivor_final, "govpipe_sink_delivered_total") == len(lines_b)
    assert metric_value(doomed_last, "govpipe_sink_delivered_total") <= len(lines_a)
    copies = copies_by_id(lines_a + lines_b)
    assert set(copies) == expected
    assert all(len(set(c)) == 1 for c in copies.values())
    read = {name: metric_value(text, "govpipe_source_records_total")
            for name, text in (("a", doomed_last), ("b", survivor_final))}
    print(f"\nreplicas: {count} events on {partitions} partitions; killed replica wrote "
          f"{len(lines_a)} lines (last scrape: read {read['a']:.0f}), survivor wrote "
          f"{len(lines_b)} (read {read['b']:.0f}); duplicates "
          f"{len(lines_a) + len(lines_b) - count}")


def _assigned(daemon: GovpipeProcess) -> int:
    """Partitions in the daemon's latest `partitions assigned` log line."""
    latest = [e for e in daemon.log_entries() if e.get("message") == "partitions assigned"]
    return len(latest[-1]["partitions"]) if latest else 0
