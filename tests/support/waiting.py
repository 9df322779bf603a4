"""Waiting in tests for conditions that cannot be subscribed to (a counter, a file)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def eventually(predicate: Callable[[], bool], timeout_s: float = 30,
                     interval_s: float = 0.05) -> None:
    """Return once `predicate()` is true; TimeoutError after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(interval_s)


async def eventually_async(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 30,
                           interval_s: float = 0.2) -> None:
    """`eventually` for a predicate that must await (a scrape, an admin request)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if await predicate():
                return
            await asyncio.sleep(interval_s)
