"""`server.web_config_file`: a real Prometheus scrapes a real `govpipe run` over TLS with
basic auth; a Prometheus with the wrong password is refused, and so is every client
without credentials or without TLS. A bad web config stops start-up with one line."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import bcrypt
import pytest

from tests.support.events import EXAMPLES
from tests.support.infra import certs
from tests.support.infra.certs import make_pki
from tests.support.infra.prometheus import Prometheus
from tests.support.processes import GOVPIPE, govpipe_env, listening_port
from tests.support.services import started
from tests.support.waiting import eventually_async

pytestmark = pytest.mark.integration

USER, PASSWORD = "prometheus", secrets.token_urlsafe(16)
GOOD = EXAMPLES.read_bytes()


def write_web_config(directory: Path, pki: certs.TestPki, *, extra: str = "") -> Path:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=6)).decode()
    path = directory / "web.yml"
    # Relative file names: read from the web config's own folder, as exporter-toolkit does.
    path.write_text(f"tls_server_config:\n  cert_file: {pki.server_cert.name}\n"
                    f"  key_file: {pki.server_key.name}\n{extra}"
                    f"basic_auth_users:\n  {USER}: '{hashed}'\n")
    return path


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def pki(tmp_path: Path) -> certs.TestPki:
    (tmp_path / "pki").mkdir()
    return make_pki(tmp_path / "pki")


@contextlib.asynccontextmanager
async def running_govpipe(tmp_path: Path, web_config: Path) -> AsyncIterator[str]:
    """`govpipe run` with the web config, fed the examples, stdin held open; yields the
    listen address."""
    env = govpipe_env(secrets.token_bytes(32),
                      GOVPIPE_SERVER__WEB_CONFIG_FILE=str(web_config),
                      GOVPIPE_DEADLETTER__PATH=str(tmp_path / "dlq"))
    proc = await asyncio.create_subprocess_exec(
        str(GOVPIPE), "run", cwd=tmp_path, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert proc.stdin is not None
    assert proc.stderr is not None
    try:
        port = await asyncio.wait_for(listening_port(proc.stderr), 30)
        drain = asyncio.create_task(proc.stderr.read())
        proc.stdin.write(GOOD)
        await proc.stdin.drain()
        yield f"127.0.0.1:{port}"
        proc.stdin.close()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        await drain
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@contextlib.contextmanager
def scraping(address: str, pki: certs.TestPki, password: str) -> Iterator[Prometheus]:
    prometheus = started(Prometheus(scrape_options={
        "scheme": "https", "tls_config": {"ca_file": str(pki.ca_cert)},
        "basic_auth": {"username": USER, "password": password}}))
    try:
        prometheus.set_targets([address])
        yield prometheus
    finally:
        prometheus.close()


async def test_prometheus_scrapes_over_tls_with_basic_auth(
        tmp_path: Path, pki: certs.TestPki) -> None:
    records = len(GOOD.splitlines())
    async with running_govpipe(tmp_path, write_web_config(tmp_path / "pki", pki)) as address:
        with scraping(address, pki, PASSWORD) as prometheus:
            async def scraped_all() -> bool:
                samples = await prometheus.query("govpipe_source_records_total")
                return bool(samples) and samples[0].value == records
            await eventually_async(scraped_all, timeout_s=60)
            assert [s.value for s in await prometheus.query("up")] == [1.0]
        with scraping(address, pki, "not-" + PASSWORD) as refused:
            async def scrape_failed() -> bool:
                return [s.value for s in await refused.query("up")] == [0.0]
            await eventually_async(scrape_failed, timeout_s=60)
            assert await refused.query("govpipe_source_records_total") == []


async def test_clients_without_credentials_or_tls_are_refused(
        tmp_path: Path, pki: certs.TestPki) -> None:
    async with running_govpipe(tmp_path, write_web_config(tmp_path / "pki", pki)) as address:
        trusted = ssl.create_default_context(cafile=str(pki.ca_cert))
        base = f"https://{address}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/metrics", ssl=trusted) as answer:
                assert answer.status == 401
                assert answer.headers["WWW-Authenticate"].startswith("Basic")
            async with http.get(f"{base}/readyz", ssl=trusted,
                                headers=basic(USER, "wrong")) as answer:
                assert answer.status == 401
            async with http.get(f"{base}/readyz", ssl=trusted,
                                headers=basic(USER, PASSWORD)) as answer:
                assert answer.status == 200
                assert "components" in json.loads(await answer.text())  # loopback peer
            async with http.get(f"{base}/healthz", ssl=trusted) as answer:  # probes: no auth
                assert answer.status == 200
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://{address}/healthz") as answer:
                    await answer.read()


async def test_mutual_tls_refuses_a_client_without_a_certificate(
        tmp_path: Path, pki: certs.TestPki) -> None:
    mtls = (f"  client_ca_file: {pki.ca_cert.name}\n"
            "  client_auth_type: RequireAndVerifyClientCert\n")
    web = write_web_config(tmp_path / "pki", pki, extra=mtls)
    async with running_govpipe(tmp_path, web) as address:
        host, _, port = address.rpartition(":")
        with_cert = ssl.create_default_context(cafile=str(pki.ca_cert))
        with_cert.load_cert_chain(pki.client_cert, pki.client_key)
        reader, writer = await asyncio.open_connection(host, int(port), ssl=with_cert)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 200")
        writer.close()
        without = ssl.create_default_context(cafile=str(pki.ca_cert))
        assert await refused(host, int(port), without)


async def refused(host: str, port: int, context: ssl.SSLContext) -> bool:
    """True when the server ends the connection without an answer (TLS 1.3 reports a refused
    client certificate only on the first read, as an error or an end of stream)."""
    try:
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await reader.read()
    except (ssl.SSLError, ConnectionError):
        return True
    writer.close()
    return data == b""


@pytest.mark.parametrize(("content", "named"), [
    ("tls_server_config:\n  cert_file: nowhere.pem\n  key_file: nowhere.key\n",
     "tls_server_config.cert_file: cannot read"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [x]\n",
     "tls_server_config.cipher_suites: unknown field"),
    ("basic_auth_users:\n  alice: hunter2\n", "basic_auth_users: alice: not a bcrypt hash"),
    ("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
     "  client_auth_type: RequireAnyClientCert\n", "tls_server_config.client_auth_type"),
    ("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
     "  client_auth_type: RequireAndVerifyClientCert\n",
     "tls_server_config.client_ca_file: required"),
    ("tls_server_config: [unclosed\n", "not valid YAML"),
    ("tls_server_config:\n  cert_file: server.pem\n  key_file: client.key\n",
     "tls_server_config.cert_file, key_file: not a PEM certificate and its unencrypted"),
])
def test_a_bad_web_config_stops_run_with_one_line(
        tmp_path: Path, pki: certs.TestPki, content: str, named: str) -> None:
    web = tmp_path / "pki" / "web.yml"
    web.write_text(content)
    result = subprocess.run(
        [str(GOVPIPE), "run"], cwd=tmp_path, input=b"", capture_output=True, timeout=60,
        env=govpipe_env(secrets.token_bytes(32), GOVPIPE_SERVER__WEB_CONFIG_FILE=str(web)),
        check=False)
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert "server.web_config_file" in lines[0]
    assert named in lines[0]
    assert "hunter2" not in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()
