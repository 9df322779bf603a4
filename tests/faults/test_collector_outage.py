"""Issue 8.2: the OpenTelemetry Collector down for 30 s under a steady load.

`govpipe run` fans out to stdout, Kafka and OTLP. While the Collector is down the OTLP
breaker opens (gauge 2) and OTLP events fail fast to the dead-letter topic; stdout and
Kafka keep their throughput (medians of 1 s windows, during vs before: less than 20 % drop);
once the Collector is back the breaker half-opens and closes, and OTLP delivers again.
Every id is on stdout and on the Kafka topic, and for OTLP either at the Collector or in
the dead-letter. Last step: `govpipe replay --sink otlp` puts the dead-lettered events back
on the input, and the Collector then has every id.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from pathlib import Path

import pytest

from tests.support.events import copies_by_id, event_ids, event_value, strict_json
from tests.support.identities import assert_reconciled
from tests.support.infra.collector import Collector
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import consume_to_end, create_topics, produce_paced
from tests.support.metrics import RateWindows, metric_value
from tests.support.processes import GOVPIPE, GovpipeProcess, run_env
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

RATE = 1_000            # events per second offered by the producer
BEFORE_S, OUTAGE_S, AFTER_S = 12.0, 30.0, 15.0
FLOWING = ("stdout", "kafka")


async def _sample(daemon: GovpipeProcess, windows: RateWindows, done: asyncio.Event) -> None:
    while not done.is_set():
        text = await daemon.scrape()
        assert_reconciled(text)  # every scrape, under load and during the outage
        windows.add({**{sink: metric_value(text, "govpipe_sink_delivered_total", sink=sink)
                        for sink in FLOWING},
                     "otlp_state": metric_value(text, "govpipe_sink_circuit_state",
                                                sink="otlp")})
        await asyncio.sleep(1.0)


async def test_collector_down_30s_breaker_isolates_otlp(
        own_broker: KafkaBroker, own_collector: Collector, tmp_path: Path) -> None:
    bootstrap, topic, out_topic, dlq = own_broker.bootstrap, "in", "out", "dlq"
    await create_topics(bootstrap, [topic, out_topic, dlq], partitions=2)
    total = int(RATE * (BEFORE_S + OUTAGE_S + AFTER_S))
    env = run_env(
        bootstrap, topic, f"g-{uuid.uuid4().hex[:8]}", tmp_path,
        GOVPIPE_DEADLETTER__KIND="kafka", GOVPIPE_DEADLETTER__TOPIC=dlq,
        GOVPIPE_SINKS__KAFKA__ENABLED="true", GOVPIPE_SINKS__KAFKA__TOPIC=out_topic,
        GOVPIPE_SINKS__OTLP__ENABLED="true",
        GOVPIPE_SINKS__OTLP__ENDPOINT=own_collector.grpc_endpoint,
        GOVPIPE_SINKS__OTLP__TIMEOUT_S="1", GOVPIPE_SINKS__OTLP__RETRY__MAX_ATTEMPTS="1",
        GOVPIPE_SINKS__OTLP__BREAKER__FAILURE_THRESHOLD="3",
        GOVPIPE_SINKS__OTLP__BREAKER__COOLDOWN_S="5",
        GOVPIPE_SINKS__OTLP__BREAKER__SUCCESS_THRESHOLD="2")
    daemon = GovpipeProcess(env, tmp_path, "run")
    windows, done = RateWindows(), asyncio.Event()
    expected = event_ids(total, "o")
    try:
        await daemon.start()
        stream = asyncio.create_task(produce_paced(
            bootstrap, topic, [event_value(n, "o") for n in range(total)], per_second=RATE))
        sampler = asyncio.create_task(_sample(daemon, windows, done))
        started = time.monotonic()
        await asyncio.sleep(BEFORE_S)
        own_collector.stop()
        stopped = time.monotonic()
        await eventually(lambda: windows.samples[-1][1]["otlp_state"] == 2, 20, 0.2)
        opened = time.monotonic()
        await asyncio.sleep(OUTAGE_S - (opened - stopped))
        own_collector.start()
        restarted = time.monotonic()
        await eventually(lambda: windows.samples[-1][1]["otlp_state"] == 0, 30, 0.2)
        closed = time.monotonic()
        await stream
        done.set()
        await sampler
        outage_scrape = await daemon.settled_scrape()
        replayed = await _replay_otlp_dead_letters(env, tmp_path)
        await eventually(lambda: _collector_ids(own_collector) >= expected, 120, 0.5)
        final = await daemon.settled_scrape()
        assert await daemon.terminate() == 0
    finally:
        done.set()
        await daemon.ensure_stopped()

    # Throughput of the sinks that must keep flowing: warm-up excluded before, the breaker's
    # opening excluded during (it takes failure_threshold failed exports of 1 s).
    report = []
    for sink in FLOWING:
        before = statistics.median(windows.rates(sink, started + 3, stopped))
        during = statistics.median(windows.rates(sink, opened, restarted))
        whole = statistics.mean(windows.rates(sink, stopped, restarted))
        report.append(f"{sink}: before {before:.0f}/s, during {during:.0f}/s (median), "
                      f"mean over the whole outage {whole:.0f}/s")
        assert during >= 0.8 * before, report
    print(f"\ncollector down {restarted - stopped:.1f}s, breaker open after "
          f"{opened - stopped:.1f}s, closed {closed - restarted:.1f}s after restart; "
          + "; ".join(report))

    assert_reconciled(final)
    transitions = {to: metric_value(outage_scrape, "govpipe_sink_circuit_transitions_total",
                                    sink="otlp", to=to) for to in ("open", "half_open", "closed")}
    assert all(transitions[to] >= 1 for to in transitions), transitions
    failed = metric_value(outage_scrape, "govpipe_sink_failed_total", sink="otlp")
    delivered = metric_value(outage_scrape, "govpipe_sink_delivered_total", sink="otlp")
    assert metric_value(outage_scrape, "govpipe_sink_failed_total", sink="otlp",
                        reason="circuit_open") > 0
    assert metric_value(outage_scrape, "govpipe_deadletter_written_total",
                        origin="otlp") == failed
    # After the replay nothing more failed, and the dead-lettered events came back once.
    assert metric_value(final, "govpipe_sink_failed_total", sink="otlp") == failed
    assert replayed == failed
    assert metric_value(final, "govpipe_source_records_total") == total + failed

    assert set(copies_by_id(daemon.lines())) == expected
    on_topic = await consume_to_end(bootstrap, out_topic)
    assert set(copies_by_id(r.value for r in on_topic)) == expected
    entries = [strict_json(r.value) for r in await consume_to_end(bootstrap, dlq)]
    entries = [e for e in entries if "origin" in e]  # replay's markers share the topic
    assert len(entries) == failed
    dead_lettered = {e["event"]["id"] for e in entries}
    assert all(e["sink"] == "otlp" for e in entries)
    assert len(dead_lettered) == failed
    assert _collector_ids(own_collector) == expected
    # Every copy of an event, first delivery or replayed, says the same on stdout; only
    # the signed source position (a replayed copy was read at a new offset) and so the
    # signature differ.
    assert all(len({_without_position(copy) for copy in copies}) == 1
               for copies in copies_by_id(daemon.lines()).values())
    print(f"otlp: delivered {delivered:.0f}, dead-lettered {failed:.0f}, "
          f"transitions {transitions}; govpipe replay put back {replayed:.0f}")


def _without_position(body: bytes) -> bytes:
    event = strict_json(body)
    for name in ("agttopic", "agtpartition", "agtoffset", "agtsignature"):
        event.pop(name)
    return json.dumps(event, sort_keys=True).encode()


async def _replay_otlp_dead_letters(env: dict[str, str], tmp_path: Path) -> float:
    """`govpipe replay --sink otlp` with the daemon's own settings; returns how many."""
    proc = await asyncio.create_subprocess_exec(
        str(GOVPIPE), "replay", "--sink", "otlp", cwd=tmp_path, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    summary = [line for line in err.decode().splitlines() if line.startswith("replayed ")]
    assert summary, err.decode()[-2000:]
    return float(summary[0].split()[1].rstrip(","))


def _collector_ids(collector: Collector) -> set[str]:
    return {str(r.attributes["cloudevents.event_id"]) for r in collector.log_records()}
