"""A bound on a backlog, and a way to wait until it has room again (back-pressure)."""

from __future__ import annotations

import asyncio


class Capacity:
    """Room while the backlog is under `limit`; `update` after every change of its size."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._room = asyncio.Event()
        self._room.set()

    def fits(self, size: int) -> bool:
        return size < self.limit

    def update(self, size: int, *, blocked: bool = False) -> None:
        """`blocked`: no room whatever the size (what the backlog drains into is full)."""
        if self.fits(size) and not blocked:
            self._room.set()
        else:
            self._room.clear()

    async def wait(self) -> None:
        await self._room.wait()
