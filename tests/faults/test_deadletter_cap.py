"""A file dead-letter at `deadletter.max_bytes` stops the Kafka source instead of filling
the disk or losing an entry: `govpipe run` reads bad records from a real broker into a
small cap; reading pauses with the cap never exceeded, records produced meanwhile are not
read, and nothing is committed past what is durable; each time the operator archives the
files it reads on, until every record is dead-lettered exactly once and committed."""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.support.identities import assert_reconciled
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import committed_offsets, create_topics, produce_fast
from tests.support.metrics import metric_value
from tests.support.processes import GovpipeProcess, read_deadletters, run_env
from tests.support.waiting import eventually_async

pytestmark = pytest.mark.integration

FIRST, MORE = 1_000, 3_000
BAD_RECORDS = FIRST + MORE
CAP = 131_072  # about 500 entries of these records
FETCH = 500  # records one Kafka fetch may hand over (pipeline.sources.kafka.MAX_RECORDS)
QUIET_S = 3.0  # records produced while full would be read well within this if not paused


def stored_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.glob("deadletter-*.jsonl"))


async def readyz_deadletter(daemon: GovpipeProcess) -> dict[str, str]:
    async with aiohttp.ClientSession() as http, http.get(
            f"http://{daemon.listen}/readyz", timeout=aiohttp.ClientTimeout(10)) as answer:
        body = json.loads(await answer.text())
    return next(c for c in body["components"] if c["name"] == "deadletter")


async def test_a_full_file_dead_letter_stops_reading_and_loses_nothing(
        kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    bootstrap, topic = kafka_broker.bootstrap, f"cap-{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, [topic])
    await produce_fast(bootstrap, topic,
                       (b'{"not": "an event", "n": %d}' % n for n in range(FIRST)))
    group = f"g-{uuid.uuid4().hex[:8]}"
    env = run_env(bootstrap, topic, group, tmp_path,
                  GOVPIPE_DEADLETTER__MAX_BYTES=str(CAP),
                  GOVPIPE_SOURCE__MAX_EVENT_BYTES="4096")
    dlq, archive = tmp_path / "dlq", tmp_path / "archive"
    archive.mkdir()
    daemon = GovpipeProcess(env, tmp_path, "run")
    rounds = 0
    try:
        await daemon.start()

        async def full() -> bool:
            return await daemon.value("govpipe_deadletter_full") == 1

        await eventually_async(full, 60)
        await produce_fast(bootstrap, topic, (b'{"not": "an event", "n": %d}' % n
                                              for n in range(FIRST, BAD_RECORDS)))
        await asyncio.sleep(QUIET_S)
        text = await daemon.scrape()
        read = metric_value(text, "govpipe_source_records_total")
        print(f"\ndead-letter full: read {read:.0f} of {BAD_RECORDS}, "
              f"{stored_bytes(dlq)} bytes stored (cap {CAP})")
        # A fetch already waiting on the broker when the cap was reached still returns (its
        # records are held, not written); no fetch starts while full.
        assert read <= FIRST + FETCH, "records were read while the dead-letter was full"
        assert stored_bytes(dlq) <= CAP
        assert metric_value(text, "govpipe_source_paused_total", cause="deadletter_full") >= 1
        assert metric_value(text, "govpipe_deadletter_errors_total") == 0
        assert_reconciled(text)
        health = await readyz_deadletter(daemon)
        assert health["status"] == "degraded", health
        assert "max_bytes" in health["message"]
        written = metric_value(text, "govpipe_deadletter_written_total", origin="source")
        assert (await committed_offsets(bootstrap, group)).get(0, 0) <= written

        async def full_again_or_done(before: float) -> bool:
            text = await daemon.scrape()
            written = metric_value(text, "govpipe_deadletter_written_total", origin="source")
            return written == BAD_RECORDS or (
                written > before and metric_value(text, "govpipe_deadletter_full") == 1)

        # The operator replays and archives; each time, writing goes on up to the cap.
        while (written := await daemon.value("govpipe_deadletter_written_total",
                                             origin="source")) < BAD_RECORDS:
            rounds += 1
            (archive / str(rounds)).mkdir()
            for path in dlq.glob("deadletter-*.jsonl"):
                path.rename(archive / str(rounds) / path.name)
            await eventually_async(functools.partial(full_again_or_done, written), 60)
            assert stored_bytes(dlq) <= CAP

        text = await daemon.settled_scrape()
        assert metric_value(text, "govpipe_deadletter_full") == 0
        assert metric_value(text, "govpipe_deadletter_cap_reached_total") >= 1
        assert metric_value(text, "govpipe_deadletter_pending") == 0
        assert_reconciled(text)
        assert await daemon.terminate() == 0
        assert await committed_offsets(bootstrap, group) == {0: BAD_RECORDS}
    finally:
        await daemon.ensure_stopped()
    entries = read_deadletters(dlq)
    for folder in archive.iterdir():
        entries += read_deadletters(folder)
    offsets = sorted(entry["source"]["offset"] for entry in entries)
    print(f"{rounds} rounds of archiving; {len(entries)} entries")
    assert offsets == list(range(BAD_RECORDS))  # every record once: none lost, none twice
