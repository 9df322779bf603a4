"""Smoke tests: the harness runs a real Kafka broker and round-trips records through it."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.errors import KafkaConnectionError

from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import consume_all, create_topics, produce

pytestmark = pytest.mark.integration

_KINDS = ("tool_call", "model_request", "policy_decision", "approval_requested", "data_access")
_AGENTS = ("agent-billing-7", "agent-support-2", "agent-research-4")


def _governance_events(count: int) -> list[dict[str, object]]:
    """Governance events shaped like what agents emit (ids, actors, decisions, payloads)."""
    start = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)
    return [
        {
            "event_id": str(uuid.UUID(int=0x1F00 + i)),
            "kind": _KINDS[i % len(_KINDS)],
            "agent_id": _AGENTS[i % len(_AGENTS)],
            "session_id": f"sess-{i // 5:04d}",
            "occurred_at": (start + timedelta(milliseconds=37 * i)).isoformat(),
            "sequence": i,
            "decision": "deny" if i % 7 == 3 else "allow",
            "payload": {"tool": "sql.query", "rows": i * 3, "note": "résumé ✓"},
        }
        for i in range(count)
    ]


def _encode(event: dict[str, object]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


async def test_events_round_trip_in_order(kafka_broker: KafkaBroker, kafka_topic: str) -> None:
    events = _governance_events(20)
    values = [_encode(event) for event in events]
    keys = [str(event["agent_id"]).encode() for event in events]
    headers = [[("kind", str(event["kind"]).encode())] for event in events]

    acks = await produce(kafka_broker.bootstrap, kafka_topic, values, keys=keys, headers=headers)
    records = await consume_all(kafka_broker.bootstrap, kafka_topic, len(values), timeout_s=30)

    assert [ack.offset for ack in acks] == list(range(20))
    assert [r.value for r in records] == values
    assert [r.key for r in records] == keys
    assert [list(r.headers) for r in records] == headers
    assert [r.offset for r in records] == list(range(20))
    assert [json.loads(r.value) for r in records] == events


async def test_create_topics_waits_for_all_partitions(kafka_broker: KafkaBroker) -> None:
    name = f"t-multi-{uuid.uuid4().hex[:8]}"
    await create_topics(kafka_broker.bootstrap, [name], partitions=3)

    values = [b"p0", b"p1", b"p2"]
    await produce(kafka_broker.bootstrap, name, values, keys=[b"a", b"b", b"c"])
    records = await consume_all(kafka_broker.bootstrap, name, 3, timeout_s=30)

    assert sorted(r.value for r in records) == values


async def test_broker_restart_keeps_data_and_stopped_broker_refuses() -> None:
    """A second, private broker: data survives a restart, and a stopped broker is really gone."""
    with KafkaBroker() as broker:
        bootstrap = broker.bootstrap
        await create_topics(bootstrap, ["probe"])
        await produce(bootstrap, "probe", [b"before-restart"])

        await asyncio.to_thread(broker.restart)
        assert broker.bootstrap == bootstrap
        await produce(bootstrap, "probe", [b"after-restart"])
        records = await consume_all(bootstrap, "probe", 2, timeout_s=30)
        assert [r.value for r in records] == [b"before-restart", b"after-restart"]
    assert not broker.running

    async with asyncio.timeout(15):
        with pytest.raises(KafkaConnectionError):
            await produce(bootstrap, "probe", [b"into-the-void"])
