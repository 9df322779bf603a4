"""Progress of a long audit, on stderr: a line every so many records read."""

from __future__ import annotations

import sys
from typing import TextIO

EVERY = 100_000


class Progress:
    """Counts records read from one place and says so every `every` records."""

    def __init__(self, stream: TextIO | None = None, every: int = EVERY) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._every = every
        self._count = 0
        self._what = ""

    def start(self, what: str) -> None:
        """Begin counting the records of `what` (e.g. "output file events.out")."""
        self._what = what
        self._count = 0

    def tick(self) -> None:
        self._count += 1
        if self._count % self._every == 0:
            print(f"audit: {self._what}: {self._count} read", file=self._stream, flush=True)

    def done(self) -> None:
        if self._count >= self._every:
            print(f"audit: {self._what}: {self._count} read, done", file=self._stream,
                  flush=True)
