"""A pytest plugin that collects the inputs the unit tests feed the processing, for check.py.

    PYTHONPATH=experiments/native_hotpath HARVEST_OUT=/tmp/inputs.jsonl \\
        .venv/bin/python -m pytest -p harvest tests/unit -q

Every record value given to `EventProcessor.process` and every object given to
`to_cloudevent` (as orjson writes it) is appended to HARVEST_OUT, one per line (base64, as a
value may not be one line of text); so is, for every text given to the tool-poisoning
detector's `field_severity` and every value given to its `scan`, a governance event
carrying it in its attributes."""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

import pipeline.cloudevents.mapping
import pipeline.detectors.tool_poisoning as detector
import pipeline.processor

_CARRIER = {"event_id": "harvested", "kind": "policy_check", "agent_id": "harvest",
            "occurred_at": "2026-11-25T14:02:10Z"}


def _append(value: bytes) -> None:
    with Path(os.environ["HARVEST_OUT"]).open("ab") as out:
        out.write(base64.b64encode(value) + b"\n")


def _recording_process(process: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(self: Any, record: Any) -> Any:
        _append(record.value)
        return process(self, record)
    return wrapper


def _recording_mapping(to_cloudevent: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(obj: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        with contextlib.suppress(TypeError):  # not JSON (a test of the mapping's types)
            _append(orjson.dumps(obj))
        return to_cloudevent(obj, *args, **kwargs)
    return wrapper


def _recording_detector(judge: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def wrapper(data: Any) -> Any:
        with contextlib.suppress(TypeError):
            _append(orjson.dumps(dict(_CARRIER, attributes={"harvested": data})))
        return judge(data)
    return wrapper


def pytest_configure(config: pytest.Config) -> None:
    """Wrap the processing entry points before any test module imports them."""
    processor = pipeline.processor.EventProcessor
    processor.process = _recording_process(processor.process)  # type: ignore[method-assign]
    mapped = _recording_mapping(pipeline.cloudevents.mapping.to_cloudevent)
    pipeline.cloudevents.mapping.to_cloudevent = mapped
    for name in ("field_severity", "scan"):
        setattr(detector, name, _recording_detector(getattr(detector, name)))
    setattr(pipeline.processor, "to_cloudevent", mapped)  # noqa: B010 (not re-exported)
