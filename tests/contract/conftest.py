"""The contract suite runs every sink against its real peer: it uses the session fixtures
of tests/conftest.py (Kafka broker, OpenTelemetry Collector) and adds one harness fixture
per sink."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.contract.harnesses import (
    Harness,
    KafkaHarness,
    MemoryHarness,
    OtlpHarness,
    StdoutHarness,
)
from tests.support.infra.collector import Collector
from tests.support.infra.kafka import KafkaBroker


@pytest.fixture
async def memory_harness() -> AsyncIterator[Harness]:
    """The in-memory sink; its failures are injected (it has no peer)."""
    harness = MemoryHarness()
    yield harness
    await harness.aclose()


@pytest.fixture
async def stdout_harness() -> AsyncIterator[Harness]:
    """The stdout sink on a BytesIO, /dev/full (ENOSPC) and a pipe with no reader."""
    harness = StdoutHarness()
    yield harness
    await harness.aclose()


@pytest.fixture
async def otlp_grpc_harness(fresh_otel_collector: Collector) -> AsyncIterator[Harness]:
    """The OTLP sink over gRPC to a collector of the test's own."""
    harness = OtlpHarness(fresh_otel_collector, "grpc")
    yield harness
    await harness.aclose()


@pytest.fixture
async def otlp_http_harness(fresh_otel_collector: Collector) -> AsyncIterator[Harness]:
    """The OTLP sink over HTTP/protobuf to a collector of the test's own."""
    harness = OtlpHarness(fresh_otel_collector, "http/protobuf")
    yield harness
    await harness.aclose()


@pytest.fixture
async def kafka_structured_harness(
    kafka_broker: KafkaBroker, kafka_topic: str
) -> AsyncIterator[Harness]:
    """The Kafka sink in structured content mode, to a fresh topic on the session broker."""
    harness = KafkaHarness(kafka_broker, kafka_topic, "structured")
    yield harness
    await harness.aclose()


@pytest.fixture
async def kafka_binary_harness(
    kafka_broker: KafkaBroker, kafka_topic: str
) -> AsyncIterator[Harness]:
    """The Kafka sink in binary content mode, to a fresh topic on the session broker."""
    harness = KafkaHarness(kafka_broker, kafka_topic, "binary")
    yield harness
    await harness.aclose()
