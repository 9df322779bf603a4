"""The replay-protection nonce store of inbound producer signatures, with the semantics
Agent OS hardened, sized for real load.

- One table per partition, each with its own clock: a partition read hours behind the
  others (a backlog judged by its records' append times) forgets its nonces by its own
  time, not by the time of the others. A nonce is still looked up in every table, so a
  copy on another partition this replica reads is caught too.
- An entry lives until `timestamp + window`, inclusive; expired entries are evicted a
  second at a time (buckets by expiry second, so no scan and no heap per insert).
- Bounded by `capacity` across all tables, and each sender by `sender_capacity`: one
  sender flooding the store is refused (`SENDER_FULL`) while the others keep their room.
  A full store fails closed (`FULL`) and never evicts a live nonce.
- `check_and_add` is one synchronous step on the event loop: no await between the lookup
  and the insert, so two copies of a record can never both pass.
- A nonce is remembered with the offset that carried it: the same record read again at the
  same partition and offset (after a rebalance or restart) is a redelivery, not a replay.

Memory: a nonce is kept as a 64-bit keyed BLAKE2b digest of (sender, nonce), not as text:
about 110 bytes per remembered nonce in CPython 3.11, whatever the nonce's length (see
README "Inbound authentication"). Two different nonces share a digest with probability
about n²/2⁶⁵ (1 in 10⁷ with 2 million live nonces): the later one is refused as a replay,
dead-lettered, never accepted twice.
"""

from __future__ import annotations

import hashlib
import heapq
import secrets
from array import array
from collections.abc import Iterable
from enum import Enum

# (topic, partition)
PartitionKey = tuple[str, int]
_BUCKET_MS = 1_000


class NonceVerdict(Enum):
    """What the store made of one nonce."""

    FRESH = "fresh"
    REDELIVERY = "redelivery"
    REPLAY = "replay"
    FULL = "nonce_capacity"
    SENDER_FULL = "sender_capacity"


class _PartitionNonces:
    """The nonces of one partition: digest → offset, and the digests by expiry second."""

    __slots__ = ("buckets", "clock_ms", "offsets", "order")

    def __init__(self) -> None:
        self.offsets: dict[int, int] = {}
        self.buckets: dict[int, dict[str, array[int]]] = {}
        self.order: list[int] = []  # heap of bucket numbers
        self.clock_ms = 0

    def add(self, digest: int, offset: int, sender: str, expires_ms: int) -> None:
        self.offsets[digest] = offset
        bucket = -(-expires_ms // _BUCKET_MS)  # the second that ends at or after the expiry
        senders = self.buckets.get(bucket)
        if senders is None:
            senders = self.buckets[bucket] = {}
            heapq.heappush(self.order, bucket)
        digests = senders.get(sender)
        if digests is None:
            digests = senders[sender] = array("q")
        digests.append(digest)

    def evict(self, now_ms: int) -> list[tuple[str, int]]:
        """Forget what expired strictly before `now_ms`; (sender, how many) forgotten."""
        if now_ms > self.clock_ms:
            self.clock_ms = now_ms
        order = self.order
        forgotten: list[tuple[str, int]] = []
        # Bucket b holds expiries in ((b-1)s, b s]: all are past once now > b s.
        while order and order[0] * _BUCKET_MS < self.clock_ms:
            for sender, digests in self.buckets.pop(heapq.heappop(order)).items():
                for digest in digests:
                    del self.offsets[digest]
                forgotten.append((sender, len(digests)))
        return forgotten

    def senders(self) -> Iterable[tuple[str, int]]:
        for senders in self.buckets.values():
            for sender, digests in senders.items():
                yield sender, len(digests)


class NonceStore:
    """Nonces seen inside the replay window, per partition and sender; at most `capacity`
    in all and `sender_capacity` for any one sender."""

    def __init__(self, capacity: int, sender_capacity: int | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.sender_capacity = min(sender_capacity or capacity, capacity)
        self._partitions: dict[PartitionKey, _PartitionNonces] = {}
        self._per_sender: dict[str, int] = {}
        self._size = 0
        # Per process: digests cannot be aimed at each other from outside.
        self._salt = secrets.token_bytes(16)

    def __len__(self) -> int:
        return self._size

    def held_by(self, sender: str) -> int:
        """How many live nonces `sender` holds."""
        return self._per_sender.get(sender, 0)

    def check_and_add(self, sender: str, nonce: str, expires_ms: int, now_ms: int,
                      where: tuple[str, int, int]) -> NonceVerdict:
        """Look the nonce up and remember it, in one step. `expires_ms` = timestamp +
        window; `now_ms` is the partition's clock; `where` = (topic, partition, offset)."""
        topic, partition, offset = where
        table = self._table((topic, partition))
        if evicted := table.evict(now_ms):
            self._forget(evicted)
        digest = self._digest(sender, nonce)
        known = table.offsets.get(digest)
        if known is not None:
            return NonceVerdict.REDELIVERY if known == offset else NonceVerdict.REPLAY
        for other in self._partitions.values():
            if digest in other.offsets:
                return NonceVerdict.REPLAY
        held = self._per_sender.get(sender, 0)
        if self._size >= self.capacity or held >= self.sender_capacity:
            self._evict_all()  # quiet partitions may still hold expired nonces
            if self._size >= self.capacity:
                return NonceVerdict.FULL
            held = self._per_sender.get(sender, 0)
            if held >= self.sender_capacity:
                return NonceVerdict.SENDER_FULL
        table.add(digest, offset, sender, expires_ms)
        self._per_sender[sender] = held + 1
        self._size += 1
        return NonceVerdict.FRESH

    def forget_partitions(self, keys: Iterable[PartitionKey]) -> None:
        """Drop the tables of partitions this replica no longer reads (a revocation): their
        next owner rebuilds them from the partition itself."""
        for key in keys:
            table = self._partitions.pop(key, None)
            if table is not None:
                self._forget(table.senders())

    def _table(self, key: PartitionKey) -> _PartitionNonces:
        table = self._partitions.get(key)
        if table is None:
            table = self._partitions[key] = _PartitionNonces()
        return table

    def _evict_all(self) -> None:
        for table in self._partitions.values():
            self._forget(table.evict(table.clock_ms))

    def _forget(self, counts: Iterable[tuple[str, int]]) -> None:
        per_sender = self._per_sender
        for sender, count in counts:
            self._size -= count
            left = per_sender[sender] - count
            if left:
                per_sender[sender] = left
            else:
                del per_sender[sender]

    def _digest(self, sender: str, nonce: str) -> int:
        text = f"{sender}|{nonce}".encode("utf-8", "surrogatepass")
        raw = hashlib.blake2b(text, digest_size=8, key=self._salt).digest()
        return int.from_bytes(raw, "little", signed=True)
