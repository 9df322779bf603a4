"""AgentOsSink with no broker at all: it builds, accepts into the spool at once, returns Agent
OS's own results, honours its timeouts, and leaves no thread behind."""

from __future__ import annotations

import math
import socket
import threading
import time
from pathlib import Path

import pytest
from agent_os.event_sink import GovernanceEvent, GovernanceEventProcessor, SinkExportResult
from prometheus_client import CollectorRegistry

from pipeline.publisher import AgentOsSink, ExportResult, SpoolError, SpoolOptions
from pipeline.signing.signers import SigningKeyError

KEY = bytes(range(100, 132))


@pytest.fixture
def dead_bootstrap() -> str:
    """A loopback port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def publisher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "govpipe-publisher"]


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"topic": "t", **labels}) or 0.0


def test_emit_returns_agent_os_results_and_spools_while_the_broker_is_down(
        dead_bootstrap: str, tmp_path: Path) -> None:
    assert ExportResult is SinkExportResult
    registry = CollectorRegistry()
    sink = AgentOsSink(dead_bootstrap, "t", spool_dir=tmp_path / "spool", sign_key=KEY,
                       sender="kernel", registry=registry)
    good = [GovernanceEvent(agent_id="a", action="x") for _ in range(3)]
    assert sink.emit(good) is SinkExportResult.SUCCESS
    bad = GovernanceEvent(agent_id="a", latency_ms=math.nan)
    assert sink.emit([good[0], bad]) is SinkExportResult.FAILURE  # NaN refused alone
    assert sample(registry, "govpipe_publisher_spooled_total") == 4
    assert sample(registry, "govpipe_publisher_refused_total", reason="not_finite") == 1
    assert sample(registry, "govpipe_publisher_spool_entries") == 4
    assert sink.force_flush(200) is False  # nothing can be acknowledged
    started = time.monotonic()
    assert sink.shutdown(1000) is False
    print(f"\nshutdown(1000) with the broker down took {time.monotonic() - started:.2f}s")
    assert sink.emit(good) is SinkExportResult.DROPPED
    assert publisher_threads() == []
    # Nothing lost: a new sink on the same spool finds the four events waiting.
    again = AgentOsSink(dead_bootstrap, "t", spool_dir=tmp_path / "spool",
                        registry=(registry2 := CollectorRegistry()))
    assert sample(registry2, "govpipe_publisher_recovered_total") == 4
    again.shutdown(0)


def test_a_processor_counts_spooled_batches_as_delivered(dead_bootstrap: str,
                                                         tmp_path: Path) -> None:
    sink = AgentOsSink(dead_bootstrap, "t", spool_dir=tmp_path / "spool")
    processor = GovernanceEventProcessor(schedule_delay_ms=10)
    processor.add_sink(sink)
    for n in range(250):
        processor.on_event(GovernanceEvent(agent_id=f"a{n % 3}", action="x"))
    assert processor.force_flush(1000) is False  # spooled, not acknowledged
    processor.shutdown(500)
    assert (processor.submitted_count, processor.delivered_count, processor.dropped_count,
            processor.failed_count) == (250, 250, 0, 0)


def test_a_bad_key_or_a_spool_in_use_fails_construction_without_a_thread(
        dead_bootstrap: str, tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError):
        AgentOsSink(dead_bootstrap, "t", spool_dir=tmp_path / "a", sign_key=b"short")
    first = AgentOsSink(dead_bootstrap, "t", spool_dir=tmp_path / "b")
    with pytest.raises(SpoolError, match="in use"):
        AgentOsSink(dead_bootstrap, "t", spool=SpoolOptions(tmp_path / "b"))
    first.shutdown(0)
    assert publisher_threads() == []


def test_a_full_spool_refuses_and_counts(dead_bootstrap: str, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    sink = AgentOsSink(dead_bootstrap, "t", registry=registry,
                       spool=SpoolOptions(tmp_path, max_bytes=4096, max_event_bytes=1024))
    results = [sink.emit([GovernanceEvent(agent_id="a")] * 5) for _ in range(5)]
    assert SinkExportResult.FAILURE in results
    spooled = sample(registry, "govpipe_publisher_spooled_total")
    refused = sample(registry, "govpipe_publisher_refused_total", reason="spool_full")
    assert spooled + refused == 25
    assert refused > 0
    assert spooled == 5 * results.count(SinkExportResult.SUCCESS)
    sink.shutdown(0)
