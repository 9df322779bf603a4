"""The replay-protection nonce store of inbound producer signatures, with the semantics
Agent OS hardened.

- Bounded by `capacity`. An entry lives until `timestamp + window`, inclusive: a record
  accepted at the very edge of the window still has its nonce remembered at that instant.
- Expired entries are evicted first (a heap ordered by expiry, so no full scan per insert);
  if the store is still full it fails closed and never evicts a live nonce.
- `check_and_add` is one synchronous step on the event loop: no await between the lookup
  and the insert, so two copies of a record can never both pass.
- A nonce is remembered with the position (topic, partition, offset) that carried it: the
  same record read again at the same position (after a rebalance or restart) is a
  redelivery, not a replay.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from enum import Enum

# (topic, partition, offset): the epoch is left out on purpose, a partition coming back
# to this replica re-reads the same offsets under a new epoch.
Where = tuple[str, int, int]


class NonceVerdict(Enum):
    """What the store made of one nonce."""

    FRESH = "fresh"
    REDELIVERY = "redelivery"
    REPLAY = "replay"
    FULL = "nonce_capacity"


@dataclass(slots=True)
class _Entry:
    expires_ms: int
    where: Where


class NonceStore:
    """Nonces seen inside the replay window, per sender; `capacity` entries at most."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._expiries: list[tuple[int, str, str]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def check_and_add(self, sender: str, nonce: str, expires_ms: int, now_ms: int,
                      where: Where) -> NonceVerdict:
        """Look the nonce up and remember it, in one step; `expires_ms` = timestamp + window."""
        self._evict_expired(now_ms)
        known = self._entries.get((sender, nonce))
        if known is not None:
            return NonceVerdict.REDELIVERY if known.where == where else NonceVerdict.REPLAY
        if len(self._entries) >= self.capacity:
            return NonceVerdict.FULL
        self._entries[(sender, nonce)] = _Entry(expires_ms, where)
        heapq.heappush(self._expiries, (expires_ms, sender, nonce))
        return NonceVerdict.FRESH

    def _evict_expired(self, now_ms: int) -> None:
        expiries = self._expiries
        # Strictly past the expiry: an entry is still live at exactly timestamp + window.
        while expiries and expiries[0][0] < now_ms:
            _, sender, nonce = heapq.heappop(expiries)
            self._entries.pop((sender, nonce), None)
