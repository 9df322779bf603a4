"""A real Apache Kafka broker (single node, KRaft) for integration tests and benchmarks.

The broker jars come from Maven Central (``tests/infra/kafka/pom.xml``) and are cached under
``${GOVPIPE_CACHE:-~/.cache/govpipe}/kafka-<version>/libs``. Each :class:`KafkaBroker` lives
in its own temp dir, binds 127.0.0.1 on free ports and is stopped by its process id.

Usage from a script::

    with KafkaBroker() as broker:
        asyncio.run(produce(broker.bootstrap, "events", [b"x"]))

``python -m tests.infra.kafka`` fetches the jars and prints their directory (CI cache warm-up).
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

from aiokafka import (  # type: ignore[import-untyped,unused-ignore]
    AIOKafkaConsumer,
    AIOKafkaProducer,
)
from aiokafka.admin import (  # type: ignore[import-untyped,unused-ignore]
    AIOKafkaAdminClient,
    NewTopic,
)
from aiokafka.structs import (  # type: ignore[import-untyped,unused-ignore]
    ConsumerRecord,
    RecordMetadata,
    TopicPartition,
)

from tests.infra.process import (
    ServiceError,
    ServiceProcess,
    cache_root,
    free_ports,
    port_open,
    require_tool,
    tail,
)

__all__ = [
    "KafkaBroker",
    "ServiceError",
    "consume_all",
    "consume_to_end",
    "create_topics",
    "end_offsets",
    "ensure_kafka_jars",
    "kafka_version",
    "produce",
]

POM_PATH = Path(__file__).resolve().parent / "kafka" / "pom.xml"
READY_LINE = "Kafka Server started"  # logged by kafka.server.KafkaRaftServer at INFO
_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}
_MVN_TIMEOUT_S = 900.0
_FORMAT_TIMEOUT_S = 120.0
_POLL_S = 0.1
_TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code
_BROKER_JVM = ("-Xms512m", "-Xmx512m", "-XX:+UseG1GC")
_TOOL_JVM = ("-Xmx256M",)

# Root at WARN keeps kafka.log small; the KafkaRaftServer logger stays at INFO because it
# prints READY_LINE, which the readiness check waits for.
_LOG4J2 = """\
status = error
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR
logger.ready.name = kafka.server.KafkaRaftServer
logger.ready.level = INFO
"""

# Single combined broker+controller; replication factors of 1 so internal topics can exist.
# After a SIGKILL the restarted broker is refused (DUPLICATE_BROKER_REGISTRATION) until the
# old registration's session expires: a 3 s session instead of 9 s makes crash-restarts quick.
_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{cport}
listeners=PLAINTEXT://127.0.0.1:{bport},CONTROLLER://127.0.0.1:{cport}
advertised.listeners=PLAINTEXT://127.0.0.1:{bport},CONTROLLER://127.0.0.1:{cport}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data_dir}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
"""


# --------------------------------------------------------------------------- jars


def kafka_version() -> str:
    """Return the Kafka version pinned in ``tests/infra/kafka/pom.xml``."""
    node = ET.parse(POM_PATH).find("m:properties/m:kafka.version", _POM_NS)
    if node is None or not (node.text or "").strip():
        raise ServiceError(f"no <kafka.version> property in {POM_PATH}")
    return (node.text or "").strip()


def _java() -> str:
    """Prefer $JAVA_HOME/bin/java (as Kafka's own scripts do), else java on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return require_tool("java", "to run the Kafka broker (Java 17+)")


def _run_tool(argv: Sequence[str], what: str, timeout_s: float) -> str:
    """Run a helper command; raise ServiceError naming it, with its output tail, on failure."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout
        raise ServiceError(f"{what} timed out after {timeout_s:.0f}s\n{tail(out or '')}") from exc
    except OSError as exc:
        raise ServiceError(f"{what} could not be run: {exc}") from exc
    if done.returncode != 0:
        output = tail(done.stdout + done.stderr)
        raise ServiceError(f"{what} failed (exit {done.returncode}):\n{output}")
    return done.stdout


def ensure_kafka_jars() -> Path:
    """Return the directory holding the Kafka broker jars, fetching them on first use.

    A marker file (holding the pom's hash) is written only after a complete copy, so an
    interrupted download, or a changed pom, is redone from scratch.
    """
    pom_hash = hashlib.sha256(POM_PATH.read_bytes()).hexdigest()
    base = cache_root() / f"kafka-{kafka_version()}"
    libs, marker = base / "libs", base / "libs.complete"
    base.mkdir(parents=True, exist_ok=True)
    # A file lock, because parallel test workers or benchmark runs may share the cache.
    with (base / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and marker.read_text().strip() == pom_hash:
            return libs
        marker.unlink(missing_ok=True)
        shutil.rmtree(libs, ignore_errors=True)  # no stale jars from a half run
        print(
            "fetching Apache Kafka jars from Maven Central (first run only)…",
            file=sys.stderr,
            flush=True,
        )
        _copy_dependencies(libs)
        marker.write_text(pom_hash + "\n")
    return libs


def _copy_dependencies(libs: Path) -> None:
    mvn = require_tool("mvn", "to fetch the Kafka jars from Maven Central (install Maven)")
    argv = [
        mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(POM_PATH),
        "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={libs}",
    ]  # fmt: skip
    _run_tool(argv, "mvn copy-dependencies (Kafka jars)", _MVN_TIMEOUT_S)
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise ServiceError(f"mvn succeeded but no kafka_2.13 jar is in {libs}")


# --------------------------------------------------------------------------- broker


def _new_cluster_id() -> str:
    """Same format and rules as Kafka's Uuid.randomUuid(), without a 0.5 s JVM start."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class KafkaBroker(ServiceProcess):
    """One single-node Kafka (KRaft) broker process, in a temp dir, on 127.0.0.1.

    Ports and ``log.dirs`` are fixed at construction, so ``stop()`` then ``start()`` (or
    ``restart()``) brings the same broker back on the same bootstrap address with its data.
    """

    name = "Kafka broker"
    stop_timeout_s = 30.0

    def __init__(
        self,
        *,
        libs: Path | None = None,
        startup_timeout_s: float = 90.0,
        extra_properties: Mapping[str, str] | None = None,
    ) -> None:
        """Prepare (not start) a broker; ``extra_properties`` are appended to server.properties."""
        super().__init__("govpipe-kafka-", "kafka.log", startup_timeout_s)
        self._libs = libs
        self._extra = dict(extra_properties or {})
        self._port, self._controller_port = free_ports(2)
        self._formatted = False

    @property
    def port(self) -> int:
        """The PLAINTEXT listener port on 127.0.0.1."""
        return self._port

    @property
    def bootstrap(self) -> str:
        """``bootstrap_servers`` value for clients: ``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self._port}"

    def _prepare(self) -> None:
        libs = self._libs = self._libs or ensure_kafka_jars()
        if not self._formatted:
            self._write_config()
            self._format_storage(libs)

    def _command(self) -> list[str]:
        assert self._libs is not None
        argv = self._jvm(self._libs, _BROKER_JVM, "kafka.Kafka")
        return [*argv, str(self.work_dir / "server.properties")]

    def _is_ready(self, log_offset: int) -> bool:
        return self.logged_since(log_offset, READY_LINE) and port_open(self._port)

    def _where(self) -> str:
        return f"({self.bootstrap})"

    def _write_config(self) -> None:
        data_dir = self.work_dir / "data"
        props = _SERVER_PROPERTIES.format(
            bport=self._port, cport=self._controller_port, data_dir=data_dir
        )
        props += "".join(f"{key}={value}\n" for key, value in self._extra.items())
        (self.work_dir / "server.properties").write_text(props)
        (self.work_dir / "log4j2.properties").write_text(_LOG4J2)

    def _jvm(self, libs: Path, heap: Sequence[str], main: str) -> list[str]:
        log_cfg = f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.properties'}"
        # The classpath wildcard is expanded by the JVM itself, not by a shell.
        return [_java(), *heap, log_cfg, "-cp", f"{libs}/*", main]

    def _format_storage(self, libs: Path) -> None:
        argv = [
            *self._jvm(libs, _TOOL_JVM, "kafka.tools.StorageTool"),
            "format", "--standalone", "-t", _new_cluster_id(),
            "-c", str(self.work_dir / "server.properties"),
        ]  # fmt: skip
        _run_tool(argv, "kafka StorageTool format", _FORMAT_TIMEOUT_S)
        self._formatted = True


# --------------------------------------------------------------------------- clients


async def create_topics(
    bootstrap: str, names: Sequence[str], partitions: int = 1, timeout_s: float = 30.0,
    configs: Mapping[str, str] | None = None,
) -> None:
    """Create topics (replication 1, with topic ``configs`` such as max.message.bytes) and
    wait until metadata shows every partition led.

    Topics that already exist are accepted (so it can be re-run after a broker restart);
    ServiceError if creation fails or the partitions have no leader within ``timeout_s``.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        topics = [NewTopic(name, partitions, 1, topic_configs=dict(configs or {}))
                  for name in names]
        response = await admin.create_topics(topics, timeout_ms=int(timeout_s * 1000))
        errors = response.to_object()["topic_errors"]
        failed = [t for t in errors if t["error_code"] not in (0, _TOPIC_ALREADY_EXISTS)]
        if failed:
            raise ServiceError(f"create_topics failed: {failed}")
        async with asyncio.timeout(timeout_s):
            await _wait_for_leaders(admin, names, partitions)
    except TimeoutError as exc:
        raise ServiceError(
            f"topics {list(names)} have no leader for all {partitions} partition(s) "
            f"after {timeout_s:.0f}s"
        ) from exc
    finally:
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: Sequence[str], n: int) -> None:
    # Polling: topic metadata lives in the broker; there is nothing local to wait on.
    while True:
        if _all_led(await admin.describe_topics(list(names)), n):
            return
        await asyncio.sleep(_POLL_S)


def _all_led(described: list[dict[str, object]], partitions: int) -> bool:
    def ready(topic: dict[str, object]) -> bool:
        parts = topic.get("partitions")
        return (
            topic.get("error_code") == 0
            and isinstance(parts, list)
            and len(parts) == partitions
            and all(isinstance(p, dict) and int(p.get("leader", -1)) >= 0 for p in parts)
        )

    return bool(described) and all(ready(topic) for topic in described)


async def produce(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes],
    keys: Sequence[bytes | None] | None = None,
    headers: Sequence[Sequence[tuple[str, bytes]]] | None = None,
) -> list[RecordMetadata]:
    """Send ``values`` in order (optional per-message keys/headers); return once all are acked.

    Uses an idempotent producer with acks=all, i.e. the settings a governance pipeline wants.
    """
    if keys is not None and len(keys) != len(values):
        raise ValueError("keys and values differ in length")
    if headers is not None and len(headers) != len(values):
        raise ValueError("headers and values differ in length")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    try:
        await producer.start()
        pending = [
            await producer.send(
                topic,
                value,
                key=None if keys is None else keys[i],
                headers=None if headers is None else list(headers[i]),
            )
            for i, value in enumerate(values)
        ]
        return list(await asyncio.gather(*pending))
    finally:
        await producer.stop()


async def consume_all(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0
) -> list[ConsumerRecord]:
    """Read ``topic`` from the earliest offset (no consumer group, nothing committed).

    Returns as soon as ``expected`` records arrived, or what was read when ``timeout_s`` ends.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout_s
    try:
        await consumer.start()
        while len(records) < expected and (left := deadline - time.monotonic()) > 0:
            batch = await consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for partition_records in batch.values():
                records.extend(partition_records)
    finally:
        await consumer.stop()
    return records


async def partition_numbers(bootstrap: str, topic: str) -> list[int]:
    """The partition numbers of an existing ``topic``, sorted (ServiceError if it has none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    numbers = sorted(int(p["partition"]) for t in described if t.get("error_code") == 0
                     for p in t.get("partitions", []))
    if not numbers:
        raise ServiceError(f"topic {topic!r} has no partitions: {described}")
    return numbers


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The end offset (next offset to be written) of each partition of ``topic``, now."""
    partitions = [TopicPartition(topic, n) for n in await partition_numbers(bootstrap, topic)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def consume_to_end(bootstrap: str, topic: str, timeout_s: float = 60.0
                         ) -> list[ConsumerRecord]:
    """Every record on ``topic`` up to its end offsets taken now, duplicates included.

    Unlike :func:`consume_all`, the stop condition does not depend on a count, so a topic
    holding redelivered copies is read whole. TimeoutError if the end is not reached.
    """
    partitions = [TopicPartition(topic, n) for n in await partition_numbers(bootstrap, topic)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False)
    records: list[ConsumerRecord] = []
    await consumer.start()
    try:
        async with asyncio.timeout(timeout_s):
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                batch = await consumer.getmany(timeout_ms=500)
                for partition_records in batch.values():
                    records.extend(partition_records)
    finally:
        await consumer.stop()
    return records


if __name__ == "__main__":
    # CI cache warm-up: fetch once, print where the jars are.
    print(ensure_kafka_jars())
