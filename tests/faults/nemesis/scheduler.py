"""Scheduling faults: every few seconds (seeded) one of those that can happen now; a fault
with a duration runs in the background and heals itself after it, so faults overlap."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tests.faults.nemesis.journal import Journal

Action = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Fault:
    name: str
    weight: float
    ready: Callable[[], bool]
    inject: Action


class Scheduler:
    """Every few seconds (seeded), one fault of `faults` among those that can happen now. A
    fault with a duration runs in the background and heals itself after it, so faults
    overlap; the targets it holds (`busy`) are not faulted again until then."""

    GAP_S = (1.5, 4.0)

    def __init__(self, rng: random.Random, journal: Journal) -> None:
        self._rng = rng
        self._journal = journal
        self._busy: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self.errors: list[str] = []
        self.injected: Counter[str] = Counter()
        self.faults: list[Fault] = []

    async def run(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(left, self._rng.uniform(*self.GAP_S)))
            if time.monotonic() >= end:
                break
            ready = [f for f in self.faults if f.ready()]
            if not ready:  # every target is held by a fault still running
                continue
            fault = self._rng.choices(ready, weights=[f.weight for f in ready])[0]
            self.injected[fault.name] += 1
            await fault.inject()

    async def settle(self, timeout_s: float = 240) -> None:
        """Wait for every background fault to heal itself."""
        if self._background:
            await asyncio.wait_for(asyncio.gather(*self._background), timeout_s)

    def cancel(self) -> None:
        for task in self._background:
            task.cancel()

    def _spawn(self, what: str, action: Action, *holds: str) -> None:
        """Run `action` in the background, holding the targets `holds` until it ends."""
        self._busy.update(holds)

        async def guarded() -> None:
            try:
                await action()
            except Exception as exc:
                self.errors.append(f"{what}: {exc!r}")
                self._journal.note(f"ERROR in {what}: {exc!r}")
            finally:
                self._busy.difference_update(holds)

        task = asyncio.create_task(guarded(), name=what)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _hold(self, what: str, hold_s: float, begin: Action, end: Action, *holds: str) -> None:
        """`begin`, then `end` after `hold_s`, in the background."""
        async def held() -> None:
            await begin()
            self._journal.note(f"{what} for {hold_s:.1f}s")
            try:
                await asyncio.sleep(hold_s)
            finally:
                await end()
                self._journal.note(f"{what}: healed")
        self._spawn(what, held, *holds)
