"""`SyncPublisher`: `Publisher` for synchronous code. Events are spooled in the caller's
thread (no hop to another thread, so publishing costs a serialization and a write); the
sender runs on an event loop in a background thread."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from pipeline.publisher.client import Publisher, PublishError

log = logging.getLogger(__name__)

T = TypeVar("T")
_JOIN_SLACK_S = 1.0


class SyncPublisher:
    """Takes `Publisher`'s arguments. Construction checks the key and opens the spool
    before any thread starts, so a failed construction leaves no thread behind."""

    def __init__(self, bootstrap_servers: str, topic: str = "governance.events",
                 **options: Any) -> None:
        self._publisher = Publisher(bootstrap_servers, topic, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="govpipe-publisher", daemon=True)
        self._thread.start()
        self._closed = False
        try:
            self._call(self._publisher.start(), _JOIN_SLACK_S * 10)
        except BaseException:
            self.close(0)
            raise

    @property
    def registry(self) -> CollectorRegistry:
        """Where the `govpipe_publisher_*` series are."""
        return self._publisher.registry

    @property
    def spool_dir(self) -> Path:
        """Where the spool lives."""
        return self._publisher.spool_dir

    def publish(self, event: Any) -> None:
        """Spool one event; PublishError if it was refused."""
        reason = self._publisher.spool_events([event])[0]
        if reason is not None:
            raise PublishError(reason)

    def publish_many(self, events: Iterable[Any]) -> list[str | None]:
        """Spool events: per event None, or the reason it was refused (logged, counted)."""
        return self._publisher.spool_events(events)

    def flush(self, timeout_s: float) -> bool:
        """Wait until the broker acknowledged everything spooled so far (or Kafka refused it
        for good: set aside in rejected.jsonl); False at timeout."""
        if self._closed:
            return False
        return self._call(self._publisher.flush(timeout_s), timeout_s + _JOIN_SLACK_S)

    def close(self, timeout_s: float = 30.0) -> bool:
        """Send what is spooled within `timeout_s`, stop the thread; True when the spool
        is empty (everything acknowledged or set aside as rejected). Callable twice."""
        if self._closed:
            return False
        self._closed = True
        drained = False
        try:
            drained = self._call(self._publisher.aclose(timeout_s), timeout_s + _JOIN_SLACK_S)
        except Exception as exc:
            log.error("publisher: closing failed: %s: %s", type(exc).__name__, exc)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_JOIN_SLACK_S)
            if not self._thread.is_alive():
                self._loop.close()
        return drained

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise
