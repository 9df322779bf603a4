"""A :class:`~tests.support.infra.kafka.KafkaBroker` that also serves secured listeners:
SASL_SSL (SCRAM-SHA-512, PLAIN, OAUTHBEARER), SSL with client certificates required (mTLS)
and SASL_PLAINTEXT (OAUTHBEARER), each on its own 127.0.0.1 port, with a private CA
(:mod:`tests.support.infra.certs`), a SCRAM user, a PLAIN user and Kafka's unsecured
(unsigned-JWT) OAUTHBEARER handlers. :class:`SecureKafka` says how to reach each listener;
aiokafka options per way in are in :mod:`tests.support.kafka_security`.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.infra.certs import BrokerPki, make_broker_pki
from tests.support.infra.kafka import KafkaBroker
from tests.support.infra.process import free_ports

__all__ = ["KafkaUser", "SecureKafka", "SecureKafkaBroker", "unsecured_jwt"]

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
