"""Governance events and their CloudEvent form, as Agent OS builds it.

`to_cloudevent` accepts either input shape, the Agent OS `GovernanceEvent.to_dict()` object
or a structured CloudEvent, and returns the unsigned CloudEvent as a plain dict. It is a
pure function: the same input gives the same dict, key order included.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from pipeline.cloudevents.attributes import check_attributes
from pipeline.cloudevents.content import check_data
from pipeline.cloudevents.errors import InvalidEvent
from pipeline.model import KIND_TYPES, TYPE_PREFIX

__all__ = ["SIGNATURE_ATTRIBUTES", "InvalidEvent", "cloudevent_type", "to_cloudevent"]

SIGNATURE_ATTRIBUTES = ("agtsignature", "agtsignaturealg", "agtkeyid")

_OPTIONAL_STRINGS = (
    "severity", "agent_id", "agent_did", "session_id", "action", "resource", "decision",
    "reason", "policy_name", "trace_id", "span_id", "parent_span_id", "schema_version",
)
# The GovernanceEvent dataclass defaults, for fields an input leaves out.
_DEFAULTS: Mapping[str, Any] = {
    "schema_version": "1", "action": "", "decision": "", "reason": "", "severity": "info",
    "latency_ms": 0.0,
}
# Authoritative data fields always written (after the attributes, so none can be shadowed)...
_DATA_FIELDS = ("action", "decision", "reason", "severity", "latency_ms")
# ...and those written only when the event sets them (non-empty).
_DATA_FIELDS_WHEN_SET = ("resource", "policy_name", "agent_id", "agent_did")
_EXTENSIONS = (
    ("sessionid", "session_id"),
    ("traceid", "trace_id"),
    ("spanid", "span_id"),
    ("parentspanid", "parent_span_id"),
)


# RFC 3339 date-time (section 5.6) with upper-case T and Z, the form the CloudEvents SDKs
# parse (Go's time.RFC3339 refuses lower case); ranges are checked by datetime.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", re.ASCII)

def cloudevent_type(kind: str) -> str:
    """The CloudEvent `type` for an Agent OS event kind."""
    mapped = KIND_TYPES.get(kind)
    return TYPE_PREFIX + mapped if mapped else f"{TYPE_PREFIX}governance.{kind}"


def to_cloudevent(obj: Mapping[str, Any], configured_source: str | None = None) -> dict[str, Any]:
    """Map a decoded input object to an unsigned CloudEvent, or raise `InvalidEvent`."""
    if "specversion" in obj:
        return _from_cloudevent(obj)
    if "kind" in obj or "event_id" in obj:
        return _from_governance_event(obj, configured_source)
    raise InvalidEvent("unknown_shape", "neither a governance event nor a CloudEvent")


def _from_governance_event(
    event: Mapping[str, Any], configured_source: str | None
) -> dict[str, Any]:
    _check_governance_fields(event)
    # Same keys, values and key order as Agent OS GovernanceEvent.to_cloudevent(); a field
    # that is absent or null takes the GovernanceEvent dataclass default.
    ce: dict[str, Any] = {
        "specversion": "1.0",
        "id": event["event_id"],
        "type": cloudevent_type(event["kind"]),
        "source": _source(event, configured_source),
        "time": event["occurred_at"],
        "datacontenttype": "application/json",
        "data": _data(event),
        "schemaversion": _field(event, "schema_version"),
    }
    for attribute, name in _EXTENSIONS:
        if event.get(name):
            ce[attribute] = event[name]
    if event.get("agent_id"):
        ce["partitionkey"] = event["agent_id"]
    # The event as built must be a valid CloudEvent too (an agent_did that is no URI, a
    # session id holding a control character...).
    check_attributes(ce)
    return ce


def _field(event: Mapping[str, Any], name: str) -> Any:
    value = event.get(name)
    return _DEFAULTS[name] if value is None else value


def _data(event: Mapping[str, Any]) -> dict[str, Any]:
    # Attributes first, so no attribute can shadow an authoritative field.
    data: dict[str, Any] = dict(event.get("attributes") or {})
    for name in _DATA_FIELDS:
        data[name] = _field(event, name)
    for name in _DATA_FIELDS_WHEN_SET:
        if event.get(name):
            data[name] = event[name]
    return data


def _source(event: Mapping[str, Any], configured_source: str | None) -> str:
    if configured_source:
        return configured_source
    if event.get("agent_did"):
        return str(event["agent_did"])
    if event.get("agent_id"):
        return "/agent-os/agent/" + quote(str(event["agent_id"]), safe="")
    raise InvalidEvent("no_source", "no configured source, agent_did or agent_id")


def _check_governance_fields(event: Mapping[str, Any]) -> None:
    event_id = event.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise InvalidEvent("missing_event_id", "event_id is missing or not a non-empty string")
    kind = event.get("kind")
    if not isinstance(kind, str) or not kind:
        raise InvalidEvent("bad_field", "kind is missing or not a non-empty string")
    for name in _OPTIONAL_STRINGS:
        # Two cheap tests, not isinstance against a union (~3x slower; runs 13x per event).
        if (value := event.get(name)) is not None and not isinstance(value, str):
            raise InvalidEvent("bad_field", f"{name} must be a string")
    latency = event.get("latency_ms")
    if latency is not None and (isinstance(latency, bool) or not isinstance(latency, int | float)):
        raise InvalidEvent("bad_field", "latency_ms must be a number")
    if not isinstance(event.get("attributes"), dict | None):
        raise InvalidEvent("bad_field", "attributes must be an object")
    _check_timestamp(event.get("occurred_at"), "occurred_at")


def _from_cloudevent(obj: Mapping[str, Any]) -> dict[str, Any]:
    if obj.get("specversion") != "1.0":
        raise InvalidEvent("invalid_cloudevent", "specversion must be \"1.0\"")
    for name in ("id", "source", "type"):
        value = obj.get(name)
        if not isinstance(value, str) or not value:
            reason = "missing_event_id" if name == "id" else "invalid_cloudevent"
            raise InvalidEvent(reason, f"CloudEvent {name} is missing or not a non-empty string")
    if "time" in obj:
        _check_timestamp(obj["time"], "time")
    check_attributes(obj)
    check_data(obj)
    # Re-signed as is: only a previous signature is replaced.
    return {key: value for key, value in obj.items() if key not in SIGNATURE_ATTRIBUTES}


def _check_timestamp(value: object, name: str) -> None:
    if not isinstance(value, str):
        raise InvalidEvent("bad_timestamp", f"{name} is missing or not a string")
    if _RFC3339.fullmatch(value) is None:
        raise InvalidEvent("bad_timestamp", f"{name} is not an RFC 3339 date-time "
                           "(YYYY-MM-DDTHH:MM:SS[.fraction] and Z or an offset ±HH:MM)")
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent("bad_timestamp", f"{name} has a field out of range") from None
