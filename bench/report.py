"""Results of bench/run.py: the markdown table, the JSON file and the plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Result:
    """One scenario's numbers (the fields of ``--json``)."""

    name: str
    events: int
    eps: float
    ratio_to_baseline: float
    p50_ms: float
    p99_ms: float
    peak_rss_mb: float
    # CPU over the throughput window, in cores (CPU seconds / wall seconds): the process(es)
    # under test, and the broker serving them. With two cores, their sum is the ceiling.
    cpu_cores: float = 0.0
    broker_cpu_cores: float = 0.0
    # This scenario's CPU µs per event over the baseline's (a) in the same run.
    cpu_ratio_to_baseline: float = 0.0

    @property
    def cpu_us_per_event(self) -> float:
        """CPU time of the process(es) under test per event (µs), over the throughput
        window: cores times wall seconds, over events."""
        return self.cpu_cores / self.eps * 1e6 if self.eps else 0.0


def table(results: Sequence[Result]) -> str:
    """A markdown table, one row per scenario."""
    lines = ["| scenario | events | events/s | x baseline | p50 ms | p99 ms | peak RSS MB "
             "| CPU cores | broker CPU cores | CPU µs per event | CPU x baseline |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.name} | {r.events:,} | {r.eps:,.0f} | {r.ratio_to_baseline:.2f} | "
              f"{r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.peak_rss_mb:.0f} | {r.cpu_cores:.2f} | "
              f"{r.broker_cpu_cores:.2f} | {r.cpu_us_per_event:.1f} | "
              f"{r.cpu_ratio_to_baseline:.2f} |" for r in results]
    return "\n".join(lines)


def write_json(results: Sequence[Result], path: Path) -> None:
    """``[{name, events, eps, ratio_to_baseline, p50_ms, p99_ms, peak_rss_mb, cpu_cores,
    broker_cpu_cores, cpu_ratio_to_baseline, cpu_us_per_event}, …]``."""
    rows = [dict(asdict(r), cpu_us_per_event=r.cpu_us_per_event) for r in results]
    path.write_text(json.dumps(rows, indent=2) + "\n")


def write_plot(results: Sequence[Result], path: Path) -> None:
    """Throughput (bars) and latency p50/p99 (grouped bars) per scenario, as a PNG.

    Needs matplotlib: ``pip install -e '.[bench]'``.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    names = [r.name.split(":")[0] for r in results]
    xs = list(range(len(results)))
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(12, 4.5))
    left.bar(xs, [r.eps for r in results], color="tab:blue")
    left.set(title="throughput", ylabel="events/s")
    width = 0.4
    right.bar([x - width / 2 for x in xs], [r.p50_ms for r in results], width, label="p50")
    right.bar([x + width / 2 for x in xs], [r.p99_ms for r in results], width, label="p99")
    right.set(title="end-to-end latency at half load", ylabel="ms")
    right.legend()
    for axes in (left, right):
        axes.set_xticks(xs, names)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
