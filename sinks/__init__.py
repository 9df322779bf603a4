"""Sinks: each knows how to send a batch of signed events and how to close, nothing more.

Queueing, retries, the circuit breaker and accounting live in `pipeline.delivery.dispatcher`.
"""

from sinks.base import Sink, SinkError

__all__ = ["Sink", "SinkError"]
