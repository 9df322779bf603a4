"""Rebalances: the group's time limits for a member, and the listener that hands
revocations and assignments to the Kafka source."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from pipeline.settings import SourceSettings

if TYPE_CHECKING:
    from pipeline.sources.kafka import KafkaSource

# A commit that takes longer is abandoned (the broker is away): the settled prefix is
# committed next time, or its records are read again by whoever owns the partition next.
COMMIT_TIMEOUT_S = 5.0
# How long an assignment callback waits for the positions the partitions resume at.
POSITION_TIMEOUT_S = 5.0
# Commits a revocation may make: one, and one more if that failed (`KafkaSource.on_revoked`).
REVOKE_COMMITS = 2
# Slack between the end of a revocation (wait, then commits) and the group giving up on
# this member: it must rejoin within the rebalance timeout or be evicted.
REBALANCE_MARGIN_S = 10.0


def rebalance_timeout_ms(revoke_timeout_s: float) -> int:
    """The group's rebalance timeout for a member that may spend `revoke_timeout_s` settling
    revoked partitions: long enough for the wait, the commit after it, its one retry and a
    margin."""
    commits_s = REVOKE_COMMITS * COMMIT_TIMEOUT_S
    return int((revoke_timeout_s + commits_s + REBALANCE_MARGIN_S) * 1000)


def consumer_options(source: SourceSettings, revoke_timeout_s: float) -> dict[str, Any]:
    """The consumer's group and fetch settings (its connection comes from [kafka])."""
    rebalance_ms = rebalance_timeout_ms(revoke_timeout_s)
    return {
        "group_id": source.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": source.auto_offset_reset,
        "isolation_level": source.isolation_level,
        "session_timeout_ms": source.session_timeout_ms,
        "heartbeat_interval_ms": source.heartbeat_interval_ms,
        "fetch_max_bytes": source.fetch_max_bytes,
        "max_partition_fetch_bytes": source.max_partition_fetch_bytes
        or max(1_048_576, source.max_event_bytes + 1024),
        # aiokafka's default rebalance timeout is the session timeout: a member still
        # settling revoked partitions after that is evicted mid-callback.
        "rebalance_timeout_ms": max(rebalance_ms, source.session_timeout_ms),
        "max_poll_interval_ms": max(source.max_poll_interval_ms, rebalance_ms),
    }


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Settle and commit on revocation; pause and note positions on assignment."""

    def __init__(self, source: KafkaSource, consumer: AIOKafkaConsumer) -> None:
        self._source = source
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._source.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._source.on_assigned(self._consumer, assigned)
