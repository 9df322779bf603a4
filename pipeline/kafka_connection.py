"""From `KafkaConnection` settings to the keyword arguments every aiokafka client takes
(brokers, TLS context, SASL credentials, client id), and from aiokafka's errors to one line
an operator can act on. Secrets are read from their files here and go nowhere else."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import errors as Errors
from aiokafka.abc import AbstractTokenProvider
from aiokafka.helpers import create_ssl_context

from pipeline.settings import ConfigError, KafkaConnection

_E = TypeVar("_E", bound=BaseException)


def client_options(connection: KafkaConnection, table: str = "kafka") -> dict[str, Any]:
    """aiokafka keyword arguments for `connection`; `ConfigError` naming the key (under
    `table`) when a file cannot be read or a key cannot be loaded."""
    options: dict[str, Any] = {
        "bootstrap_servers": connection.bootstrap_servers,
        "security_protocol": connection.security_protocol,
        "client_id": connection.client_id,
    }
    if connection.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = _ssl_context(connection, table)
    if connection.sasl_mechanism is not None:
        options["sasl_mechanism"] = connection.sasl_mechanism
        options.update(_sasl_credentials(connection, table))
    return options


def check_files(connection: KafkaConnection, table: str = "kafka") -> list[str]:
    """One problem per file of `connection` that cannot be read (for check-config)."""
    problems = []
    for key, path in connection.files().items():
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            problems.append(f"{table}.{key}: cannot read {path}: {exc.strerror}")
    return problems


def _read_secret(path: Path, key: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"config error: {key}: cannot read {path}: {reason}") from None


def _ssl_context(connection: KafkaConnection, table: str) -> ssl.SSLContext:
    for key, path in connection.files().items():
        if key.startswith("ssl_") and not os.access(path, os.R_OK):
            raise ConfigError(f"config error: {table}.{key}: cannot read {path}")
    password = None
    if connection.ssl_key_password_file is not None:
        password = _read_secret(connection.ssl_key_password_file,
                                f"{table}.ssl_key_password_file")
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=str(connection.ssl_ca_file) if connection.ssl_ca_file else None,
            certfile=str(connection.ssl_cert_file) if connection.ssl_cert_file else None,
            keyfile=str(connection.ssl_key_file) if connection.ssl_key_file else None,
            password=password)
    except ssl.SSLError as exc:
        raise ConfigError(f"config error: {table}.{_tls_culprit(connection, exc)}: "
                          f"cannot load it: {exc.reason or exc}") from None
    context.check_hostname = connection.ssl_check_hostname
    return context


def _tls_culprit(connection: KafkaConnection, exc: ssl.SSLError) -> str:
    """Which key the TLS material failed on, from what OpenSSL says."""
    text = str(exc).lower()
    if connection.ssl_key_password_file is not None and ("decrypt" in text or "bad" in text):
        return "ssl_key_password_file"
    if connection.ssl_cert_file is not None and ("key" in text or "pem" in text):
        return "ssl_key_file"
    return "ssl_ca_file"


def _sasl_credentials(connection: KafkaConnection, table: str) -> dict[str, Any]:
    if connection.sasl_mechanism == "OAUTHBEARER":
        assert connection.sasl_oauth_token_file is not None  # the settings ensure it
        provider = TokenFile(connection.sasl_oauth_token_file)
        provider.read()  # a token that cannot be read stops the start, naming the key
        return {"sasl_oauth_token_provider": provider}
    if connection.sasl_password_file is not None:
        password = _read_secret(connection.sasl_password_file, f"{table}.sasl_password_file")
    else:
        assert connection.sasl_password is not None  # the settings ensure one of the two
        password = connection.sasl_password.get_secret_value()
    return {"sasl_plain_username": connection.sasl_username,
            "sasl_plain_password": password}


class TokenFile(AbstractTokenProvider):  # type: ignore[misc]
    """An OAUTHBEARER token kept in a file by something else (a sidecar, a Kubernetes
    projected token), read again whenever the file changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._token = ""

    def read(self) -> str:
        try:
            status = self._path.stat()
            stamp = (status.st_mtime_ns, status.st_size)
            if stamp != self._stamp:
                self._token = self._path.read_text(encoding="utf-8").strip()
                self._stamp = stamp
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"config error: sasl_oauth_token_file: cannot read "
                              f"{self._path}: {reason}") from None
        return self._token

    async def token(self) -> str:
        return self.read()


def explain(exc: BaseException, options: Mapping[str, Any]) -> str:
    """One line an operator can act on for a failed connection, without secrets."""
    where = (f"Kafka at {options.get('bootstrap_servers')} over "
             f"{options.get('security_protocol', 'PLAINTEXT')}")
    mechanism = options.get("sasl_mechanism")
    if isinstance(exc, Errors.SaslAuthenticationFailed):
        user = options.get("sasl_plain_username")
        who = f" for user {user!r}" if user else ""
        return f"authentication failed{who} with mechanism {mechanism} ({where}): {exc}"
    if isinstance(exc, Errors.UnsupportedSaslMechanismError):
        return f"the brokers do not accept SASL mechanism {mechanism} ({where}): {exc}"
    if (verify := _cause(exc, ssl.SSLCertVerificationError)) is not None:
        return f"certificate verify failed ({verify.verify_message}) ({where})"
    if (tls := _cause(exc, ssl.SSLError)) is not None:
        return f"TLS handshake failed ({tls.reason or tls}) ({where})"
    return f"cannot reach {where}: {exc}"


def _cause(exc: BaseException, kind: type[_E]) -> _E | None:
    seen: BaseException | None = exc
    for _ in range(10):  # the chain of causes, not forever
        if seen is None:
            return None
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
