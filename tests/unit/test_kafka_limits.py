"""The per-record limit of a Kafka topic: the smaller of the producer's request size and
the topic's max.message.bytes, less the margin; learned once; the producer's alone, with
one warning, when the topic's cannot be read."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest
from aiokafka.errors import TopicAuthorizationFailedError

from pipeline.kafka_limits import RECORD_MARGIN, RecordLimit, record_bytes, record_limit


def test_the_smaller_limit_applies_less_the_margin() -> None:
    assert record_limit(1_048_576, 4096) == 4096 - RECORD_MARGIN
    assert record_limit(1_048_576, 8_000_000) == 1_048_576 - RECORD_MARGIN
    assert record_limit(1_048_576, None) == 1_048_576 - RECORD_MARGIN


def test_a_record_is_measured_as_a_batch_of_it_alone() -> None:
    # The record batch header (61 bytes) and the record's own framing come on top.
    assert record_bytes(None, b"x" * 1000, []) > 1061
    assert record_bytes(b"k", b"x" * 1000, [("h", b"v")]) > record_bytes(None, b"x" * 1000, [])


async def test_the_topic_limit_is_asked_for_once() -> None:
    asked: list[str] = []

    async def describe(options: Mapping[str, Any], topic: str) -> int:
        asked.append(topic)
        return 4096

    limit = RecordLimit({}, "out", describe=describe)
    assert limit.known is None
    assert await limit.get() == 4096 - RECORD_MARGIN
    assert await limit.get() == 4096 - RECORD_MARGIN
    assert asked == ["out"]
    assert limit.known == 4096 - RECORD_MARGIN


async def test_an_unreadable_topic_limit_leaves_the_producer_limit_with_one_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    async def describe(options: Mapping[str, Any], topic: str) -> int:
        raise TopicAuthorizationFailedError("no DescribeConfigs")

    limit = RecordLimit({}, "out", max_request_size=200_000, describe=describe)
    with caplog.at_level(logging.WARNING, logger="pipeline.kafka_limits"):
        assert await limit.get() == 200_000 - RECORD_MARGIN
        assert await limit.get() == 200_000 - RECORD_MARGIN
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "max.message.bytes" in warnings[0].getMessage()


async def test_the_topics_own_limit_is_known_only_when_read() -> None:
    # For the at-least-once producer (record batches of its own: aiokafka holds only send()
    # to max_request_size), so a topic above 1 MiB keeps taking records above 1 MiB.
    async def big_topic(options: Mapping[str, Any], topic: str) -> int:
        return 16_777_216

    async def unreadable(options: Mapping[str, Any], topic: str) -> int:
        raise TopicAuthorizationFailedError("no DescribeConfigs")

    assert await RecordLimit({}, "out", describe=big_topic).topic_limit() == (
        16_777_216 - RECORD_MARGIN)
    assert await RecordLimit({}, "out", describe=unreadable).topic_limit() is None
