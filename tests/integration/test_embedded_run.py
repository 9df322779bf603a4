"""`govpipe run` as a subprocess on its embedded default: stdin in, stdout out, dead-letters
in ./deadletter/, /metrics served while it runs, exit 0 once everything settled."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.agent_os import agent_os_verify
from tests.support.events import GARBAGE, mixed_input
from tests.support.identities import assert_reconciled
from tests.support.processes import GOVPIPE, govpipe_env, listening_port, read_deadletters


def original_bytes(entry: dict[str, Any]) -> bytes:
    if "value_b64" in entry:
        return base64.b64decode(entry["value_b64"])
    return str(entry["value"]).encode("utf-8")


async def test_examples_and_garbage_through_govpipe_run(tmp_path: Path) -> None:
    assert GOVPIPE.exists(), "the govpipe console script is not installed in this environment"
    key = secrets.token_bytes(32)
    payload, good = mixed_input()
    proc = await asyncio.create_subprocess_exec(
        str(GOVPIPE), "run", cwd=tmp_path, env=govpipe_env(key), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(payload), 60)
    assert proc.returncode == 0, stderr.decode()

    out = [json.loads(line) for line in stdout.decode("utf-8").splitlines()]
    assert [ce["id"] for ce in out] == [event["event_id"] for event in good]
    assert all(agent_os_verify(key, ce) for ce in out)
    assert all(ce["specversion"] == "1.0" and ce["type"].startswith("ai.agentos.") for ce in out)

    entries = read_deadletters(tmp_path / "deadletter")
    assert sorted((e["reason"], original_bytes(e)) for e in entries) == sorted(
        (reason, raw) for raw, reason in GARBAGE)
    assert all(e["origin"] == "source" and e["error"] and e["source"]["topic"] == "stdin"
               for e in entries)
    logs = [json.loads(line) for line in stderr.decode().splitlines()]
    assert logs[-1]["message"] == "govpipe stopped"
    assert logs[-1]["unsettled"] == 0


async def test_metrics_reconcile_and_health_answers_while_running(tmp_path: Path) -> None:
    payload, good = mixed_input()
    proc = await asyncio.create_subprocess_exec(
        str(GOVPIPE), "run", cwd=tmp_path, env=govpipe_env(secrets.token_bytes(32)),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    assert proc.stdin is not None
    assert proc.stderr is not None
    port = await asyncio.wait_for(listening_port(proc.stderr), 30)
    base = f"http://127.0.0.1:{port}"
    lines = payload.splitlines(keepends=True)
    async with aiohttp.ClientSession() as http:
        for line in lines:
            proc.stdin.write(line)
            await proc.stdin.drain()
            async with http.get(f"{base}/metrics") as response:
                assert_reconciled(await response.text())
        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
        async with http.get(f"{base}/readyz") as response:
            body = await response.json()
            assert response.status == 200
        assert {c["name"] for c in body["components"]} == {
            "source", "signer", "deadletter", "sink:stdout"}
        assert all(c["status"] == "healthy" and c["checked_at"] for c in body["components"])
        # The last lines may still be on their way through the reader thread.
        expected = f"govpipe_source_records_total {float(len(lines))}"
        for _ in range(100):
            async with http.get(f"{base}/metrics") as response:
                scrape = await response.text()
            assert_reconciled(scrape)
            if expected in scrape:
                break
            await asyncio.sleep(0.05)
        assert expected in scrape
    proc.stdin.close()
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert len(good) + len(GARBAGE) == len(lines)


async def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(GOVPIPE), "run", cwd=tmp_path,
        env=govpipe_env(secrets.token_bytes(32), GOVPIPE_SINKS__STDOUT__QUEUE_SIZE="lots"),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert stdout == b""
    assert stderr.decode().splitlines() == [
        "govpipe: config error: sinks.stdout.queue_size: Input should be a valid integer, "
        "unable to parse string as an integer (from GOVPIPE_SINKS__STDOUT__QUEUE_SIZE)"]


async def test_short_signing_key_is_refused_without_leaking_it(tmp_path: Path) -> None:
    secret = b"0123456789abcdef"
    proc = await asyncio.create_subprocess_exec(
        str(GOVPIPE), "run", cwd=tmp_path, env=govpipe_env(secret),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"at least 32" in stderr
    assert base64.b64encode(secret) not in stderr
    assert secret not in stderr


async def test_readyz_is_503_without_a_signing_key(tmp_path: Path) -> None:
    env = govpipe_env(secrets.token_bytes(32))
    del env["GOVPIPE_SIGNING_KEY"]
    proc = await asyncio.create_subprocess_exec(
        str(GOVPIPE), "run", cwd=tmp_path, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert proc.stdin is not None
    assert proc.stderr is not None
    port = await asyncio.wait_for(listening_port(proc.stderr), 30)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
            status, body = response.status, await response.json()
        async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200  # alive, just not trustworthy
    proc.stdin.close()
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert status == 503
    assert body["status"] == "unhealthy"
    signer = next(c for c in body["components"] if c["name"] == "signer")
    assert signer["status"] == "unhealthy"
    assert "ephemeral" in signer["message"]
