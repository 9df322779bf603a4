"""KafkaSource's revocation against a fake offset committer: what is settled is committed
before the partitions go, a failed commit is tried once more, and the group waits long
enough for both. (The exactly-once committer behind it: test_exactly_once_committer.py;
a real broker: tests/integration/test_kafka_rebalance.py.)"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from pipeline.delivery.ledger import Ledger
from pipeline.model import Position
from pipeline.settings import SourceSettings
from pipeline.sources.kafka import KafkaSource
from pipeline.sources.rebalance import consumer_options

TP = TopicPartition("events", 0)


class Consumer:
    def assignment(self) -> set[TopicPartition]:
        return {TP}


class ScriptedCommits:
    """Each commit succeeds or fails as `outcomes` says, in turn; notes what it was given."""

    error: str | None = None

    def __init__(self, outcomes: list[bool]) -> None:
        self.outcomes = outcomes
        self.due: list[dict[TopicPartition, int]] = []
        self.forgotten: list[dict[TopicPartition, int]] = []

    async def commit(self, consumer: Any, due: Mapping[TopicPartition, int]
                     ) -> Collection[TopicPartition]:
        self.due.append(dict(due))
        return due.keys() if self.outcomes.pop(0) else ()

    def forget(self, epochs: Mapping[TopicPartition, int]) -> None:
        self.forgotten.append(dict(epochs))

    async def aclose(self) -> None: ...


def settled_source(commits: ScriptedCommits, records: int) -> KafkaSource:
    """A source holding `records` settled records of TP."""
    ledger = Ledger(CollectorRegistry(), ["s"])
    source = KafkaSource(SourceSettings(kind="kafka", topic="events"), ledger,
                         {"bootstrap_servers": "127.0.0.1:9"}, offsets=commits)
    source._consumer = Consumer()  # type: ignore[assignment]
    for offset in range(records):
        ledger.tracker.track(Position("events", 0, offset), 1)
        ledger.tracker.settle(Position("events", 0, offset))
    return source


@pytest.mark.parametrize(("outcomes", "commits"), [
    ([True], 1),
    ([False, True], 2),   # a failed commit may have committed: the retry tells
    ([False, False], 2),  # once more, not until the group gives up on this member
])
async def test_a_revocation_tries_a_failed_commit_once_more(outcomes: list[bool],
                                                             commits: int) -> None:
    offsets = ScriptedCommits(outcomes)
    source = settled_source(offsets, 3)
    await source.on_revoked({TP})
    assert offsets.due == [{TP: 3}] * commits
    assert offsets.forgotten == [{TP: 1}]  # forgotten after, whatever the commits did


def test_the_rebalance_timeout_holds_the_revocation_wait_and_two_commits() -> None:
    options = consumer_options(SourceSettings(kind="kafka", topic="events"), 30.0)
    # 30 s waiting for settlements, 2 commits of up to 5 s, 10 s margin.
    assert options["rebalance_timeout_ms"] == 50_000
    assert options["max_poll_interval_ms"] >= 50_000
