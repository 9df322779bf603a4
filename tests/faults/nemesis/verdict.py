"""The oracle's findings: ids missing per output (lost or never read), offsets behind,
torn lines, and what each replica did."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tests.faults.nemesis.outputs import Outputs
from tests.faults.nemesis.replicas import Replica
from tests.support.metrics import metric_value


@dataclass(slots=True)
class Verdict:
    """The oracle's findings; `failures` empty means the run passed."""

    seed: int
    seconds: float
    expected: int = 0
    failures: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)


def describe_missing(missing: set[str], positions: Mapping[str, list[tuple[int, int]]],
                     highest: Mapping[int, int], limit: int = 15) -> str:
    """Missing ids, with whether a committed offset ever passed them: past = lost (the group
    will never read them again), not past = never read."""
    past = {i for i in missing
            if any(offset < highest.get(p, -1) for p, offset in positions.get(i, []))}
    by_partition = Counter(p for i in missing for p, _ in positions.get(i, [])[:1])
    shown = ", ".join(f"{i}@{_where(positions.get(i, []))}" for i in sorted(missing)[:limit])
    return (f"{len(missing)} ids ({len(past)} below an offset the group committed: LOST; "
            f"{len(missing) - len(past)} never committed past); by partition "
            f"{dict(sorted(by_partition.items()))}; e.g. {shown}")


def _where(at: Sequence[tuple[int, int]]) -> str:
    return "/".join(f"p{p}:{offset}" for p, offset in at) or "(not on the input topic)"


def judge_ids(verdict: Verdict, expected: set[str], outputs: Outputs,
              positions: Mapping[str, list[tuple[int, int]]], highest: Mapping[int, int],
              strict_otlp: bool) -> None:
    """Every input id reached an output or the dead-letter; per sink for stdout (and for
    OTLP unless the Collector was SIGKILLed, which may lose what it had accepted)."""
    verdict.expected = len(expected)
    checks = [("anywhere", outputs.anywhere(), True),
              ("stdout or its dead-letter", outputs.reached("stdout"), True),
              ("the Collector or the otlp dead-letter", outputs.reached("otlp"), strict_otlp)]
    for where, found, strict in checks:
        missing = expected - found
        if not missing:
            continue
        line = f"missing from {where}: {describe_missing(missing, positions, highest)}"
        (verdict.failures if strict else verdict.summary).append(line)
    dead = {origin: len(ids) for origin, ids in sorted(outputs.dead.items())}
    verdict.summary.append(
        f"ids: {len(expected)} in; distinct on stdout {len(outputs.stdout & expected)}, at "
        f"the Collector {len(outputs.collector & expected)}, dead-lettered by origin {dead}")
    for where, count in sorted(outputs.torn.items()):
        # Garbage in the middle of an output: a write cut short, then the next one. The
        # Collector's own file may show it after a SIGKILL, which is not govpipe's doing.
        if count:
            (verdict.summary if where == "collector" else verdict.failures).append(
                f"{count} torn line(s) in the {where}")


def judge_offsets(verdict: Verdict, committed: Mapping[int, int] | None,
                  ends: Mapping[int, int] | None) -> None:
    if committed is None or ends is None:
        verdict.failures.append("committed or end offsets unavailable at the end")
        return
    behind = {p: (committed.get(p), end) for p, end in ends.items() if committed.get(p) != end}
    if behind:
        verdict.failures.append(f"committed != end offsets (partition: (committed, end)): "
                                f"{behind}")
    verdict.summary.append(f"end offsets {dict(sorted(ends.items()))}, "
                           f"{sum(ends.values())} records")


def replica_report(replica: Replica, last_scrape: str | None) -> str:
    counts = ""
    if last_scrape is not None:
        counts = ", ".join(f"{short} {metric_value(last_scrape, name):.0f}" for short, name in (
            ("read", "govpipe_source_records_total"),
            ("delivered", "govpipe_sink_delivered_total"),
            ("failed", "govpipe_sink_failed_total"),
            ("dead-lettered", "govpipe_deadletter_written_total"),
            ("offset gaps", "govpipe_source_offset_gaps_total")))
    return (f"{replica.name} ({replica.mode}): exit {replica.exit_code}, "
            f"{len(replica.lines())} stdout lines, {replica.revocation_timeouts()} "
            f"revocations with unsettled records; last scrape: {counts or 'none'}")
