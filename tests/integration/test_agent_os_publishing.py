"""An Agent OS app publishing through govpipe, end to end on a real broker: a real kernel's
callbacks, bridged to Agent OS's own GovernanceEventProcessor, AgentOsSink (signed with a
per-sender key file as `govpipe keygen` makes them), and the daemon with require_signature.
Both sides' counters agree with what arrived."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from pipeline.publisher import AgentOsSink, Publisher, PublishError
from pipeline.publisher.agent_os import KernelBridge
from pipeline.publisher.results import agent_os_import
from pipeline.settings import SinkSettings
from tests.support.agent_os import GovernedKernel
from tests.support.daemons import RunningDaemon, kafka_settings
from tests.support.fakes import MemorySink
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import consume_all
from tests.support.metrics import sample

with agent_os_import():
    from agent_os.event_sink import GovernanceEventProcessor

pytestmark = pytest.mark.integration
CALLS = 60


async def test_kernel_events_arrive_signed_and_every_counter_agrees(
        kafka_broker: KafkaBroker, kafka_topic: str, tmp_path: Path,
        daemons: list[RunningDaemon]) -> None:
    keys = tmp_path / "senders.toml"
    keys.write_text(f'"billing-bot" = "{base64.b64encode(secrets.token_bytes(32)).decode()}"\n'
                    f'other = "{base64.b64encode(secrets.token_bytes(32)).decode()}"\n')
    registry = CollectorRegistry()

    def agent() -> tuple[GovernanceEventProcessor, int]:
        sink = AgentOsSink(kafka_broker.bootstrap, kafka_topic, spool_dir=tmp_path / "spool",
                           sign_key=keys, sender="billing-bot", registry=registry)
        processor = GovernanceEventProcessor(schedule_delay_ms=20)
        processor.add_sink(sink)
        kernel = GovernedKernel()
        bridge = KernelBridge(processor).attach(kernel)
        for number in range(CALLS):
            kernel.call_tool(number)
        assert processor.shutdown(20_000)
        return processor, bridge.bridged

    processor, bridged = await asyncio.to_thread(agent)
    assert bridged > CALLS  # checks, blocks, checkpoints, drift…
    assert (processor.submitted_count, processor.delivered_count, processor.failed_count,
            processor.dropped_count) == (bridged, bridged, 0, 0)
    publisher = {name: sample(registry, f"govpipe_publisher_{name}", topic=kafka_topic)
                 for name in ("spooled_total", "acknowledged_total", "spool_entries")}
    assert publisher == {"spooled_total": bridged, "acknowledged_total": bridged,
                         "spool_entries": 0}

    records = await consume_all(kafka_broker.bootstrap, kafka_topic, bridged)
    assert len(records) == bridged
    assert {dict(record.headers)["agt-sender"] for record in records} == {b"billing-bot"}

    received = MemorySink()
    settings = kafka_settings(kafka_broker.bootstrap, kafka_topic, tmp_path,
                              GOVPIPE_SOURCE__REQUIRE_SIGNATURE="true",
                              GOVPIPE_SOURCE__INBOUND_KEY_FILE=str(keys))
    daemon = RunningDaemon(settings, [(received, SinkSettings(enabled=True))])
    daemons.append(daemon)
    daemon.start()
    await asyncio.wait_for(received.wait_for_count(bridged), 60)
    await daemon.stop()
    assert daemon.sample("govpipe_source_records_total") == publisher["acknowledged_total"]
    assert daemon.sample("govpipe_inbound_verification_total", result="ok") == bridged
    assert daemon.sample("govpipe_events_accepted_total") == bridged
    kinds = {event.attributes["type"] for event in received.events}
    assert {"ai.agentos.policy.check", "ai.agentos.tool.blocked",
            "ai.agentos.checkpoint.created"} <= kinds


async def test_the_async_publisher_spools_then_delivers(kafka_broker: KafkaBroker,
                                                        kafka_topic: str, tmp_path: Path) -> None:
    events = [{"event_id": f"async-{n}", "agent_id": f"a{n % 3}", "kind": "policy_check",
               "occurred_at": "2026-01-02T03:04:05+00:00"} for n in range(50)]
    registry = CollectorRegistry()
    async with Publisher(kafka_broker.bootstrap, kafka_topic, spool_dir=tmp_path / "spool",
                         registry=registry) as publisher:
        for event in events[:10]:
            await publisher.publish(event)
        assert await publisher.publish_many(events[10:]) == [None] * 40
        with pytest.raises(PublishError, match="not_finite"):
            await publisher.publish({"event_id": "nan", "latency_ms": float("nan")})
        assert await publisher.flush(30)
    records = await consume_all(kafka_broker.bootstrap, kafka_topic, 50)
    assert [json.loads(record.value)["event_id"] for record in records
            if record.key == b"a0"] == [e["event_id"] for e in events if e["agent_id"] == "a0"]
    assert sample(registry, "govpipe_publisher_acknowledged_total", topic=kafka_topic) == 50
    assert sample(registry, "govpipe_publisher_oldest_unsent_age_seconds",
                  topic=kafka_topic) == 0
