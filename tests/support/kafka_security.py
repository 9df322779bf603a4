"""aiokafka client options for each secured listener of a
:class:`~tests.support.infra.secure_kafka.SecureKafkaBroker`, an OAUTHBEARER token
provider, a one-record round trip, and the reason aiokafka only logs when a connection
fails.

aiokafka 0.14 raises ``KafkaConnectionError("Unable to bootstrap from [...]")`` from
``start()`` whatever went wrong (bad password, TLS verification, closed connection), with no
``__cause__``: the real error is only the last argument of its ERROR log record
``Unable connect to "HOST:PORT": ERR`` (logger ``aiokafka``). :func:`bootstrap_errors`
collects those.

After the broker refuses a SASL_SSL client, the client's TLS shutdown is still waiting for
the broker's side of the close when ``stop()`` returns (Kafka delays closing after a failed
authentication, ``connection.failed.authentication.delay.ms``, 100 ms by default). A test
whose event loop closes first leaks the socket and a later test fails on the
ResourceWarning (seen in 4 of 6 runs of the harness test): :func:`transports_closed` waits.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from aiokafka import (  # type: ignore[import-untyped,unused-ignore]
    AIOKafkaConsumer,
    AIOKafkaProducer,
)
from aiokafka.abc import AbstractTokenProvider  # type: ignore[import-untyped,unused-ignore]
from aiokafka.helpers import create_ssl_context  # type: ignore[import-untyped,unused-ignore]

from tests.support.infra.secure_kafka import SecureKafka

__all__ = [
    "WAYS_IN",
    "StaticTokenProvider",
    "WayIn",
    "bootstrap_errors",
    "client_options",
    "round_trip",
    "transports_closed",
]

WayIn = Literal["scram", "plain", "oauth-sasl-ssl", "oauth-sasl-plaintext", "mtls",
                "mtls-encrypted-key"]
WAYS_IN: tuple[WayIn, ...] = ("scram", "plain", "oauth-sasl-ssl", "oauth-sasl-plaintext",
                              "mtls", "mtls-encrypted-key")


class StaticTokenProvider(AbstractTokenProvider):  # type: ignore[misc,unused-ignore]
    """Hands aiokafka the same OAUTHBEARER token on every (re)connection."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self._token = token

    async def token(self) -> str:
        return self._token


def client_options(secure: SecureKafka, way: WayIn, *, token: str | None = None
                   ) -> dict[str, Any]:
    """``AIOKafkaProducer``/``AIOKafkaConsumer`` keyword arguments that authenticate through
    ``way``; ``token`` overrides the (valid, one hour) OAUTHBEARER token."""
    pki = secure.pki
    server_auth = {"ssl_context": create_ssl_context(cafile=str(pki.ca_cert))}
    if way in ("scram", "plain"):
        user = secure.scram_user if way == "scram" else secure.plain_user
        return {"bootstrap_servers": secure.sasl_ssl_bootstrap, "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512" if way == "scram" else "PLAIN",
                "sasl_plain_username": user.name, "sasl_plain_password": user.password,
                **server_auth}
    if way in ("oauth-sasl-ssl", "oauth-sasl-plaintext"):
        oauth = {"sasl_mechanism": "OAUTHBEARER",
                 "sasl_oauth_token_provider": StaticTokenProvider(token or secure.token())}
        if way == "oauth-sasl-ssl":
            return {"bootstrap_servers": secure.sasl_ssl_bootstrap,
                    "security_protocol": "SASL_SSL", **oauth, **server_auth}
        return {"bootstrap_servers": secure.sasl_plaintext_bootstrap,
                "security_protocol": "SASL_PLAINTEXT", **oauth}
    encrypted = way == "mtls-encrypted-key"
    context = create_ssl_context(
        cafile=str(pki.ca_cert), certfile=str(pki.client_cert),
        keyfile=str(pki.client_key_encrypted if encrypted else pki.client_key),
        password=pki.client_key_password_file.read_text() if encrypted else None)
    return {"bootstrap_servers": secure.ssl_bootstrap, "security_protocol": "SSL",
            "ssl_context": context}


async def round_trip(options: dict[str, Any], topic: str, timeout_s: float = 30.0) -> bytes:
    """Produce one record with ``options`` and consume it back (same options, a fresh
    group); return the value read. TimeoutError if either side stalls."""
    value = f"round-trip-{uuid.uuid4().hex}".encode()
    async with asyncio.timeout(timeout_s):
        producer = AIOKafkaProducer(**options, acks="all")
        try:
            await producer.start()
            sent = await producer.send_and_wait(topic, value)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(**options, group_id=f"g-{uuid.uuid4().hex[:8]}",
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        consumer.subscribe([topic])
        try:
            await consumer.start()
            while True:
                record = await consumer.getone()
                if record.partition == sent.partition and record.offset == sent.offset:
                    return bytes(record.value)
        finally:
            await consumer.stop()


class _BootstrapErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if args and isinstance(args[-1], BaseException):
            self.errors.append(args[-1])


@contextmanager
def bootstrap_errors() -> Iterator[list[BaseException]]:
    """Collect the exceptions aiokafka logged (logger ``aiokafka``, WARNING and up, with the
    error as the last format argument) while the block runs: why a bootstrap failed."""
    handler = _BootstrapErrors()
    logger = logging.getLogger("aiokafka")
    logger.addHandler(handler)
    try:
        yield handler.errors
    finally:
        logger.removeHandler(handler)


async def transports_closed(timeout_s: float = 5.0) -> None:
    """Wait until no socket transport of the running event loop is still open (every client
    stopped and every TLS shutdown finished); TimeoutError naming them otherwise."""
    # A private attribute of the selector event loop (every asyncio version since 3.4): each
    # socket transport is registered there (weakly) from its creation on.
    transports = getattr(asyncio.get_running_loop(), "_transports", None)
    if transports is None:
        return
    poll_s = 0.02  # nothing to await: the TLS shutdown is internal to the transport
    for _ in range(int(timeout_s / poll_s)):
        open_now = [t for t in list(transports.values()) if not t.is_closing()]
        if not open_now:
            await asyncio.sleep(0)  # let the closing ones run their connection_lost
            return
        await asyncio.sleep(poll_s)
    raise TimeoutError(f"transports still open after {timeout_s:.0f}s: {open_now}")
