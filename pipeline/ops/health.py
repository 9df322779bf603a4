"""Component health, aggregated as Agent OS does: no components or any unhealthy one is
unhealthy, else any degraded one is degraded, else healthy (`aggregate`).

Every status comes from a check run at the time of asking; nothing is healthy by default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


Check = Callable[[], tuple[Status, str]]


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    name: str
    status: Status
    message: str
    checked_at: str


def aggregate(statuses: list[Status]) -> Status:
    """No components → unhealthy; any unhealthy → unhealthy; any degraded → degraded."""
    if not statuses or Status.UNHEALTHY in statuses:
        return Status.UNHEALTHY
    return Status.DEGRADED if Status.DEGRADED in statuses else Status.HEALTHY


class HealthRegistry:
    """Named checks, evaluated on demand."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        self._checks[name] = check

    def evaluate(self) -> tuple[Status, list[ComponentHealth]]:
        components = []
        for name, check in self._checks.items():
            try:
                status, message = check()
            except Exception as exc:  # a failing check is itself a finding
                status, message = Status.UNHEALTHY, f"health check raised {exc!r}"
            components.append(ComponentHealth(name, status, message,
                                              datetime.now(UTC).isoformat()))
        return aggregate([c.status for c in components]), components

    def report(self) -> tuple[Status, dict[str, Any]]:
        """The aggregate status and the JSON body of /readyz."""
        status, components = self.evaluate()
        body = {"status": status.value, "components": [
            {"name": c.name, "status": c.status.value, "message": c.message,
             "checked_at": c.checked_at} for c in components]}
        return status, body
