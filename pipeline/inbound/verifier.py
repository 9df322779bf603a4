"""Inbound producer signatures: the `agt-*` Kafka headers of every record.

A producer signs each record with HMAC-SHA256 over the signed string of
`pipeline.inbound.signed_string` (version 1: nonce, timestamp, sender and the value exactly
as sent; version 2 also the CloudEvents binary-mode headers) and sends headers
`agt-nonce`, `agt-timestamp` (ms since the epoch, decimal), `agt-sender`, `agt-signature`
(standard padded base64 of the MAC) and, for version 2, `agt-sigver: 2`.

Checks, in this order, each with its rejection reason:
1. `unsigned`: no `agt-signature` header (and no replay seal).
2. `bad_signature`: a header missing, repeated or malformed (nonce and sender may not
   contain "|", so the signed string splits one way only), an unknown sender, a MAC that
   does not match (constant-time compare), or CloudEvents `ce_*` / `content-type` headers
   under a version 1 signature, which does not cover them. Checked before the nonce store
   is touched, so forged records cannot burn nonces.
3. `expired`: |judged at - timestamp| > replay window (both ends inclusive). A record is
   judged at its broker append time when its topic stamps LogAppendTime (a backlog read
   hours later is judged as when it arrived, a copy appended later by when it was
   appended), else at the consumer's clock.
4. `replay` / `nonce_capacity` / `sender_capacity`: see `pipeline.inbound.nonces`.

A record `govpipe replay` put back with a replay seal is judged by the seal instead (see
`pipeline.inbound.replay_seal`).
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.inbound.keys import InboundKeys
from pipeline.inbound.nonces import NonceStore, NonceVerdict, PartitionKey
from pipeline.inbound.replay_seal import REPLAY_SENDER, SEAL_HEADER, SealCheck, read_seal
from pipeline.inbound.signed_string import (
    HEADERS_VERSION,
    NONCE_HEADER,
    SENDER_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    VERSION_HEADER,
    is_covered_header,
    sign_record,
)
from pipeline.model import Record
from pipeline.ops.metrics import Metrics

HEADERS = (NONCE_HEADER, TIMESTAMP_HEADER, SENDER_HEADER, SIGNATURE_HEADER)
MAX_NONCE_CHARS = 256  # bounds what one signed string can cost
_DIGITS = re.compile(r"[0-9]{1,18}")

WallClockMs = Callable[[], int]


def wall_clock_ms() -> int:
    """Milliseconds since the epoch, the unit of `agt-timestamp`."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class NonceLimits:
    """How many nonces one replica remembers: in all, and for any one sender."""

    capacity: int
    sender_capacity: int | None = None


@dataclass(frozen=True, slots=True)
class _Claim:
    """What a verified record claims: a sender's nonce, stamped `timestamp_ms`."""

    sender: str
    nonce: str
    timestamp_ms: int


class InboundVerifier:
    """Checks one record's producer signature; counts every result."""

    def __init__(self, keys: InboundKeys, window_s: float, limits: NonceLimits | int,
                 metrics: Metrics, clock: WallClockMs = wall_clock_ms, *,
                 seal_check: SealCheck | None = None) -> None:
        if isinstance(limits, int):
            limits = NonceLimits(limits)
        self._keys = keys
        self.window_ms = round(window_s * 1000)
        self._nonces = NonceStore(limits.capacity, limits.sender_capacity)
        metrics.inbound_nonces.set_function(lambda: len(self._nonces))
        self._counter = metrics.inbound_verification
        self._counted: dict[str, Any] = {}  # result → its counter (labels() is not free)
        self._clock = clock
        self._seal_checks: tuple[SealCheck, ...] = () if seal_check is None else (seal_check,)

    def _sealed_by_daemon(self, document: Mapping[str, Any]) -> bool:
        return any(check(document) for check in self._seal_checks)

    def use_keys(self, keys: InboundKeys, seal_check: SealCheck | None = None) -> None:
        """Check records from now on against `keys` (a rotation; seen nonces still count)
        and, with `seal_check`, replay seals against the daemon's new key as well as the
        one before it (a seal `govpipe replay` made before the rotation stays good)."""
        self._keys = keys
        if seal_check is not None:
            self._seal_checks = (seal_check, *self._seal_checks[:1])

    def check(self, record: Record) -> str | None:
        """None when the record may pass, else the rejection reason."""
        result = self._check(record)
        counted = self._counted.get(result)
        if counted is None:
            counted = self._counted[result] = self._counter.labels(result)
        counted.inc()
        return None if result == "ok" else result

    def recall(self, record: Record) -> bool:
        """Remember the nonce of a record read before this replica took its partition
        (nothing counted, nothing else checked twice): True when it was remembered.
        Forged or expired records are skipped, as `check` would not have stored them."""
        claim = self._claim(record)
        if isinstance(claim, str) or self._expired(record, claim):
            return False
        return self._remember(record, claim) is NonceVerdict.FRESH

    def forget(self, partitions: Iterable[PartitionKey]) -> None:
        """Drop what was remembered for partitions this replica no longer reads."""
        self._nonces.forget_partitions(partitions)

    def judged_at(self, record: Record) -> int:
        """The time a record's timestamp is judged against: its broker append time on a
        LogAppendTime topic (the broker stamps it; producers cannot), else now."""
        if record.log_append_time and record.timestamp_ms is not None:
            return record.timestamp_ms
        return self._clock()

    def _check(self, record: Record) -> str:
        claim = self._claim(record)
        if isinstance(claim, str):
            return claim
        if self._expired(record, claim):
            return "expired"
        verdict = self._remember(record, claim)
        if verdict in (NonceVerdict.FRESH, NonceVerdict.REDELIVERY):
            return "ok"
        return "replay" if verdict is NonceVerdict.REPLAY else verdict.value

    def _expired(self, record: Record, claim: _Claim) -> bool:
        return abs(self.judged_at(record) - claim.timestamp_ms) > self.window_ms

    def _remember(self, record: Record, claim: _Claim) -> NonceVerdict:
        p = record.position
        return self._nonces.check_and_add(
            claim.sender, claim.nonce, claim.timestamp_ms + self.window_ms,
            self.judged_at(record), (p.topic, p.partition, p.offset))

    def _claim(self, record: Record) -> _Claim | str:
        """The verified claim of `record`, or the reason it has none."""
        headers = _read_headers(record.headers)
        if isinstance(headers, str):
            return headers
        if isinstance(headers, _Sealed):
            return self._sealed_claim(record, headers.seals, headers.covered)
        key = self._keys.for_sender(headers.sender)
        covered = headers.covered
        if key is None or (covered and headers.version == 1):
            return "bad_signature"  # version 1 leaves binary-mode headers unsigned
        expected = sign_record(key, headers.nonce, headers.timestamp_ms, headers.sender,
                               record.value, covered if headers.version > 1 else None)
        if not hmac.compare_digest(expected.encode("ascii"), headers.signature):
            return "bad_signature"
        return _Claim(headers.sender, headers.nonce, headers.timestamp_ms)

    def _sealed_claim(self, record: Record, seals: list[bytes],
                      covered: list[tuple[str, bytes]]) -> _Claim | str:
        seal = (read_seal(seals[0], record.value, self._sealed_by_daemon)
                if len(seals) == 1 and self._seal_checks else None)
        # The seal covers the value only: binary-mode headers on a sealed record are refused.
        if seal is None or covered:
            return "bad_signature"
        return _Claim(REPLAY_SENDER, seal.entry_id, seal.replayed_at_ms)


@dataclass(frozen=True, slots=True)
class _Headers:
    nonce: str
    timestamp_ms: int
    sender: str
    signature: bytes
    version: int
    covered: list[tuple[str, bytes]]  # what a version 2 signature covers, in signing order


@dataclass(frozen=True, slots=True)
class _Sealed:
    """A record `govpipe replay` put back: judged by its seal, not by `agt-*` headers."""

    covered: list[tuple[str, bytes]]
    seals: list[bytes]


_SIGNING_HEADERS = frozenset((*HEADERS, VERSION_HEADER))


def _read_headers(headers: tuple[tuple[str, bytes], ...]) -> _Headers | _Sealed | str:
    """One pass over the record's headers: the `agt-*` ones (each at most once), the
    replay seals, and the binary-mode headers a signature covers."""
    found: dict[str, bytes] = {}
    repeated = False
    covered: list[tuple[str, bytes]] = []
    seals: list[bytes] = []
    for name, value in headers:
        if name in _SIGNING_HEADERS:
            repeated = repeated or name in found
            found[name] = value
        elif name == SEAL_HEADER:
            seals.append(value)
        elif is_covered_header(name):
            covered.append((name, value))
    if covered:
        covered.sort()
    if seals:
        return _Sealed(covered, seals)
    if SIGNATURE_HEADER not in found:
        return "unsigned"
    if repeated or len(found) - (VERSION_HEADER in found) < len(HEADERS):
        return "bad_signature"  # one missing or repeated
    return _parsed(found, covered)


def _parsed(found: dict[str, bytes], covered: list[tuple[str, bytes]]) -> _Headers | str:
    version = _version(found.get(VERSION_HEADER))
    try:
        nonce = found[NONCE_HEADER].decode("utf-8")
        timestamp = found[TIMESTAMP_HEADER].decode("utf-8")
        sender = found[SENDER_HEADER].decode("utf-8")
    except UnicodeDecodeError:
        return "bad_signature"
    if (version is None or not nonce or len(nonce) > MAX_NONCE_CHARS or "|" in nonce
            or "|" in sender or not _DIGITS.fullmatch(timestamp)):
        return "bad_signature"
    return _Headers(nonce, int(timestamp), sender, found[SIGNATURE_HEADER], version,
                    covered)


def _version(value: bytes | None) -> int | None:
    """1 without `agt-sigver`, 2 for a "2"; None for anything else."""
    if value is None:
        return 1
    return HEADERS_VERSION if value == _VERSION_VALUE else None


_VERSION_VALUE = str(HEADERS_VERSION).encode()
