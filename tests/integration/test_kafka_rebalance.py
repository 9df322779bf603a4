"""Scale-out: a second replica joins the group mid-stream. The first settles and commits
what it holds for the revoked partitions before letting them go, so nothing is read twice
and nothing is lost."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from pipeline.model import SignedEvent
from pipeline.settings import SinkSettings
from tests.support.daemons import RunningDaemon, kafka_settings
from tests.support.events import numbered_events
from tests.support.fakes import MemorySink
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import create_topics, produce
from tests.support.waiting import eventually


class SlowMemorySink(MemorySink):
    """Keeps batches in flight for a moment, as a real network sink does."""

    async def send(self, batch: Sequence[SignedEvent]) -> None:
        await asyncio.sleep(0.05)
        await super().send(batch)


async def test_joining_replica_takes_partitions_without_duplicates_or_loss(
        kafka_broker: KafkaBroker, tmp_path: Path, daemons: list[RunningDaemon]) -> None:
    topic = "rebalance-join"
    await create_topics(kafka_broker.bootstrap, [topic], partitions=4)
    values = numbered_events(8_000, "rb")
    await produce(kafka_broker.bootstrap, topic, values)
    settings = kafka_settings(kafka_broker.bootstrap, topic, tmp_path)
    config = SinkSettings(enabled=True, batch_size=50, queue_size=400)
    sink_a, sink_b = SlowMemorySink("a"), SlowMemorySink("b")
    first = RunningDaemon(settings, [(sink_a, config)])
    second = RunningDaemon(settings, [(sink_b, config)])
    daemons += [first, second]
    first.start()
    await asyncio.wait_for(sink_a.wait_for_count(500), 60)
    second.start()
    expected = {json.loads(value)["event_id"] for value in values}
    await eventually(lambda: {e.id for e in sink_a.events + sink_b.events} >= expected, 120)
    outcomes = [await first.stop(), await second.stop()]

    assert [o.exit_code for o in outcomes] == [0, 0]
    assert sink_b.events, "the joining replica never got a partition"
    copies = Counter(e.id for e in sink_a.events + sink_b.events)
    assert {i for i, n in copies.items() if n > 1} == set()
    read = first.sample("govpipe_source_records_total") + second.sample(
        "govpipe_source_records_total")
    assert read == 8_000
