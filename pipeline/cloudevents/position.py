"""The source position as CloudEvent extension attributes, inside the signed envelope.

A Kafka record is named by `agttopic`, `agtpartition`, `agtoffset`; a line of stdin or a
file by `agtinput` (the input's name: `stdin`, or the path as configured) and `agtline`
(1-based, blank lines counted). Every value is a string (numbers in decimal digits): a
CloudEvents Integer is 32-bit and a Kafka offset is not, and the binary content mode
carries every attribute as a string anyway, so the signed form survives either mode.

An input CloudEvent that already carries position attributes (an event re-published from
another govpipe, or a dead-lettered event replayed) has them replaced, as its signature is:
the signature vouches for where *this* pipeline read the record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.model import Position

TOPIC = "agttopic"
PARTITION = "agtpartition"
OFFSET = "agtoffset"
INPUT = "agtinput"
LINE = "agtline"
POSITION_ATTRIBUTES = (TOPIC, PARTITION, OFFSET, INPUT, LINE)


def position_attributes(position: Position) -> dict[str, str]:
    """The extension attributes that name `position`."""
    if position.kind == "line":
        return {INPUT: position.topic, LINE: str(position.offset)}
    return {TOPIC: position.topic, PARTITION: str(position.partition),
            OFFSET: str(position.offset)}


def with_position(cloudevent: dict[str, Any], position: Position) -> dict[str, Any]:
    """`cloudevent` with any earlier position attributes replaced by `position`'s, in place
    (last, after the event's own attributes: the same record at the same position always
    gives the same member order, hence the same bytes)."""
    for name in POSITION_ATTRIBUTES:
        cloudevent.pop(name, None)
    cloudevent.update(position_attributes(position))
    return cloudevent


def position_of(attributes: Mapping[str, Any]) -> Position | None:
    """The position a signed event names, or None when it names none (or a malformed one)."""
    if isinstance(attributes.get(INPUT), str):
        line = _number(attributes.get(LINE))
        return None if line is None else Position(attributes[INPUT], 0, line, kind="line")
    topic = attributes.get(TOPIC)
    partition = _number(attributes.get(PARTITION))
    offset = _number(attributes.get(OFFSET))
    if not isinstance(topic, str) or partition is None or offset is None:
        return None
    return Position(topic, partition, offset)


def _number(value: object) -> int | None:
    """A decimal-digit string (or an integer, as a hand-made event may carry) as an int."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20:
        return int(value)
    return None
