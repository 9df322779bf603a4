"""How the Kafka source records the offsets it has settled: by the consumer's own commit
(the default), or inside the Kafka sink's transactions (`pipeline.exactly_once`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from pipeline.sources.rebalance import COMMIT_TIMEOUT_S

log = logging.getLogger(__name__)


class OffsetCommitter(Protocol):
    """Commits settled offsets (the next offset to read, per partition)."""

    async def commit(self, consumer: AIOKafkaConsumer, due: Mapping[TopicPartition, int]
                     ) -> Collection[TopicPartition]:
        """Commit `due`; return the partitions whose offset is now committed (the others
        are tried again at the next commit)."""
        ...

    def forget(self, epochs: Mapping[TopicPartition, int]) -> None:
        """Partitions given up, each with the assignment epoch it comes back with."""
        ...

    async def aclose(self) -> None: ...


class ConsumerCommits:
    """The consumer group's own offset commit: all of `due`, or none."""

    async def commit(self, consumer: AIOKafkaConsumer, due: Mapping[TopicPartition, int]
                     ) -> Collection[TopicPartition]:
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT_S):
                await consumer.commit(dict(due))
        except TimeoutError:
            log.warning("offset commit timed out after %.0fs, will retry", COMMIT_TIMEOUT_S)
            return ()
        except KafkaError as exc:
            log.warning("offset commit failed, will retry: %s", exc)
            return ()
        return due.keys()

    def forget(self, epochs: Mapping[TopicPartition, int]) -> None:
        return None

    async def aclose(self) -> None:
        return None
