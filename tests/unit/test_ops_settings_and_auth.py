"""The [server] hardening keys and deadletter.max_bytes as settings (environment overrides,
bad values named by key), and basic auth as exporter-toolkit checks it."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from pipeline.ops import auth as auth_module
from pipeline.ops.auth import BasicAuth, Verdict
from pipeline.ops.webconfig import load_web_config
from pipeline.settings import ConfigError, load_settings
from tests.support.fakes import HeldExecutor
from tests.support.infra.certs import make_broker_pki

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_server_keys_come_from_the_environment() -> None:
    settings = load_settings(None, {
        "GOVPIPE_SERVER__READ_HEADER_TIMEOUT_S": "2.5", "GOVPIPE_SERVER__MAX_CONNECTIONS": "3",
        "GOVPIPE_SERVER__WEB_CONFIG_FILE": "/etc/govpipe/web.yml",
        "GOVPIPE_DEADLETTER__MAX_BYTES": "10000000"})
    assert settings.server.read_header_timeout_s == 2.5
    assert settings.server.max_connections == 3
    assert settings.server.web_config_file == Path("/etc/govpipe/web.yml")
    assert settings.deadletter.max_bytes == 10_000_000


@pytest.mark.parametrize(("variable", "value", "key"), [
    ("GOVPIPE_SERVER__MAX_CONNECTIONS", "0", "server.max_connections"),
    ("GOVPIPE_SERVER__READ_BODY_TIMEOUT_S", "-1", "server.read_body_timeout_s"),
    ("GOVPIPE_SERVER__WRITE_TIMEOUT_S", "soon", "server.write_timeout_s"),
    ("GOVPIPE_DEADLETTER__MAX_BYTES", "100", "deadletter.max_bytes"),
])
def test_bad_values_name_the_key(variable: str, value: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^config error: {key}: .*\(from {variable}\)"):
        load_settings(None, {variable: value})


def test_the_cap_must_hold_an_entry_of_the_largest_record() -> None:
    with pytest.raises(ConfigError, match=r"deadletter\.max_bytes: must be at least 2 x"):
        load_settings(None, {"GOVPIPE_DEADLETTER__MAX_BYTES": "1000000"})
    # A Kafka dead-letter has no file cap: the rule does not apply.
    load_settings(None, {"GOVPIPE_DEADLETTER__MAX_BYTES": "1000000",
                         "GOVPIPE_DEADLETTER__KIND": "kafka",
                         "GOVPIPE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9092"})


def test_no_web_config_is_plain_http_without_users() -> None:
    web = load_web_config(None)
    assert web.ssl_context is None
    assert web.users == {}


def test_a_user_list_alone_needs_no_tls(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: '{HASH.decode()}'\n")
    web = load_web_config(path)
    assert web.ssl_context is None
    assert web.users == {"alice": HASH}


async def test_basic_auth_accepts_only_the_right_password() -> None:
    auth = BasicAuth({"alice": HASH})
    assert await auth.allows(basic("alice", "s3cret"))
    assert await auth.allows(basic("alice", "s3cret"))  # remembered
    assert not await auth.allows(basic("alice", "wrong"))
    assert not await auth.allows(basic("bob", "s3cret"))
    assert not await auth.allows(basic("alice", "x" * 100))  # past bcrypt's 72 bytes
    assert not await auth.allows("Bearer abc")
    assert not await auth.allows("Basic !!!not-base64")
    assert not await auth.allows(None)
    assert not BasicAuth({}).enabled


def test_an_encrypted_key_is_refused_without_a_passphrase_prompt(tmp_path: Path) -> None:
    # Was: OpenSSL asked for the passphrase on the terminal, blocking start-up.
    pki = make_broker_pki(tmp_path)
    path = tmp_path / "web.yml"
    path.write_text(f"tls_server_config:\n  cert_file: {pki.client_cert}\n"
                    f"  key_file: {pki.client_key_encrypted}\n")
    with pytest.raises(ConfigError, match=r"key_file: not a PEM certificate and its "
                                          r"unencrypted private key"):
        load_web_config(path)


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.calls = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.calls += 1
        return super().submit(fn, *args, **kwargs)


async def test_password_checks_stay_off_the_loops_default_pool() -> None:
    # Was: asyncio.to_thread, so failed logins queued ahead of OTLP exports and
    # dead-letter writes on the shared default pool.
    shared = CountingExecutor()
    asyncio.get_running_loop().set_default_executor(shared)
    auth = BasicAuth({"alice": HASH})
    for user in ("alice", "mallory", "alice"):
        assert not await auth.allows(basic(user, "wrong"))
    assert await auth.allows(basic("alice", "s3cret"))
    shared.shutdown()
    assert shared.calls == 0
    auth.close()
    auth.close()  # twice is fine


async def test_checks_past_the_bound_are_busy_without_a_check() -> None:
    held = HeldExecutor()
    auth = BasicAuth({"alice": HASH}, executor=held, max_pending=2)
    attempts = [asyncio.create_task(auth.check(basic("alice", f"guess{n}"))) for n in range(5)]
    await asyncio.sleep(0)
    assert len(held.submitted) == 2
    assert [a.result() for a in attempts if a.done()] == [Verdict.BUSY] * 3
    held.settle(False)
    assert [await a for a in attempts[:2]] == [Verdict.REFUSED] * 2
    # Room again once the checks are done.
    third = asyncio.create_task(auth.check(basic("alice", "s3cret")))
    await asyncio.sleep(0)
    held.settle(True)
    assert await third is Verdict.ALLOWED
    auth.close()
    assert held.shut_down


async def test_an_unknown_user_is_checked_at_the_dearest_configured_cost(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Was: a decoy of cost 10 against real hashes of cost 12, so unknown names answered
    # about four times faster than known ones.
    checked: list[bytes] = []

    def record(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed)
        return False

    monkeypatch.setattr(auth_module, "_checks_out", record)
    cheap, dear = (bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=r)) for r in (4, 5))
    auth = BasicAuth({"alice": cheap, "bob": dear})
    assert not await auth.allows(basic("nobody", "guess"))
    assert checked[0].startswith(b"$2b$05$")
    assert bcrypt.checkpw(b"decoy", checked[0])
    auth.close()


@pytest.mark.parametrize(("headers", "named"), [
    ({"Content-Length": "5"}, "Content-Length"),
    ({"transfer-encoding": "chunked"}, "transfer-encoding"),
    ({"Connection": "close"}, "Connection"),
    ({"X Bad Name": "v"}, "X Bad Name"),
    ({"X-Split": "a\r\nInjected: yes"}, "X-Split"),
    ({"X-Accent": "caf\u00e9"}, "X-Accent"),
    ({"X-Frame-Options": "DENY", "x-frame-options": "SAMEORIGIN"}, "x-frame-options"),
])
def test_headers_that_would_fail_every_answer_are_refused_at_load(
        tmp_path: Path, headers: dict[str, str], named: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text("http_server_config:\n  headers: " + json.dumps(headers) + "\n")
    with pytest.raises(ConfigError, match=rf"web\.yml: http_server_config\.headers: {named}: "):
        load_web_config(path)


def test_good_headers_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("http_server_config:\n  headers: {Strict-Transport-Security: "
                    "max-age=31536000, X-Content-Type-Options: nosniff}\n")
    assert load_web_config(path).headers == {"Strict-Transport-Security": "max-age=31536000",
                                             "X-Content-Type-Options": "nosniff"}
