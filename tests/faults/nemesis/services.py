"""What the nemesis faults besides the replicas: the broker, the Collector, and the disk
the file dead-letters are written to."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.infra.collector import Collector
from tests.support.infra.kafka import KafkaBroker


class DeadLetterDisk:
    """The file dead-letters' directory: a small tmpfs of its own when we may mount one
    (root), so it can be filled up; else a plain directory, and the fault is skipped."""

    def __init__(self, path: Path, size_mib: int = 256) -> None:
        self.path = path
        self._size_mib = size_mib
        self.mounted = False
        self._filler = path / "filler"

    def __enter__(self) -> DeadLetterDisk:
        self.path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0 and shutil.which("mount"):
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self._size_mib}m",
                                   "tmpfs", str(self.path)], capture_output=True, check=False)
            self.mounted = done.returncode == 0
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)
            self.mounted = False

    def fill(self) -> int:
        """Write a file until the disk is full; the bytes it took."""
        chunk, written = b"\0" * (1 << 20), 0
        with self._filler.open("ab", buffering=0) as handle:
            while True:
                try:
                    written += handle.write(chunk) or 0
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    return written

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)


@dataclass(slots=True)
class Services:
    broker: KafkaBroker
    collector: Collector
    disk: DeadLetterDisk
    collector_killed: bool = False  # a SIGKILL may lose records the Collector had accepted

    def signal_broker(self, signum: int) -> None:
        if self.broker.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.broker.pid, signum)

    def release(self) -> None:
        """For finally blocks: a broker left SIGSTOPped would make every client closing
        after it (and the fixture's stop) wait out its timeout."""
        self.signal_broker(signal.SIGCONT)
        self.disk.free()
