"""A real Apache Kafka broker (single node, KRaft) for integration tests and benchmarks.

The broker jars come from Maven Central (``tests/support/infra/kafka/pom.xml``) and are
cached under ``${GOVPIPE_CACHE:-~/.cache/govpipe}/kafka-<version>/libs``. Each
:class:`KafkaBroker` lives in its own temp dir, binds 127.0.0.1 on free ports and is stopped
by its process id. The clients (topics, producers, consumers) are in
:mod:`tests.support.kafka_clients`; a broker with secured listeners (SASL, TLS, mTLS) in
:mod:`tests.support.infra.secure_kafka`; the codec of each stored record batch (read from
the segment files) in :mod:`tests.support.infra.kafka_segments`.

Usage from a script::

    with KafkaBroker() as broker:
        asyncio.run(produce(broker.bootstrap, "events", [b"x"]))

``python -m tests.support.infra.kafka`` fetches the jars and prints their directory (CI
cache warm-up).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import sys
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.infra.process import (
    ServiceError,
    ServiceProcess,
    build_once,
    cache_root,
    free_ports,
    port_open,
    require_tool,
    run_tool,
)

__all__ = [
    "KafkaBroker",
    "ServiceError",
    "ensure_kafka_jars",
    "kafka_version",
]

POM_PATH = Path(__file__).resolve().parent / "kafka" / "pom.xml"
READY_LINE = "Kafka Server started"  # logged by kafka.server.KafkaRaftServer at INFO
_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}
_MVN_TIMEOUT_S = 900.0
_FORMAT_TIMEOUT_S = 120.0
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
listeners={listeners}
advertised.listeners={listeners}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map={protocol_map}
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
    """Return the Kafka version pinned in ``tests/support/infra/kafka/pom.xml``."""
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


def ensure_kafka_jars() -> Path:
    """Return the directory holding the Kafka broker jars, fetching them on first use.

    A marker file (holding the pom's hash) is written only after a complete copy, so an
    interrupted download, or a changed pom, is redone from scratch.
    """
    base = cache_root() / f"kafka-{kafka_version()}"
    libs = base / "libs"
    pom_hash = hashlib.sha256(POM_PATH.read_bytes()).hexdigest()
    build_once(base, base / "libs.complete", pom_hash, lambda: _copy_dependencies(libs))
    return libs


def _copy_dependencies(libs: Path) -> None:
    shutil.rmtree(libs, ignore_errors=True)  # no stale jars from a half run
    print("fetching Apache Kafka jars from Maven Central (first run only)…", file=sys.stderr,
          flush=True)
    mvn = require_tool("mvn", "to fetch the Kafka jars from Maven Central (install Maven)")
    argv = [
        mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(POM_PATH),
        "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={libs}",
    ]  # fmt: skip
    run_tool(argv, "mvn copy-dependencies (Kafka jars)", _MVN_TIMEOUT_S)
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

    @property
    def data_dir(self) -> Path:
        """The broker's ``log.dirs``: a ``<topic>-<partition>`` directory per partition."""
        return self.work_dir / "data"

    def tool_command(self, main: str) -> list[str]:
        """``java … <main>``: a Kafka command-line tool (e.g. ``kafka.tools.DumpLogSegments``)
        on the broker's jars, small heap, the broker's log4j config (WARN, to stderr)."""
        return self._jvm(self._libs or ensure_kafka_jars(), _TOOL_JVM, main)

    def _prepare(self) -> None:
        libs = self._libs = self._libs or ensure_kafka_jars()
        if not self._formatted:
            self._write_config()
            self._format_storage(libs)

    def _command(self) -> list[str]:
        assert self._libs is not None
        argv = self._jvm(self._libs, _BROKER_JVM, "kafka.Kafka")
        return [*argv, str(self.work_dir / "server.properties")]

    def _listeners(self) -> dict[str, tuple[str, int]]:
        """Client listeners, name → (security protocol, port); the controller's is added."""
        return {"PLAINTEXT": ("PLAINTEXT", self._port)}

    def _format_options(self) -> list[str]:
        """Extra ``StorageTool format`` options (e.g. ``--add-scram``)."""
        return []

    def _is_ready(self, log_offset: int) -> bool:
        return self.logged_since(log_offset, READY_LINE) and all(
            port_open(port) for _, port in self._listeners().values())

    def _where(self) -> str:
        return f"({self.bootstrap})"

    def _write_config(self) -> None:
        listeners = {**self._listeners(), "CONTROLLER": ("PLAINTEXT", self._controller_port)}
        props = _SERVER_PROPERTIES.format(
            cport=self._controller_port, data_dir=self.data_dir,
            listeners=",".join(f"{name}://127.0.0.1:{port}"
                               for name, (_, port) in listeners.items()),
            protocol_map=",".join(f"{name}:{protocol}"
                                  for name, (protocol, _) in listeners.items()),
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
            "-c", str(self.work_dir / "server.properties"), *self._format_options(),
        ]  # fmt: skip
        run_tool(argv, "kafka StorageTool format", _FORMAT_TIMEOUT_S)
        self._formatted = True


if __name__ == "__main__":
    # CI cache warm-up: fetch once, print where the jars are.
    print(ensure_kafka_jars())
