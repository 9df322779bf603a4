"""The nemesis journal: every action with its time since the start."""

from __future__ import annotations

import sys
import time


class Journal:
    """Every action with its time since the start, printed as it happens: a failed run
    can be read back, and replayed with its seed."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.lines: list[str] = []

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def note(self, message: str) -> None:
        line = f"[nemesis {self.elapsed():7.1f}s] {message}"
        self.lines.append(line)
        print(line, file=sys.stderr, flush=True)
