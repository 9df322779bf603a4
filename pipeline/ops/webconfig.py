"""`server.web_config_file`: TLS and basic auth for the ops server, in the format of the
Prometheus exporter-toolkit web config (the file node_exporter and friends read).

    tls_server_config:
      cert_file: server.pem            # relative paths: from the web config's folder
      key_file: server.key
      client_ca_file: ca.pem           # with client_auth_type
      client_auth_type: RequireAndVerifyClientCert
      min_version: TLS12
    basic_auth_users:
      prometheus: $2b$12$...           # bcrypt hashes, as exporter-toolkit takes them

Every problem is a `ConfigError` naming the file and the field.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import h11
import yaml
from pydantic import Field, ValidationError, field_validator

from pipeline.settings.base import ConfigError, StrictModel

KEY = "server.web_config_file"
# Python's ssl module verifies every client certificate it asks for: exporter-toolkit's
# RequestClientCert and RequireAnyClientCert (ask, accept anything) have no equivalent.
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# Framing and per-answer headers the server writes: a configured one would clash with them.
MANAGED_HEADERS = frozenset({"content-length", "transfer-encoding", "connection",
                             "keep-alive", "upgrade", "te", "trailer", "content-type",
                             "www-authenticate", "allow", "retry-after"})
_BCRYPT = re.compile(r"\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}")

TlsVersion = Literal["TLS10", "TLS11", "TLS12", "TLS13"]


class TlsServerConfig(StrictModel):
    cert_file: str = Field(min_length=1)
    key_file: str = Field(min_length=1)
    client_ca_file: str | None = None
    client_auth_type: str = "NoClientCert"
    min_version: TlsVersion = "TLS12"
    max_version: TlsVersion = "TLS13"


    @field_validator("client_auth_type")
    @classmethod
    def _verifiable(cls, value: str) -> str:
        if value in ("RequestClientCert", "RequireAnyClientCert"):
            raise ValueError(f"{value} is not supported (a client certificate asked for is "
                             "always verified here): use VerifyClientCertIfGiven or "
                             "RequireAndVerifyClientCert")
        if value not in CLIENT_AUTH:
            raise ValueError(f"expected one of {', '.join(CLIENT_AUTH)}")
        return value


class HttpServerConfig(StrictModel):
    http2: bool = True  # accepted for compatibility; the ops server speaks HTTP/1.1
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("headers")
    @classmethod
    def _sendable(cls, headers: dict[str, str]) -> dict[str, str]:
        # Checked here because a header h11 refuses would fail every answer, not start-up.
        seen: set[str] = set()
        for name, value in headers.items():
            lowered = name.lower()
            if lowered in MANAGED_HEADERS:
                raise ValueError(f"{name}: set by the server itself, not configurable")
            if lowered in seen:
                raise ValueError(f"{name}: given twice")
            seen.add(lowered)
            try:
                h11.Response(status_code=200, headers=[(name, value)])
            except (h11.LocalProtocolError, UnicodeEncodeError):
                raise ValueError(f"{name}: not a valid HTTP header name and value (ASCII, "
                                 "no control characters, no leading or trailing "
                                 "spaces)") from None
        return headers


class WebConfigFile(StrictModel):
    tls_server_config: TlsServerConfig | None = None
    http_server_config: HttpServerConfig = HttpServerConfig()
    basic_auth_users: dict[str, str] = Field(default_factory=dict)

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt_hashes(cls, users: dict[str, str]) -> dict[str, str]:
        for name, hashed in users.items():
            if not name or ":" in name:
                raise ValueError(f"{name!r}: a user name is non-empty and has no ':'")
            if not _BCRYPT.fullmatch(hashed):
                # The user is named, never the value: it may be a password put there by
                # mistake.
                raise ValueError(f"{name}: not a bcrypt hash (make one with "
                                 "`htpasswd -nBC 12 \"\" | tr -d ':\\n'`)")
        return users


@dataclass(frozen=True, slots=True)
class WebConfig:
    """What the ops server needs from the file: a server TLS context (None: plain HTTP),
    the users allowed in with their bcrypt hashes (empty: no authentication) and headers
    added to every answer."""

    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def load_web_config(path: Path | None) -> WebConfig:
    """The web config at `path` (None: none configured); raises `ConfigError`."""
    if path is None:
        return WebConfig()
    where = f"config error: {KEY}: {path}"
    parsed = _parse(path, where)
    tls = parsed.tls_server_config
    return WebConfig(
        ssl_context=_ssl_context(tls, path.parent, where) if tls is not None else None,
        users={name: hashed.encode() for name, hashed in parsed.basic_auth_users.items()},
        headers=dict(parsed.http_server_config.headers),
    )


def _parse(path: Path, where: str) -> WebConfigFile:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where}: not valid YAML{at}") from None
    try:
        return WebConfigFile.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        error = exc.errors(include_input=False, include_url=False)[0]
        field_name = ".".join(str(part) for part in error["loc"]) or "(top level)"
        problem = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        raise ConfigError(f"{where}: {field_name}: "
                          f"{problem.removeprefix('Value error, ')}") from None


def _ssl_context(tls: TlsServerConfig, base: Path, where: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    cert, key = base / tls.cert_file, base / tls.key_file
    _must_read(cert, f"{where}: tls_server_config.cert_file")
    _must_read(key, f"{where}: tls_server_config.key_file")
    try:
        # An encrypted key must fail, not prompt for its passphrase on the terminal.
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except (ssl.SSLError, OSError, ValueError):
        raise ConfigError(f"{where}: tls_server_config.cert_file, key_file: not a PEM "
                          "certificate and its unencrypted private key") from None
    context.verify_mode = CLIENT_AUTH[tls.client_auth_type]
    if tls.client_auth_type == "NoClientCert":
        return context
    if tls.client_ca_file is None:
        raise ConfigError(f"{where}: tls_server_config.client_ca_file: required with "
                          f"client_auth_type {tls.client_auth_type}")
    ca = base / tls.client_ca_file
    _must_read(ca, f"{where}: tls_server_config.client_ca_file")
    try:
        context.load_verify_locations(cafile=ca)
    except ssl.SSLError:
        raise ConfigError(f"{where}: tls_server_config.client_ca_file: no PEM "
                          "certificate in it") from None
    return context


def _no_passphrase() -> bytes:
    raise ValueError("encrypted key")


def _must_read(path: Path, what: str) -> None:
    try:
        path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}") from None
