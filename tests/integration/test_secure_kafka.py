"""The real `govpipe run`, `publish`, `replay` and `check-config` (subprocesses) through each
secured listener of the ``secure_kafka`` broker, configured only by ``GOVPIPE_KAFKA__*``
variables: every way in carries events end to end; every refusal is one actionable line in
the log and in /readyz while the daemon keeps retrying; a key file that cannot be loaded
stops start-up naming the key. No secret ever shows in any output.

The test's own topic setup and reads go through the broker's PLAINTEXT listener.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiokafka.errors import KafkaError  # type: ignore[import-untyped,unused-ignore]

from pipeline.signing.signers import HmacSigner
from tests.support.daemons import KEY
from tests.support.events import event_ids, event_value
from tests.support.identities import assert_reconciled
from tests.support.infra.kafka import SecureKafka
from tests.support.kafka_clients import (
    committed_offsets,
    consume_to_end,
    create_topics,
    end_offsets,
    produce,
)
from tests.support.processes import GOVPIPE, GovpipeProcess, govpipe_env
from tests.support.waiting import eventually, eventually_async

pytestmark = pytest.mark.integration

COUNT = 5  # valid events per way in
BAD = b"this is not json"
REFUSAL_WAIT_S = 15.0  # the cause must be in the log and /readyz within this


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


def _var(key: str) -> str:
    return f"GOVPIPE_KAFKA__{key.upper()}"


def _kafka(secrets: tuple[str, ...] = (), **keys: str) -> Connection:
    return Connection({_var(key): value for key, value in keys.items()}, secrets)


def _secret_file(tmp_path: Path, name: str, secret: str) -> str:
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
                  sasl_password_file=_secret_file(tmp_path, "plain.password", user.password))


def mtls(s: SecureKafka, _tmp_path: Path) -> Connection:
    """SSL with a client certificate and its encrypted key (password in a file)."""
    pki = s.pki
    return _kafka((pki.client_key_password,), bootstrap_servers=s.ssl_bootstrap,
                  security_protocol="SSL", ssl_ca_file=str(pki.ca_cert),
                  ssl_cert_file=str(pki.client_cert), ssl_key_file=str(pki.client_key_encrypted),
                  ssl_key_password_file=str(pki.client_key_password_file))


def oauth(s: SecureKafka, tmp_path: Path, *, lifetime_s: float = 3600.0) -> Connection:
    """OAUTHBEARER over SASL_SSL, the token in a file."""
    token = s.token(lifetime_s=lifetime_s)
    return _kafka((token,), bootstrap_servers=s.sasl_ssl_bootstrap,
                  security_protocol="SASL_SSL", ssl_ca_file=str(s.pki.ca_cert),
                  sasl_mechanism="OAUTHBEARER",
                  sasl_oauth_token_file=_secret_file(tmp_path, "token.jwt", token))


WAYS_IN: dict[str, Callable[[SecureKafka, Path], Connection]] = {
    "scram-sha-512": scram, "plain": plain, "mtls-encrypted-key": mtls, "oauthbearer": oauth,
}


def _base_env(*overrides: dict[str, str]) -> dict[str, str]:
    """The test's environment without any GOVPIPE_* variable, plus ``overrides``."""
    env = govpipe_env(KEY)
    for name in ("GOVPIPE_SIGNING_KEY", "GOVPIPE_SERVER__LISTEN"):
        env.pop(name)
    for more in overrides:
        env.update(more)
    return env


@dataclass(frozen=True, slots=True)
class Finished:
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


# --------------------------------------------------------------------------- each way in


@pytest.mark.parametrize("way", sorted(WAYS_IN))
async def test_publish_run_and_replay_through_each_way_in(
    secure_kafka: SecureKafka, tmp_path: Path, way: str
) -> None:
    plaintext = secure_kafka.plaintext_bootstrap
    tag = f"{way}-{uuid.uuid4().hex[:8]}"
    topic, output, dlq, group = f"in-{tag}", f"out-{tag}", f"dlq-{tag}", f"g-{tag}"
    await create_topics(plaintext, [topic, output, dlq])
    connection = WAYS_IN[way](secure_kafka, tmp_path)

    publish_env = _base_env(connection.env, {"GOVPIPE_SOURCE__TOPIC": topic})
    values = [event_value(n, tag) for n in range(COUNT)]
    published = await govpipe("publish", env=publish_env, cwd=tmp_path,
                              stdin=b"\n".join(values) + b"\n")
    assert published.code == 0, published.err
    assert published.stdout.decode().strip() == f"published {COUNT}, failed 0"
    # `publish` refuses a line that is not JSON itself: the bad record goes in directly.
    await produce(plaintext, topic, [BAD])

    env = govpipe_env(KEY, **connection.env, **{
        "GOVPIPE_SOURCE__KIND": "kafka", "GOVPIPE_SOURCE__TOPIC": topic,
        "GOVPIPE_SOURCE__GROUP_ID": group, "GOVPIPE_SOURCE__COMMIT_INTERVAL_S": "0.5",
        "GOVPIPE_SINKS__STDOUT__ENABLED": "false",
        "GOVPIPE_SINKS__KAFKA__ENABLED": "true", "GOVPIPE_SINKS__KAFKA__TOPIC": output,
        "GOVPIPE_DEADLETTER__KIND": "kafka", "GOVPIPE_DEADLETTER__TOPIC": dlq,
        "GOVPIPE_SHUTDOWN__TIMEOUT_S": "20"})
    run = GovpipeProcess(env, tmp_path, "run")
    try:
        await run.start()

        async def committed_to_end() -> bool:
            try:
                return await committed_offsets(plaintext, group) == {0: COUNT + 1}
            except KafkaError:  # no coordinator yet: the group's first moments
                return False

        await eventually_async(committed_to_end, 60, interval_s=0.3)
        assert await end_offsets(plaintext, topic) == {0: COUNT + 1}
        scrape = await run.settled_scrape()
        assert_reconciled(scrape)
        assert await run.terminate(30) == 0
    finally:
        await run.ensure_stopped()

    signer = HmacSigner(KEY)
    delivered = [json.loads(record.value) for record in await consume_to_end(plaintext, output)]
    assert sorted(event["id"] for event in delivered) == sorted(event_ids(COUNT, tag))
    assert all(signer.verify(event) for event in delivered)
    entries = [json.loads(record.value) for record in await consume_to_end(plaintext, dlq)]
    assert [(e["origin"], e["reason"], e.get("value")) for e in entries] == [
        ("source", "invalid_json", BAD.decode())]

    replayed = await govpipe("replay", env=env, cwd=tmp_path)
    assert replayed.code == 0, replayed.err
    assert replayed.err.startswith("replayed 1, already replayed 0"), replayed.err
    records = await consume_to_end(plaintext, topic)
    assert len(records) == COUNT + 2
    back = records[-1]
    assert back.value == BAD
    assert dict(back.headers).get("govpipe-replayed") == entries[0]["id"].encode()

    assert_no_secret(connection.secrets, publish_stdout=published.stdout,
                     publish_stderr=published.stderr, run_stdout=run.out.read_bytes(),
                     run_stderr=run.log.read_bytes(), metrics=scrape,
                     replay_stdout=replayed.stdout, replay_stderr=replayed.stderr)


# --------------------------------------------------------------------------- refusals


@dataclass(frozen=True, slots=True)
class Refusal:
    connect: Callable[[SecureKafka, Path], Connection]
    phrase: Callable[[SecureKafka], str]


WRONG = "wrong-" + uuid.uuid4().hex  # a wrong password: a secret too


def _wrong_scram_password(s: SecureKafka, tmp_path: Path) -> Connection:
    return scram(s, tmp_path).with_keys(sasl_password=WRONG, secrets=(WRONG,))


def _wrong_plain_password(s: SecureKafka, tmp_path: Path) -> Connection:
    path = _secret_file(tmp_path, "wrong.password", WRONG)
    return plain(s, tmp_path).with_keys(sasl_password_file=path, secrets=(WRONG,))


def _scram_sha_256(s: SecureKafka, tmp_path: Path) -> Connection:
    return scram(s, tmp_path).with_keys(sasl_mechanism="SCRAM-SHA-256")


def _trusting_other_ca(s: SecureKafka, tmp_path: Path) -> Connection:
    return scram(s, tmp_path).with_keys(ssl_ca_file=str(s.pki.other_ca_cert))


def _mtls_without_client_cert(s: SecureKafka, tmp_path: Path) -> Connection:
    return mtls(s, tmp_path).with_keys(("ssl_cert_file", "ssl_key_file",
                                        "ssl_key_password_file"))


def _expired_token(s: SecureKafka, tmp_path: Path) -> Connection:
    return oauth(s, tmp_path, lifetime_s=-60)


REFUSALS: dict[str, Refusal] = {
    "scram-wrong-password": Refusal(_wrong_scram_password, lambda s: (
        f"authentication failed for user '{s.scram_user.name}' with mechanism SCRAM-SHA-512")),
    "plain-wrong-password": Refusal(_wrong_plain_password, lambda s: (
        f"authentication failed for user '{s.plain_user.name}' with mechanism PLAIN")),
    "mechanism-not-enabled": Refusal(_scram_sha_256,
                                     lambda _: "do not accept SASL mechanism SCRAM-SHA-256"),
    "server-cert-from-other-ca": Refusal(_trusting_other_ca,
                                         lambda _: "certificate verify failed"),
    "mtls-without-client-cert": Refusal(_mtls_without_client_cert,
                                        lambda _: "closed the connection"),
    "expired-oauth-token": Refusal(_expired_token, lambda _: "expired"),
}


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(
            url, timeout=aiohttp.ClientTimeout(10)) as response:
        return response.status, await response.text()


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_a_refused_connection_is_explained_and_retried(
    secure_kafka: SecureKafka, tmp_path: Path, case: str
) -> None:
    refusal = REFUSALS[case]
    connection = refusal.connect(secure_kafka, tmp_path)
    phrase = refusal.phrase(secure_kafka)
    topic = f"refused-{uuid.uuid4().hex[:8]}"
    await create_topics(secure_kafka.plaintext_bootstrap, [topic])
    env = govpipe_env(KEY, **connection.env, **{
        "GOVPIPE_SOURCE__KIND": "kafka", "GOVPIPE_SOURCE__TOPIC": topic,
        "GOVPIPE_DEADLETTER__KIND": "file", "GOVPIPE_DEADLETTER__PATH": str(tmp_path / "dlq"),
        "GOVPIPE_SHUTDOWN__TIMEOUT_S": "20"})
    run = GovpipeProcess(env, tmp_path, "run")

    def explained() -> list[str]:
        return [str(e.get("message")) for e in run.log_entries()
                if e.get("level") == "error" and phrase in str(e.get("message"))]

    try:
        await run.start()
        try:
            # Two lines: it said why, and it tried again (and said why again).
            await eventually(lambda: len(explained()) >= 2, REFUSAL_WAIT_S, interval_s=0.1)
        except TimeoutError:
            errors = [e.get("message") for e in run.log_entries() if e.get("level") == "error"]
            raise AssertionError(f"no error line with {phrase!r} in {REFUSAL_WAIT_S:.0f}s; "
                                 f"error lines: {errors}") from None
        status, readyz = await _get(f"http://{run.listen}/readyz")
        assert status == 503, readyz
        source = next(c for c in json.loads(readyz)["components"] if c["name"] == "source")
        assert source["status"] == "unhealthy"
        assert phrase in source["message"], source["message"]
        metrics = await run.scrape()
        assert run.running  # still retrying
        assert await run.terminate(15) == 0
    finally:
        await run.ensure_stopped()
    assert_no_secret(connection.secrets, stdout=run.out.read_bytes(),
                     stderr=run.log.read_bytes(), metrics=metrics, readyz=readyz)


# --------------------------------------------------------------------------- config time


def _missing_ca_file(s: SecureKafka, tmp_path: Path) -> Connection:
    return scram(s, tmp_path).with_keys(ssl_ca_file=str(tmp_path / "missing-ca.pem"))


def _wrong_key_password(s: SecureKafka, tmp_path: Path) -> Connection:
    path = _secret_file(tmp_path, "wrong-key.password", WRONG)
    return mtls(s, tmp_path).with_keys(ssl_key_password_file=path, secrets=(WRONG,))


def _encrypted_key_without_password(s: SecureKafka, tmp_path: Path) -> Connection:
    return mtls(s, tmp_path).with_keys(("ssl_key_password_file",))


STOPS_START_UP: dict[str, tuple[Callable[[SecureKafka, Path], Connection], tuple[str, ...]]] = {
    # case → (connection, any of the phrases the one line must hold)
    "missing-ca-file": (_missing_ca_file, ("kafka.ssl_ca_file",)),
    "wrong-key-password": (_wrong_key_password, ("kafka.ssl_key_password_file",)),
    "encrypted-key-without-password": (_encrypted_key_without_password,
                                       ("kafka.ssl_key_password_file", "kafka.ssl_key_file")),
}


@pytest.mark.parametrize("case", sorted(STOPS_START_UP))
async def test_a_key_file_that_cannot_be_loaded_stops_start_up(
    secure_kafka: SecureKafka, tmp_path: Path, case: str
) -> None:
    connect, phrases = STOPS_START_UP[case]
    connection = connect(secure_kafka, tmp_path)
    env = govpipe_env(KEY, **connection.env, **{
        "GOVPIPE_SOURCE__KIND": "kafka", "GOVPIPE_SOURCE__TOPIC": "never-read",
        "GOVPIPE_DEADLETTER__KIND": "file", "GOVPIPE_DEADLETTER__PATH": str(tmp_path / "dlq")})
    finished = await govpipe("run", env=env, cwd=tmp_path, timeout_s=30)
    assert finished.code == 2, finished.err
    lines = [line for line in finished.err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in finished.err
    assert any(phrase in lines[0] for phrase in phrases), lines[0]
    if case == "encrypted-key-without-password" and "kafka.ssl_key_file" in lines[0]:
        assert "encrypted" in lines[0], lines[0]
    assert finished.stdout == b""
    assert_no_secret(connection.secrets, stdout=finished.stdout, stderr=finished.stderr)


async def test_check_config_masks_the_password_from_the_environment(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    connection = scram(secure_kafka, tmp_path)
    env = _base_env(connection.env, {"GOVPIPE_SOURCE__KIND": "kafka"})
    finished = await govpipe("check-config", env=env, cwd=tmp_path)
    assert finished.code == 0, finished.err
    assert json.loads(finished.stdout)["kafka"]["sasl_password"] == "**********"
    assert_no_secret(connection.secrets, stdout=finished.stdout, stderr=finished.stderr)
