"""The pipeline's view of one consumed Kafka record."""

from __future__ import annotations

from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from pipeline.model import Position, Record

LOG_APPEND_TIME = 1  # aiokafka's ConsumerRecord.timestamp_type for broker-stamped records


def kafka_record(tp: TopicPartition, message: ConsumerRecord[Any, Any],
                 epoch: int = 0) -> Record:
    """The pipeline's view of one consumed Kafka record."""
    raw_headers = message.headers
    # Most records have no headers: no generator for them (this runs per record).
    headers = tuple((name, value or b"") for name, value in raw_headers) if raw_headers else ()
    return Record(message.value if message.value is not None else b"",
                  Position(tp.topic, tp.partition, message.offset, epoch), key=message.key,
                  headers=headers, timestamp_ms=message.timestamp,
                  log_append_time=message.timestamp_type == LOG_APPEND_TIME)
