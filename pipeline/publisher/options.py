"""What a publisher's spool and sender are allowed to do, validated in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

FsyncPolicy = Literal["always", "interval", "never"]
FSYNC_POLICIES: tuple[FsyncPolicy, ...] = ("always", "interval", "never")
MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SpoolOptions:
    """The durable local spool between an agent and the broker.

    - `directory`: where the spool lives; one publisher process at a time (it is locked).
    - `max_bytes`: the most unacknowledged bytes kept; past it, events are refused
      (counted, logged, and reported to the caller), never silently dropped.
    - `segment_bytes`: the size at which the spool starts a new file; a file is deleted
      once the broker acknowledged every entry in it.
    - `fsync`: every policy writes each accepted batch to the file before emit/publish
      returns, so a crash or kill of the agent process loses nothing. `interval` (the
      default) also flushes the file to disk every `fsync_interval_s`: power loss or an
      operating-system crash may lose up to that much. `always` flushes before returning
      (survives power loss; an fsync can take milliseconds to seconds on a busy disk, and
      that is then the cost of an emit). `never` leaves it to the operating system.
    - `max_event_bytes`: larger events are refused (the daemon rejects them too).
    - `batch_size`: the most events sent to the broker at once.
    - `resend_after_s`: a batch not acknowledged in this time is sent again by a new
      producer with fresh signatures (a possible duplicate, never a loss); keep it well
      under the daemon's `source.replay_window_s` so a resent record is never `expired`.
    """

    directory: Path
    max_bytes: int = 256 * MiB
    segment_bytes: int = 16 * MiB
    fsync: FsyncPolicy = "interval"
    fsync_interval_s: float = 1.0
    max_event_bytes: int = MiB
    batch_size: int = 500
    resend_after_s: float = 60.0

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be > 0" for name in ("max_bytes", "segment_bytes", "fsync_interval_s",
                                               "max_event_bytes", "batch_size",
                                               "resend_after_s")
            if getattr(self, name) <= 0
        ]
        if self.fsync not in FSYNC_POLICIES:
            problems.append(f"fsync must be one of {', '.join(FSYNC_POLICIES)}")
        if self.max_event_bytes > self.max_bytes:
            problems.append("max_event_bytes must not exceed max_bytes")
        if problems:
            raise ValueError(f"spool options: {'; '.join(problems)}")
