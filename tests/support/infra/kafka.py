"""A real Apache Kafka broker (single node, KRaft) for integration tests and benchmarks.

The broker jars come from Maven Central (``tests/support/infra/kafka/pom.xml``) and are
cached under ``${GOVPIPE_CACHE:-~/.cache/govpipe}/kafka-<version>/libs``. Each
:class:`KafkaBroker` lives in its own temp dir, binds 127.0.0.1 on free ports and is stopped
by its process id. The clients (topics, producers, consumers) are in
:mod:`tests.support.kafka_clients`.

Usage from a script::

    with KafkaBroker() as broker:
        asyncio.run(produce(broker.bootstrap, "events", [b"x"]))

``python -m tests.support.infra.kafka`` fetches the jars and prints their directory (CI
cache warm-up).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.infra.certs import BrokerPki, make_broker_pki
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
    "KafkaUser",
    "SecureKafka",
    "SecureKafkaBroker",
    "ServiceError",
    "ensure_kafka_jars",
    "kafka_version",
    "unsecured_jwt",
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
        data_dir = self.work_dir / "data"
        listeners = {**self._listeners(), "CONTROLLER": ("PLAINTEXT", self._controller_port)}
        props = _SERVER_PROPERTIES.format(
            cport=self._controller_port, data_dir=data_dir,
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



# --------------------------------------------------------------------------- secured listeners

_UNSECURED = "org.apache.kafka.common.security.oauthbearer.internals.unsecured."
_JAAS_SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
# The broker's own OAUTHBEARER login makes an unsecured token too (never sent anywhere here).
_JAAS_OAUTH = ('org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required '
               'unsecuredLoginStringClaim_sub="broker";')
SASL_SSL_MECHANISMS = ("SCRAM-SHA-512", "PLAIN", "OAUTHBEARER")
SASL_PLAINTEXT_MECHANISMS = ("OAUTHBEARER",)


@dataclass(frozen=True, slots=True)
class KafkaUser:
    """A SASL user (SCRAM or PLAIN) the broker knows."""

    name: str
    password: str


def unsecured_jwt(
    subject: str = "govpipe",
    *,
    lifetime_s: float = 3600.0,
    issued_at: float | None = None,
    scope: Sequence[str] = (),
    extra_claims: Mapping[str, object] | None = None,
) -> str:
    """An unsigned JWT (header ``{"alg":"none"}``, empty signature) as Kafka's unsecured
    OAUTHBEARER validator accepts it: ``sub`` is the principal, ``exp`` is required and must
    not be past (no clock skew is allowed by default), ``iat`` must not be in the future.
    A negative ``lifetime_s`` makes an already expired token. ``scope`` becomes the
    ``scope`` claim (a list); the broker here requires no scope."""
    iat = int(time.time() if issued_at is None else issued_at)
    claims: dict[str, object] = {"sub": subject, "iat": iat, "exp": iat + int(lifetime_s)}
    if scope:
        claims["scope"] = list(scope)
    claims.update(extra_claims or {})

    def part(value: Mapping[str, object]) -> str:
        raw = json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part(claims)}."


@dataclass(frozen=True, slots=True)
class SecureKafka:
    """How to reach each listener of a :class:`SecureKafkaBroker`, and the credentials.

    All listeners are on 127.0.0.1, each on its own port; the TLS ones present a
    certificate for 127.0.0.1 and localhost issued by ``pki.ca_cert``.
    """

    plaintext_bootstrap: str
    """PLAINTEXT, no authentication: the test's own admin client, topic setup."""
    sasl_ssl_bootstrap: str
    """SASL_SSL (server-authenticated TLS, no client cert) with ``sasl_ssl_mechanisms``."""
    ssl_bootstrap: str
    """SSL requiring a client certificate issued by ``pki.ca_cert`` (mTLS)."""
    sasl_plaintext_bootstrap: str
    """SASL_PLAINTEXT with ``sasl_plaintext_mechanisms`` (OAUTHBEARER only)."""
    pki: BrokerPki
    scram_user: KafkaUser
    """A SCRAM-SHA-512 user (created at storage format). Unknown to PLAIN."""
    plain_user: KafkaUser
    """A PLAIN user (JAAS ``user_NAME``). Unknown to SCRAM."""
    sasl_ssl_mechanisms: tuple[str, ...]
    sasl_plaintext_mechanisms: tuple[str, ...]
    log_path: Path
    """The broker's log (WARN and above), for post-mortems."""

    def token(self, subject: str = "govpipe", *, lifetime_s: float = 3600.0,
              issued_at: float | None = None, scope: Sequence[str] = ()) -> str:
        """An OAUTHBEARER token the broker accepts (expired if ``lifetime_s`` < 0); see
        :func:`unsecured_jwt`."""
        return unsecured_jwt(subject, lifetime_s=lifetime_s, issued_at=issued_at, scope=scope)


class SecureKafkaBroker(KafkaBroker):
    """A :class:`KafkaBroker` that also serves SASL_SSL, SSL (mTLS) and SASL_PLAINTEXT
    listeners, each on its own port, with a private CA, a SCRAM user, a PLAIN user and
    Kafka's unsecured (unsigned-JWT) OAUTHBEARER handlers. ``security`` describes them."""

    name = "Kafka broker (secured listeners)"

    def __init__(
        self,
        *,
        libs: Path | None = None,
        startup_timeout_s: float = 90.0,
        extra_properties: Mapping[str, str] | None = None,
    ) -> None:
        """Prepare (not start): ports, certificates, users, server.properties."""
        super().__init__(libs=libs, startup_timeout_s=startup_timeout_s)
        (self._port, self._controller_port, self._sasl_ssl_port, self._ssl_port,
         self._sasl_plaintext_port) = free_ports(5)
        self._pki = make_broker_pki(self.work_dir / "pki")
        self._scram = KafkaUser("govpipe-scram", secrets.token_urlsafe(16))
        self._plain = KafkaUser("govpipe-plain", secrets.token_urlsafe(16))
        self._extra = {**self._security_properties(), **dict(extra_properties or {})}

    @property
    def security(self) -> SecureKafka:
        """Bootstrap per listener, PEM paths, users and a token maker."""
        return SecureKafka(
            plaintext_bootstrap=self.bootstrap,
            sasl_ssl_bootstrap=f"127.0.0.1:{self._sasl_ssl_port}",
            ssl_bootstrap=f"127.0.0.1:{self._ssl_port}",
            sasl_plaintext_bootstrap=f"127.0.0.1:{self._sasl_plaintext_port}",
            pki=self._pki,
            scram_user=self._scram,
            plain_user=self._plain,
            sasl_ssl_mechanisms=SASL_SSL_MECHANISMS,
            sasl_plaintext_mechanisms=SASL_PLAINTEXT_MECHANISMS,
            log_path=self.log_path,
        )

    def _listeners(self) -> dict[str, tuple[str, int]]:
        return {
            "PLAINTEXT": ("PLAINTEXT", self._port),
            "SASL_SSL": ("SASL_SSL", self._sasl_ssl_port),
            "SSL": ("SSL", self._ssl_port),
            "SASL_PLAINTEXT": ("SASL_PLAINTEXT", self._sasl_plaintext_port),
        }

    def _format_options(self) -> list[str]:
        user = self._scram
        return ["--add-scram", f"SCRAM-SHA-512=[name={user.name},password={user.password}]"]

    def _where(self) -> str:
        return f"({', '.join(f'{n}=127.0.0.1:{p}' for n, (_, p) in self._listeners().items())})"

    def _security_properties(self) -> dict[str, str]:
        pki, plain = self._pki, self._plain
        props = {
            # One PEM keystore/truststore for every TLS listener (SASL_SSL and SSL).
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(pki.server_keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(pki.ca_cert),
            "listener.name.ssl.ssl.client.auth": "required",
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": ",".join(SASL_SSL_MECHANISMS),
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": _JAAS_SCRAM,
            "listener.name.sasl_ssl.plain.sasl.jaas.config":
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'user_{plain.name}="{plain.password}";',
            "listener.name.sasl_plaintext.sasl.enabled.mechanisms":
                ",".join(SASL_PLAINTEXT_MECHANISMS),
        }
        for listener in ("sasl_ssl", "sasl_plaintext"):
            prefix = f"listener.name.{listener}.oauthbearer."
            props[prefix + "sasl.jaas.config"] = _JAAS_OAUTH
            props[prefix + "sasl.server.callback.handler.class"] = (
                _UNSECURED + "OAuthBearerUnsecuredValidatorCallbackHandler")
            props[prefix + "sasl.login.callback.handler.class"] = (
                _UNSECURED + "OAuthBearerUnsecuredLoginCallbackHandler")
        return props

if __name__ == "__main__":
    # CI cache warm-up: fetch once, print where the jars are.
    print(ensure_kafka_jars())
