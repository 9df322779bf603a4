"""The secured-listener broker (``secure_kafka``) works as described: one record goes
through every way in, and each listener refuses what it must, with the cause aiokafka logs.

These pin what govpipe's error messages rely on: ``start()`` raises a bare
``KafkaConnectionError("Unable to bootstrap …")`` and the reason is only in aiokafka's log;
an expired OAUTHBEARER token is not refused at ``start()`` at all (aiokafka 0.14 ignores the
broker's error challenge) but surfaces as a metadata timeout.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped,unused-ignore]
from aiokafka.errors import (  # type: ignore[import-untyped,unused-ignore]
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context  # type: ignore[import-untyped,unused-ignore]

from tests.support.infra.secure_kafka import SecureKafka
from tests.support.kafka_clients import create_topics
from tests.support.kafka_security import (
    WAYS_IN,
    WayIn,
    bootstrap_errors,
    client_options,
    round_trip,
    transports_closed,
)

pytestmark = pytest.mark.integration

Options = Callable[[SecureKafka], dict[str, Any]]


@pytest.fixture
async def secure_topic(secure_kafka: SecureKafka) -> str:
    name = f"secure-{uuid.uuid4().hex[:12]}"
    await create_topics(secure_kafka.plaintext_bootstrap, [name])
    return name


@pytest.mark.parametrize("way", WAYS_IN)
async def test_one_record_through_each_way_in(
    secure_kafka: SecureKafka, secure_topic: str, way: WayIn
) -> None:
    value = await round_trip(client_options(secure_kafka, way), secure_topic)
    assert value.startswith(b"round-trip-")


def _wrong_password(way: WayIn) -> Options:
    return lambda s: {**client_options(s, way), "sasl_plain_password": "not-the-password"}


def _unknown_user(way: WayIn) -> Options:
    return lambda s: {**client_options(s, way), "sasl_plain_username": "nobody"}


def _scram_sha_256(s: SecureKafka) -> dict[str, Any]:
    return {**client_options(s, "scram"), "sasl_mechanism": "SCRAM-SHA-256"}


def _trusting_other_ca(s: SecureKafka) -> dict[str, Any]:
    return {**client_options(s, "scram"),
            "ssl_context": create_ssl_context(cafile=str(s.pki.other_ca_cert))}


def _mtls_without_client_cert(s: SecureKafka) -> dict[str, Any]:
    return {**client_options(s, "mtls"),
            "ssl_context": create_ssl_context(cafile=str(s.pki.ca_cert))}


def _mtls_untrusted_client_cert(s: SecureKafka) -> dict[str, Any]:
    context = create_ssl_context(cafile=str(s.pki.ca_cert),
                                 certfile=str(s.pki.untrusted_client_cert),
                                 keyfile=str(s.pki.untrusted_client_key))
    return {**client_options(s, "mtls"), "ssl_context": context}


def _plaintext_to_ssl_listener(s: SecureKafka) -> dict[str, Any]:
    return {"bootstrap_servers": s.ssl_bootstrap, "security_protocol": "PLAINTEXT"}


def _ssl_to_plaintext_listener(s: SecureKafka) -> dict[str, Any]:
    return {**_mtls_without_client_cert(s), "bootstrap_servers": s.plaintext_bootstrap}


def _sasl_to_plaintext_listener(s: SecureKafka) -> dict[str, Any]:
    return {**client_options(s, "scram"), "bootstrap_servers": s.plaintext_bootstrap,
            "security_protocol": "SASL_PLAINTEXT"}


# way in → the error aiokafka logs as the reason its start() failed
REFUSED: dict[str, tuple[Options, type[BaseException]]] = {
    "scram-wrong-password": (_wrong_password("scram"), SaslAuthenticationFailed),
    "scram-unknown-user": (_unknown_user("scram"), SaslAuthenticationFailed),
    "plain-wrong-password": (_wrong_password("plain"), SaslAuthenticationFailed),
    "plain-unknown-user": (_unknown_user("plain"), SaslAuthenticationFailed),
    "mechanism-not-enabled": (_scram_sha_256, UnsupportedSaslMechanismError),
    "server-cert-from-other-ca": (_trusting_other_ca, ssl.SSLCertVerificationError),
    "mtls-without-client-cert": (_mtls_without_client_cert, KafkaConnectionError),
    "mtls-client-cert-from-other-ca": (_mtls_untrusted_client_cert, KafkaConnectionError),
    "plaintext-to-ssl-listener": (_plaintext_to_ssl_listener, KafkaConnectionError),
    "ssl-to-plaintext-listener": (_ssl_to_plaintext_listener, OSError),
    "sasl-to-plaintext-listener": (_sasl_to_plaintext_listener, IllegalSaslStateError),
}


async def _start_producer(options: dict[str, Any]) -> None:
    producer = AIOKafkaProducer(**options)
    try:
        async with asyncio.timeout(20):
            await producer.start()
    finally:
        await producer.stop()
        await transports_closed()


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_each_listener_refuses_what_it_must(secure_kafka: SecureKafka, case: str) -> None:
    options, logged = REFUSED[case]
    with bootstrap_errors() as errors, pytest.raises(KafkaConnectionError, match="bootstrap"):
        await _start_producer(options(secure_kafka))
    assert any(isinstance(error, logged) for error in errors), errors


async def _send_one(options: dict[str, Any], topic: str) -> None:
    producer = AIOKafkaProducer(**options, request_timeout_ms=3000)
    try:
        async with asyncio.timeout(20):
            await producer.start()
            await producer.send_and_wait(topic, b"must not arrive")
    finally:
        await producer.stop()
        await transports_closed()


@pytest.mark.parametrize("way", ["oauth-sasl-ssl", "oauth-sasl-plaintext"])
async def test_an_expired_token_is_not_accepted(
    secure_kafka: SecureKafka, secure_topic: str, way: WayIn
) -> None:
    expired = secure_kafka.token(lifetime_s=-60)
    with pytest.raises((KafkaError, TimeoutError)):
        await _send_one(client_options(secure_kafka, way, token=expired), secure_topic)
