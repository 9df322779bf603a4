"""How to reach a Kafka cluster: one `[kafka]` table for every client govpipe makes (source,
Kafka sink, Kafka dead-letter, publish, replay), and an optional `[sinks.kafka.connection]`
of the same keys when the Kafka sink writes to another cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from pipeline.settings.base import StrictModel

SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")


class KafkaConnection(StrictModel):
    """Brokers, transport security and authentication of one cluster."""

    bootstrap_servers: str = Field("127.0.0.1:9092", min_length=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_ca_file: Path | None = None            # PEM CA bundle; unset: the system's CAs
    ssl_cert_file: Path | None = None          # PEM client certificate (mutual TLS)
    ssl_key_file: Path | None = None           # PEM client key (mutual TLS)
    ssl_key_password_file: Path | None = None  # the client key's password, if encrypted
    ssl_check_hostname: bool = True
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password_file: Path | None = None
    sasl_password: SecretStr | None = None     # rather from GOVPIPE_KAFKA__SASL_PASSWORD
    sasl_oauth_token_file: Path | None = None  # OAUTHBEARER: re-read whenever it changes
    client_id: str = Field("govpipe", min_length=1)

    @model_validator(mode="after")
    def _coherent(self) -> KafkaConnection:
        for problem in (self._sasl_problem(), self._tls_problem()):
            if problem:
                raise ValueError(problem)
        return self

    def _sasl_problem(self) -> str | None:
        mechanism, sasl = self.sasl_mechanism, self.security_protocol in SASL_PROTOCOLS
        if sasl and mechanism is None:
            return f"sasl_mechanism: required with security_protocol = {self.security_protocol}"
        if mechanism is not None and not sasl:
            return (f"security_protocol: {self.security_protocol} does not authenticate with "
                    f"SASL; use SASL_SSL (or SASL_PLAINTEXT) with sasl_mechanism = {mechanism}")
        if mechanism == "OAUTHBEARER":
            return None if self.sasl_oauth_token_file else (
                "sasl_oauth_token_file: required with sasl_mechanism = OAUTHBEARER")
        if mechanism is not None and not self.sasl_username:
            return f"sasl_username: required with sasl_mechanism = {mechanism}"
        if mechanism is not None and (self.sasl_password_file is None) == (
                self.sasl_password is None):
            return ("sasl_password_file: give the password in exactly one way: "
                    "sasl_password_file or GOVPIPE_KAFKA__SASL_PASSWORD")
        return None

    def _tls_problem(self) -> str | None:
        tls_files = [name for name in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file",
                                       "ssl_key_password_file") if getattr(self, name)]
        if tls_files and self.security_protocol not in TLS_PROTOCOLS:
            return (f"{tls_files[0]}: not used with security_protocol = "
                    f"{self.security_protocol} (no TLS); use SSL or SASL_SSL, or remove it")
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            missing = "ssl_key_file" if self.ssl_key_file is None else "ssl_cert_file"
            return f"{missing}: a client certificate needs both ssl_cert_file and ssl_key_file"
        if self.ssl_key_password_file and not self.ssl_key_file:
            return "ssl_key_password_file: only with ssl_key_file"
        return None

    def files(self) -> dict[str, Path]:
        """The files this connection reads, by key (to check they can be read)."""
        keys = ("ssl_ca_file", "ssl_cert_file", "ssl_key_file", "ssl_key_password_file",
                "sasl_password_file", "sasl_oauth_token_file")
        return {key: path for key in keys if (path := getattr(self, key)) is not None}

    def where(self) -> str:
        """How it connects, without secrets: for log lines and errors."""
        how: str = self.security_protocol
        if self.sasl_mechanism:
            who = f" as {self.sasl_username}" if self.sasl_username else ""
            how += f" ({self.sasl_mechanism}{who})"
        return f"{self.bootstrap_servers} over {how}"


def deprecated_kafka_keys(data: dict[str, Any]) -> list[str]:
    """Move the old per-client `bootstrap_servers` keys of raw config `data` to where they
    live now; one notice per key moved."""
    notices: list[str] = []
    kafka = data.setdefault("kafka", {}) if isinstance(data.get("kafka", {}), dict) else None
    source = data.get("source")
    if kafka is not None and isinstance(source, dict) and "bootstrap_servers" in source:
        servers = source.pop("bootstrap_servers")
        if "bootstrap_servers" in kafka:
            notices.append("source.bootstrap_servers is deprecated and ignored: "
                           "kafka.bootstrap_servers is set")
        else:
            kafka["bootstrap_servers"] = servers
            notices.append("source.bootstrap_servers is deprecated: use kafka.bootstrap_servers")
    sink = data.get("sinks", {}).get("kafka") if isinstance(data.get("sinks"), dict) else None
    if kafka is not None and isinstance(sink, dict) and "bootstrap_servers" in sink:
        servers = sink.pop("bootstrap_servers")
        if "connection" not in sink:
            # The same security settings as [kafka], on the brokers it names.
            sink["connection"] = {**kafka, "bootstrap_servers": servers}
        notices.append("sinks.kafka.bootstrap_servers is deprecated: use "
                       "[sinks.kafka.connection] (a table of the [kafka] keys)")
    return notices
