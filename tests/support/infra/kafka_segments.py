"""The record batches a :class:`~tests.support.infra.kafka.KafkaBroker` stored for a topic,
as Kafka's own ``kafka.tools.DumpLogSegments`` reads them from the partition's segment
files: each batch's offsets and compression codec. No client API reports the codec (a
consumer sees the records already decompressed), so this is how a test proves what a
producer compressed with.

The broker keeps the producer's codec (topic ``compression.type=producer``, the default), so
the codec here is the one the producer used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tests.support.infra.kafka import KafkaBroker
from tests.support.infra.process import ServiceError, run_tool

__all__ = ["RecordBatch", "parse_batches", "record_batches"]

_DUMP_TIMEOUT_S = 60.0
# One line per batch (magic v2), e.g. "baseOffset: 0 lastOffset: 3 count: 4 … compresscodec:
# zstd crc: …"; record lines (with --print-data-log only) start with "| offset:".
_BATCH_LINE = re.compile(
    r"^baseOffset: (?P<base>\d+) lastOffset: (?P<last>\d+) count: (?P<count>\d+) "
    r".*\bcompresscodec: (?P<codec>\S+)", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """One stored record batch: its offsets and its codec (lower case: ``none``, ``gzip``,
    ``snappy``, ``lz4``, ``zstd``)."""

    base_offset: int
    last_offset: int
    count: int
    codec: str


def parse_batches(dump: str) -> list[RecordBatch]:
    """The batches in ``DumpLogSegments`` output, in the order printed."""
    return [RecordBatch(int(m["base"]), int(m["last"]), int(m["count"]), m["codec"].lower())
            for m in _BATCH_LINE.finditer(dump)]


def record_batches(broker: KafkaBroker, topic: str, partition: int = 0) -> list[RecordBatch]:
    """Every record batch of ``topic``'s ``partition`` on ``broker``, in offset order (a JVM
    start, about 1 s). Read while the broker runs: call it once the records are acknowledged
    (a single broker acknowledges a batch once it is in the segment file)."""
    partition_dir = broker.data_dir / f"{topic}-{partition}"
    # Segment files are named after their zero-padded base offset: sorted is offset order.
    segments = sorted(partition_dir.glob("*.log"))
    if not segments:
        raise ServiceError(f"no segment file in {partition_dir}")
    argv = [*broker.tool_command("kafka.tools.DumpLogSegments"),
            "--files", ",".join(str(segment) for segment in segments)]
    dump = run_tool(argv, f"DumpLogSegments {topic}-{partition}", _DUMP_TIMEOUT_S)
    return parse_batches(dump)
