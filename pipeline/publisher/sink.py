"""`AgentOsSink`: an Agent OS governance event sink (the `GovernanceEventSink` shape: `emit`,
`shutdown`, `force_flush`) that publishes through govpipe's spool, so an Agent OS
`GovernanceEventProcessor` can `add_sink` it. Duck-typed: govpipe does not need Agent OS.

`emit` never blocks on the broker and never raises: it returns `SUCCESS` once every event of
the batch is in the spool, `FAILURE` when at least one was refused (each refusal logged and
counted; the batch's other events are in the spool and will be delivered), `DROPPED` after
`shutdown` (nothing spooled).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from pipeline.publisher.client import DEFAULT_TOPIC
from pipeline.publisher.results import ExportResult, PlainExportResult
from pipeline.publisher.threaded import SyncPublisher

log = logging.getLogger(__name__)


class AgentOsSink:
    """Takes `Publisher`'s arguments (spool_dir or spool, sign_key, sender, registry,
    client_options). Builds fine while the broker is down."""

    def __init__(self, bootstrap_servers: str, topic: str = DEFAULT_TOPIC,
                 **options: Any) -> None:
        self._publisher = SyncPublisher(bootstrap_servers, topic, **options)
        self._closed = False

    def __repr__(self) -> str:
        return f"AgentOsSink(spool={str(self._publisher.spool_dir)!r})"

    @property
    def registry(self) -> CollectorRegistry:
        """Where the `govpipe_publisher_*` series are."""
        return self._publisher.registry

    @property
    def spool_dir(self) -> Path:
        """Where the spool lives."""
        return self._publisher.spool_dir

    def emit(self, events: Sequence[Any]) -> PlainExportResult:
        """Spool a batch (see the module docstring for what each result means)."""
        if self._closed:
            log.warning("publisher: %d events emitted after shutdown, not spooled (DROPPED)",
                        len(events))
            return ExportResult.DROPPED
        try:
            outcomes = self._publisher.publish_many(events)
        except Exception:  # the Agent OS contract: emit never raises
            log.exception("publisher: emit of %d events failed", len(events))
            return ExportResult.FAILURE
        return ExportResult.FAILURE if any(outcomes) else ExportResult.SUCCESS

    def force_flush(self, timeout_ms: int = 30000) -> bool:
        """Wait until the broker acknowledged every event emitted so far (or Kafka refused
        it for good: set aside in rejected.jsonl), at most `timeout_ms`; False at timeout
        (the events stay in the spool)."""
        try:
            return self._publisher.flush(timeout_ms / 1000)
        except Exception as exc:
            log.warning("publisher: force_flush: %s: %s", type(exc).__name__, exc)
            return False

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Send what is spooled within `timeout_ms`, then stop; True when the spool is
        empty (everything acknowledged or set aside as rejected). What was not sent stays in
        the spool and is sent at the next start."""
        if self._closed:
            return True
        self._closed = True
        return self._publisher.close(timeout_ms / 1000)
