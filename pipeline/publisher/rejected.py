"""Records Kafka refuses for good: which errors those are, and the file they are kept in.

A record larger than the topic's `max.message.bytes` or the producer's `max_request_size`
(`MessageSizeTooLargeError`, raised by aiokafka at send or answered by the broker), or one
the broker finds corrupt, fails the same way however often it is sent; resending it would
hold back every later event of the spool until the spool fills. The sender sets such a
record aside instead: it appends it to `rejected.jsonl` in the spool directory, counts it
(`govpipe_publisher_rejected_total{reason}`) and removes it from the spool.

`rejected.jsonl` is append-only, one JSON object per record: `rejected_at_ms`, `topic`,
`reason`, `error` (the error's type and text), `event_id` and `agent_id` (when the value is
a JSON object that has them, else null), `spooled_at_ms` and `value_base64` (the record's
value exactly as spooled; the `agt-*` signature headers are made anew at each send and not
kept). The publisher never truncates or rotates it: each line is at most about 4/3 of
`max_event_bytes` plus 300 bytes, and the operator removes the file once its records were
dealt with (sent again after raising the limit, or discarded). A crash after a record was
written here but before the spool forgot it lists it twice (the same `event_id`).

Errors that are not the record's own stay resent with a new producer: authorization,
unknown topic, connections, timeouts, leadership, idempotence sequence errors; and
`INVALID_RECORD` (code 87), which aiokafka reports only as `UnknownError`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka.errors import (  # type: ignore[import-untyped,unused-ignore]
    CorruptRecordException,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from pipeline.publisher.frames import SpoolEntry
from pipeline.publisher.options import FsyncPolicy
from pipeline.publisher.spool_files import fsync_directory

REJECTED_FILE = "rejected.jsonl"

_PERMANENT: tuple[tuple[type[BaseException], str], ...] = (
    (MessageSizeTooLargeError, "record_too_large"),
    (RecordListTooLargeError, "record_too_large"),
    (CorruptRecordException, "invalid_record"),
)


def rejection_reason(error: BaseException) -> str | None:
    """The reason Kafka will never accept the record that failed with `error`, or None
    when a resend may succeed."""
    for kind, reason in _PERMANENT:
        if isinstance(error, kind):
            return reason
    return None


@dataclass(frozen=True, slots=True)
class Rejection:
    """One spool entry Kafka refused for good, and why."""

    entry: SpoolEntry
    reason: str
    error: BaseException

    @property
    def event_id(self) -> str | None:
        """The value's `event_id`, when it has one."""
        return _field(self.entry.value, "event_id")

    def line(self, topic: str, now_ms: int) -> bytes:
        """This rejection as one line of `rejected.jsonl`."""
        record = {
            "rejected_at_ms": now_ms, "topic": topic, "reason": self.reason,
            "error": f"{type(self.error).__name__}: {self.error}",
            "event_id": self.event_id,
            "agent_id": self.entry.key.decode("utf-8", "replace") or None,
            "spooled_at_ms": self.entry.spooled_at_ms,
            "value_base64": base64.b64encode(self.entry.value).decode("ascii"),
        }
        return json.dumps(record, ensure_ascii=False).encode() + b"\n"


class RejectedFile:
    """Appends rejections to `rejected.jsonl` in a spool directory."""

    def __init__(self, directory: Path, topic: str, fsync: FsyncPolicy,
                 clock_ms: Callable[[], int]) -> None:
        self.path = directory / REJECTED_FILE
        self._topic = topic
        self._fsync = fsync
        self._clock_ms = clock_ms

    def append(self, rejections: Sequence[Rejection]) -> None:
        """Write the rejections in one write, on disk before returning unless the spool's
        fsync policy is `never` (the spool forgets them next). Raises OSError."""
        now = self._clock_ms()
        data = b"".join(rejection.line(self._topic, now) for rejection in rejections)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            _write_whole(fd, data)
            if self._fsync != "never":
                os.fsync(fd)
        finally:
            os.close(fd)
        if created and self._fsync != "never":
            fsync_directory(self.path.parent)


def _write_whole(fd: int, data: bytes) -> None:
    """Whole lines or none: a failed write is cut off, so the next append starts a line."""
    size = os.fstat(fd).st_size
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        with contextlib.suppress(OSError):  # then the write's own error is the one to tell
            os.ftruncate(fd, size)
        raise


def _field(value: bytes, name: str) -> str | None:
    try:
        document = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    found = document.get(name) if isinstance(document, dict) else None
    return found if isinstance(found, str) else None
