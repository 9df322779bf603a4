"""Fault-suite fixtures: a broker and a Collector of the test's own, free to stop, restart
or kill, so the session's services are never disturbed. Both are stopped by pid."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.infra.collector import Collector
from tests.support.infra.kafka import KafkaBroker
from tests.support.services import serve


@pytest.fixture
def own_broker() -> Iterator[KafkaBroker]:
    """A fresh single-node broker in a temp dir, for this test only."""
    yield from serve(KafkaBroker())


@pytest.fixture
def own_collector() -> Iterator[Collector]:
    """A fresh OpenTelemetry Collector for this test only."""
    yield from serve(Collector())
