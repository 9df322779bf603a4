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
    """Commits settled offsets (the next offset to read, per partition); `error` is the
    last commit's failure, None once a commit succeeds."""

    @property
    def error(self) -> str | None: ...

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

    def __init__(self) -> None:
        self.error: str | None = None

    async def commit(self, consumer: AIOKafkaConsumer, due: Mapping[TopicPartition, int]
                     ) -> Collection[TopicPartition]:
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT_S):
                await consumer.commit(dict(due))
        except TimeoutError:
            self.error = f"offset commit timed out after {COMMIT_TIMEOUT_S:.0f}s"
            log.warning("%s, will retry", self.error)
            return ()
        except KafkaError as exc:
            self.error = f"offset commit failed: {exc}"
            log.warning("%s, will retry", self.error)
            return ()
        self.error = None
        return due.keys()

    def forget(self, epochs: Mapping[TopicPartition, int]) -> None:
        return None

    async def aclose(self) -> None:
        return None
