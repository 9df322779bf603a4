"""An Agent OS app that publishes its governance events through govpipe.

A kernel with real `GovernancePolicy` checks (a blocked pattern, a tool-call budget,
checkpoints, drift detection) runs an agent's tool calls; `publish_kernel_events` bridges the
kernel's callbacks to a `GovernanceEventProcessor` whose sink is govpipe's `AgentOsSink`: each
event goes into a durable spool at once and reaches the `governance.events` topic, signed,
whenever the broker is there. Run `govpipe run` with `source.require_signature = true` and the
same key to receive them.

    govpipe keygen --alg hmac --out inbound.key
    python examples/agent_os_app.py --bootstrap-servers 127.0.0.1:9092 \\
        --sign-key inbound.key --sender demo-agent --calls 200 --rate 50

At the end it prints one JSON line: the processor's counters and the publisher's.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from pipeline.publisher import AgentOsSink
from pipeline.publisher.agent_os import publish_kernel_events
from pipeline.publisher.results import agent_os_import

with agent_os_import():
    from agent_os.integrations.base import BaseIntegration, GovernancePolicy


class DemoKernel(BaseIntegration):
    """The smallest Agent OS kernel: governs calls, wraps nothing."""

    def wrap(self, agent: Any) -> Any:
        return agent

    def unwrap(self, governed_agent: Any) -> Any:
        return governed_agent


def main() -> None:
    args = _arguments()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    registry = CollectorRegistry()
    if args.metrics_port:
        start_http_server(args.metrics_port, "127.0.0.1", registry)  # govpipe_publisher_*
    sink = AgentOsSink(args.bootstrap_servers, args.topic, spool_dir=args.spool_dir,
                       sign_key=args.sign_key, sender=args.sender, registry=registry)
    kernel = DemoKernel(policy=GovernancePolicy(
        name="demo", max_tool_calls=args.budget, blocked_patterns=["rm -rf"],
        checkpoint_frequency=5))
    processor = publish_kernel_events(kernel, sink, schedule_delay_ms=50)
    _run_agent(kernel, args.agent_id, args.calls, args.rate)
    flushed = processor.force_flush(args.flush_ms)
    print(json.dumps({"phase": "calls_done", "flushed": flushed, **_counts(processor, registry,
                                                                          args.topic)}),
          flush=True)
    threading.Event().wait(args.linger_s)  # a test kills the app here
    closed = processor.shutdown(args.shutdown_ms)
    print(json.dumps({"phase": "shut_down", "closed": closed, **_counts(processor, registry,
                                                                        args.topic)}),
          flush=True)


def _run_agent(kernel: DemoKernel, agent_id: str, calls: int, rate: float) -> None:
    """`calls` tool calls at `rate` per second; every 7th tries a blocked command."""
    pace = threading.Event()
    started = time.monotonic()
    context = kernel.create_context(agent_id)
    for number in range(calls):
        command = "rm -rf /tmp/cache" if number % 7 == 3 else f"search docs {number}"
        allowed, _ = kernel.pre_execute(context, {"input": command, "call": number})
        if allowed:
            kernel.post_execute(context, f"result {number}")
        if rate > 0:
            pace.wait(max(0.0, started + (number + 1) / rate - time.monotonic()))


def _counts(processor: Any, registry: CollectorRegistry, topic: str) -> dict[str, float]:
    def publisher(name: str) -> float:
        return registry.get_sample_value(f"govpipe_publisher_{name}", {"topic": topic}) or 0.0

    return {"submitted": processor.submitted_count, "delivered": processor.delivered_count,
            "failed": processor.failed_count, "dropped": processor.dropped_count,
            "spooled": publisher("spooled_total"), "recovered": publisher("recovered_total"),
            "acknowledged": publisher("acknowledged_total"),
            "spool_entries": publisher("spool_entries")}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="governance.events")
    parser.add_argument("--spool-dir", type=Path, default=Path("govpipe-spool"))
    parser.add_argument("--sign-key", type=Path, help="inbound key file (govpipe keygen)")
    parser.add_argument("--sender", default="", help="agt-sender (per-sender key files)")
    parser.add_argument("--agent-id", default="demo-agent")
    parser.add_argument("--calls", type=int, default=100, help="tool calls to make")
    parser.add_argument("--rate", type=float, default=50.0, help="calls per second (0: max)")
    parser.add_argument("--budget", type=int, default=1_000_000, help="max_tool_calls")
    parser.add_argument("--flush-ms", type=int, default=5000)
    parser.add_argument("--linger-s", type=float, default=0.0)
    parser.add_argument("--shutdown-ms", type=int, default=10000)
    parser.add_argument("--metrics-port", type=int, default=0)
    return parser.parse_args()


if __name__ == "__main__":
    main()
