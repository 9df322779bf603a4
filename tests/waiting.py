"""Waiting in tests for conditions that cannot be subscribed to (a counter, a file)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(predicate: Callable[[], bool], timeout_s: float = 30,
                     interval_s: float = 0.05) -> None:
    """Return once `predicate()` is true; TimeoutError after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(interval_s)
