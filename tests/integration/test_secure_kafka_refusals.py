"""`govpipe run` (a subprocess) refused by a secured listener of the ``secure_kafka`` broker:
each refusal is one actionable error line in the log and in /readyz while the daemon keeps
retrying, and no secret (not even the wrong one) shows in any output."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.daemons import KEY
from tests.support.infra.secure_kafka import SecureKafka
from tests.support.kafka_clients import create_topics
from tests.support.processes import GovpipeProcess, govpipe_env
from tests.support.secure_govpipe import (
    WRONG,
    Connect,
    Connection,
    assert_no_secret,
    mtls,
    oauth,
    plain,
    scram,
    secret_file,
)
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

REFUSAL_WAIT_S = 15.0  # the cause must be in the log and /readyz within this


@dataclass(frozen=True, slots=True)
class Refusal:
    connect: Connect
    phrase: Callable[[SecureKafka], str]


def _wrong_scram_password(s: SecureKafka, tmp_path: Path) -> Connection:
    return scram(s, tmp_path).with_keys(sasl_password=WRONG, secrets=(WRONG,))


def _wrong_plain_password(s: SecureKafka, tmp_path: Path) -> Connection:
    path = secret_file(tmp_path, "wrong.password", WRONG)
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


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_a_refused_connection_is_explained_and_retried(
    secure_kafka: SecureKafka, tmp_path: Path, case: str
) -> None:
    refusal = REFUSALS[case]
    connection = refusal.connect(secure_kafka, tmp_path)
    phrase = refusal.phrase(secure_kafka)
    run = GovpipeProcess(await _run_env(secure_kafka, connection, tmp_path), tmp_path, "run")
    try:
        await run.start()
        await _explained_twice(run, phrase)  # it said why, tried again and said why again
        readyz = await _unready_source(run, phrase)
        metrics = await run.scrape()
        assert run.running  # still retrying
        assert await run.terminate(15) == 0
    finally:
        await run.ensure_stopped()
    assert_no_secret(connection.secrets, stdout=run.out.read_bytes(),
                     stderr=run.log.read_bytes(), metrics=metrics, readyz=readyz)


async def _run_env(secure_kafka: SecureKafka, connection: Connection,
                   tmp_path: Path) -> dict[str, str]:
    """`govpipe run` reading a fresh topic through ``connection``, dead letters to a file."""
    topic = f"refused-{uuid.uuid4().hex[:8]}"
    await create_topics(secure_kafka.plaintext_bootstrap, [topic])
    return govpipe_env(KEY, **connection.env, **{
        "GOVPIPE_SOURCE__KIND": "kafka", "GOVPIPE_SOURCE__TOPIC": topic,
        "GOVPIPE_DEADLETTER__KIND": "file", "GOVPIPE_DEADLETTER__PATH": str(tmp_path / "dlq"),
        "GOVPIPE_SHUTDOWN__TIMEOUT_S": "20"})


async def _explained_twice(run: GovpipeProcess, phrase: str) -> None:
    """Wait for two error lines holding ``phrase``; AssertionError listing the error lines
    logged instead."""

    def explained() -> int:
        return sum(1 for e in _errors(run) if phrase in str(e.get("message")))

    try:
        await eventually(lambda: explained() >= 2, REFUSAL_WAIT_S, interval_s=0.1)
    except TimeoutError:
        messages = [e.get("message") for e in _errors(run)]
        raise AssertionError(f"no error line with {phrase!r} in {REFUSAL_WAIT_S:.0f}s; "
                             f"error lines: {messages}") from None


def _errors(run: GovpipeProcess) -> list[dict[str, Any]]:
    return [entry for entry in run.log_entries() if entry.get("level") == "error"]


async def _unready_source(run: GovpipeProcess, phrase: str) -> str:
    """/readyz answers 503 with the source unhealthy and ``phrase`` as its message; return
    the body."""
    async with aiohttp.ClientSession() as session, session.get(
            f"http://{run.listen}/readyz", timeout=aiohttp.ClientTimeout(10)) as response:
        status, readyz = response.status, await response.text()
    assert status == 503, readyz
    source = next(c for c in json.loads(readyz)["components"] if c["name"] == "source")
    assert source["status"] == "unhealthy"
    assert phrase in source["message"], source["message"]
    return readyz
