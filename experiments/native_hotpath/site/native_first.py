"""Experiment (issue 20): `EventProcessor.process` with a native hot path tried first.

For a processor that signs with HMAC, checks no producer signature and writes structured
mode, each record goes to `govpipe_native.NativeProcessor` (Rust, ../src); it answers the
signed body when it is certain to write the Python path's bytes and None otherwise (other
input shapes, rejections, floats written with an exponent, non-ASCII text the tool-
poisoning rules would have to read...), and then the Python path runs. `install()` swaps
the method on the class; nothing in pipeline/ knows about it.
"""

from __future__ import annotations

from typing import Any

import orjson
from govpipe_native import NativeProcessor

from pipeline.cloudevents.binding import is_binary_mode
from pipeline.model import KIND_TYPES, TYPE_PREFIX, Record, Rejection, SignedEvent
from pipeline.processor import EventProcessor
from pipeline.signing.signers import HmacSigner

python_process = EventProcessor.process
# Per processor: the signer its native twin was built for (a key rotation replaces it).
_CACHE = "_native_first"


def native_for(processor: EventProcessor) -> NativeProcessor | None:
    """The native twin of `processor`'s configuration, or None where it has none."""
    signer = processor._signer
    cached: tuple[object, NativeProcessor | None] | None = processor.__dict__.get(_CACHE)
    if cached is not None and cached[0] is signer:
        return cached[1]
    native = None
    if (type(signer) is HmacSigner and processor._inbound is None
            and not processor._binary_output):
        native = NativeProcessor(signer._key, signer.key_id, processor._max_bytes,
                                 processor._configured_source, processor._detector is not None,
                                 TYPE_PREFIX, dict(KIND_TYPES))
    processor.__dict__[_CACHE] = (signer, native)
    return native


def native_first_process(self: EventProcessor, record: Record) -> SignedEvent | Rejection:
    """`EventProcessor.process`, natively where the native code is certain of the result."""
    native = native_for(self)
    if native is not None and not (record.headers and is_binary_mode(record.headers)):
        position = record.position
        signed = native.process(record.value, position.topic, position.partition,
                                position.offset, position.kind == "line")
        if signed is not None:
            event_id, body, key, alerts = signed
            if alerts and self._detector is not None:
                self._detector.count(alerts)
            # Sinks that read members (OTLP, the dead-letter) get the same dict as before.
            attributes: dict[str, Any] = orjson.loads(body)
            return SignedEvent(id=event_id, attributes=attributes, body=body,
                               position=position, partition_key=key)
    return python_process(self, record)


def install() -> None:
    """Make every EventProcessor try the native path first."""
    EventProcessor.process = native_first_process  # type: ignore[method-assign]
