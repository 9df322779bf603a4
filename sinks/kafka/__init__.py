"""Kafka sink: signed CloudEvents on a topic, per the CloudEvents Kafka protocol binding.

- ``sink``: the sink (producer start, send rounds, replacing a broken producer, close).
- ``messages``: a signed CloudEvent as a Kafka message, structured or binary content mode.
- ``batches``: messages grouped by partition and packed into record batches; what a round
  leaves to send again.
- ``deadlines``: bounded waits for the producer's acknowledgements and its stop.
- ``errors``: producer failures as SinkErrors (retriable or not, and the reason).
- ``sizes``: records too large for the topic, set apart and failed alone.
- ``staging``: the sink in exactly-once mode.
"""

from sinks.kafka.errors import to_sink_error
from sinks.kafka.messages import STRUCTURED_CONTENT_TYPE, binary_message
from sinks.kafka.sink import KafkaSink

__all__ = ["STRUCTURED_CONTENT_TYPE", "KafkaSink", "binary_message", "to_sink_error"]
