"""Fixtures giving integration tests a real Apache Kafka broker (see tests/infra/kafka.py)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from tests.infra.kafka import KafkaBroker, ServiceError, create_topics


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """One Kafka broker for the whole test session, stopped (by pid) when the session ends.

    A broker that cannot start fails the tests that need it, locally and in CI alike:
    a skipped integration test would look green while proving nothing.
    """
    broker = KafkaBroker()
    try:
        broker.start()
    except ServiceError as exc:
        broker.close()
        pytest.fail(f"Kafka broker could not start: {exc}", pytrace=False)
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
async def kafka_topic(kafka_broker: KafkaBroker, request: pytest.FixtureRequest) -> str:
    """A fresh single-partition topic on the session broker, named after the test."""
    # Kafka topic names allow [a-zA-Z0-9._-]; the test name helps when reading broker logs.
    test_name = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name)[:80]
    name = f"t-{test_name}-{uuid.uuid4().hex[:8]}"
    await create_topics(kafka_broker.bootstrap, [name])
    return name
