"""The faults the nemesis injects into replicas, their stdout readers, the Collector, the
broker and the dead-letter disk; and healing whatever is still down at the end."""

from __future__ import annotations

import asyncio
import random
import signal
import time

from tests.faults.nemesis.journal import Journal
from tests.faults.nemesis.replicas import Replica, Replicas
from tests.faults.nemesis.scheduler import Fault, Scheduler
from tests.faults.nemesis.services import Services

MAX_REPLICAS = 3


class Nemesis(Scheduler):
    """A Scheduler of faults on replicas and services: replicas joining, leaving, SIGKILLed
    and replaced, SIGSTOPped; a stdout reader stalled; the Collector stopped or killed; the
    broker SIGSTOPped or restarted; the dead-letter disk filled."""

    def __init__(self, rng: random.Random, replicas: Replicas, services: Services,
                 journal: Journal) -> None:
        super().__init__(rng, journal)
        self._replicas = replicas
        self._services = services
        self.faults = [
            Fault("join", 2, self._can_join, self._join),
            Fault("leave", 1, self._can_lose_one, self._leave),
            Fault("kill", 1, self._can_lose_one, self._kill),
            Fault("freeze", 1, lambda: bool(self._free("replica")), self._freeze),
            Fault("stall", 3, lambda: bool(self._free("reader")), self._stall),
            Fault("collector", 1, lambda: "collector" not in self._busy, self._collector),
            Fault("broker-pause", 1, lambda: "broker" not in self._busy, self._broker_pause),
            Fault("broker-restart", 0.5, lambda: "broker" not in self._busy,
                  self._broker_restart),
            Fault("disk-full", 1, self._can_fill_disk, self._disk_full),
        ]

    # -- readiness

    def _free(self, kind: str) -> list[Replica]:
        return [r for r in self._replicas.live() if f"{kind}:{r.name}" not in self._busy]

    def _can_join(self) -> bool:
        return len(self._replicas.live()) + self._replicas.starting < MAX_REPLICAS

    def _can_lose_one(self) -> bool:
        return len(self._replicas.live()) >= 2 and bool(self._free("replica"))

    def _can_fill_disk(self) -> bool:
        return self._services.disk.mounted and "disk" not in self._busy

    async def _start_replica(self, delay_s: float = 0) -> None:
        self._replicas.starting += 1
        try:
            await asyncio.sleep(delay_s)
            await self._replicas.start_one()
        finally:
            self._replicas.starting -= 1

    # -- faults on replicas

    async def _join(self) -> None:
        self._journal.note("join: starting a replica")
        self._spawn("join", self._start_replica)

    async def _leave(self) -> None:
        replica = self._rng.choice(self._free("replica"))
        replica.leaving = True
        replica.signal(signal.SIGTERM)
        self._journal.note(f"leave: SIGTERM {replica.name}")

        async def exited() -> None:
            code = await replica.wait_exit(90)
            self._journal.note(f"{replica.name} exited {code}" if code is not None else
                               f"{replica.name} did not exit within 90s of SIGTERM: killed")
        self._spawn(f"leave {replica.name}", exited, f"replica:{replica.name}")

    async def _kill(self) -> None:
        replica = self._rng.choice(self._free("replica"))
        delay_s = self._rng.uniform(2, 8)
        replica.leaving = True
        replica.signal(signal.SIGKILL)
        self._journal.note(f"kill: SIGKILL {replica.name}; a replacement in {delay_s:.1f}s")
        async def replace() -> None:
            await replica.wait_exit(30)
            await self._start_replica(delay_s)
        self._spawn(f"replace {replica.name}", replace, f"replica:{replica.name}")

    async def _freeze(self) -> None:
        # Past the 10 s session timeout the group evicts it; it rejoins when continued.
        replica = self._rng.choice(self._free("replica"))

        async def stop() -> None:
            replica.frozen = True
            replica.signal(signal.SIGSTOP)

        async def cont() -> None:
            replica.signal(signal.SIGCONT)
            replica.frozen = False
        self._hold(f"freeze: SIGSTOP {replica.name}", self._rng.uniform(2, 12), stop, cont,
                   f"replica:{replica.name}")

    async def _stall(self) -> None:
        replica = self._rng.choice(self._free("reader"))

        async def stop() -> None:
            replica.stall_reader()

        async def cont() -> None:
            replica.resume_reader()
        self._hold(f"stall: SIGSTOP the stdout reader of {replica.name}",
                   self._rng.uniform(4, 15), stop, cont, f"reader:{replica.name}")

    # -- faults on services

    async def _collector(self) -> None:
        collector, kill = self._services.collector, self._rng.random() < 0.5

        async def down() -> None:
            if kill:
                self._services.collector_killed = True
            await asyncio.to_thread(collector.kill if kill else collector.stop)

        async def up() -> None:
            await asyncio.to_thread(collector.start)
        self._hold(f"collector: {'SIGKILL' if kill else 'stop'}", self._rng.uniform(3, 10),
                   down, up, "collector")

    async def _broker_pause(self) -> None:
        async def stop() -> None:
            self._services.signal_broker(signal.SIGSTOP)

        async def cont() -> None:
            self._services.signal_broker(signal.SIGCONT)
        self._hold("broker-pause: SIGSTOP the broker", self._rng.uniform(2, 6), stop, cont,
                   "broker")

    async def _broker_restart(self) -> None:
        broker = self._services.broker

        async def restart() -> None:
            started = time.monotonic()
            try:
                await asyncio.to_thread(broker.stop)
            finally:
                await asyncio.to_thread(broker.start)
            self._journal.note(f"broker-restart: back after {time.monotonic() - started:.1f}s")
        self._journal.note("broker-restart: stopping the broker")
        self._spawn("broker-restart", restart, "broker")

    async def _disk_full(self) -> None:
        disk = self._services.disk

        async def fill() -> None:
            taken = await asyncio.to_thread(disk.fill)
            self._journal.note(f"disk-full: {taken >> 20} MiB filler written")

        async def free() -> None:
            await asyncio.to_thread(disk.free)
        self._hold("disk-full: the dead-letter disk", self._rng.uniform(3, 10), fill, free,
                   "disk")


async def heal(replicas: Replicas, services: Services, journal: Journal,
               minimum: int = 1) -> None:
    """After the nemesis has settled: whatever is still down or stopped comes back."""
    for replica in replicas.all:
        replica.signal(signal.SIGCONT)
        replica.resume_reader()
        replica.frozen = False
    services.signal_broker(signal.SIGCONT)
    services.disk.free()
    if not services.broker.running:
        journal.note("heal: starting the broker")
        await asyncio.to_thread(services.broker.start)
    if not services.collector.running:
        journal.note("heal: starting the collector")
        await asyncio.to_thread(services.collector.start)
    while len(replicas.live()) < minimum:
        journal.note("heal: starting a replica")
        await replicas.start_one()
