"""The real `govpipe` (subprocesses) against the ``secure_kafka`` broker: the
``GOVPIPE_KAFKA__*`` variables of each way in (:class:`Connection`, with the secrets they
hand over), one command run to its end (:func:`govpipe`), and the check that no secret shows
in any output (:func:`assert_no_secret`).

aiokafka's own options per listener (no govpipe involved) are in
:mod:`tests.support.kafka_security`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.daemons import KEY
from tests.support.infra.secure_kafka import SecureKafka
from tests.support.processes import GOVPIPE, govpipe_env

__all__ = [
    "GOVPIPE_WAYS_IN",
    "WRONG",
    "Connect",
    "Connection",
    "Finished",
    "assert_no_secret",
    "base_env",
    "govpipe",
    "mtls",
    "oauth",
    "plain",
    "scram",
    "secret_file",
]

WRONG = "wrong-" + uuid.uuid4().hex
"""A wrong password (or key password): a secret too."""


@dataclass(frozen=True, slots=True)
class Connection:
    """``GOVPIPE_KAFKA__*`` variables for one way in, and the secrets they hand over."""

    env: dict[str, str]
    secrets: tuple[str, ...]

    def with_keys(self, drop: tuple[str, ...] = (), *, secrets: tuple[str, ...] = (),
                  **keys: str) -> Connection:
        """Another connection: ``drop`` removed, ``keys`` (lower-case [kafka] keys) set."""
        env = {k: v for k, v in self.env.items() if k not in {_var(d) for d in drop}}
        env.update({_var(key): value for key, value in keys.items()})
        return Connection(env, self.secrets + secrets)


Connect = Callable[[SecureKafka, Path], Connection]
"""Makes a way in's connection; secret files go in the test's ``tmp_path``."""


def _var(key: str) -> str:
    return f"GOVPIPE_KAFKA__{key.upper()}"


def _kafka(secrets: tuple[str, ...] = (), **keys: str) -> Connection:
    return Connection({_var(key): value for key, value in keys.items()}, secrets)


def secret_file(tmp_path: Path, name: str, secret: str) -> str:
    """Write ``secret`` to ``tmp_path/name``; return the path (for a ``*_file`` key)."""
    path = tmp_path / name
    path.write_text(secret)
    return str(path)


def scram(s: SecureKafka, _tmp_path: Path) -> Connection:
    """SCRAM-SHA-512 over SASL_SSL, the private CA, the password in the environment."""
    user = s.scram_user
    return _kafka((user.password,), bootstrap_servers=s.sasl_ssl_bootstrap,
                  security_protocol="SASL_SSL", ssl_ca_file=str(s.pki.ca_cert),
                  sasl_mechanism="SCRAM-SHA-512", sasl_username=user.name,
                  sasl_password=user.password)


def plain(s: SecureKafka, tmp_path: Path) -> Connection:
    """PLAIN over SASL_SSL, the password in a file."""
    user = s.plain_user
    return _kafka((user.password,), bootstrap_servers=s.sasl_ssl_bootstrap,
                  security_protocol="SASL_SSL", ssl_ca_file=str(s.pki.ca_cert),
                  sasl_mechanism="PLAIN", sasl_username=user.name,
                  sasl_password_file=secret_file(tmp_path, "plain.password", user.password))


def mtls(s: SecureKafka, _tmp_path: Path) -> Connection:
    """SSL with a client certificate and its encrypted key (password in a file)."""
    pki = s.pki
    return _kafka((pki.client_key_password,), bootstrap_servers=s.ssl_bootstrap,
                  security_protocol="SSL", ssl_ca_file=str(pki.ca_cert),
                  ssl_cert_file=str(pki.client_cert), ssl_key_file=str(pki.client_key_encrypted),
                  ssl_key_password_file=str(pki.client_key_password_file))


def oauth(s: SecureKafka, tmp_path: Path, *, lifetime_s: float = 3600.0) -> Connection:
    """OAUTHBEARER over SASL_SSL, the token in a file (expired if ``lifetime_s`` < 0)."""
    token = s.token(lifetime_s=lifetime_s)
    return _kafka((token,), bootstrap_servers=s.sasl_ssl_bootstrap,
                  security_protocol="SASL_SSL", ssl_ca_file=str(s.pki.ca_cert),
                  sasl_mechanism="OAUTHBEARER",
                  sasl_oauth_token_file=secret_file(tmp_path, "token.jwt", token))


GOVPIPE_WAYS_IN: dict[str, Connect] = {
    "scram-sha-512": scram, "plain": plain, "mtls-encrypted-key": mtls, "oauthbearer": oauth,
}


def base_env(*overrides: dict[str, str]) -> dict[str, str]:
    """The test's environment without any GOVPIPE_* variable, plus ``overrides``."""
    env = govpipe_env(KEY)
    for name in ("GOVPIPE_SIGNING_KEY", "GOVPIPE_SERVER__LISTEN"):
        env.pop(name)
    for more in overrides:
        env.update(more)
    return env


@dataclass(frozen=True, slots=True)
class Finished:
    """How a `govpipe` command ended."""

    code: int
    stdout: bytes
    stderr: bytes

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")


async def govpipe(*args: str, env: dict[str, str], cwd: Path, stdin: bytes = b"",
                  timeout_s: float = 60.0) -> Finished:
    """One `govpipe` command to its end. A session of its own: no controlling terminal
    for OpenSSL to prompt on for a key's password (as in a container)."""
    proc = await asyncio.create_subprocess_exec(
        str(GOVPIPE), *args, cwd=cwd, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True)
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout_s)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Finished(proc.returncode, out, err)


def assert_no_secret(secrets: tuple[str, ...], **outputs: bytes | str) -> None:
    """None of ``secrets`` in any of ``outputs`` (named for the failure message)."""
    for name, output in outputs.items():
        text = output if isinstance(output, bytes) else output.encode()
        leaked = [i for i, secret in enumerate(secrets) if secret.encode() in text]
        assert not leaked, f"secret #{leaked} appears in {name}"
