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
    sasl_password: SecretStr | None = Field(None, min_length=1)  # only from the environment
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
        unused = self._unused_credentials()
        if unused:
            return unused
        if mechanism == "OAUTHBEARER" and not self.sasl_oauth_token_file:
            return "sasl_oauth_token_file: required with sasl_mechanism = OAUTHBEARER"
        if mechanism in (None, "OAUTHBEARER"):
            return None
        if not self.sasl_username:
            return f"sasl_username: required with sasl_mechanism = {mechanism}"
        if (self.sasl_password_file is None) == (self.sasl_password is None):
            return ("sasl_password_file: give the password in exactly one way: "
                    "sasl_password_file, or sasl_password from the environment")
        return None

    def _unused_credentials(self) -> str | None:
        """A credential the mechanism never sends: connecting without it would fail later,
        and less clearly."""
        mechanism = self.sasl_mechanism
        passwords = ("sasl_username", "sasl_password_file", "sasl_password")
        unused = {None: (*passwords, "sasl_oauth_token_file"), "OAUTHBEARER": passwords}.get(
            mechanism, ("sasl_oauth_token_file",))
        given = [key for key in unused if getattr(self, key) is not None]
        if not given:
            return None
        without = f"with sasl_mechanism = {mechanism}" if mechanism else "without sasl_mechanism"
        return f"{given[0]}: not used {without}; remove it"

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


def moved_source_servers(layer: dict[str, Any]) -> list[str]:
    """Move one layer's (the file's, or the environment's) old `source.bootstrap_servers` to
    `kafka.bootstrap_servers`, so that the environment still overrides the file."""
    source, kafka = layer.get("source"), layer.get("kafka", {})
    if not (isinstance(source, dict) and "bootstrap_servers" in source
            and isinstance(kafka, dict)):
        return []
    servers = source.pop("bootstrap_servers")
    if "bootstrap_servers" in kafka:
        return ["source.bootstrap_servers is deprecated and ignored: kafka.bootstrap_servers "
                "is set beside it"]
    layer["kafka"] = {**kafka, "bootstrap_servers": servers}
    return ["source.bootstrap_servers is deprecated: use kafka.bootstrap_servers"]


def moved_sink_servers(data: dict[str, Any]) -> list[str]:
    """The old `sinks.kafka.bootstrap_servers` (of the merged config): the sink's own
    connection, with [kafka]'s security settings on the brokers it names."""
    sinks = data.get("sinks")
    sink = sinks.get("kafka") if isinstance(sinks, dict) else None
    if not (isinstance(sink, dict) and "bootstrap_servers" in sink):
        return []
    servers = sink.pop("bootstrap_servers")
    if "connection" in sink:
        return ["sinks.kafka.bootstrap_servers is deprecated and ignored: "
                "[sinks.kafka.connection] is set"]
    kafka = data.get("kafka", {})
    sink["connection"] = {**(kafka if isinstance(kafka, dict) else {}),
                          "bootstrap_servers": servers}
    return ["sinks.kafka.bootstrap_servers is deprecated: use [sinks.kafka.connection], a "
            "table of all the [kafka] keys (nothing is inherited from [kafka])"]
