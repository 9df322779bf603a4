"""`govpipe` with a stdout sink that takes `SLOW_SINK_DELAY_S` seconds per batch: the real
CLI and daemon in a process of their own, so the test can watch its memory.

Run as ``python -m tests.faults.slow_govpipe run`` (arguments as for ``govpipe``).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

from pipeline import app
from pipeline.__main__ import main
from pipeline.model import SignedEvent
from pipeline.settings import Settings
from sinks.stdout import StdoutSink


class SlowStdoutSink(StdoutSink):
    """A sink whose every batch takes `delay_s` longer: a slow destination."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self._delay_s = delay_s

    async def send(self, batch: Sequence[SignedEvent]) -> None:
        await asyncio.sleep(self._delay_s)
        await super().send(batch)


def _slow_stdout(settings: Settings) -> SlowStdoutSink:
    return SlowStdoutSink(float(os.environ.get("SLOW_SINK_DELAY_S", "1.0")))


if __name__ == "__main__":
    app.SINK_BUILDERS = {**app.SINK_BUILDERS, "stdout": _slow_stdout}
    sys.exit(main())
