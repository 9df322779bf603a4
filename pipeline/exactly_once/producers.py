"""The transactional producers of the exactly-once committer: one per input partition,
started on first use, retired after a failure, and stopped together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from pipeline.kafka_limits import RecordLimit

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_SIZE = 16_384  # aiokafka's, when the options set none


class TransactionalProducers:
    """`get` a partition's producer (its transactional id names the partition), `retire` it
    after a failure, `close_retired` before the next commit."""

    def __init__(self, options: Mapping[str, Any], group_id: str, timeout_s: float,
                 producer_class: Callable[..., AIOKafkaProducer]) -> None:
        self._options = dict(options)
        self._group_id = group_id
        self._timeout_s = timeout_s
        self._producer_class = producer_class
        self._live: dict[TopicPartition, AIOKafkaProducer] = {}
        self._retired: list[AIOKafkaProducer] = []
        self._batch_limits: list[RecordLimit] = []

    def transactional_id(self, tp: TopicPartition) -> str:
        """The partition's transactional id: every replica of the group uses the same."""
        return f"govpipe-{self._group_id}-{tp.topic}-{tp.partition}"

    def limit_batches(self, limit: RecordLimit) -> None:
        """Keep the record batches of producers started from now on within `limit`, once
        it is known (see `TransactionalCommitter.limit_batches`)."""
        self._batch_limits.append(limit)

    async def get(self, tp: TopicPartition) -> AIOKafkaProducer:
        """`tp`'s producer, started now if it has none (which fences any older one)."""
        producer = self._live.get(tp)
        if producer is None:
            producer = self._producer_class(**self._batching(),
                                            transactional_id=self.transactional_id(tp))
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._live[tp] = producer
        return producer

    def _batching(self) -> dict[str, Any]:
        """The producer options, `max_batch_size` lowered to the smallest topic limit known
        (learned before a record for its topic is staged)."""
        known = [limit.known for limit in self._batch_limits if limit.known is not None]
        if not known:
            return self._options
        size = self._options.get("max_batch_size", DEFAULT_MAX_BATCH_SIZE)
        return {**self._options, "max_batch_size": min(size, *known)}

    def retire(self, tp: TopicPartition) -> None:
        """Drop `tp`'s producer; it is stopped by the next `close_retired`."""
        if (producer := self._live.pop(tp, None)) is not None:
            self._retired.append(producer)

    async def close_retired(self) -> None:
        """Stop the retired producers, all at once: within one timeout together, however
        many partitions failed (a revocation's commit must fit the rebalance timeout)."""
        retired, self._retired = self._retired, []
        await asyncio.gather(*(self._stop(producer) for producer in retired))

    async def _stop(self, producer: AIOKafkaProducer) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await producer.stop()
        except (KafkaError, TimeoutError) as exc:
            log.warning("closing a transactional producer failed: %r", exc)

    async def aclose(self) -> None:
        """Stop every producer (an open transaction is ended by the next owner's start)."""
        self._retired += self._live.values()
        self._live.clear()
        await self.close_retired()
