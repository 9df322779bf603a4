"""Running a test service for a fixture: started, or the test fails (never skips)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

import pytest

from tests.support.infra.process import ServiceError, ServiceProcess

S = TypeVar("S", bound=ServiceProcess)


def started(service: S) -> S:
    """Start `service` and return it; the caller closes it. A service that cannot start
    fails the tests that need it, locally and in CI alike: a skipped integration test would
    look green while proving nothing."""
    try:
        service.start()
    except ServiceError as exc:
        service.close()
        pytest.fail(f"{service.name} could not start: {exc}", pytrace=False)
    return service


def serve(service: S) -> Iterator[S]:
    """Start `service` (see `started`), yield it, close it."""
    started(service)
    try:
        yield service
    finally:
        service.close()
