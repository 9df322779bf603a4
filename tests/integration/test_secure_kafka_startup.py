"""`govpipe run` and `check-config` (subprocesses) with the ``secure_kafka`` broker's TLS and
SASL settings, before any connection: a key file that cannot be loaded stops start-up with
one line naming the key, and `check-config` masks the password. No secret in any output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.daemons import KEY
from tests.support.infra.secure_kafka import SecureKafka
from tests.support.processes import govpipe_env
from tests.support.secure_govpipe import (
    WRONG,
    Connect,
    Connection,
    assert_no_secret,
    base_env,
    govpipe,
    mtls,
    scram,
    secret_file,
)

pytestmark = pytest.mark.integration


def _missing_ca_file(s: SecureKafka, tmp_path: Path) -> Connection:
    return scram(s, tmp_path).with_keys(ssl_ca_file=str(tmp_path / "missing-ca.pem"))


def _wrong_key_password(s: SecureKafka, tmp_path: Path) -> Connection:
    path = secret_file(tmp_path, "wrong-key.password", WRONG)
    return mtls(s, tmp_path).with_keys(ssl_key_password_file=path, secrets=(WRONG,))


def _encrypted_key_without_password(s: SecureKafka, tmp_path: Path) -> Connection:
    return mtls(s, tmp_path).with_keys(("ssl_key_password_file",))


STOPS_START_UP: dict[str, tuple[Connect, tuple[str, ...]]] = {
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
    env = base_env(connection.env, {"GOVPIPE_SOURCE__KIND": "kafka"})
    finished = await govpipe("check-config", env=env, cwd=tmp_path)
    assert finished.code == 0, finished.err
    assert json.loads(finished.stdout)["kafka"]["sasl_password"] == "**********"
    assert_no_secret(connection.secrets, stdout=finished.stdout, stderr=finished.stderr)
