"""Session fixtures for every test directory: one real Apache Kafka broker and one real
OpenTelemetry Collector per test run (see tests/support/infra/), and in-process daemons
that are stopped even when a test fails."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.daemons import RunningDaemon
from tests.support.infra.collector import Collector
from tests.support.infra.kafka import KafkaBroker
from tests.support.infra.secure_kafka import SecureKafka, SecureKafkaBroker
from tests.support.kafka_clients import create_topics
from tests.support.services import serve
from tests.support.services import started as start_service


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """One Kafka broker for the whole test session, stopped (by pid) when the session ends.

    A broker that cannot start fails the tests that need it, locally and in CI alike:
    a skipped integration test would look green while proving nothing.
    """
    yield from serve(KafkaBroker())


@pytest.fixture(scope="session")
def secure_kafka() -> Iterator[SecureKafka]:
    """A second session broker serving PLAINTEXT (``plaintext_bootstrap``, for the test's
    own admin client), SASL_SSL (SCRAM-SHA-512, PLAIN, OAUTHBEARER), SSL with client
    certificates required (mTLS) and SASL_PLAINTEXT (OAUTHBEARER), with its private CA,
    client certificates, users and an unsigned-JWT token maker (``SecureKafka.token``).

    Started only by the tests that ask for it; one that cannot start fails them (never
    skips). Client options per way in: :mod:`tests.support.kafka_security`.
    """
    broker = start_service(SecureKafkaBroker())
    try:
        yield broker.security
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


@pytest.fixture(scope="session")
def otel_collector() -> Iterator[Collector]:
    """One OpenTelemetry Collector for the whole session (OTLP gRPC + HTTP → JSON file).

    Like the broker, a collector that cannot be built or started fails the tests that need
    it instead of skipping them.
    """
    yield from serve(Collector())


@pytest.fixture
def fresh_otel_collector(otel_collector: Collector) -> Iterator[Collector]:
    """A collector of this test's own (empty output, free to stop), same binary as the session's."""
    yield from serve(Collector(binary=otel_collector.binary))


@pytest.fixture
async def daemons() -> AsyncIterator[list[RunningDaemon]]:
    """In-process daemons a test started; stopped even when the test fails, so no consumer
    lingers in its group and no task outlives the test's event loop."""
    started: list[RunningDaemon] = []
    yield started
    for running in started:
        await running.__aexit__(None, None, None)
