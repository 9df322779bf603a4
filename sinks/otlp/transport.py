"""What the OTLP sink needs of a transport (gRPC or HTTP), and the errors it reports.

The SDK exporters only return SUCCESS/FAILURE, so each transport watches its own traffic to
tell why an export failed: a collector that refuses the request (non-retriable,
``export_rejected``) or one that did not take it this time (retriable, ``export_failed``).
"""

from __future__ import annotations

from typing import Protocol

from sinks.base import SinkError

__all__ = ["Transport", "export_error"]


class Transport(Protocol):
    def export(self, payload: bytes, count: int) -> bool:
        """Send one serialized ExportLogsServiceRequest of ``count`` records; True when the
        collector took it."""
        ...

    def shutdown(self) -> None: ...

    def reset(self) -> None:
        """Forget the last export's status (called before each export)."""
        ...

    def failure(self) -> SinkError:
        """Why the last export failed."""
        ...


def export_error(transport: str, detail: str, *, refused: bool) -> SinkError:
    """The SinkError of a failed export over ``transport`` (``OTLP/HTTP``, ``OTLP/gRPC``)."""
    if refused:
        return SinkError(f"{transport} export refused by the collector: {detail}",
                         retriable=False, reason="export_rejected")
    return SinkError(f"{transport} export failed: {detail}", retriable=True,
                     reason="export_failed")
