"""Scenario g of the benchmark: producer-signed input that the daemon's own verifier and
key loading accept, a fresh nonce per record, and the check that nothing was rejected."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bench.events import event_values, stamped_value, templates
from bench.procs import VERIFIED, GovpipeWorker, Topics, check_accepted, samples
from bench.producer_signing import ProducerSigner
from bench.scenarios import Context, Progress, govpipe_env, scenarios, signer_for
from pipeline.inbound.keys import load_inbound_keys
from pipeline.inbound.signed_string import NONCE_HEADER, SENDER_HEADER
from pipeline.inbound.verifier import InboundVerifier
from pipeline.model import Position, Record
from pipeline.ops.metrics import Metrics


def _record(value: bytes, headers: list[tuple[str, bytes]], n: int) -> Record:
    return Record(value, Position("in", n % 2, n // 2), headers=tuple(headers))


def _header(headers: list[tuple[str, bytes]], name: str) -> bytes:
    return next(value for key, value in headers if key == name)


def test_signed_bench_events_pass_the_daemons_verifier_with_the_key_file(
        tmp_path: Path) -> None:
    signer = ProducerSigner.with_key_file(tmp_path / "inbound.key")
    registry = CollectorRegistry()
    verifier = InboundVerifier(load_inbound_keys(tmp_path / "inbound.key"), 300.0, 1000,
                               Metrics(registry))
    values = [*event_values(40), *(stamped_value(shape) for shape in templates()[:10])]
    verdicts = [verifier.check(_record(v, signer.headers(v, n), n))
                for n, v in enumerate(values)]
    assert verdicts == [None] * len(values)
    page = generate_latest(registry).decode()
    assert samples(page, VERIFIED)['{result="ok"}'] == len(values)


def test_every_record_gets_its_own_nonce_and_senders_take_turns(tmp_path: Path) -> None:
    signer = ProducerSigner.with_key_file(tmp_path / "inbound.key", senders=3)
    value = event_values(1)[0]
    signed = [signer.headers(value, n) for n in range(1000)]
    assert len({_header(h, NONCE_HEADER) for h in signed}) == 1000
    assert [_header(h, SENDER_HEADER) for h in signed[:4]] == [
        b"agent-0", b"agent-1", b"agent-2", b"agent-0"]


def test_the_key_file_is_the_owners_alone_and_the_key_is_not_shown(tmp_path: Path) -> None:
    signer = ProducerSigner.with_key_file(tmp_path / "inbound.key")
    assert stat.S_IMODE((tmp_path / "inbound.key").stat().st_mode) == 0o600
    assert signer.key.hex() not in repr(signer)
    assert str(signer.key) not in repr(signer)


def test_a_record_signed_with_another_key_is_refused(tmp_path: Path) -> None:
    ProducerSigner.with_key_file(tmp_path / "inbound.key")
    other = ProducerSigner.with_key_file(tmp_path / "other.key")
    verifier = InboundVerifier(load_inbound_keys(tmp_path / "inbound.key"), 300.0, 10,
                               Metrics(CollectorRegistry()))
    value = event_values(1)[0]
    assert verifier.check(_record(value, other.headers(value, 0), 0)) == "bad_signature"


def test_only_g_signs_its_input_and_requires_signatures(tmp_path: Path) -> None:
    chosen = {s.key: s for s in scenarios(processes=2)}
    assert list(chosen) == ["a", "b", "c", "d", "e", "f", "g", "p", "q"]
    assert [s.key for s in scenarios(processes=1)] == ["a", "b", "c", "d", "f", "g", "p", "q"]
    signer = ProducerSigner.with_key_file(tmp_path / "inbound.key")
    ctx = Context("127.0.0.1:9092", "127.0.0.1:4317", tmp_path, "a2V5", tmp_path / "ed.pem",
                  signer, tmp_path / "inbound.key", Progress())
    topics = Topics("127.0.0.1:9092", "in", "out", "g")
    g_env = govpipe_env(chosen["g"], topics, ctx, tmp_path)
    assert g_env["GOVPIPE_SOURCE__REQUIRE_SIGNATURE"] == "true"
    assert g_env["GOVPIPE_SOURCE__INBOUND_KEY_FILE"] == str(tmp_path / "inbound.key")
    assert g_env["GOVPIPE_SINKS__KAFKA__ENABLED"] == "true"
    assert "GOVPIPE_SOURCE__REQUIRE_SIGNATURE" not in govpipe_env(chosen["b"], topics, ctx,
                                                                  tmp_path)
    assert signer_for(chosen["g"], ctx) is signer
    assert signer_for(chosen["b"], ctx) is None


class _PageWorker(GovpipeWorker):
    """A govpipe worker whose /metrics page is given."""

    def __init__(self, page: str) -> None:
        self.page = page

    async def metrics(self) -> str:
        return self.page


async def test_a_rejection_or_a_missing_verification_fails_the_run() -> None:
    ok = ('govpipe_source_rejected_total{reason="replay"} 0.0\n'
          'govpipe_inbound_verification_total{result="ok"} 5.0\n')
    await check_accepted([_PageWorker(ok)], 5, signed=True)
    rejected = ok.replace('{reason="replay"} 0.0', '{reason="replay"} 2.0')
    with pytest.raises(RuntimeError, match="replay"):
        await check_accepted([_PageWorker(rejected)], 5, signed=False)
    with pytest.raises(RuntimeError, match="5 of 6"):
        await check_accepted([_PageWorker(ok)], 6, signed=True)
    await check_accepted([_PageWorker(ok)], 6, signed=False)
