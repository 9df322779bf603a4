"""Issue 8.5: a sink that takes 1 s per batch in front of a large backlog (1 000 000 events
by default; GOVPIPE_BACKLOG_EVENTS to change it). The real daemon, in its own process, reads
only as fast as the slow sink drains (back-pressure), so its peak RSS stays under the cap
and its throughput is the slow sink's: one batch a second."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.support.events import event_value, strict_json
from tests.support.identities import assert_reconciled
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import create_topics, produce_fast
from tests.support.metrics import metric_value
from tests.support.processes import GovpipeProcess, run_env
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

BACKLOG = int(os.environ.get("GOVPIPE_BACKLOG_EVENTS", "1000000"))
BATCH, QUEUE, DELAY_S = 1_000, 10_000, 1.0
# Measured: ~80 MiB at start, 181 MiB peak with 10 000 events queued (five times the
# default queue_size) and a 1 000-event batch in the sink; 262 MiB before signed bodies
# stopped carrying orjson's 8 KiB write buffer. The cap is the aim.
RSS_CAP_MIB = 250
FETCH = 500  # records one Kafka fetch may hand over (pipeline.sources.kafka.MAX_RECORDS)
MEASURE_S = 20.0
ROOT = Path(__file__).parents[2]


async def test_slow_sink_back_pressure_bounds_memory_and_sets_the_pace(
        own_broker: KafkaBroker, tmp_path: Path) -> None:
    bootstrap, topic = own_broker.bootstrap, "backlog"
    await create_topics(bootstrap, [topic], partitions=4)
    started = time.monotonic()
    await produce_fast(bootstrap, topic, (event_value(n, "b") for n in range(BACKLOG)))
    produce_s = time.monotonic() - started
    env = run_env(bootstrap, topic, f"g-{uuid.uuid4().hex[:8]}", tmp_path,
                  GOVPIPE_SINKS__STDOUT__BATCH_SIZE=str(BATCH),
                  GOVPIPE_SINKS__STDOUT__QUEUE_SIZE=str(QUEUE),
                  GOVPIPE_SHUTDOWN__TIMEOUT_S="60", SLOW_SINK_DELAY_S=str(DELAY_S),
                  PYTHONPATH=str(ROOT))
    daemon = GovpipeProcess(env, tmp_path, "slow",
                            argv=[sys.executable, "-m", "tests.faults.slow_govpipe", "run"])
    try:
        await daemon.start()
        rss_at_start = daemon.peak_rss_kib()
        await eventually(lambda: len(daemon.lines()) >= 3 * BATCH, 60, 0.1)  # warmed up
        first = await daemon.scrape()
        t0 = time.monotonic()
        reads: list[float] = []
        while time.monotonic() - t0 < MEASURE_S:
            await asyncio.sleep(1.0)
            text = await daemon.scrape()
            assert_reconciled(text)
            reads.append(metric_value(text, "govpipe_source_records_total"))
        last, t1 = await daemon.scrape(), time.monotonic()
        peak_kib = daemon.peak_rss_kib()
        assert await daemon.terminate() == 0  # drains the queue (~10 s) within the deadline
    finally:
        await daemon.ensure_stopped()

    delivered_in_window = (metric_value(last, "govpipe_sink_delivered_total", sink="stdout")
                           - metric_value(first, "govpipe_sink_delivered_total", sink="stdout"))
    rate = delivered_in_window / (t1 - t0)
    read = metric_value(last, "govpipe_source_records_total")
    delivered = metric_value(last, "govpipe_sink_delivered_total")
    print(f"\nbacklog {BACKLOG} (produced in {produce_s:.1f}s); slow sink {BATCH} per "
          f"{DELAY_S:g}s: delivered {rate:.0f}/s over {t1 - t0:.1f}s; read {read:.0f}, "
          f"delivered {delivered:.0f} (held {read - delivered:.0f} ≤ {QUEUE + BATCH + FETCH});"
          f" peak RSS {peak_kib / 1024:.0f} MiB (at start {rss_at_start / 1024:.0f} MiB, "
          f"cap {RSS_CAP_MIB}); lines written before exit {len(daemon.lines())}")
    # Back-pressure: what was read but not delivered fits in the queue, the batch in the
    # sink and one fetch; the rest of the backlog stays in Kafka.
    assert read - delivered <= QUEUE + BATCH + FETCH
    assert read < BACKLOG / 2
    assert metric_value(last, "govpipe_source_lag") > 0
    # Throughput is the slow sink's: at most one batch per DELAY_S, and nothing else slows it.
    # Counted in whole batches, one either way: deliveries come in steps of BATCH, so where
    # the window starts in a step moves the count by one batch (±5% of 20 s).
    batches, steps = delivered_in_window / BATCH, (t1 - t0) / DELAY_S
    assert 0.85 * steps - 1 <= batches <= steps + 1, (batches, steps)
    assert peak_kib < RSS_CAP_MIB * 1024, peak_kib
    assert all(strict_json(line)["id"].startswith("b-") for line in daemon.lines()[:100])
