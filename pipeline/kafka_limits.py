"""How large a record a Kafka topic takes, learned once from the cluster.

Two limits apply to each record: the producer's `max_request_size` (checked by aiokafka at
send) and the topic's `max.message.bytes` (checked by the broker, which refuses the whole
record batch). Both are compared with the size of the record batch; a record is measured as
aiokafka measures it (`record_bytes`: a batch holding that record alone, an upper bound for
an uncompressed one). `RECORD_MARGIN` is room for what compression framing adds to a record
that does not compress: on the real broker a random record gained up to 8 bytes at 4 KiB
(gzip, snappy) and a few hundred bytes at 1 MiB at worst, so a record measured at
`limit - RECORD_MARGIN` is always taken.

The topic's limit is read with DescribeConfigs. When it cannot be (no permission, the topic
not created yet, the cluster away), a warning says so once and the producer's limit alone
applies: a record the broker still refuses is then set apart where it is written (the
exactly-once committer, the at-least-once sink, the dead-letter stores), never retried
forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    for_code,
)
from aiokafka.record.default_records import DefaultRecordBatchBuilder

log = logging.getLogger(__name__)

MAX_REQUEST_SIZE = 1_048_576  # aiokafka's default max_request_size
RECORD_MARGIN = 512
MAX_MESSAGE_BYTES = "max.message.bytes"
DESCRIBE_TIMEOUT_S = 30.0
# What a producer or broker raises for a record too large; the reason a refused event is
# counted failed with (the at-least-once sink's, too).
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)
TOO_LARGE_REASON = "message_size_too_large_error"

Headers = list[tuple[str, bytes]]


def record_bytes(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """The size the producer and the broker hold a record to: a record batch of it alone."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers))


def record_limit(max_request_size: int, topic_max_bytes: int | None) -> int:
    """The largest `record_bytes` a record may have: the smaller limit less the margin."""
    limit = max_request_size if topic_max_bytes is None else min(max_request_size,
                                                                  topic_max_bytes)
    return limit - RECORD_MARGIN


async def topic_max_message_bytes(options: Mapping[str, Any], topic: str) -> int:
    """`topic`'s max.message.bytes, through an admin client made with `options` (aiokafka
    keywords, as `client_options` gives them); a `KafkaError` when it cannot be read."""
    admin = AIOKafkaAdminClient(**options)
    try:
        await admin.start()
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {MAX_MESSAGE_BYTES: None})])
    finally:
        await admin.close()
    for response in responses:
        for resource in response.to_object()["resources"]:
            if resource["error_code"]:
                raise for_code(resource["error_code"])(resource["error_message"] or topic)
            for entry in resource["config_entries"]:
                if entry["config_names"] == MAX_MESSAGE_BYTES:
                    return int(entry["config_value"])
    raise KafkaError(f"{topic}: no {MAX_MESSAGE_BYTES} in the answer")


Describe = Callable[[Mapping[str, Any], str], Awaitable[int]]


class RecordLimit:
    """The largest `record_bytes` a record for `topic` may have, learned on first use and
    kept (`get`); the producer's limit alone when the topic's cannot be read."""

    def __init__(self, options: Mapping[str, Any], topic: str, *,
                 max_request_size: int = MAX_REQUEST_SIZE,
                 describe: Describe = topic_max_message_bytes) -> None:
        """`describe` reads the topic's max.message.bytes (tests give a fake)."""
        self._options = dict(options)
        self._topic = topic
        self._max_request_size = max_request_size
        self._describe = describe
        self._limit: int | None = None
        self._topic_max: int | None = None
        self._lock = asyncio.Lock()

    @property
    def known(self) -> int | None:
        """The limit, once learned."""
        return self._limit

    async def get(self) -> int:
        """The limit (asks the cluster the first time only)."""
        if self._limit is None:
            async with self._lock:
                if self._limit is None:
                    self._topic_max = await self._learn()
                    self._limit = record_limit(self._max_request_size, self._topic_max)
        return self._limit

    async def topic_limit(self) -> int | None:
        """The largest `record_bytes` the topic itself takes (its max.message.bytes less the
        margin), or None when that could not be read. For a producer that builds its own
        record batches (`send_batch`): aiokafka holds only `send()` to `max_request_size`,
        so the topic's limit is the one that applies, and when it is not known only the
        broker's refusal tells."""
        await self.get()
        return None if self._topic_max is None else self._topic_max - RECORD_MARGIN

    async def _learn(self) -> int | None:
        try:
            async with asyncio.timeout(DESCRIBE_TIMEOUT_S):
                topic_max = await self._describe(self._options, self._topic)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("cannot read %s of topic %s (%s: %s): its limit is unknown until "
                        "restart, so a record it refuses as too large is found out when "
                        "written, then set apart (failed and dead-lettered, or a dead-letter "
                        "entry written as its summary)", MAX_MESSAGE_BYTES, self._topic,
                        type(exc).__name__, exc)
            return None
        log.info("topic %s takes records up to %d bytes", self._topic,
                 min(topic_max, self._max_request_size))
        return topic_max
