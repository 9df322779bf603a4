"""Kafka producer failures as SinkErrors.

aiokafka's ``KafkaError.retriable`` decides, except that connection errors and timeouts are
always retriable (the broker may come back), and so are the errors that only break the
idempotent producer's state (``OutOfOrderSequenceNumber`` after a broker restart, an invalid
epoch, fencing): the sink drops that producer and the retry starts a new one. The reason is
the error class in snake_case (``kafka_timeout_error``, ``message_size_too_large_error``…).
"""

from __future__ import annotations

import re

from aiokafka.errors import (  # type: ignore[import-untyped,unused-ignore]
    InvalidProducerEpoch,
    KafkaConnectionError,
    KafkaTimeoutError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
)

from sinks.base import SinkError

__all__ = ["PRODUCER_STATE_ERRORS", "to_sink_error"]

# Fatal to an idempotent producer (its producer id / sequence numbers are out of step with
# the broker, e.g. after a broker restart), not to the sink: a new producer gets a new id.
PRODUCER_STATE_ERRORS = (OutOfOrderSequenceNumber, InvalidProducerEpoch, ProducerFenced)
_ALWAYS_RETRIABLE = (KafkaConnectionError, KafkaTimeoutError, TimeoutError, OSError)
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def to_sink_error(exc: BaseException) -> SinkError:
    """The SinkError for a producer failure (see the module docstring)."""
    retriable = isinstance(exc, _ALWAYS_RETRIABLE + PRODUCER_STATE_ERRORS) or bool(
        getattr(exc, "retriable", False))
    return SinkError(f"kafka: {type(exc).__name__}: {exc}", retriable=retriable,
                     reason=_reason(exc))


def _reason(exc: BaseException) -> str:
    return _CAMEL_BOUNDARY.sub("_", type(exc).__name__).lower()
