"""The kernel bridge: a real Agent OS kernel's callbacks become GovernanceEvents on a
processor, mapped field by field, and a callback never raises into the kernel."""

from __future__ import annotations

from typing import Any

from pipeline.publisher.agent_os import KernelBridge, governance_event
from pipeline.publisher.results import agent_os_import
from tests.support.agent_os import GovernedKernel

with agent_os_import():
    from agent_os.event_sink import GovernanceEvent, GovernanceEventKind


class RecordingProcessor:
    def __init__(self) -> None:
        self.events: list[GovernanceEvent] = []

    def on_event(self, event: GovernanceEvent) -> None:
        self.events.append(event)


def test_every_kernel_callback_becomes_an_event() -> None:
    processor = RecordingProcessor()
    kernel = GovernedKernel(budget=5)
    bridge = KernelBridge(processor).attach(kernel)  # type: ignore[arg-type]
    for number in range(20):
        kernel.call_tool(number)
    kinds = {event.kind for event in processor.events}
    assert {GovernanceEventKind.POLICY_CHECK, GovernanceEventKind.TOOL_CALL_BLOCKED,
            GovernanceEventKind.POLICY_VIOLATION, GovernanceEventKind.CHECKPOINT_CREATED} <= kinds
    assert bridge.bridged == len(processor.events)
    assert {event.agent_id for event in processor.events} == {"test-agent"}
    blocked = next(e for e in processor.events if e.kind is GovernanceEventKind.TOOL_CALL_BLOCKED)
    assert (blocked.decision, blocked.severity) == ("deny", "warning")
    assert blocked.attributes["pattern"] == "rm -rf"
    assert blocked.to_cloudevent()["type"] == "ai.agentos.tool.blocked"


def test_fields_timestamps_and_attributes_are_mapped() -> None:
    event = governance_event("drift_detected", {
        "agent_id": "a", "timestamp": "2026-01-02T03:04:05+00:00", "reason": "drift",
        "drift_score": 0.2, "session_id": "s1"})
    assert event.kind is GovernanceEventKind.ANOMALY_DETECTED
    assert (event.occurred_at, event.reason, event.session_id, event.decision) == (
        "2026-01-02T03:04:05+00:00", "drift", "s1", "flag")
    assert event.attributes == {"drift_score": 0.2, "kernel_event": "drift_detected"}
    naive = governance_event("checkpoint_created", {"agent_id": "a",
                                                    "timestamp": "2026-01-02T03:04:05"})
    assert naive.attributes["kernel_timestamp"] == "2026-01-02T03:04:05"
    assert naive.occurred_at.endswith("+00:00")


def test_a_callback_that_cannot_be_mapped_is_logged_not_raised(caplog: Any) -> None:
    processor = RecordingProcessor()
    bridge = KernelBridge(processor)  # type: ignore[arg-type]
    bridge._on_kernel_event("policy_check", {"agent_id": "a", "attributes": "not a dict",
                                             "latency_ms": "x" * 3})
    bridge._on_kernel_event("policy_check", "not a dict")
    assert bridge.bridged == len(processor.events)
    assert processor.events[-1].attributes["data"] == "not a dict"
