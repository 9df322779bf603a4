"""The Collector harness itself: it receives OTLP, writes it out, and restarts in place."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.support.infra.collector import Collector

pytestmark = pytest.mark.integration


def _post_log(collector: Collector, body: str) -> int:
    request = {"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "t"}}]},
        "scopeLogs": [{"logRecords": [{"body": {"stringValue": body}}]}],
    }]}  # fmt: skip
    req = urllib.request.Request(
        f"{collector.http_endpoint}/v1/logs",
        data=json.dumps(request).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_received_logs_reach_the_file_and_survive_a_restart(
    fresh_otel_collector: Collector,
) -> None:
    collector = fresh_otel_collector
    assert _post_log(collector, "before") == 200
    ports, first_pid = (collector.grpc_port, collector.http_port), collector.pid

    collector.restart()

    assert collector.pid != first_pid
    assert (collector.grpc_port, collector.http_port) == ports
    assert _post_log(collector, "after") == 200
    records = collector.wait_for_log_records(2)
    assert [r.body for r in records] == ["before", "after"]
    assert records[0].resource_attributes == {"service.name": "t"}


def test_a_collector_without_a_logs_pipeline_refuses_logs(otel_collector: Collector) -> None:
    with Collector(binary=otel_collector.binary, accept_logs=False) as collector:
        assert _post_log(collector, "x") == 404
        assert collector.log_records() == []


def test_stop_is_idempotent_and_reports_not_running(
    fresh_otel_collector: Collector,
) -> None:
    fresh_otel_collector.stop()
    assert not fresh_otel_collector.running
    assert fresh_otel_collector.pid is None
    fresh_otel_collector.stop()  # idempotent
