"""Issue 8.1: the Kafka broker stopped for 20 s mid-stream and restarted on the same data.
`govpipe run` (source and Kafka sink on that broker, plus stdout) survives it: every input
id reaches the output topic and stdout, the identities hold, SIGTERM exits 0."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from tests.support.events import copies_by_id, event_ids, event_value
from tests.support.identities import assert_reconciled
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import consume_to_end, create_topics, produce_fast
from tests.support.metrics import metric_value
from tests.support.processes import GovpipeProcess, run_env
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

OUTAGE_S = 20.0
BEFORE, AFTER = 20_000, 10_000


async def test_broker_stopped_20s_mid_stream_loses_nothing(own_broker: KafkaBroker,
                                                           tmp_path: Path) -> None:
    bootstrap, topic, out_topic = own_broker.bootstrap, "in", "out"
    await create_topics(bootstrap, [topic, out_topic], partitions=3)
    await produce_fast(bootstrap, topic, (event_value(n, "pre") for n in range(BEFORE)))
    env = run_env(bootstrap, topic, f"g-{uuid.uuid4().hex[:8]}", tmp_path,
                  GOVPIPE_SINKS__KAFKA__ENABLED="true", GOVPIPE_SINKS__KAFKA__TOPIC=out_topic,
                  GOVPIPE_SINKS__KAFKA__TIMEOUT_S="5",
                  # Wait for the broker rather than dead-letter: every id must reach the topic.
                  GOVPIPE_SINKS__KAFKA__ON_OPEN="block",
                  GOVPIPE_SINKS__STDOUT__BATCH_SIZE="200")
    daemon = GovpipeProcess(env, tmp_path, "run")
    try:
        await daemon.start()
        await eventually(lambda: len(daemon.lines()) >= 1_000, 60)
        own_broker.stop()
        stopped = time.monotonic()
        lines_at_stop = len(daemon.lines())
        assert lines_at_stop < BEFORE, "the broker must stop mid-stream"
        await asyncio.sleep(OUTAGE_S)
        assert daemon.running, "the daemon died during the outage"
        metrics_during = await daemon.scrape()  # still serving, still reconciled
        assert_reconciled(metrics_during)
        own_broker.start()
        outage = time.monotonic() - stopped
        await produce_fast(bootstrap, topic, (event_value(n, "post") for n in range(AFTER)))

        expected = event_ids(BEFORE, "pre") | event_ids(AFTER, "post")
        await eventually(lambda: set(copies_by_id(daemon.lines())) >= expected, 180, 0.5)
        metrics = await daemon.settled_scrape()
        assert_reconciled(metrics)
        assert metric_value(metrics, "govpipe_sink_in_flight") == 0
        assert metric_value(metrics, "govpipe_deadletter_written_total") == 0
        assert await daemon.terminate() == 0

        records = await consume_to_end(bootstrap, out_topic)
        on_topic = copies_by_id(r.value for r in records)
        assert set(on_topic) == expected
        stdout = copies_by_id(daemon.lines())
        assert set(stdout) == expected
        # Duplicates (redelivery after the restart) are byte-identical copies.
        assert all(len(set(c)) == 1 for c in on_topic.values())
        assert all(len(set(c)) == 1 for c in stdout.values())
        print(f"\nbroker outage {outage:.1f}s; {len(expected)} ids; lines at stop "
              f"{lines_at_stop}; duplicates on topic {len(records) - len(on_topic)}, "
              f"on stdout {sum(len(c) - 1 for c in stdout.values())}; records read "
              f"{metric_value(metrics, 'govpipe_source_records_total'):.0f}; kafka retries "
              f"{metric_value(metrics, 'govpipe_sink_retries_total', sink='kafka'):.0f}")
    finally:
        await daemon.ensure_stopped()

