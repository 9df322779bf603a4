"""What a read_committed reader of the output and dead-letter topics sees after an
exactly-once run: every good input id once on the output, every bad record once in the
dead-letter, nothing else."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tests.support.daemons import KEY
from tests.support.events import copies_by_id, event_value
from tests.support.kafka_clients import consume_to_end, create_topics, produce_fast
from tests.support.processes import GOVPIPE

BAD_EVERY = 97  # every 97th input record is not JSON: rejected, dead-lettered


def input_values(count: int, prefix: str) -> list[bytes]:
    """`count` records: events `<prefix>-n`, and garbage at every BAD_EVERY-th."""
    return [b"{not json %d" % n if n % BAD_EVERY == 0 else event_value(n, prefix)
            for n in range(count)]


def good_ids(count: int, prefix: str) -> set[str]:
    return {f"{prefix}-{n:08d}" for n in range(count) if n % BAD_EVERY}


async def setup_topics(bootstrap: str, partitions: int) -> None:
    await create_topics(bootstrap, ["in"], partitions=partitions)
    await create_topics(bootstrap, ["out", "dlq"], partitions=2)


async def publish(bootstrap: str, count: int, prefix: str) -> None:
    await produce_fast(bootstrap, "in", input_values(count, prefix))


@dataclass(frozen=True, slots=True)
class Committed:
    """What read_committed readers find on the output and dead-letter topics."""

    output: dict[str, list[bytes]]  # copies by id
    deadletter: Counter[tuple[str, int, int]]  # entries by source position
    output_uncommitted: int  # records a read_uncommitted reader sees (aborted included)

    def duplicates(self) -> int:
        return (sum(len(c) - 1 for c in self.output.values())
                + sum(n - 1 for n in self.deadletter.values()))


async def read_committed(bootstrap: str) -> Committed:
    out = await consume_to_end(bootstrap, "out", isolation_level="read_committed")
    dlq = await consume_to_end(bootstrap, "dlq", isolation_level="read_committed")
    raw = await consume_to_end(bootstrap, "out")
    entries = [json.loads(r.value) for r in dlq]
    positions = Counter((e["source"]["topic"], e["source"]["partition"], e["source"]["offset"])
                        for e in entries)
    return Committed(copies_by_id(r.value for r in out), positions, len(raw))


def assert_exactly_once(seen: Committed, count: int, prefix: str) -> None:
    """Every good id once on the output; every bad record once in the dead-letter."""
    assert set(seen.output) == good_ids(count, prefix)
    twice = {i: len(c) for i, c in seen.output.items() if len(c) > 1}
    assert not twice, f"{len(twice)} ids more than once on the output"
    bad = count // BAD_EVERY + 1
    assert sum(seen.deadletter.values()) == bad, seen.deadletter.most_common(3)
    assert all(n == 1 for n in seen.deadletter.values())


async def assert_audit_clean(bootstrap: str, tmp_path: Path, count: int) -> str:
    """`govpipe audit` of in → out + dlq: every input position delivered or dead-lettered
    once, nothing missing, no duplicates, every signature good (exit 0). Returns its last
    line."""
    key_file = tmp_path / "audit.key"
    key_file.write_text(base64.b64encode(KEY).decode())
    proc = await asyncio.create_subprocess_exec(
        str(GOVPIPE), "audit", "--key", str(key_file), "--bootstrap-servers", bootstrap,
        "--input-topic", "in", "--output-topic", "out", "--deadletter-topic", "dlq",
        "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
    lines = stdout.decode().splitlines()
    report = json.loads(lines[0])
    bad = count // BAD_EVERY + 1
    assert (report["input"], report["delivered"], report["dead_lettered"]) == (
        count, count - bad, bad), stderr.decode()[-2000:]
    assert lines[-1].endswith("missing 0, duplicates 0, bad signatures 0"), lines[-1]
    assert proc.returncode == 0
    return lines[-1]
