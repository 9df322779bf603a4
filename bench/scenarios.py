"""The scenarios of bench/run.py (the rows of its table), what every measurement shares,
and how each scenario configures `govpipe run`."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.procs import Topics
from bench.producer_signing import ProducerSigner


@dataclass(frozen=True)
class Scenario:
    """One row of the table."""

    key: str
    name: str
    sinks: tuple[str, ...] = ("kafka",)
    alg: str = "HMAC-SHA256"
    processes: int = 1
    baseline: bool = False
    collector: str = ""  # "raw" (p) or "transform" (q): the Collector instead of govpipe
    # Output, dead-letter and offsets in one transaction per partition and commit. The
    # output records are sent when their transaction runs (at the commit interval), so
    # their append time, and so the latency, is about when a read_committed reader sees
    # them (bench/exactly_once.py measures that visibility directly).
    exactly_once: bool = False
    # `source.require_signature`: the producer signs every input record (a fresh nonce each).
    signed_input: bool = False
    pythonpath: str = ""  # put first on govpipe's PYTHONPATH (scenario x, an experiment)


def scenarios(processes: int, experiment: Path | None = None) -> list[Scenario]:
    """The scenarios a-g (e only with more than one process), p and q; x with an
    ``experiment`` directory."""
    found = [
        Scenario("a", "a: baseline passthrough", baseline=True),
        Scenario("b", "b: govpipe kafka, HMAC"),
        Scenario("c", "c: govpipe kafka+stdout+otlp, HMAC", ("kafka", "stdout", "otlp")),
        Scenario("d", "d: govpipe kafka, Ed25519", alg="Ed25519"),
    ]
    if processes > 1:
        found.append(Scenario("e", f"e: govpipe kafka, HMAC, {processes} replicas",
                              processes=processes))
    found += [Scenario("f", "f: govpipe kafka exactly-once, HMAC", exactly_once=True),
              Scenario("g", "g: govpipe kafka, HMAC, producer signatures required",
                       signed_input=True),
              Scenario("p", "p: otelcol kafka raw → batch → kafka", collector="raw"),
              Scenario("q", "q: otelcol as p + transform (parse, map, regex, SHA256)",
                       collector="transform")]
    if experiment is not None:
        found.append(Scenario("x", f"x: as b, experiment {experiment}",
                              pythonpath=str(experiment.resolve())))
    return found


class Progress:
    """One overwritten status line on stderr."""

    def __init__(self) -> None:
        self.scenario = ""

    def __call__(self, message: str) -> None:
        """Show ``message`` for the current scenario."""
        sys.stderr.write(f"\r\033[K[{self.scenario}] {message}")
        sys.stderr.flush()


@dataclass(frozen=True)
class Context:
    """What every measurement shares: the peers, keys and a work directory."""

    bootstrap: str
    otlp_endpoint: str
    work: Path
    hmac_key: str
    ed25519_key: Path
    producer_signer: ProducerSigner  # signs g's input; its key is in inbound_key_file
    inbound_key_file: Path
    progress: Progress
    warmup_s: float = 0.0
    broker_pid: int | None = None
    profile_dir: Path | None = None  # py-spy profiles of govpipe's throughput phase
    overrides: tuple[tuple[str, str], ...] = ()  # GOVPIPE_* settings for every govpipe run


def govpipe_env(scenario: Scenario, topics: Topics, ctx: Context, work: Path) -> dict[str, str]:
    """`govpipe run` configured by GOVPIPE_* overrides for ``scenario``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVPIPE_")}
    env.update({
        "GOVPIPE_SOURCE__KIND": "kafka", "GOVPIPE_KAFKA__BOOTSTRAP_SERVERS": topics.bootstrap,
        "GOVPIPE_SOURCE__TOPIC": topics.source, "GOVPIPE_SOURCE__GROUP_ID": topics.group,
        "GOVPIPE_SERVER__LISTEN": "127.0.0.1:0", "GOVPIPE_DEADLETTER__KIND": "file",
        "GOVPIPE_DEADLETTER__PATH": str(work / "dlq"),
        "GOVPIPE_SINKS__KAFKA__TOPIC": topics.output,
        "GOVPIPE_SINKS__OTLP__ENDPOINT": ctx.otlp_endpoint,
        "GOVPIPE_SINKS__OTLP__PROTOCOL": "grpc",
    })
    for sink in ("kafka", "stdout", "otlp"):
        env[f"GOVPIPE_SINKS__{sink.upper()}__ENABLED"] = str(sink in scenario.sinks).lower()
    if scenario.exactly_once:  # needs the dead-letter in the same Kafka transactions
        env.update({"GOVPIPE_SINKS__KAFKA__EXACTLY_ONCE": "true",
                    "GOVPIPE_DEADLETTER__KIND": "kafka",
                    "GOVPIPE_DEADLETTER__TOPIC": f"{topics.source}.dlq"})
    if scenario.signed_input:
        env.update({"GOVPIPE_SOURCE__REQUIRE_SIGNATURE": "true",
                    "GOVPIPE_SOURCE__INBOUND_KEY_FILE": str(ctx.inbound_key_file)})
    if scenario.alg == "Ed25519":
        env.update({"GOVPIPE_SIGNING__ALG": "Ed25519",
                    "GOVPIPE_SIGNING__KEY_FILE": str(ctx.ed25519_key)})
    else:
        env["GOVPIPE_SIGNING_KEY"] = ctx.hmac_key
    env.update(ctx.overrides)
    if scenario.pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [scenario.pythonpath,
                                                          env.get("PYTHONPATH")]))
    return env


def signer_for(scenario: Scenario, ctx: Context) -> ProducerSigner | None:
    """What signs the scenario's input (g), or None."""
    return ctx.producer_signer if scenario.signed_input else None
