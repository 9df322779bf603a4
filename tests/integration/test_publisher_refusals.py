"""Records the real broker refuses for good (over the topic's max.message.bytes): the
spooling publisher sets them aside in rejected.jsonl and delivers every event around them;
`govpipe publish` counts such a line failed and publishes the others."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from pipeline.publisher import Publisher, SpoolOptions
from pipeline.publisher.rejected import REJECTED_FILE
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import consume_to_end, create_topics
from tests.support.metrics import sample
from tests.support.processes import GOVPIPE

pytestmark = pytest.mark.integration

TOPIC_LIMIT = 2048  # the topic's max.message.bytes; the publisher accepts events up to 64 KiB


def event(event_id: str, padding: int = 0) -> dict[str, str]:
    return {"event_id": event_id, "agent_id": "agent-1", "kind": "policy_check",
            "occurred_at": "2026-01-02T03:04:05+00:00", "note": "x" * padding}


async def small_limit_topic(bootstrap: str) -> str:
    name = f"t-small-limit-{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, [name], configs={"max.message.bytes": str(TOPIC_LIMIT)})
    return name


async def test_a_record_over_the_topics_limit_is_set_aside_and_the_events_around_it_arrive(
        kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    topic = await small_limit_topic(kafka_broker.bootstrap)
    registry = CollectorRegistry()
    spool = SpoolOptions(tmp_path / "spool", max_event_bytes=64 * 1024)
    events = [event("small-1"), event("big", padding=4 * TOPIC_LIMIT), event("small-2")]
    async with Publisher(kafka_broker.bootstrap, topic, spool=spool, sign_key=bytes(32),
                         registry=registry) as publisher:
        assert await publisher.publish_many(events) == [None, None, None]
        assert await publisher.flush(60)

    records = await consume_to_end(kafka_broker.bootstrap, topic)
    assert sorted(json.loads(record.value)["event_id"] for record in records) == [
        "small-1", "small-2"]
    [line] = [json.loads(text) for text in
              (tmp_path / "spool" / REJECTED_FILE).read_text().splitlines()]
    assert (line["event_id"], line["reason"], line["topic"]) == ("big", "record_too_large", topic)
    assert json.loads(base64.b64decode(line["value_base64"]))["event_id"] == "big"

    def counter(name: str, **labels: str) -> float:
        return sample(registry, f"govpipe_publisher_{name}", topic=topic, **labels)

    assert counter("rejected_total", reason="record_too_large") == 1
    assert counter("acknowledged_total") == 2
    assert counter("spooled_total") == counter("acknowledged_total") + counter(
        "rejected_total", reason="record_too_large") + counter("spool_entries")


async def test_govpipe_publish_counts_a_line_over_the_topics_limit_failed_and_goes_on(
        kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    topic = await small_limit_topic(kafka_broker.bootstrap)
    # The big line fails its chunk's batch; the next chunk (500 lines) follows it.
    lines = [event("small-1"), event("big", padding=4 * TOPIC_LIMIT), event("small-2"),
             *(event(f"after-{n}") for n in range(500))]
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))
    publish = await asyncio.create_subprocess_exec(
        str(GOVPIPE), "publish", "--bootstrap-servers", kafka_broker.bootstrap, "--topic",
        topic, str(events), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(publish.communicate(), 120)
    assert (publish.returncode, stdout.decode().strip()) == (1, "published 502, failed 1")
    assert re.search(r"line 2: record_too_large: MessageSizeTooLargeError", stderr.decode())
    records = await consume_to_end(kafka_broker.bootstrap, topic)
    assert sorted(json.loads(record.value)["event_id"] for record in records) == sorted(
        line["event_id"] for line in lines if line["event_id"] != "big")
