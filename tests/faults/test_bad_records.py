"""Issue 8.6: a corpus of bad records on Kafka (tests/faults/corpus.py: ≥ 25 kinds, 10 MB
values included), each followed by a good record, through `govpipe run`. Each bad record is
rejected with its reason into the dead-letter topic, every good one is delivered, and every
output line parses with a strict JSON parser. The dead-letter topic keeps Kafka's default
1 MiB record limit: entries too big for it are summaries (size and SHA-256 of the value)."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections import Counter
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.faults.corpus import TEN_MB, bad_records
from tests.support.events import event_value, strict_json
from tests.support.identities import assert_reconciled
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import committed_offsets, consume_all, create_topics, produce_fast
from tests.support.metrics import metric_value
from tests.support.processes import GovpipeProcess, run_env
from tests.support.services import started
from tests.support.waiting import eventually, eventually_async

pytestmark = pytest.mark.integration

BIG = str(16 * 1024 * 1024)


async def _create_big_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1, topic_configs={"max.message.bytes": BIG})
                                   for name in names])
    finally:
        await admin.close()


async def test_every_bad_record_is_dead_lettered_with_its_reason(tmp_path: Path) -> None:
    corpus = bad_records()
    assert len({bad.kind for bad in corpus}) >= 25
    broker = started(KafkaBroker(extra_properties={"message.max.bytes": BIG,
                                                   "replica.fetch.max.bytes": BIG}))
    try:
        bootstrap, topic, dlq, group = broker.bootstrap, "in", "dlq", f"g-{uuid.uuid4().hex[:6]}"
        await _create_big_topics(bootstrap, [topic])
        await create_topics(bootstrap, [dlq])  # default limits: 1 MiB records
        values: list[bytes | None] = []
        headers: list[tuple[tuple[str, bytes], ...]] = []
        keys: list[bytes | None] = []
        for number, bad in enumerate(corpus):
            values += [bad.value, event_value(number, "good")]
            headers += [bad.headers, ()]
            keys += [bad.kind.encode(), None]  # a tombstone needs a key
        sent = await produce_fast(bootstrap, topic, values, headers=headers, keys=keys)
        kind_at = {sent[2 * n].offset: bad for n, bad in enumerate(corpus)}

        env = run_env(bootstrap, topic, group, tmp_path, GOVPIPE_DEADLETTER__KIND="kafka",
                      GOVPIPE_DEADLETTER__TOPIC=dlq)
        daemon = GovpipeProcess(env, tmp_path, "run")
        try:
            await daemon.start()
            await eventually(lambda: len(daemon.lines()) >= len(corpus), 90, 0.2)

            async def all_committed() -> bool:
                return sum((await committed_offsets(bootstrap, group)).values()) == len(values)
            await eventually_async(all_committed, 60)
            final = await daemon.settled_scrape()
            assert await daemon.terminate() == 0
        finally:
            await daemon.ensure_stopped()

        # The good record after each bad one came through, in order, as strict JSON.
        out = [strict_json(line) for line in daemon.lines()]
        assert [e["id"] for e in out] == [f"good-{n:08d}" for n in range(len(corpus))]

        entries = [strict_json(r.value) for r in await consume_all(
            bootstrap, dlq, len(corpus), timeout_s=30)]
        assert len(entries) == len(corpus)
        for entry in entries:
            bad = kind_at[entry["source"]["offset"]]
            assert (entry["origin"], entry["reason"]) == ("source", bad.reason), bad.kind
            assert entry["error"]
            original = bad.value or b""
            if entry.get("truncated"):  # too big for a record: identified, not carried
                assert len(original) > 1_000_000, bad.kind
                assert entry["value_sha256"] == hashlib.sha256(original).hexdigest()
            elif "value_b64" in entry:
                assert base64.b64decode(entry["value_b64"]) == original, bad.kind
            else:
                assert entry["value"].encode() == original, bad.kind
        assert_reconciled(final)
        expected = Counter(bad.reason for bad in corpus)
        for reason, count in expected.items():
            assert metric_value(final, "govpipe_source_rejected_total", reason=reason) == count
        assert metric_value(final, "govpipe_events_accepted_total") == len(corpus)
        truncated = sum(1 for entry in entries if entry.get("truncated"))
        print(f"\n{len(corpus)} kinds of bad record (largest {TEN_MB} bytes; {truncated} "
              f"dead-lettered as summaries), reasons {dict(expected)}")
    finally:
        broker.close()
