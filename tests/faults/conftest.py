"""Fault-suite fixtures: a broker and a Collector of the test's own, free to stop, restart
or kill, so the session's services are never disturbed. Both are stopped by pid."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.infra.collector import Collector
from tests.infra.kafka import KafkaBroker, ServiceError
from tests.services import serve


def start_broker(**extra: str) -> KafkaBroker:
    broker = KafkaBroker(extra_properties=extra)
    try:
        broker.start()
    except ServiceError as exc:
        broker.close()
        pytest.fail(f"Kafka broker could not start: {exc}", pytrace=False)
    return broker


@pytest.fixture
def own_broker() -> Iterator[KafkaBroker]:
    """A fresh single-node broker in a temp dir, for this test only."""
    yield from serve(KafkaBroker())


@pytest.fixture
def own_collector() -> Iterator[Collector]:
    """A fresh OpenTelemetry Collector for this test only."""
    yield from serve(Collector())
