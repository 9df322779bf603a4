"""A real Prometheus scrapes a real `govpipe run` (embedded default: stdin → stdout) while
input arrives in rounds; the test reads everything back through Prometheus's HTTP API, with
the very expressions config/alerts.yml records and alerts on."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest

from tests.ops.rules import recording_rules
from tests.support.events import EXAMPLES
from tests.support.infra.prometheus import Alert, Prometheus, Sample
from tests.support.processes import GOVPIPE, govpipe_env, listening_port, read_deadletters

pytestmark = pytest.mark.integration

T = TypeVar("T")
GOOD = [line.encode() for line in EXAMPLES.read_text(encoding="utf-8").splitlines()]
GARBAGE = {b"this is not json": "invalid_json", b"[1, 2, 3]": "not_object",
           b'{"hello": "world"}': "unknown_shape"}
ROUNDS = 3
IDENTITIES = sorted(name for name in recording_rules() if name.endswith("_identity_gap"))


@dataclass
class RunningGovpipe:
    """`govpipe run` with its stdin held open; stderr is drained so it never blocks."""

    proc: asyncio.subprocess.Process
    address: str
    logs: list[dict[str, object]] = field(default_factory=list)
    fed: int = 0

    async def feed(self, lines: list[bytes]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"".join(line + b"\n" for line in lines))
        await self.proc.stdin.drain()
        self.fed += len(lines)

    async def finish(self) -> int:
        """Close stdin (end of input) and wait for the exit code."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        return await asyncio.wait_for(self.proc.wait(), 30)


async def start_govpipe(cwd: Path, stdout: int, **overrides: str) -> RunningGovpipe:
    proc = await asyncio.create_subprocess_exec(
        str(GOVPIPE), "run", cwd=cwd, env=govpipe_env(secrets.token_bytes(32), **overrides),
        stdin=asyncio.subprocess.PIPE, stdout=stdout, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    try:
        port = await asyncio.wait_for(listening_port(proc.stderr), 30)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return RunningGovpipe(proc, f"127.0.0.1:{port}")


async def drain_logs(running: RunningGovpipe) -> None:
    assert running.proc.stderr is not None
    while line := await running.proc.stderr.readline():
        running.logs.append(json.loads(line))


async def eventually(check: Callable[[], Awaitable[T | None]], what: str,
                     timeout_s: float = 30.0) -> T:
    """Poll ``check`` until it returns something other than None (Prometheus is remote
    state: scrapes and rule evaluations happen on its clock, so there is nothing to await)."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                if (result := await check()) is not None:
                    return result
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"Prometheus never showed: {what}") from None


def of(samples: list[Sample], instance: str) -> list[Sample]:
    return [s for s in samples if s.labels.get("instance") == instance]


async def scraped_records(prom: Prometheus, instance: str, expected: int) -> None:
    async def check() -> bool | None:
        samples = of(await prom.query("govpipe_source_records_total"), instance)
        return True if samples and samples[0].value == expected else None
    await eventually(check, f"govpipe_source_records_total == {expected} on {instance}")


async def assert_identities_hold_now(prom: Prometheus, instance: str) -> None:
    """Each identity, as the rule's own expression and as its recorded series, is 0."""
    for name in IDENTITIES:
        raw = of(await prom.query(recording_rules()[name]), instance)
        assert raw, f"{name}: no series for {instance}"
        assert [s.value for s in raw] == [0.0] * len(raw), (name, raw)
        recorded = await eventually(
            lambda name=name: _present(prom, f'{name}{{instance="{instance}"}}'), name)
        assert [s.value for s in recorded] == [0.0] * len(recorded), (name, recorded)


async def _present(prom: Prometheus, expr: str) -> list[Sample] | None:
    return await prom.query(expr) or None


async def assert_identities_held_throughout(prom: Prometheus, instance: str) -> None:
    """Every evaluation of every identity since govpipe started recorded exactly 0."""
    for name in IDENTITIES:
        selector = f'{name}{{instance="{instance}"}}[10m]'
        for fn in ("min_over_time", "max_over_time"):
            samples = await prom.query(f"{fn}({selector})")
            assert samples, (fn, name)
            assert all(s.value == 0 for s in samples), (fn, name, samples)
        counts = await prom.query(f"count_over_time({selector})")
        assert counts, name
        assert min(s.value for s in counts) >= ROUNDS, (name, counts)


async def rates(prom: Prometheus, metric: str, instance: str, by: str) -> dict[str, float]:
    expr = f'sum by ({by}) (rate({metric}{{instance="{instance}"}}[1m]))'
    return {",".join(s.labels[key] for key in by.split(", ")): s.value
            for s in await prom.query(expr)}


async def active_alerts(prom: Prometheus, name: str) -> list[Alert] | None:
    found = [a for a in await prom.alerts() if a.name == name]
    return found or None


async def only_alerts(prom: Prometheus, names: set[str]) -> None:
    """Wait until exactly ``names`` are active: a gauge scraped mid-batch (in_flight > 0)
    may make a `for:` alert pending for one evaluation, which is not what is tested here."""
    async def check() -> bool | None:
        return True if {a.name for a in await prom.alerts()} == names else None
    await eventually(check, f"active alerts == {sorted(names)}")


async def feed_rounds(prom: Prometheus, running: RunningGovpipe, lines: list[bytes]) -> None:
    """ROUNDS times: write ``lines``, wait until Prometheus scraped them, check the
    identities; counters that first appear in round 1 then grow, so rate() sees them."""
    for _ in range(ROUNDS):
        await running.feed(lines)
        await scraped_records(prom, running.address, running.fed)
        await assert_identities_hold_now(prom, running.address)
        reconciliation = await active_alerts(prom, "GovpipeReconciliationBroken")
        assert reconciliation is None, reconciliation


async def test_prometheus_sees_reconciled_counters_rejections_and_their_alert(
        tmp_path: Path, prometheus: Prometheus) -> None:
    running = await start_govpipe(tmp_path, asyncio.subprocess.DEVNULL)
    logs = asyncio.create_task(drain_logs(running))
    instance = running.address
    try:
        prometheus.set_targets([instance])
        await scraped_records(prometheus, instance, 0)
        await feed_rounds(prometheus, running, GOOD + list(GARBAGE))

        rejected = await rates(prometheus, "govpipe_source_rejected_total", instance, "reason")
        assert set(rejected) == set(GARBAGE.values())
        assert all(rate > 0 for rate in rejected.values()), rejected
        delivered = await rates(prometheus, "govpipe_sink_delivered_total", instance, "sink")
        assert delivered["stdout"] > 0, delivered
        state = of(await prometheus.query('govpipe_sink_circuit_state{sink="stdout"}'), instance)
        assert [s.value for s in state] == [0.0]

        alerts = await eventually(
            lambda: active_alerts(prometheus, "GovpipeEventsRejected"), "GovpipeEventsRejected")
        assert {a.labels["reason"] for a in alerts} == set(GARBAGE.values())
        assert all(a.state in {"pending", "firing"} and a.labels["severity"] == "ticket"
                   for a in alerts)
        assert all(f"reason {a.labels['reason']}" in a.annotations["summary"] for a in alerts)
        await only_alerts(prometheus, {"GovpipeEventsRejected"})
        await assert_identities_held_throughout(prometheus, instance)
    finally:
        exit_code = await running.finish()
        await logs
    assert exit_code == 0
    assert running.logs[-1]["message"] == "govpipe stopped"
    assert running.logs[-1]["unsettled"] == 0


async def test_prometheus_sees_stdout_sink_failures_and_dead_letters(
        tmp_path: Path, prometheus: Prometheus) -> None:
    read_end, write_end = os.pipe()
    try:
        # The breaker stays closed here, so every failure is the sink's own broken pipe.
        running = await start_govpipe(
            tmp_path, write_end, GOVPIPE_SINKS__STDOUT__BREAKER__FAILURE_THRESHOLD="1000")
    finally:
        os.close(write_end)
        os.close(read_end)  # nobody reads govpipe's stdout: every write is a broken pipe
    logs = asyncio.create_task(drain_logs(running))
    instance = running.address
    try:
        prometheus.set_targets([instance])
        await scraped_records(prometheus, instance, 0)
        await feed_rounds(prometheus, running, GOOD)

        failed = await rates(prometheus, "govpipe_sink_failed_total", instance, "sink, reason")
        assert set(failed) == {"stdout,broken_pipe"}
        assert failed["stdout,broken_pipe"] > 0
        written = await rates(prometheus, "govpipe_deadletter_written_total", instance,
                              "origin")
        assert set(written) == {"stdout"}
        assert written["stdout"] > 0
        delivered = await rates(prometheus, "govpipe_sink_delivered_total", instance, "sink")
        assert delivered == {"stdout": 0.0}

        failing = await eventually(
            lambda: active_alerts(prometheus, "GovpipeSinkFailing"), "GovpipeSinkFailing")
        assert [(a.state, a.labels["sink"]) for a in failing] == [("pending", "stdout")]
        await only_alerts(prometheus, {"GovpipeSinkFailing"})
        await assert_identities_held_throughout(prometheus, instance)
    finally:
        exit_code = await running.finish()
        await logs
    assert exit_code == 0
    entries = read_deadletters(tmp_path / "deadletter")
    assert len(entries) == ROUNDS * len(GOOD)
    assert {(e["origin"], e["reason"]) for e in entries} == {("stdout", "broken_pipe")}


async def test_prometheus_sees_an_open_breaker_and_readyz_says_degraded(
        tmp_path: Path, prometheus: Prometheus) -> None:
    # /dev/full fails every write with ENOSPC: a retriable failure, which the breaker counts.
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        running = await start_govpipe(
            tmp_path, full, GOVPIPE_SINKS__STDOUT__BREAKER__FAILURE_THRESHOLD="2",
            GOVPIPE_SINKS__STDOUT__BREAKER__COOLDOWN_S="600",
            GOVPIPE_SINKS__STDOUT__RETRY__MAX_ATTEMPTS="1",
            GOVPIPE_SINKS__STDOUT__BATCH_SIZE="5")
    finally:
        os.close(full)
    logs = asyncio.create_task(drain_logs(running))
    instance = running.address
    try:
        prometheus.set_targets([instance])
        await scraped_records(prometheus, instance, 0)
        await feed_rounds(prometheus, running, GOOD)

        async def open_state() -> list[Sample] | None:
            found = of(await prometheus.query('govpipe_sink_circuit_state{sink="stdout"}'),
                       instance)
            return found if found and found[0].value == 2 else None

        await eventually(open_state, "govpipe_sink_circuit_state{sink=stdout} == 2")
        failed = await rates(prometheus, "govpipe_sink_failed_total", instance, "sink, reason")
        assert failed["stdout,circuit_open"] > 0
        opened = of(await prometheus.query(
            'govpipe_sink_circuit_transitions_total{sink="stdout",to="open"}'), instance)
        assert [s.value for s in opened] == [1.0]
        circuit = await eventually(
            lambda: active_alerts(prometheus, "GovpipeCircuitOpen"), "GovpipeCircuitOpen")
        assert [(a.state, a.labels["sink"]) for a in circuit] == [("pending", "stdout")]
        await assert_identities_held_throughout(prometheus, instance)
        ready = await readyz(instance)
        assert ready[0] == 200
        assert ready[1]["status"] == "degraded"
        sink = next(c for c in ready[1]["components"] if c["name"] == "sink:stdout")
        assert (sink["status"], sink["message"].split(";")[0]) == (
            "degraded", "circuit breaker open")
    finally:
        exit_code = await running.finish()
        await logs
    assert exit_code == 0
    reasons = {e["reason"] for e in read_deadletters(tmp_path / "deadletter")}
    assert reasons == {"io_error", "circuit_open"}


async def readyz(address: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(f"http://{address}/readyz") as answer:
        return answer.status, await answer.json()
