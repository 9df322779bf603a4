"""The OTLP sink's own protobuf encoding against the OpenTelemetry SDK's.

The sink writes log records straight to wire bytes (``sinks.otlp.records``). The reference
here is the SDK's path the sink used before: an SDK ``LogRecord`` per event, encoded by
``encode_logs``. Parsed back, both must be the same message, for the examples and for
generated events (every attribute type, empty and unicode strings, odd severities, times and
trace ids)."""

from __future__ import annotations

import calendar
import contextlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry._logs import LogRecord
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from pipeline.model import Position, SignedEvent
from sinks.otlp.records import (
    EVENT_NAME,
    SCOPE_NAME,
    SERVICE_NAME,
    ServiceIdentity,
    encode_log_record,
    log_attributes,
    logs_request,
    severity,
)
from tests.support.events import signed_examples

OBSERVED_NS = 1_795_615_331_000_000_123
IDENTITY = ServiceIdentity(version="1.2.3", instance_id="4b8e6f0a-replica-1")
RESOURCE = Resource({"service.name": SERVICE_NAME, "service.version": "1.2.3",
                     "service.instance.id": "4b8e6f0a-replica-1"})
SCOPE = InstrumentationScope(SCOPE_NAME, "1.2.3")


def _sdk_id(value: object, digits: int) -> int:
    if not isinstance(value, str) or len(value) != digits:
        return 0
    try:
        return int(value, 16) if all(c in "0123456789abcdefABCDEF" for c in value) else 0
    except ValueError:
        return 0


def _sdk_time(value: object) -> int | None:
    """Nanoseconds since the epoch from an RFC 3339 time with an offset, else None."""
    # OverflowError: a time whose UTC instant falls before year 1 (0001-01-01T00:00+02:00).
    with contextlib.suppress(TypeError, ValueError, OverflowError):
        moment = datetime.fromisoformat(value)  # type: ignore[arg-type]
        nanos = calendar.timegm(moment.utctimetuple()) * 1_000_000_000 + moment.microsecond * 1000
        if moment.utcoffset() is not None and 0 < nanos < 1 << 64:
            return nanos  # outside that range the SDK would fail the whole batch
    return None


def sdk_reference(event: SignedEvent) -> ReadableLogRecord:
    """The record as the SDK would build it from the same event."""
    ce = event.attributes
    data = ce.get("data") if isinstance(ce.get("data"), Mapping) else {}
    number, text = severity(data.get("severity"))
    trace_id, span_id = _sdk_id(ce.get("traceid"), 32), _sdk_id(ce.get("spanid"), 16)
    context = Context()
    if trace_id:
        span = NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=True,
                                            trace_flags=TraceFlags(TraceFlags.DEFAULT)))
        context = trace.set_span_in_context(span, Context())
    record = LogRecord(timestamp=_sdk_time(ce.get("time")), observed_timestamp=OBSERVED_NS,
                       context=context, severity_number=number, severity_text=text,
                       body=event.body.decode(), attributes=log_attributes(ce),
                       event_name=EVENT_NAME)
    return ReadableLogRecord(log_record=record, resource=RESOURCE, instrumentation_scope=SCOPE)


def ours(events: list[SignedEvent]) -> ExportLogsServiceRequest:
    payload = logs_request([encode_log_record(event, OBSERVED_NS) for event in events],
                           IDENTITY)
    return ExportLogsServiceRequest.FromString(payload)


def test_examples_encode_exactly_as_the_sdk_does() -> None:
    events = signed_examples()
    assert ours(events) == encode_logs([sdk_reference(e) for e in events])


def test_the_batch_keeps_its_order_under_one_resource_and_scope() -> None:
    events = signed_examples()
    request = ours(events)
    [resource_logs] = request.resource_logs
    [scope_logs] = resource_logs.scope_logs
    assert scope_logs.scope.name == SCOPE_NAME
    assert [r.body.string_value for r in scope_logs.log_records] == [
        e.body.decode() for e in events]


def test_an_empty_batch_is_an_empty_scope() -> None:
    [resource_logs] = ours([]).resource_logs
    assert [len(s.log_records) for s in resource_logs.scope_logs] == [0]


# Short and long: the encoder inlines strings under 126 UTF-8 bytes.
texts = st.one_of(st.text(max_size=40), st.text(min_size=100, max_size=300))
scalars = st.one_of(texts, st.booleans(), st.integers(-(2**63), 2**63 - 1),
                    st.floats(allow_nan=False, allow_infinity=False), st.none())
hex_ids = st.one_of(st.text("0123456789abcdefABCDEF", min_size=15, max_size=33), texts,
                    st.integers(), st.none())
times = st.one_of(st.datetimes(timezones=st.timezones()).map(datetime.isoformat),
                  st.datetimes().map(datetime.isoformat), texts, st.none())


@st.composite
def cloud_events(draw: st.DrawFn) -> dict[str, Any]:
    data = {name: draw(scalars) for name in ("agent_id", "action", "decision", "reason",
                                            "latency_ms", "severity", "resource",
                                            "policy_name")}
    data["severity"] = draw(st.one_of(st.sampled_from(["info", "HIGH", "warn", "fatal"]),
                                      scalars))
    ce: dict[str, Any] = {
        "specversion": "1.0", "id": draw(texts), "source": draw(texts),
        "type": draw(st.sampled_from(["ai.agentos.policy.check", "ai.agentos.governance.x",
                                      "com.example.other", ""])),
        "time": draw(times), "traceid": draw(hex_ids), "spanid": draw(hex_ids),
        "sessionid": draw(scalars), "schemaversion": draw(scalars),
        "partitionkey": draw(scalars), "data": data,
    }
    return {k: v for k, v in ce.items() if v is not None or draw(st.booleans())}


@settings(max_examples=300, deadline=None)
@given(st.lists(cloud_events(), min_size=1, max_size=4))
def test_generated_events_encode_exactly_as_the_sdk_does(ces: list[dict[str, Any]]) -> None:
    events = [SignedEvent(str(ce.get("id")), ce, json.dumps(ce).encode(), Position("t", 0, n))
              for n, ce in enumerate(ces)]
    assert ours(events) == encode_logs([sdk_reference(e) for e in events])


@pytest.mark.parametrize("time", ["1969-07-20T20:17:40+00:00", "2555-01-01T00:00:00+00:00"])
def test_a_time_outside_otlp_range_is_left_unset_not_a_failed_batch(time: str) -> None:
    event = signed_examples()[0]
    attributes = {**event.attributes, "time": time}
    [record] = ours([SignedEvent(event.id, attributes, event.body, event.position)]
                    ).resource_logs[0].scope_logs[0].log_records
    assert record.time_unix_nano == 0
    assert record.observed_time_unix_nano == OBSERVED_NS
