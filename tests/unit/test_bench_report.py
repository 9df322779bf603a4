"""The benchmark's own pieces that need no services: the table's CPU columns, the
Collector configs of scenarios p and q, and reading a send time back from each output."""

from __future__ import annotations

import orjson

from bench.collector_kafka import collector_config
from bench.events import I_JSON_MAX, SENT_ATTRIBUTE, sent_ms, templates
from bench.procs import Topics
from bench.report import Result, table

TOPICS = Topics("127.0.0.1:9092", "in", "out", "g")


def test_cpu_per_event_and_its_ratio_are_in_the_table() -> None:
    a = Result("a", 100, 20_000.0, 1.0, 1.0, 2.0, 30.0, cpu_cores=0.4,
               cpu_ratio_to_baseline=1.0)
    assert a.cpu_us_per_event == 20.0
    assert "| 20.0 | 1.00 |" in table([a])


def test_p_copies_raw_and_q_transforms_to_one_otlp_record_per_event() -> None:
    p = collector_config(TOPICS, 8888, transform=False)
    q = collector_config(TOPICS, 8888, transform=True)
    assert p["exporters"]["kafka"]["logs"] == {"topic": "out", "encoding": "raw"}
    assert p["service"]["pipelines"]["logs"]["processors"] == ["batch"]
    assert q["exporters"]["kafka"]["logs"]["encoding"] == "otlp_json"
    assert q["exporters"]["kafka"]["partition_logs_by_trace_id"] is True
    assert q["service"]["pipelines"]["logs"]["processors"] == ["batch", "transform"]
    assert p["exporters"]["kafka"]["producer"] == {"required_acks": -1}


def test_the_send_time_is_read_back_from_every_kind_of_output() -> None:
    passthrough = orjson.dumps({"attributes": {SENT_ATTRIBUTE: 5.0}})
    cloudevent = orjson.dumps({"data": {SENT_ATTRIBUTE: 6}})
    otlp = orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"attributes": [
        {"key": "id", "value": {"stringValue": "e1"}},
        {"key": "attributes", "value": {"kvlistValue": {"values": [
            {"key": SENT_ATTRIBUTE, "value": {"doubleValue": 7.5}}]}}}]}]}]}]})
    assert [sent_ms(v) for v in (passthrough, cloudevent, otlp)] == [5.0, 6.0, 7.5]


def test_the_bench_events_hold_no_integer_ed25519_refuses() -> None:
    values = [v for shape in templates() for v in _numbers(shape)]
    assert values
    assert all(abs(v) <= I_JSON_MAX for v in values if isinstance(v, int))


def _numbers(value: object) -> list[object]:
    if isinstance(value, dict):
        return [n for item in value.values() for n in _numbers(item)]
    if isinstance(value, list):
        return [n for item in value for n in _numbers(item)]
    return [value] if isinstance(value, int | float) else []
