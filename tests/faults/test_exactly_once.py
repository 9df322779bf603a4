"""Issue 17.3/17.4: `sinks.kafka.exactly_once = true` through a SIGKILL, a broker restart
and a rebalance between two replicas: a read_committed reader of the output and the
dead-letter topic sees every input record exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.exactly_once_checks import (
    assert_exactly_once,
    publish,
    read_committed,
    setup_topics,
)
from tests.support.identities import assert_reconciled
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import committed_offsets
from tests.support.metrics import metric_value
from tests.support.processes import GovpipeProcess, run_env
from tests.support.waiting import eventually_async

pytestmark = pytest.mark.integration


def eos_env(bootstrap: str, group: str, tmp_path: Path, **overrides: str) -> dict[str, str]:
    return run_env(bootstrap, "in", group, tmp_path, GOVPIPE_SINKS__STDOUT__ENABLED="false",
                   GOVPIPE_SINKS__KAFKA__ENABLED="true", GOVPIPE_SINKS__KAFKA__TOPIC="out",
                   GOVPIPE_SINKS__KAFKA__EXACTLY_ONCE="true",
                   GOVPIPE_SINKS__KAFKA__BATCH_SIZE="200",
                   GOVPIPE_DEADLETTER__KIND="kafka", GOVPIPE_DEADLETTER__TOPIC="dlq",
                   **overrides)


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
    # The second run reads from the offset the first one's last transaction committed,
    # and counts each record it read once: delivered or dead-lettered.
    read = metric_value(final, "govpipe_source_records_total")
    assert read == count - committed_at_kill
    assert read == (metric_value(final, "govpipe_sink_delivered_total", sink="kafka")
                    + metric_value(final, "govpipe_deadletter_written_total"))
    print(f"\nexactly-once SIGKILL after {delivered:.0f} delivered: {len(seen.output)} ids "
          f"once each, {sum(seen.deadletter.values())} dead-letter entries once each; "
          f"records on the output incl. aborted {seen.output_uncommitted}")


