"""From `KafkaConnection` settings to the keyword arguments every aiokafka client takes
(brokers, TLS context, SASL credentials, client id), and from aiokafka's errors to one line
an operator can act on. Secrets are read from their files here and go nowhere else."""

from __future__ import annotations

import base64
import json
import logging
import ssl
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import errors as Errors
from aiokafka.abc import AbstractTokenProvider
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from pipeline.settings import ConfigError, KafkaConnection
from pipeline.tls_files import check_tls_files

_E = TypeVar("_E", bound=BaseException)
# TLS alerts a broker sends about the client's certificate (missing, untrusted, bad).
CLIENT_CERTIFICATE_ALERTS = ("BAD_CERTIFICATE", "CERTIFICATE_REQUIRED", "UNKNOWN_CA",
                             "CERTIFICATE_UNKNOWN")


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


def _read_secret(path: Path, key: str) -> str:
    """A password kept in a file: its text without the final line break."""
    try:
        secret = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"config error: {key}: cannot read {path}: {reason}") from None
    if not secret:
        raise ConfigError(f"config error: {key}: {path} is empty")
    return secret


def _ssl_context(connection: KafkaConnection, table: str) -> ssl.SSLContext:
    password = None
    if connection.ssl_key_password_file is not None:
        password = _read_secret(connection.ssl_key_password_file,
                                f"{table}.ssl_key_password_file")
    _check_tls_files(connection, table, password)
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=str(connection.ssl_ca_file) if connection.ssl_ca_file else None,
            certfile=str(connection.ssl_cert_file) if connection.ssl_cert_file else None,
            keyfile=str(connection.ssl_key_file) if connection.ssl_key_file else None,
            password=password)
    except (ssl.SSLError, OSError) as exc:
        what = ("ssl_key_file: does not match ssl_cert_file" if "MISMATCH" in str(exc)
                else f"ssl_cert_file: cannot load the certificate and key: {exc}")
        raise ConfigError(f"config error: {table}.{what}") from None
    context.check_hostname = connection.ssl_check_hostname
    return context


def _check_tls_files(connection: KafkaConnection, table: str, password: str | None) -> None:
    """Each TLS file readable and of the right kind, and the key openable with the password
    given: OpenSSL's own errors name neither the file nor the cause."""
    check_tls_files({f"{table}.{key}": getattr(connection, key)
                     for key in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file")},
                    password=password, password_key=f"{table}.ssl_key_password_file")


def _sasl_credentials(connection: KafkaConnection, table: str) -> dict[str, Any]:
    if connection.sasl_mechanism == "OAUTHBEARER":
        assert connection.sasl_oauth_token_file is not None  # the settings ensure it
        provider = TokenFile(connection.sasl_oauth_token_file, f"{table}.sasl_oauth_token_file")
        try:
            provider.read()  # a token that cannot be read stops the start, naming the key
        except TokenUnreadable as exc:
            raise ConfigError(f"config error: {exc.args[0]}") from None
        return {"sasl_oauth_token_provider": provider}
    if connection.sasl_password_file is not None:
        password = _read_secret(connection.sasl_password_file, f"{table}.sasl_password_file")
    else:
        assert connection.sasl_password is not None  # the settings ensure one of the two
        password = connection.sasl_password.get_secret_value()
    return {"sasl_plain_username": connection.sasl_username,
            "sasl_plain_password": password}


class TokenExpired(Errors.KafkaError):  # type: ignore[misc]
    """The OAUTHBEARER token in the file has expired (brokers would refuse it)."""


class TokenUnreadable(Errors.KafkaError):  # type: ignore[misc]
    """The token file cannot be read now; the client retries (a sidecar may be rewriting
    it). A `KafkaError`: anything else would stop aiokafka's background tasks for good."""


class TokenFile(AbstractTokenProvider):  # type: ignore[misc]
    """An OAUTHBEARER token kept in a file by something else (a sidecar, a Kubernetes
    projected token), read again whenever the file changes."""

    def __init__(self, path: Path, key: str = "kafka.sasl_oauth_token_file") -> None:
        self._path = path
        self._key = key
        self._stamp: tuple[int, int] | None = None
        self._token = ""

    def read(self) -> str:
        """The token; `TokenUnreadable` when the file cannot be read or is empty."""
        try:
            status = self._path.stat()
            stamp = (status.st_mtime_ns, status.st_size)
            if stamp != self._stamp:
                self._token = self._path.read_text(encoding="utf-8").strip()
                self._stamp = stamp
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise TokenUnreadable(f"{self._key}: cannot read {self._path}: {reason}") from None
        if not self._token:
            raise TokenUnreadable(f"{self._key}: {self._path} is empty")
        return self._token

    async def token(self) -> str:
        token = self.read()
        expires = _expiry(token)
        if expires is not None and expires <= time.time():
            # Brokers answer an expired token with an error aiokafka does not report: the
            # client would wait for metadata that never comes. Say so instead.
            raise TokenExpired(f"the OAUTHBEARER token in {self._path} expired at "
                               f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(expires))}")
        return token


def _expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, read without verifying it (the brokers verify); None when
    the token is not a JWT or has no expiry."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


def explain(exc: BaseException, options: Mapping[str, Any],
            cause: BaseException | None = None) -> str:
    """One line an operator can act on for a failed connection, without secrets. `cause`:
    what aiokafka logged (its `start()` only raises "Unable to bootstrap")."""
    seen = cause if cause is not None else exc
    protocol = options.get("security_protocol", "PLAINTEXT")
    where = f"Kafka at {options.get('bootstrap_servers')} over {protocol}"
    mechanism = options.get("sasl_mechanism")
    if isinstance(seen, Errors.SaslAuthenticationFailed):
        user = options.get("sasl_plain_username")
        who = f" for user {user!r}" if user else ""
        return f"authentication failed{who} with mechanism {mechanism} ({where}): {seen}"
    if isinstance(seen, Errors.UnsupportedSaslMechanismError):
        return f"the brokers do not accept SASL mechanism {mechanism} ({where})"
    if isinstance(seen, Errors.IllegalSaslStateError):
        return f"the listener does not speak SASL: is security_protocol right? ({where})"
    if isinstance(seen, TokenExpired | TokenUnreadable):
        return f"{seen.args[0]} ({where})"
    if (verify := _cause(seen, ssl.SSLCertVerificationError)) is not None:
        return f"certificate verify failed: {verify.verify_message} ({where})"
    if (tls := _cause(seen, ssl.SSLError)) is not None:
        if any(alert in str(tls.reason) for alert in CLIENT_CERTIFICATE_ALERTS):
            return (f"the broker closed the connection: it refused the client certificate "
                    f"({tls.reason}); it requires one it trusts (ssl_cert_file, ssl_key_file) "
                    f"({where})")
        return f"TLS handshake failed: {tls.reason or tls} ({where})"
    return _closed(seen, protocol, where) or f"cannot reach {where}: {seen}"


def _closed(seen: BaseException, protocol: str, where: str) -> str | None:
    """A connection the broker closed or reset: the usual sign of a protocol mismatch."""
    if not isinstance(seen, ConnectionResetError) and "closed" not in str(seen):
        return None
    if protocol in ("SSL", "SASL_SSL"):
        return (f"the broker closed the connection during the TLS handshake: it may require a "
                f"client certificate it trusts (ssl_cert_file, ssl_key_file), or the listener "
                f"is not {protocol} ({where})")
    return (f"the broker closed the connection: the listener may expect TLS "
            f"(security_protocol SSL or SASL_SSL) or SASL ({where})")


class CauseCatcher(logging.Handler):
    """Keeps the last connection error aiokafka logs while a client starts."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.cause: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.args and isinstance(record.args, tuple) and isinstance(
                record.args[-1], BaseException):
            self.cause = record.args[-1]


@contextmanager
def caught_causes() -> Iterator[CauseCatcher]:
    """While inside, `.cause` is the last connection error aiokafka logged."""
    catcher = CauseCatcher()
    logger = logging.getLogger("aiokafka")
    logger.addHandler(catcher)
    try:
        yield catcher
    finally:
        logger.removeHandler(catcher)


def _cause(exc: BaseException, kind: type[_E]) -> _E | None:
    seen: BaseException | None = exc
    for _ in range(10):  # the chain of causes, not forever
        if seen is None:
            return None
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


async def topic_partitions(options: Mapping[str, Any], topic: str) -> list[int]:
    """The partition ids of `topic` ([] when it does not exist), through an admin client
    made with `options` (aiokafka keywords, as `client_options` gives them)."""
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for t in described if t.get("error_code") == 0
                  for p in t.get("partitions", []))
