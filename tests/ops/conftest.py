"""Fixtures giving ops tests a real Prometheus (see tests/support/infra/prometheus.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ops.rules import ALERTS_YML
from tests.support.infra.prometheus import Prometheus
from tests.support.services import serve


@pytest.fixture
def prometheus() -> Iterator[Prometheus]:
    """A fresh Prometheus per test, config/alerts.yml loaded, scraping and evaluating every
    second, no targets yet (``set_targets``); stopped by pid afterwards.

    A server that cannot start fails the test, locally and in CI alike: a skipped end-to-end
    test would look green while proving nothing.
    """
    yield from serve(Prometheus(rule_files=[ALERTS_YML]))
