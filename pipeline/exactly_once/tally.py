"""How staged records end in the ledger: delivered when a transaction of this process
committed them, else dropped with the reason no transaction of this process will.

The reasons are what this process knows, no more: `REVOKED` and `COMMITTED_ELSEWHERE`
records are (or will be) on the output topic by another owner's transaction;
`OUTCOME_UNKNOWN` records are there if this process's own transaction committed, which it
never learned, and else by the next owner's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from pipeline.delivery.ledger import Ledger
from pipeline.exactly_once.outbox import Staged
from pipeline.model import SignedEvent
from pipeline.sources.offsets import TopicAndPartition

REVOKED = "partition_revoked"          # the partition went to another owner first
COMMITTED_ELSEWHERE = "committed_elsewhere"  # another owner's transaction wrote them
# Written by a transaction whose commit failed without a fencing (a timeout, a broker
# gone), and the partition went before a new producer could tell whether it committed.
OUTCOME_UNKNOWN = "transaction_outcome_unknown"


def count_delivered(ledger: Ledger, items: Sequence[Staged]) -> None:
    """`items` were written by a transaction of this process that committed."""
    for sink, events in _events_by_sink(items).items():
        ledger.committed(sink, events)
    ledger.entries_committed([item.origin for item in items if item.origin is not None])


def count_dropped(ledger: Ledger, items: Sequence[Staged], reason: str) -> None:
    """No transaction of this process will write `items` (any more), for `reason`."""
    for sink, events in _events_by_sink(items).items():
        ledger.uncommitted(sink, events, reason)


def split_below(items: Sequence[Staged], partition: TopicAndPartition, offset: int
                ) -> tuple[list[Staged], list[Staged]]:
    """The items of input `partition` below `offset`, and all the others."""
    below: list[Staged] = []
    others: list[Staged] = []
    for item in items:
        position = item.position
        mine = (position.topic, position.partition) == partition and position.offset < offset
        (below if mine else others).append(item)
    return below, others


def _events_by_sink(items: Sequence[Staged]) -> dict[str, list[SignedEvent]]:
    by_sink: dict[str, list[SignedEvent]] = defaultdict(list)
    for item in items:
        if item.event is not None and item.sink is not None:
            by_sink[item.sink].append(item.event)
    return by_sink
