"""Signed CloudEvent → OTLP log record, with the attribute names Agent OS uses for its audit
logs (``agt.audit.*``, ``event.domain``), so dashboards built for Agent OS keep working.

Severity: the event's ``severity`` (case-insensitive) maps to an OTLP severity number, and
the severity text is that number's short name. An unknown or missing severity gives
``UNSPECIFIED`` with no text: the sink does not pretend to know, and the original value is
still in ``agt.audit.meta.severity``.

| event severity      | severity_number | severity_text |
|---------------------|-----------------|---------------|
| info, low           | INFO (9)        | INFO          |
| warning, warn, medium | WARN (13)     | WARN          |
| high, error         | ERROR (17)      | ERROR         |
| critical, fatal     | FATAL (21)      | FATAL         |
| anything else       | UNSPECIFIED (0) | (none)        |
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.context import Context
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from pipeline.events import KIND_TYPES, TYPE_PREFIX
from pipeline.model import SignedEvent

__all__ = ["RESOURCE", "SCOPE", "log_attributes", "severity", "to_log_record"]

RESOURCE = Resource({"service.name": "govpipe"})
SCOPE = InstrumentationScope("govpipe.sinks.otlp")
EVENT_DOMAIN = "agent_os.governance"

_SEVERITIES: Mapping[str, SeverityNumber] = {
    "info": SeverityNumber.INFO,
    "low": SeverityNumber.INFO,
    "warning": SeverityNumber.WARN,
    "warn": SeverityNumber.WARN,
    "medium": SeverityNumber.WARN,
    "high": SeverityNumber.ERROR,
    "error": SeverityNumber.ERROR,
    "critical": SeverityNumber.FATAL,
    "fatal": SeverityNumber.FATAL,
}
# ai.agentos.policy.check → policy_check: Agent OS logs the event *kind* as event_type.
_KINDS_BY_TYPE = {TYPE_PREFIX + suffix: kind for kind, suffix in KIND_TYPES.items()}
_GENERIC_TYPE_PREFIX = TYPE_PREFIX + "governance."
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
# data fields promoted as agt.audit.meta.<name> when set (Agent OS promotes its metadata).
_META_FROM_DATA = ("severity", "resource", "policy_name")


def severity(value: object) -> tuple[SeverityNumber, str | None]:
    """The OTLP severity number and text for an event severity (see the module table)."""
    number = _SEVERITIES.get(value.lower()) if isinstance(value, str) else None
    if number is None:
        return SeverityNumber.UNSPECIFIED, None
    return number, number.name


def event_type(ce_type: str) -> str:
    """The Agent OS event kind for a CloudEvent type; other types pass through unchanged."""
    kind = _KINDS_BY_TYPE.get(ce_type)
    if kind is not None:
        return kind
    return ce_type.removeprefix(_GENERIC_TYPE_PREFIX)


def log_attributes(ce: Mapping[str, Any]) -> dict[str, str | float | bool | int]:
    """The log record attributes for one signed CloudEvent."""
    data = _data(ce)
    attributes: dict[str, str | float | bool | int] = {
        "event.domain": EVENT_DOMAIN,
        "cloudevents.event_id": str(ce.get("id", "")),
        "cloudevents.event_type": str(ce.get("type", "")),
        "cloudevents.event_source": str(ce.get("source", "")),
        "agt.audit.event_type": event_type(str(ce.get("type", ""))),
        "agt.audit.meta.event_id": str(ce.get("id", "")),
    }
    agent_id = data.get("agent_id", ce.get("partitionkey"))
    if isinstance(agent_id, str):
        attributes["agt.agent.id"] = agent_id
    for name in ("action", "decision", "reason"):
        value = data.get(name)
        if isinstance(value, str) and (value or name != "reason"):
            attributes[f"agt.audit.{name}"] = value
    latency = data.get("latency_ms")
    if isinstance(latency, int | float) and not isinstance(latency, bool):
        attributes["agt.audit.latency_ms"] = float(latency)
    _add_meta(attributes, data, ce)
    return attributes


def _add_meta(
    attributes: dict[str, str | float | bool | int], data: Mapping[str, Any], ce: Mapping[str, Any]
) -> None:
    # Agent OS stringifies every meta value; so do we, for the same queries to match.
    for name in _META_FROM_DATA:
        if data.get(name) not in (None, ""):
            attributes[f"agt.audit.meta.{name}"] = str(data[name])
    if ce.get("sessionid") not in (None, ""):
        attributes["agt.audit.meta.session_id"] = str(ce["sessionid"])
    if ce.get("schemaversion") not in (None, ""):
        attributes["agt.audit.meta.schema_version"] = str(ce["schemaversion"])


def _trace_context(ce: Mapping[str, Any]) -> Context:
    """A context carrying the event's trace and span ids when they are valid hex ids.

    An empty Context, never the ambient one: a record's ids come from its event only.
    """
    trace_id = _hex_id(ce.get("traceid"), _TRACE_ID)
    span_id = _hex_id(ce.get("spanid"), _SPAN_ID)
    if not trace_id:
        return Context()
    span = NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=True,
                                        trace_flags=TraceFlags(TraceFlags.DEFAULT)))
    return trace.set_span_in_context(span, Context())


def _hex_id(value: object, pattern: re.Pattern[str]) -> int:
    """The id as an int; 0 (no id) unless it is hex of the right length. All zeros is 0
    too, which W3C Trace Context calls invalid."""
    if not isinstance(value, str) or not pattern.fullmatch(value.lower()):
        return 0
    return int(value, 16)


def _timestamp_ns(value: object) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None  # no offset: which instant it names is unknown
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1_000


def to_log_record(event: SignedEvent) -> ReadableLogRecord:
    """One OTLP log record: body = the signed CloudEvent JSON, attributes as above."""
    ce = event.attributes
    number, text = severity(_data(ce).get("severity"))
    record = LogRecord(
        timestamp=_timestamp_ns(ce.get("time")),
        context=_trace_context(ce),
        severity_number=number,
        severity_text=text,
        body=event.body.decode("utf-8"),
        attributes=log_attributes(ce),
    )
    return ReadableLogRecord(log_record=record, resource=RESOURCE, instrumentation_scope=SCOPE)


def _data(ce: Mapping[str, Any]) -> Mapping[str, Any]:
    data = ce.get("data")
    return data if isinstance(data, Mapping) else {}
