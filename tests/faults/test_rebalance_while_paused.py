"""A rebalance that lands while a replica is paused by back-pressure loses nothing.

Was: replica A's stdout reader stopped, its queue filled, its source paused. Replica B
joined; A's revocation wait ran out and A was given a partition again, unpaused (pause
state belongs to the assignment), so A's keep-alive poll fetched that partition's records
and threw them away. A resumed after the hole, its commits passed it, and thousands of
events were on no output while every identity held and the lag read 0.

The revocation wait here (12 s) is also longer than aiokafka's default rebalance timeout
(the 10 s session timeout), which used to get A evicted mid-callback: its "settle and
commit before letting go" commit then failed.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from tests.support.events import copies_by_id, event_ids, event_value
from tests.support.identities import assert_reconciled
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import (
    committed_offsets,
    create_topics,
    end_offsets,
    produce_fast,
    produce_paced,
)
from tests.support.processes import GovpipeProcess, PipedGovpipe, run_env
from tests.support.waiting import eventually, eventually_async

pytestmark = pytest.mark.integration

BACKLOG, STREAM, RATE = 5_000, 25_000, 1_000.0  # a backlog, then a stream during the test
QUEUE = 200
REVOKE_WAIT_S = 12.0


async def test_a_replica_paused_during_a_rebalance_loses_nothing(
        own_broker: KafkaBroker, tmp_path: Path) -> None:
    bootstrap, topic = own_broker.bootstrap, "in"
    await create_topics(bootstrap, [topic], partitions=2)
    await produce_fast(bootstrap, topic, (event_value(n, "rb") for n in range(BACKLOG)))
    stream = [event_value(n, "rb") for n in range(BACKLOG, BACKLOG + STREAM)]
    group = f"g-{uuid.uuid4().hex[:8]}"
    env = run_env(bootstrap, topic, group, tmp_path,
                  GOVPIPE_SHUTDOWN__TIMEOUT_S=str(REVOKE_WAIT_S),
                  GOVPIPE_SINKS__STDOUT__QUEUE_SIZE=str(QUEUE),
                  GOVPIPE_SINKS__STDOUT__BATCH_SIZE="100")
    a = PipedGovpipe(env, tmp_path, "a")
    b = GovpipeProcess(env, tmp_path, "b")
    try:
        await a.start()
        a.stall_reader()
        # A's pipe is full, its queue too: its source is paused.
        await eventually_async(lambda: stdout_in_flight_at_least(a, QUEUE), 60)
        producer = asyncio.create_task(produce_paced(bootstrap, topic, stream, RATE))
        await b.start()
        # The rebalance: A waits REVOKE_WAIT_S for records that cannot settle, gives up,
        # and is handed a partition again while still paused, with records arriving on it.
        await eventually(lambda: assignments(a) >= 2, REVOKE_WAIT_S + 60, 0.2)
        await asyncio.wait_for(producer, 120)
        a.resume_reader()

        ends = await end_offsets(bootstrap, topic)
        await eventually_async(lambda: committed_to(bootstrap, group, ends), 180, 0.5)
        for replica in (a, b):
            assert_reconciled(await replica.settled_scrape())
        assert await a.terminate() == 0
        assert await b.terminate() == 0
        seen = set(copies_by_id(a.lines())) | set(copies_by_id(b.lines()))
        missing = event_ids(BACKLOG + STREAM, "rb") - seen
        print(f"\nrebalance while paused: {BACKLOG + STREAM} ids, A wrote {len(a.lines())} "
              f"lines, B {len(b.lines())}; missing {len(missing)}; A assigned "
              f"{assignments(a)} times")
        assert not missing, f"{len(missing)} ids on no output, e.g. {sorted(missing)[:5]}"
        assert not evictions(a), f"A was evicted from its group: {evictions(a)[:3]}"
    finally:
        await a.ensure_stopped()
        await b.ensure_stopped()


def assignments(replica: GovpipeProcess) -> int:
    return sum(1 for entry in replica.log_entries()
               if entry.get("message") == "partitions assigned")


def evictions(replica: GovpipeProcess) -> list[str]:
    """aiokafka's words when the group no longer knows this member, or a commit fails."""
    return [str(entry["message"]) for entry in replica.log_entries()
            if "member_id was not recognized" in str(entry.get("message", ""))
            or str(entry.get("message", "")).startswith("offset commit failed")]


async def stdout_in_flight_at_least(replica: GovpipeProcess, count: int) -> bool:
    return await replica.value("govpipe_sink_in_flight", sink="stdout") >= count


async def committed_to(bootstrap: str, group: str, ends: dict[int, int]) -> bool:
    return await committed_offsets(bootstrap, group) == ends
