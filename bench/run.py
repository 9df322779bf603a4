"""End-to-end benchmark: govpipe against a bare aiokafka passthrough on the same broker.

    .venv/bin/python -m bench.run [--events 200000] [--processes 2] [--json FILE]
                                  [--plot FILE.png] [--latency-seconds 10]
                                  [--warmup-seconds 3] [--only a,b] [--profile DIR]
                                  [--set GOVPIPE_KEY=VALUE ...] [--experiment DIR]

Starts its own Kafka broker and OpenTelemetry Collector (tests/support/infra), then runs,
in turns, each on fresh topics (2 input partitions) and a fresh consumer group:
  a  baseline: bench.passthrough, consume → produce, no parsing, no signing
  b  govpipe, Kafka sink only, HMAC-SHA256
  c  govpipe, Kafka + stdout (/dev/null) + OTLP gRPC (to the Collector), HMAC-SHA256
  d  govpipe, Kafka sink only, Ed25519
  e  govpipe as b, ``--processes`` replicas in one group
  f  govpipe as b with sinks.kafka.exactly_once (a Kafka dead-letter in the same transactions)
  g  govpipe as b with source.require_signature: the producer signs every input record
     (bench/producer_signing.py, as pipeline.publisher does; a fresh nonce per record)
  p  the OpenTelemetry Collector: kafkareceiver (raw) → batch → kafkaexporter (raw, acks all)
  q  as p with the transform processor doing comparable work (bench/collector_kafka.py)
  x  only with ``--experiment DIR``: as b, with DIR first on govpipe's PYTHONPATH (a
     sitecustomize.py there can swap in experimental code, e.g. experiments/native_hotpath)
Throughput: N preloaded events; wall time from the first read (govpipe's /metrics, the
Collector's metrics, the baseline's own report) to the last broker ack (LogAppendTime of
the output topic). Every govpipe run must reject no record, and g must verify every
producer signature ok (its /metrics, read once each phase is out).
Latency: a paced producer at half the measured rate stamps its send time into each event's
attributes; latency = output LogAppendTime - send time, over the events sent after the
first ``--warmup-seconds`` (connection set-up and warm-up of a fresh process are not
steady-state latency). Peak RSS: VmHWM of the process(es). CPU cores: CPU seconds over the
throughput window (first read to all events out) per wall second, for the process(es)
under test and for the broker: on two cores their sum shows how much was left. CPU µs per
event: the process(es)' CPU seconds over that window per event, the number to compare
across scenarios on a loaded machine (a rate moves with the load far more).
``--profile DIR`` records a py-spy profile of each govpipe process over its throughput
window (bench/profile.py: collapsed stacks and a summary of the top functions).
The table goes to stdout, a progress line to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

from bench.collector_kafka import CollectorWorker
from bench.events import event_values
from bench.kafka_io import OutputTopic, paced_load, preload
from bench.procs import (
    GOVPIPE,
    GovpipeWorker,
    PassthroughWorker,
    Topics,
    Worker,
    check_accepted,
    cpu_seconds,
)
from bench.producer_signing import ProducerSigner
from bench.profile import Profiler
from bench.report import Result, table, write_json, write_plot
from bench.scenarios import Context, Progress, Scenario, govpipe_env, scenarios, signer_for
from tests.support.infra.collector import Collector
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import create_topics

PARTITIONS = 2
# LogAppendTime: an output record's timestamp is its broker ack. The initial rebalance
# delay lets replicas started together join the group's first generation together.
BROKER_PROPERTIES = {"log.message.timestamp.type": "LogAppendTime",
                     "group.initial.rebalance.delay.ms": "3000"}


async def fresh_topics(ctx: Context, label: str) -> Topics:
    """New input and output topics and a new group name."""
    tag = f"{label}-{uuid.uuid4().hex[:8]}"
    topics = Topics(ctx.bootstrap, f"in-{tag}", f"out-{tag}", f"g-{tag}")
    await create_topics(ctx.bootstrap, [topics.source, topics.output], partitions=PARTITIONS)
    return topics


def start_workers(scenario: Scenario, topics: Topics, ctx: Context) -> list[Worker]:
    """The scenario's process(es), each with its own work directory."""
    workers: list[Worker] = []
    for index in range(scenario.processes):
        work = Path(tempfile.mkdtemp(prefix=f"{scenario.key}{index}-", dir=ctx.work))
        if scenario.baseline:
            workers.append(PassthroughWorker.start(topics, work))
        elif scenario.collector:
            workers.append(CollectorWorker.start(topics, work, scenario.collector == "transform"))
        else:
            workers.append(GovpipeWorker.start(govpipe_env(scenario, topics, ctx, work), work))
    return workers


async def first_read(workers: Sequence[Worker]) -> float:
    """The earliest first-read time over the workers (a replica may get no partition)."""
    tasks = [asyncio.create_task(w.first_consume()) for w in workers]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return min(task.result() for task in done)


async def stop_all(workers: Sequence[Worker]) -> float:
    """Peak RSS (max over the workers, MiB), then SIGTERM each and wait."""
    peak = max(w.peak_rss_mb() for w in workers)
    await asyncio.gather(*(w.stop() for w in workers))
    return peak


@dataclass(frozen=True)
class Throughput:
    """The throughput phase of one scenario."""

    eps: float
    peak_rss_mb: float
    cpu_cores: float
    broker_cpu_cores: float


def start_profilers(scenario: Scenario, workers: Sequence[Worker], ctx: Context
                    ) -> list[Profiler]:
    """With ``--profile DIR``: py-spy on each govpipe worker, to ``DIR/<key><n>.txt``."""
    if ctx.profile_dir is None or scenario.baseline or scenario.collector:
        return []
    return [Profiler(w.pid, ctx.profile_dir / f"{scenario.key}{n}.txt")
            for n, w in enumerate(workers)]


def _cpu(workers: Sequence[Worker], ctx: Context) -> tuple[float, float]:
    """CPU seconds so far: the workers together, and the broker."""
    broker = cpu_seconds(ctx.broker_pid) if ctx.broker_pid is not None else 0.0
    return sum(w.cpu_seconds() for w in workers), broker


async def all_out(out: OutputTopic, scenario: Scenario, workers: Sequence[Worker],
                  expected: int, ctx: Context, timeout_s: float) -> None:
    """Wait for ``expected`` records on the output; past ``timeout_s``, an error that
    names what govpipe rejected, if it rejected any (they never come out)."""
    try:
        await out.wait_for(expected, ctx.progress, timeout_s)
    except TimeoutError:
        await check_accepted(workers, expected, scenario.signed_input)
        raise


async def throughput(scenario: Scenario, ctx: Context, values: Sequence[bytes]) -> Throughput:
    """Events/s, peak RSS and CPU use draining ``values`` preloaded on a fresh input topic.
    CPU is sampled at the first read and once every event is out."""
    topics = await fresh_topics(ctx, f"{scenario.key}-tp")
    await preload(ctx.bootstrap, topics.source, values, PARTITIONS, ctx.progress,
                  signer_for(scenario, ctx))
    workers = start_workers(scenario, topics, ctx)
    try:
        started = await first_read(workers)
        profilers = start_profilers(scenario, workers, ctx)
        cpu_start, clock_start = _cpu(workers, ctx), time.monotonic()
        async with OutputTopic(ctx.bootstrap, topics.output, PARTITIONS) as out:
            await all_out(out, scenario, workers, len(values), ctx,
                          timeout_s=60 + len(values) / 500)
            cpu_end, clock_end = _cpu(workers, ctx), time.monotonic()
            finished = await out.last_ack_ms() / 1000
        await check_accepted(workers, len(values), scenario.signed_input)
        for profiler in profilers:
            ctx.progress(f"profile summary: {profiler.stop()}")
    finally:
        peak = await stop_all(workers)
    wall = clock_end - clock_start
    return Throughput(len(values) / (finished - started), peak,
                      (cpu_end[0] - cpu_start[0]) / wall, (cpu_end[1] - cpu_start[1]) / wall)


async def latency(scenario: Scenario, ctx: Context, rate: float, count: int
                  ) -> tuple[list[float], float]:
    """(latencies ms, peak RSS MiB) for ``count`` events offered at ``rate`` per second."""
    topics = await fresh_topics(ctx, f"{scenario.key}-lat")
    workers = start_workers(scenario, topics, ctx)
    try:
        await asyncio.gather(*(w.wait_ready() for w in workers))
        ctx.progress(f"latency: {count:,} events at {rate:,.0f}/s")
        await paced_load(ctx.bootstrap, topics.source, rate, count, signer_for(scenario, ctx))
        async with OutputTopic(ctx.bootstrap, topics.output, PARTITIONS) as out:
            await all_out(out, scenario, workers, count, ctx, timeout_s=120)
            found = await out.latencies_ms(count, ctx.warmup_s)
        await check_accepted(workers, count, scenario.signed_input)
    finally:
        peak = await stop_all(workers)
    return found, peak


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (NaN for none: with few events, a fast
    scenario sends them all inside the warm-up)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


async def measure(scenario: Scenario, ctx: Context, values: Sequence[bytes],
                  latency_s: float, baseline: Result | None) -> Result:
    """Both phases of one scenario; ratios against ``baseline`` (itself when None)."""
    ctx.progress.scenario = scenario.name
    measured = await throughput(scenario, ctx, values)
    eps = measured.eps
    rate = eps / 2
    count = max(1000, min(len(values), int(rate * (latency_s + ctx.warmup_s))))
    found, rss_lat = await latency(scenario, ctx, rate, count)
    ctx.progress(f"{eps:,.0f} events/s, p99 {percentile(found, 0.99):.1f} ms")
    result = Result(scenario.name, len(values), eps, eps / (baseline.eps if baseline else eps),
                    percentile(found, 0.50), percentile(found, 0.99),
                    max(measured.peak_rss_mb, rss_lat), measured.cpu_cores,
                    measured.broker_cpu_cores)
    base_cpu = (baseline or result).cpu_us_per_event
    return replace(result, cpu_ratio_to_baseline=result.cpu_us_per_event / base_cpu
                   if base_cpu else 0.0)


async def run_all(chosen: Sequence[Scenario], ctx: Context, events: int,
                  latency_s: float) -> list[Result]:
    """Every chosen scenario in turn; ratios against the baseline (a runs first)."""
    values = event_values(events)
    results: list[Result] = []
    baseline: Result | None = None
    for scenario in chosen:
        result = await measure(scenario, ctx, values, latency_s, baseline)
        if scenario.baseline:
            baseline = result
        results.append(result)
    sys.stderr.write("\n")
    return results


def keygen(work: Path) -> Path:
    """An Ed25519 private key made by `govpipe keygen`."""
    path = work / "ed25519.pem"
    subprocess.run([str(GOVPIPE), "keygen", "--alg", "ed25519", "--out", str(path)],
                   check=True, capture_output=True)
    return path


def _override(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("GOVPIPE_"):
        raise argparse.ArgumentTypeError(f"expected GOVPIPE_<SECTION>__<KEY>=VALUE: {text!r}")
    return name, value


def _scenario_lines() -> str:
    """The first line of the module docstring and its list of scenarios, for --help."""
    lines = (__doc__ or "").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Starts its own"))
    end = next(i for i, line in enumerate(lines) if line.startswith("Throughput:"))
    return "\n".join([lines[0], "", *lines[start:end]])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=_scenario_lines(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--processes", type=int, default=2,
                        help="replicas in scenario e (1: skip e)")
    parser.add_argument("--latency-seconds", type=float, default=10.0,
                        help="how long the measured paced load lasts (at most --events)")
    parser.add_argument("--warmup-seconds", type=float, default=3.0,
                        help="paced load sent before the measured part, not counted")
    parser.add_argument("--only", default="", help="comma-separated scenario keys (a-g, p, "
                        "q; see above), e.g. a,b")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="GOVPIPE_KEY=VALUE",
                        type=_override, dest="overrides",
                        help="a setting for every govpipe run (repeatable), e.g. "
                             "GOVPIPE_SINKS__KAFKA__BATCH_SIZE=1000")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy profile of each govpipe throughput phase into DIR")
    parser.add_argument("--experiment", type=Path, metavar="DIR",
                        help="add scenario x: b with DIR first on govpipe's PYTHONPATH")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and print the table."""
    args = parse_args(argv)
    chosen = [s for s in scenarios(args.processes, args.experiment)
              if not args.only or s.key in args.only.split(",")]
    started = time.monotonic()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="govpipe-bench-")))
        collector = stack.enter_context(Collector())
        broker = stack.enter_context(KafkaBroker(extra_properties=BROKER_PROPERTIES))
        ctx = Context(broker.bootstrap, collector.grpc_endpoint, work,
                      base64.b64encode(secrets.token_bytes(32)).decode(), keygen(work),
                      ProducerSigner.with_key_file(work / "inbound.key"),
                      work / "inbound.key", Progress(), args.warmup_seconds, broker.pid,
                      args.profile, tuple(args.overrides))
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        results = asyncio.run(run_all(chosen, ctx, args.events, args.latency_seconds))
    print(table(results))
    print(f"\n{args.events:,} events per scenario; {os.cpu_count()} CPUs; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{time.monotonic() - started:.0f}s")
    if args.json:
        write_json(results, args.json)
    if args.plot:
        write_plot(results, args.plot)


if __name__ == "__main__":
    main()
