"""The oracle's evidence: every id on the input topic, and every id that came out of the
run (on stdout, at the Collector, in the dead-letter topic and files)."""

from __future__ import annotations

import contextlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.faults.nemesis.replicas import Replicas
from tests.support.events import strict_json
from tests.support.infra.collector import Collector
from tests.support.kafka_clients import consume_to_end


@dataclass(slots=True)
class Outputs:
    """Every id that came out of the run, by where; and lines that were cut short in the
    middle of an output (not at its end, where a SIGKILL may leave one)."""

    stdout: set[str] = field(default_factory=set)
    collector: set[str] = field(default_factory=set)
    dead: dict[str, set[str]] = field(default_factory=dict)
    torn: Counter[str] = field(default_factory=Counter)

    def anywhere(self) -> set[str]:
        return self.stdout | self.collector | set().union(*self.dead.values())

    def reached(self, sink: str) -> set[str]:
        """Delivered by `sink`, dead-lettered by it, or rejected before any sink."""
        delivered = self.stdout if sink == "stdout" else self.collector
        return delivered | self.dead.get(sink, set()) | self.dead.get("source", set())


def json_objects(line: bytes, opening: str) -> tuple[list[dict[str, Any]], bool]:
    """The JSON objects on one line, and whether the line is torn: a write cut short and
    followed by another leaves a partial object in front of whole ones. The whole ones
    (each starting with `opening`) are still recovered."""
    try:
        whole = json.loads(line)
    except ValueError:
        pass
    else:
        return ([whole] if isinstance(whole, dict) else []), False
    text, decoder, found = line.decode("utf-8", "replace"), json.JSONDecoder(), []
    start = text.find(opening)
    while start != -1:
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            start = text.find(opening, start + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        start = text.find(opening, end)
    return found, True


def read_ids(lines: Iterable[bytes], opening: str, key: str, outputs: Outputs,
             where: str) -> Iterator[dict[str, Any]]:
    """The objects on `lines` that have `key`, counting torn lines under `where`."""
    for line in lines:
        objects, torn = json_objects(line, opening)
        outputs.torn[where] += torn
        yield from (o for o in objects if key in o)


def collector_ids(collector: Collector, outputs: Outputs) -> None:
    """Read here rather than with Collector.log_records, which stops at the first bad line:
    a SIGKILLed Collector can leave one in the middle of its file."""
    try:
        lines = collector.output_path.read_bytes().splitlines()
    except FileNotFoundError:
        return
    for request in read_ids(lines, '{"resourceLogs":', "resourceLogs", outputs, "collector"):
        for resource in request["resourceLogs"]:
            for scope in resource.get("scopeLogs", []):
                for record in scope.get("logRecords", []):
                    outputs.collector.update(
                        str(attribute["value"].get("stringValue"))
                        for attribute in record.get("attributes", [])
                        if attribute.get("key") == "cloudevents.event_id")


def dead_letter_id(entry: Mapping[str, Any]) -> str | None:
    """The event id of a dead-letter entry: from the signed event, from a summary, or from
    the raw input value."""
    event = entry.get("event")
    if isinstance(event, dict) and "id" in event:
        return str(event["id"])
    if "event_id" in entry:
        return str(entry["event_id"])
    value = entry.get("value")
    if isinstance(value, str):
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return str(json.loads(value)["event_id"])
    return None


def add_dead_letters(entries: Iterable[Mapping[str, Any]], outputs: Outputs) -> None:
    for entry in entries:
        if (found := dead_letter_id(entry)) is not None:
            outputs.dead.setdefault(str(entry["origin"]), set()).add(found)


async def collect_outputs(replicas: Replicas, collector: Collector) -> Outputs:
    topology, outputs = replicas.topology, Outputs()
    for replica in replicas.all:
        outputs.stdout.update(str(o["id"]) for o in read_ids(
            replica.lines(), '{"specversion":', "id", outputs, f"stdout of {replica.name}"))
    collector_ids(collector, outputs)
    on_topic = await consume_to_end(topology.bootstrap, topology.dlq_topic, 120)
    add_dead_letters(read_ids((r.value for r in on_topic), '{"id":', "origin", outputs,
                              "dead-letter topic"), outputs)
    for path in sorted(topology.dlq_dir.glob("*/deadletter-*.jsonl")):
        add_dead_letters(read_ids(path.read_bytes().splitlines(), '{"id":', "origin", outputs,
                                  f"dead-letter file {path.parent.name}"), outputs)
    return outputs


async def input_positions(bootstrap: str, topic: str) -> dict[str, list[tuple[int, int]]]:
    """Every id on the input topic, with each (partition, offset) it was written at."""
    positions: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for record in await consume_to_end(bootstrap, topic, 120):
        positions[str(strict_json(record.value)["event_id"])].append(
            (record.partition, record.offset))
    return positions
