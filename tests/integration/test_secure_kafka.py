"""The real `govpipe publish`, `run` and `replay` (subprocesses) through each secured
listener of the ``secure_kafka`` broker, configured only by ``GOVPIPE_KAFKA__*`` variables:
every way in carries events end to end (signed to the output topic, the bad record to the
dead-letter topic and replayed back), and no secret ever shows in any output.

Refusals: ``test_secure_kafka_refusals.py``; start-up failures and ``check-config``:
``test_secure_kafka_startup.py``. The test's own topic setup and reads go through the
broker's PLAINTEXT listener.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaError  # type: ignore[import-untyped,unused-ignore]

from pipeline.signing.signers import HmacSigner
from tests.support.daemons import KEY
from tests.support.events import event_ids, event_value
from tests.support.identities import assert_reconciled
from tests.support.infra.secure_kafka import SecureKafka
from tests.support.kafka_clients import (
    committed_offsets,
    consume_to_end,
    create_topics,
    end_offsets,
    produce,
)
from tests.support.processes import GovpipeProcess, govpipe_env
from tests.support.secure_govpipe import (
    GOVPIPE_WAYS_IN,
    Connection,
    Finished,
    assert_no_secret,
    base_env,
    govpipe,
)
from tests.support.waiting import eventually_async

pytestmark = pytest.mark.integration

COUNT = 5  # valid events per way in
BAD = b"this is not json"


@dataclass(frozen=True, slots=True)
class Names:
    """The topics and the consumer group of one test, named after its ``tag``."""

    tag: str

    @property
    def topic(self) -> str:
        return f"in-{self.tag}"

    @property
    def output(self) -> str:
        return f"out-{self.tag}"

    @property
    def dlq(self) -> str:
        return f"dlq-{self.tag}"

    @property
    def group(self) -> str:
        return f"g-{self.tag}"


@pytest.mark.parametrize("way", sorted(GOVPIPE_WAYS_IN))
async def test_publish_run_and_replay_through_each_way_in(
    secure_kafka: SecureKafka, tmp_path: Path, way: str
) -> None:
    plaintext, names = secure_kafka.plaintext_bootstrap, Names(f"{way}-{uuid.uuid4().hex[:8]}")
    await create_topics(plaintext, [names.topic, names.output, names.dlq])
    connection = GOVPIPE_WAYS_IN[way](secure_kafka, tmp_path)

    published = await _publish(connection, names, tmp_path)
    await produce(plaintext, names.topic, [BAD])  # `publish` refuses a line that is not JSON
    env = _run_env(connection, names)
    run, scrape = await _run_until_committed(env, plaintext, names, tmp_path)
    entries = await _assert_delivered(plaintext, names)
    replayed = await _replay(env, plaintext, names, entries[0]["id"], tmp_path)

    assert_no_secret(connection.secrets, publish_stdout=published.stdout,
                     publish_stderr=published.stderr, run_stdout=run.out.read_bytes(),
                     run_stderr=run.log.read_bytes(), metrics=scrape,
                     replay_stdout=replayed.stdout, replay_stderr=replayed.stderr)


async def _publish(connection: Connection, names: Names, tmp_path: Path) -> Finished:
    """`govpipe publish` COUNT valid events to the input topic through the way in."""
    env = base_env(connection.env, {"GOVPIPE_SOURCE__TOPIC": names.topic})
    lines = b"".join(event_value(n, names.tag) + b"\n" for n in range(COUNT))
    published = await govpipe("publish", env=env, cwd=tmp_path, stdin=lines)
    assert published.code == 0, published.err
    assert published.stdout.decode().strip() == f"published {COUNT}, failed 0"
    return published


def _run_env(connection: Connection, names: Names) -> dict[str, str]:
    """`govpipe run` (and `replay`): the input topic to the Kafka sink, a Kafka dead-letter."""
    return govpipe_env(KEY, **connection.env, **{
        "GOVPIPE_SOURCE__KIND": "kafka", "GOVPIPE_SOURCE__TOPIC": names.topic,
        "GOVPIPE_SOURCE__GROUP_ID": names.group, "GOVPIPE_SOURCE__COMMIT_INTERVAL_S": "0.5",
        "GOVPIPE_SINKS__STDOUT__ENABLED": "false",
        "GOVPIPE_SINKS__KAFKA__ENABLED": "true", "GOVPIPE_SINKS__KAFKA__TOPIC": names.output,
        "GOVPIPE_DEADLETTER__KIND": "kafka", "GOVPIPE_DEADLETTER__TOPIC": names.dlq,
        "GOVPIPE_SHUTDOWN__TIMEOUT_S": "20"})


async def _run_until_committed(env: dict[str, str], plaintext: str, names: Names,
                               tmp_path: Path) -> tuple[GovpipeProcess, str]:
    """`govpipe run` until it committed every input record; its settled, reconciled scrape;
    a clean stop."""
    run = GovpipeProcess(env, tmp_path, "run")

    async def committed_to_end() -> bool:
        try:
            return await committed_offsets(plaintext, names.group) == {0: COUNT + 1}
        except KafkaError:  # no coordinator yet: the group's first moments
            return False

    try:
        await run.start()
        await eventually_async(committed_to_end, 60, interval_s=0.3)
        assert await end_offsets(plaintext, names.topic) == {0: COUNT + 1}
        scrape = await run.settled_scrape()
        assert_reconciled(scrape)
        assert await run.terminate(30) == 0
    finally:
        await run.ensure_stopped()
    return run, scrape


async def _assert_delivered(plaintext: str, names: Names) -> list[dict[str, Any]]:
    """Every valid event signed on the output topic, the bad record in the dead-letter
    topic; return the dead-letter entries."""
    signer = HmacSigner(KEY)
    delivered = [json.loads(r.value) for r in await consume_to_end(plaintext, names.output)]
    assert sorted(event["id"] for event in delivered) == sorted(event_ids(COUNT, names.tag))
    assert all(signer.verify(event) for event in delivered)
    entries = [json.loads(r.value) for r in await consume_to_end(plaintext, names.dlq)]
    assert [(e["origin"], e["reason"], e.get("value")) for e in entries] == [
        ("source", "invalid_json", BAD.decode())]
    return entries


async def _replay(env: dict[str, str], plaintext: str, names: Names, entry_id: str,
                  tmp_path: Path) -> Finished:
    """`govpipe replay` puts the bad record back on the input topic, marked with its
    dead-letter entry's id."""
    replayed = await govpipe("replay", env=env, cwd=tmp_path)
    assert replayed.code == 0, replayed.err
    assert replayed.err.startswith("replayed 1, already replayed 0"), replayed.err
    records = await consume_to_end(plaintext, names.topic)
    assert len(records) == COUNT + 2
    back = records[-1]
    assert back.value == BAD
    assert dict(back.headers).get("govpipe-replayed") == entry_id.encode()
    return replayed
