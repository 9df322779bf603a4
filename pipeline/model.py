"""The values that flow through the pipeline: records in, signed events out, and the
governance event vocabulary they are named in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

# The governance event vocabulary: each Agent OS event kind and its CloudEvent type, which is
# TYPE_PREFIX + the suffix (a kind not listed here gets TYPE_PREFIX + "governance." + kind).
TYPE_PREFIX = "ai.agentos."
KIND_TYPES: Mapping[str, str] = {
    "policy_check": "policy.check",
    "policy_violation": "policy.violation",
    "tool_call_blocked": "tool.blocked",
    "prompt_injection_detected": "prompt_injection.detected",
    "identity_verified": "identity.verified",
    "identity_rejected": "identity.rejected",
    "resource_access": "resource.access",
    "escalation_requested": "escalation.requested",
    "checkpoint_created": "checkpoint.created",
    "anomaly_detected": "anomaly.detected",
    "mcp_tool_poisoning": "mcp.tool_poisoning",
    "content_violation": "content.violation",
}


@dataclass(frozen=True, slots=True)
class Position:
    """Where a record came from: a Kafka topic/partition/offset, or (kind "line") line
    `offset` of the input named `topic` (stdin or a file), with partition 0."""

    topic: str
    partition: int
    offset: int
    # Which assignment of the partition read it: settlements from before a revocation must
    # not count against records read after the partition came back.
    epoch: int = 0
    kind: Literal["kafka", "line"] = "kafka"

    def as_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


@dataclass(frozen=True, slots=True)
class Record:
    """One raw input record, exactly as read."""

    value: bytes
    position: Position
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    # The Kafka record timestamp (ms since the epoch), and whether the broker stamped it
    # (a LogAppendTime topic) rather than the producer.
    timestamp_ms: int | None = None
    log_append_time: bool = False


@dataclass(frozen=True, slots=True)
class SignedEvent:
    """A signed CloudEvent, serialized once; every sink sends `body` or reads `attributes`."""

    id: str
    attributes: Mapping[str, Any]
    body: bytes
    position: Position
    partition_key: str | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that cannot become an event, with a low-cardinality reason and the detail."""

    reason: str
    detail: str
    record: Record
    extra: Mapping[str, Any] = field(default_factory=dict)
