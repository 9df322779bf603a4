"""The nemesis input: numbered events at a steady rate, through broker outages."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from tests.faults.nemesis.clients import stop_quietly
from tests.faults.nemesis.journal import Journal
from tests.support.events import event_value

PREFIX = "nem"


def event_id(number: int) -> str:
    return f"{PREFIX}-{number:08d}"


class SteadyProducer:
    """Produces `count` numbered events at about `per_second`, and keeps going through
    broker pauses and restarts: a chunk that is not acknowledged is sent again (a copy may
    land twice; at-least-once is all the oracle asks), on a fresh client."""

    CHUNK = 25

    def __init__(self, bootstrap: str, topic: str, count: int, per_second: float,
                 journal: Journal) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self.count = count
        self._per_second = per_second
        self._journal = journal
        self.acked: set[int] = set()
        self.resent = 0

    async def run(self) -> None:
        producer = await self._new_producer()
        try:
            started, sent = time.monotonic(), 0
            retry: list[int] = []
            while sent < self.count or retry:
                fresh = list(range(sent, min(self.count, sent + self.CHUNK)))
                sent += len(fresh)
                retry = await self._send(producer, retry + fresh)
                if retry:
                    self.resent += len(retry)
                    await stop_quietly(producer)
                    await asyncio.sleep(1)
                    producer = await self._new_producer()
                await asyncio.sleep(max(0.0, started + sent / self._per_second
                                        - time.monotonic()))
            self._journal.note(f"producer done: {len(self.acked)} acknowledged, "
                               f"{self.resent} sent again")
        finally:
            await stop_quietly(producer)

    async def _new_producer(self) -> AIOKafkaProducer:
        for attempt in itertools.count(1):
            # A short request timeout: stopping a client with requests in flight waits for
            # them, and aiokafka spins on metadata requests meanwhile.
            producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all",
                                        linger_ms=5, request_timeout_ms=3_000)
            try:
                async with asyncio.timeout(15):
                    await producer.start()
            except (KafkaError, TimeoutError, OSError) as exc:
                if attempt == 1:
                    self._journal.note(f"producer cannot start ({exc!r}); retrying")
                await stop_quietly(producer)
                await asyncio.sleep(1)
                continue
            if attempt > 1:
                self._journal.note(f"producer started again (attempt {attempt})")
            return producer
        raise AssertionError("unreachable")

    async def _send(self, producer: AIOKafkaProducer, numbers: Sequence[int]) -> list[int]:
        """Send and wait for acknowledgements; the numbers not acknowledged. The wait is
        short: a client whose broker went away with requests in flight retries its metadata
        in a tight loop (thousands a second) until stopped; this one is replaced instead."""
        futures: list[tuple[int, asyncio.Future[Any]]] = []
        try:
            async with asyncio.timeout(5):
                for number in numbers:
                    futures.append((number, await producer.send(
                        self._topic, event_value(number, PREFIX))))
                results = await asyncio.gather(*(f for _, f in futures),
                                               return_exceptions=True)
        except (KafkaError, TimeoutError, OSError):
            results = [f.result() if f.done() and not f.cancelled() and f.exception() is None
                       else KafkaError() for _, f in futures]
        acked = {n for (n, _), r in zip(futures, results, strict=True)
                 if not isinstance(r, BaseException)}
        self.acked |= acked
        return [n for n in numbers if n not in acked]
