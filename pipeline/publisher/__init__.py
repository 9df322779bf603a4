"""Publishing governance events onto govpipe's input topic, for producers (agents).

`Publisher` (asyncio), `SyncPublisher` and `AgentOsSink` (Agent OS's sink shape) accept each
event into a durable local spool and return at once; a background sender drains the spool
to Kafka with an idempotent producer, signing each record (the `agt-*` headers) as it is
sent, and removes an event from the spool only once the broker acknowledged it. A restart
sends again whatever was not acknowledged. `pipeline.publisher.agent_os` connects an Agent
OS kernel's callbacks to a processor; `DirectPublisher` (no spool) serves `govpipe publish`.
"""

from pipeline.publisher.client import DEFAULT_TOPIC, Publisher, PublishError, default_spool_dir
from pipeline.publisher.direct import DirectPublisher
from pipeline.publisher.events import event_payload
from pipeline.publisher.keys import load_producer_key
from pipeline.publisher.options import SpoolOptions
from pipeline.publisher.results import ExportResult
from pipeline.publisher.sink import AgentOsSink
from pipeline.publisher.spool import SpoolError
from pipeline.publisher.threaded import SyncPublisher

__all__ = [
    "DEFAULT_TOPIC",
    "AgentOsSink",
    "DirectPublisher",
    "ExportResult",
    "PublishError",
    "Publisher",
    "SpoolError",
    "SpoolOptions",
    "SyncPublisher",
    "default_spool_dir",
    "event_payload",
    "load_producer_key",
]
