"""Watching /metrics during the run: every scrape of every replica must reconcile."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import aiohttp

from tests.faults.nemesis.journal import Journal
from tests.faults.nemesis.replicas import Replica, Replicas
from tests.support.identities import identity_gaps


@dataclass(slots=True)
class ScrapeLog:
    """What the scraper saw: how many scrapes, and each one whose identities did not hold."""

    scrapes: int = 0
    unreachable: int = 0
    violations: list[str] = field(default_factory=list)
    last: dict[str, str] = field(default_factory=dict)  # replica name → last scrape text


async def scrape(replica: Replica, timeout_s: float = 3.0) -> str | None:
    """/metrics, or None when it cannot be had now (stopping, frozen meanwhile, killed)."""
    try:
        async with aiohttp.ClientSession() as session, session.get(
                f"http://{replica.listen}/metrics",
                timeout=aiohttp.ClientTimeout(timeout_s)) as response:
            if response.status != 200:
                return None
            return await response.text()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None


async def scrape_periodically(replicas: Replicas, log: ScrapeLog, journal: Journal,
                              stop: asyncio.Event, interval_s: float = 1.5) -> None:
    """Every interval, every replica that can answer: each scrape must reconcile."""
    while not stop.is_set():
        targets = [r for r in replicas.all if r.scrapable]
        texts = await asyncio.gather(*(scrape(r) for r in targets))
        for replica, text in zip(targets, texts, strict=True):
            check_scrape(replica, text, log, journal)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


def check_scrape(replica: Replica, text: str | None, log: ScrapeLog, journal: Journal) -> None:
    if text is None:
        log.unreachable += 1
        return
    log.scrapes += 1
    log.last[replica.name] = text
    gaps = {name: gap for name, gap in identity_gaps(text).items() if gap != 0}
    if gaps:
        log.violations.append(f"{journal.elapsed():.1f}s {replica.name}: {gaps}")
        journal.note(f"IDENTITY VIOLATION on {replica.name}: {gaps}")
