"""One harness per sink: how to build it against its real peer, read what the peer got,
and make the peer fail in a retriable and in a non-retriable way."""

from __future__ import annotations

import contextlib
import io
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import IO, Any, Literal

from pipeline.model import SignedEvent
from sinks.base import Sink, SinkError
from sinks.kafka import KafkaSink
from sinks.otlp.sink import OtlpOptions, OtlpSink
from sinks.stdout import StdoutSink
from tests.support.events import oversized_event, signed_examples
from tests.support.fakes import MemorySink
from tests.support.infra.collector import Collector
from tests.support.infra.kafka import KafkaBroker
from tests.support.infra.process import free_ports
from tests.support.kafka_clients import consume_all, create_topics

PEER_TIMEOUT_S = 20.0


class Harness(ABC):
    """Builds sinks of one kind and closes every one it built."""

    def __init__(self) -> None:
        self._sinks: list[Sink] = []

    def track(self, sink: Sink) -> Sink:
        self._sinks.append(sink)
        return sink

    @abstractmethod
    def make(self) -> Sink:
        """A sink whose peer is up and accepting."""

    @abstractmethod
    async def peer_ids(self, expected: int) -> list[str]:
        """Event ids the peer holds, in arrival order, once ``expected`` are there (or at
        the timeout)."""

    @abstractmethod
    def unreachable(self) -> Sink:
        """A sink whose peer is down or failing transiently: sends fail retriably."""

    @abstractmethod
    async def refusing(self) -> tuple[Sink, Sequence[SignedEvent]]:
        """A sink and a batch its peer refuses for good: sends fail non-retriably."""

    async def aclose(self) -> None:
        for sink in self._sinks:
            await sink.aclose()


class MemoryHarness(Harness):
    def __init__(self) -> None:
        super().__init__()
        self._made: list[MemorySink] = []

    def make(self) -> Sink:
        sink = MemorySink()
        self._made.append(sink)
        return self.track(sink)

    async def peer_ids(self, expected: int) -> list[str]:
        return [event.id for sink in self._made for event in sink.events]

    def _failing(self, retriable: bool) -> Sink:
        sink = MemorySink()
        sink.fail_with = SinkError("injected", retriable=retriable, reason="injected")
        return self.track(sink)

    def unreachable(self) -> Sink:
        return self._failing(retriable=True)

    async def refusing(self) -> tuple[Sink, Sequence[SignedEvent]]:
        return self._failing(retriable=False), signed_examples()[:3]


class StdoutHarness(Harness):
    def __init__(self) -> None:
        super().__init__()
        self._buffers: list[io.BytesIO] = []
        self._streams: list[IO[bytes]] = []

    def make(self) -> Sink:
        buffer = io.BytesIO()
        self._buffers.append(buffer)
        return self.track(StdoutSink(stream=buffer))

    async def peer_ids(self, expected: int) -> list[str]:
        lines = [line for b in self._buffers for line in b.getvalue().splitlines()]
        return [json.loads(line)["id"] for line in lines]

    def unreachable(self) -> Sink:
        # /dev/full answers every write with ENOSPC: a full disk may drain, so retriable.
        stream = open("/dev/full", "wb")  # noqa: SIM115  (closed in aclose)
        self._streams.append(stream)
        return self.track(StdoutSink(stream=stream))

    async def refusing(self) -> tuple[Sink, Sequence[SignedEvent]]:
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader is gone: EPIPE on every write
        stream = os.fdopen(write_end, "wb")
        self._streams.append(stream)
        return self.track(StdoutSink(stream=stream)), signed_examples()[:3]

    async def aclose(self) -> None:
        await super().aclose()
        for stream in self._streams:
            with contextlib.suppress(OSError):
                stream.close()


class OtlpHarness(Harness):
    def __init__(self, collector: Collector, protocol: Literal["grpc", "http/protobuf"]) -> None:
        super().__init__()
        self._collector = collector
        self._protocol: Literal["grpc", "http/protobuf"] = protocol
        self._refusing: Collector | None = None

    def _endpoint(self, collector: Collector) -> str:
        grpc = self._protocol == "grpc"
        return collector.grpc_endpoint if grpc else collector.http_endpoint

    def _sink(self, collector: Collector) -> Sink:
        options = OtlpOptions(endpoint=self._endpoint(collector), protocol=self._protocol,
                              timeout_s=3.0)
        return self.track(OtlpSink(options))

    def make(self) -> Sink:
        return self._sink(self._collector)

    async def peer_ids(self, expected: int) -> list[str]:
        records = self._collector.wait_for_log_records(expected, PEER_TIMEOUT_S)
        return [str(record.attributes["cloudevents.event_id"]) for record in records]

    def unreachable(self) -> Sink:
        sink = self._sink(self._collector)
        self._collector.stop()  # the collector goes away after the sink was configured
        return sink

    async def refusing(self) -> tuple[Sink, Sequence[SignedEvent]]:
        # A collector without a logs pipeline: gRPC UNIMPLEMENTED, HTTP 404, every time.
        self._refusing = Collector(binary=self._collector.binary, accept_logs=False)
        self._refusing.start()
        return self._sink(self._refusing), signed_examples()[:3]

    async def aclose(self) -> None:
        await super().aclose()
        if self._refusing is not None:
            self._refusing.close()


class KafkaHarness(Harness):
    def __init__(
        self, broker: KafkaBroker, topic: str, mode: Literal["structured", "binary"]
    ) -> None:
        super().__init__()
        self._broker, self._topic, self._mode = broker, topic, mode

    def _sink(self, bootstrap: str, topic: str, **options: Any) -> Sink:
        return self.track(KafkaSink(bootstrap, topic, content_mode=self._mode, timeout_s=5.0,
                                    producer_options=options))

    def make(self) -> Sink:
        return self._sink(self._broker.bootstrap, self._topic)

    async def peer_ids(self, expected: int) -> list[str]:
        records = await consume_all(self._broker.bootstrap, self._topic, expected,
                                    timeout_s=PEER_TIMEOUT_S)
        if self._mode == "binary":
            return [dict(record.headers)["ce_id"].decode() for record in records]
        return [json.loads(record.value)["id"] for record in records]

    def unreachable(self) -> Sink:
        (port,) = free_ports(1)  # handed out and taken back by the kernel: nothing listens
        return self._sink(f"127.0.0.1:{port}", self._topic)

    async def refusing(self) -> tuple[Sink, Sequence[SignedEvent]]:
        # The broker refuses a record over the topic's max.message.bytes: MESSAGE_TOO_LARGE.
        topic = f"{self._topic}-small"
        await create_topics(self._broker.bootstrap, [topic],
                            configs={"max.message.bytes": "4096"})
        return self._sink(self._broker.bootstrap, topic), [oversized_event(16_384)]
