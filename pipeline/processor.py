"""Turns one raw record into a signed, serialized CloudEvent, or a rejection with a reason.

Stages: inbound signature check (optional) → decode → map → source position → tool-poisoning
marks (optional) → sign → serialize."""

from __future__ import annotations

import logging
from typing import Any

from pipeline.cloudevents.binding import (
    binary_to_structured,
    check_binary_representable,
    is_binary_mode,
)
from pipeline.cloudevents.codec import NUMBER_OUT_OF_RANGE, decode_object, encode
from pipeline.cloudevents.errors import InvalidEvent
from pipeline.cloudevents.mapping import to_cloudevent
from pipeline.cloudevents.position import with_position
from pipeline.detectors.tool_poisoning import ToolPoisoningDetector
from pipeline.inbound.keys import InboundKeys
from pipeline.inbound.replay_seal import seal_check
from pipeline.inbound.verifier import InboundVerifier
from pipeline.model import Record, Rejection, SignedEvent
from pipeline.signing.jcs import IntegerOutOfRange
from pipeline.signing.signers import Signer

log = logging.getLogger(__name__)


class EventProcessor:
    """decode → map → sign → serialize, once per record; never raises for bad input."""

    def __init__(self, signer: Signer, max_event_bytes: int, configured_source: str = "", *,
                 inbound: InboundVerifier | None = None,
                 detector: ToolPoisoningDetector | None = None,
                 binary_output: bool = False) -> None:
        self._signer = signer
        self._max_bytes = max_event_bytes
        self._configured_source = configured_source or None
        self._inbound = inbound
        self._detector = detector
        # Set when a sink writes Kafka binary mode: only events a consumer rebuilds exactly.
        self._binary_output = binary_output

    @property
    def signer(self) -> Signer:
        """The signer events are signed with now."""
        return self._signer

    def use_keys(self, signer: Signer, inbound_keys: InboundKeys | None) -> None:
        """Sign every record processed from now on with `signer` and check producer
        signatures against `inbound_keys` (a key rotation; the nonces seen are kept)."""
        self._signer = signer
        if self._inbound is not None and inbound_keys is not None:
            self._inbound.use_keys(inbound_keys, seal_check(signer))

    def process(self, record: Record) -> SignedEvent | Rejection:
        if self._inbound is not None and (refused := self._inbound.check(record)):
            return Rejection(refused, f"producer signature check failed: {refused}", record)
        alerts: list[str] = []
        try:
            cloudevent = with_position(
                to_cloudevent(self._decode(record), self._configured_source), record.position)
            if self._binary_output:
                check_binary_representable(cloudevent)
            if self._detector is not None:
                alerts = self._detector.mark(cloudevent)
            signed = self._signer.sign_json(cloudevent)  # decoded from JSON: plain values
            body = encode(signed)
        except InvalidEvent as exc:
            return Rejection(exc.reason, exc.detail, record)
        except IntegerOutOfRange as exc:
            # Ed25519 only: HMAC's canonical form (Agent OS's) keeps every digit.
            return Rejection(NUMBER_OUT_OF_RANGE, str(exc), record)
        except (ValueError, TypeError, RecursionError) as exc:
            # Valid JSON that cannot be signed or written as strict JSON (lone surrogates,
            # nesting past the serializer's depth limit...).
            return Rejection("unserializable", f"{type(exc).__name__}: {str(exc)[:200]}", record)
        if alerts and self._detector is not None:
            self._detector.count(alerts)
        key = signed.get("partitionkey")
        return SignedEvent(id=signed["id"], attributes=signed, body=body,
                           position=record.position,
                           partition_key=key if isinstance(key, str) else None)

    def _decode(self, record: Record) -> dict[str, Any]:
        if record.headers and is_binary_mode(record.headers):
            return binary_to_structured(record.headers, record.value, self._max_bytes)
        return decode_object(record.value, self._max_bytes)
