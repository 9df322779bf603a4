"""The bridge from an Agent OS kernel to govpipe: the kernel reports governance events only
as `kernel.on(GovernanceEventType, callback)` callbacks with a dict; this turns each into a
`GovernanceEvent` for a `GovernanceEventProcessor`, whose sinks (govpipe's `AgentOsSink`
among them) publish it.

    sink = AgentOsSink(bootstrap, "governance.events", spool_dir="spool", sign_key=key_file,
                       sender="billing-bot")
    processor = publish_kernel_events(kernel, sink)
    ...
    processor.shutdown(5000)

Needs Agent OS (agent-governance-toolkit-core) installed; the rest of govpipe does not.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from functools import partial
from typing import Any, Protocol

from pipeline.publisher.results import agent_os_import

with agent_os_import():
    from agent_os.event_sink import (
        GovernanceEvent,
        GovernanceEventKind,
        GovernanceEventProcessor,
        GovernanceEventSink,
    )
    from agent_os.integrations.base import GovernanceEventType

log = logging.getLogger(__name__)

# The kernel's callback types → Agent OS event kinds (drift has no kind of its own).
KIND_BY_KERNEL_EVENT: Mapping[str, GovernanceEventKind] = {
    "policy_check": GovernanceEventKind.POLICY_CHECK,
    "policy_violation": GovernanceEventKind.POLICY_VIOLATION,
    "tool_call_blocked": GovernanceEventKind.TOOL_CALL_BLOCKED,
    "checkpoint_created": GovernanceEventKind.CHECKPOINT_CREATED,
    "drift_detected": GovernanceEventKind.ANOMALY_DETECTED,
}
_DECISION = {"policy_check": "check", "policy_violation": "deny", "tool_call_blocked": "deny",
             "checkpoint_created": "record", "drift_detected": "flag"}
_SEVERITY = {"policy_violation": "warning", "tool_call_blocked": "warning",
             "drift_detected": "warning"}
# Callback keys that become event fields; every other key is kept as an attribute.
_FIELDS = ("agent_id", "agent_did", "session_id", "action", "resource", "decision", "reason",
           "policy_name", "severity", "trace_id", "span_id", "parent_span_id", "timestamp")


class Kernel(Protocol):
    """What the bridge needs of an Agent OS kernel (`BaseIntegration` and its adapters)."""

    def on(self, event_type: GovernanceEventType, callback: Any) -> None:
        """Register a callback for one event type."""


def governance_event(kernel_event: str, data: Mapping[str, Any]) -> GovernanceEvent:
    """The GovernanceEvent for one kernel callback (`kernel_event`: its type's value)."""
    kind = KIND_BY_KERNEL_EVENT.get(kernel_event, GovernanceEventKind.ANOMALY_DETECTED)
    attributes = {key: value for key, value in data.items() if key not in _FIELDS}
    attributes["kernel_event"] = kernel_event
    fields: dict[str, Any] = {
        "kind": kind,
        "agent_id": _text(data.get("agent_id")),
        "action": _text(data.get("action") or data.get("phase") or kernel_event),
        "decision": _text(data.get("decision") or _DECISION.get(kernel_event, "record")),
        "reason": _text(data.get("reason")),
        "severity": _text(data.get("severity") or _SEVERITY.get(kernel_event, "info")),
        "attributes": attributes,
    }
    for name in ("agent_did", "session_id", "resource", "policy_name", "trace_id", "span_id",
                 "parent_span_id"):
        if data.get(name):
            fields[name] = _text(data[name])
    occurred_at = _aware_timestamp(data.get("timestamp"))
    if occurred_at is not None:
        fields["occurred_at"] = occurred_at
    elif "timestamp" in data:  # naive or unreadable: keep it, but stamp a real time
        attributes["kernel_timestamp"] = data["timestamp"]
    return GovernanceEvent(**fields)


class KernelBridge:
    """Feeds a processor from a kernel's callbacks; never raises into the kernel."""

    def __init__(self, processor: GovernanceEventProcessor) -> None:
        self._processor = processor
        self.bridged = 0

    def attach(self, kernel: Kernel,
               kernel_events: Iterable[GovernanceEventType] = tuple(GovernanceEventType)
               ) -> KernelBridge:
        """Register a callback on `kernel` for each event type (all by default)."""
        for event_type in kernel_events:
            kernel.on(event_type, partial(self._on_kernel_event, event_type.value))
        return self

    def _on_kernel_event(self, kernel_event: str, data: Any) -> None:
        try:
            event = governance_event(kernel_event, data if isinstance(data, Mapping) else
                                     {"data": data})
        except Exception:
            log.exception("publisher: kernel event %s could not become a governance event; "
                          "not published", kernel_event)
            return
        self._processor.on_event(event)
        self.bridged += 1


def publish_kernel_events(kernel: Kernel, sink: GovernanceEventSink,
                          **processor_options: Any) -> GovernanceEventProcessor:
    """A processor with `sink`, fed by every callback of `kernel`. `processor_options` go
    to GovernanceEventProcessor (max_queue_size, schedule_delay_ms, max_batch_size…)."""
    processor = GovernanceEventProcessor(**processor_options)
    processor.add_sink(sink)
    KernelBridge(processor).attach(kernel)
    return processor


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _aware_timestamp(value: Any) -> str | None:
    """`value` when it is an RFC 3339 time with an offset (what the daemon accepts)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return value if parsed.tzinfo is not None else None
