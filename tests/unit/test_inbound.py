"""Inbound producer signatures: header checks, window, nonces, metrics, key files."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from pipeline.inbound.keys import InboundKeys, load_inbound_keys
from pipeline.inbound.signed_string import sign_record, signed_bytes
from pipeline.inbound.verifier import InboundVerifier
from pipeline.model import Position, Record
from pipeline.ops.metrics import Metrics
from pipeline.signing.signers import SigningKeyError

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))
NOW = 1_764_000_000_000
WINDOW_S = 300.0


class ManualClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


def signed(value: bytes = b'{"a":1}', *, offset: int = 0, nonce: str = "n1",
           ts: int = NOW, sender: str = "agent-a", key: bytes = KEY,
           partition: int = 0) -> Record:
    headers = (("agt-nonce", nonce.encode()), ("agt-timestamp", str(ts).encode()),
               ("agt-sender", sender.encode()),
               ("agt-signature", sign_record(key, nonce, ts, sender, value).encode()))
    return Record(value, Position("t", partition, offset), headers=headers)


def verifier(keys: InboundKeys | None = None, capacity: int = 100
             ) -> tuple[InboundVerifier, Metrics, ManualClock]:
    metrics = Metrics(CollectorRegistry())
    clock = ManualClock()
    return (InboundVerifier(keys or InboundKeys(shared=KEY), WINDOW_S, capacity, metrics,
                            clock), metrics, clock)


def count(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value("govpipe_inbound_verification_total",
                                              {"result": result})
    assert value is not None
    return value


def test_the_signed_bytes_are_the_header_text_then_the_raw_value() -> None:
    assert signed_bytes("n", 12, "s", b"\xff{}") == b"n|12|s|\xff{}"


def test_a_good_record_passes_and_is_counted_ok() -> None:
    check, metrics, _ = verifier()
    assert check.check(signed()) is None
    assert count(metrics, "ok") == 1
    assert count(metrics, "replay") == 0  # every result exists from the start


def test_a_record_without_signature_is_unsigned() -> None:
    check, metrics, _ = verifier()
    assert check.check(Record(b"{}", Position("t", 0, 0))) == "unsigned"
    # The other agt-* headers, even repeated, do not make it signed.
    others = tuple((n, v) for n, v in signed().headers if n != "agt-signature")
    assert check.check(Record(b"{}", Position("t", 0, 1), headers=(*others, *others))) == (
        "unsigned")
    assert count(metrics, "unsigned") == 2


@pytest.mark.parametrize("mutate", [
    lambda h: [(n, v + b"x") if n == "agt-signature" else (n, v) for n, v in h],
    lambda h: [(n, b"12x") if n == "agt-timestamp" else (n, v) for n, v in h],
    lambda h: [(n, v) for n, v in h if n != "agt-nonce"],
    lambda h: [*h, ("agt-nonce", b"n2")],
    lambda h: [(n, b"\xff") if n == "agt-sender" else (n, v) for n, v in h],
    lambda h: [*h, h[-1]],  # the signature twice, both good
    lambda h: [*h, ("agt-sigver", b"1")],  # no version but 2 exists
    lambda h: [*h, ("agt-sigver", b"2"), ("agt-sigver", b"2")],
    lambda h: [(n, v) for n, v in h if n != "agt-sender"],
])
def test_malformed_or_forged_headers_are_bad_signatures(mutate: object) -> None:
    check, _, _ = verifier()
    record = signed()
    headers = tuple(mutate(list(record.headers)))  # type: ignore[operator]
    assert check.check(Record(record.value, record.position, headers=headers)) == (
        "bad_signature")


def test_a_changed_value_or_wrong_key_is_a_bad_signature() -> None:
    check, _, _ = verifier()
    record = signed()
    assert check.check(Record(b'{"a":2}', record.position, headers=record.headers)) == (
        "bad_signature")
    assert check.check(signed(key=OTHER)) == "bad_signature"


def test_a_pipe_in_the_nonce_is_refused_so_the_signed_string_splits_one_way() -> None:
    check, _, _ = verifier()
    assert check.check(signed(nonce="a|1")) == "bad_signature"


def test_a_forged_record_does_not_burn_its_nonce() -> None:
    check, _, _ = verifier()
    assert check.check(signed(key=OTHER, offset=0)) == "bad_signature"
    assert check.check(signed(offset=1)) is None


def test_the_window_is_inclusive_at_both_ends() -> None:
    window_ms = int(WINDOW_S * 1000)
    check, metrics, _ = verifier()
    assert check.check(signed(ts=NOW - window_ms, nonce="old")) is None
    assert check.check(signed(ts=NOW + window_ms, nonce="new")) is None
    assert check.check(signed(ts=NOW - window_ms - 1, nonce="older")) == "expired"
    assert check.check(signed(ts=NOW + window_ms + 1, nonce="newer")) == "expired"
    assert count(metrics, "expired") == 2


def test_a_replay_at_the_edge_of_the_window_is_still_caught() -> None:
    window_ms = int(WINDOW_S * 1000)
    check, _, clock = verifier()
    assert check.check(signed(ts=NOW, offset=0)) is None
    clock.now = NOW + window_ms
    assert check.check(signed(ts=NOW, offset=1)) == "replay"


def test_replay_and_redelivery() -> None:
    check, metrics, _ = verifier()
    assert check.check(signed(offset=0)) is None
    assert check.check(signed(offset=0)) is None  # same position: a redelivery
    assert check.check(signed(offset=1)) == "replay"
    assert check.check(signed(offset=0, partition=1)) == "replay"
    assert (count(metrics, "ok"), count(metrics, "replay")) == (2, 2)


def test_a_full_store_fails_closed() -> None:
    check, metrics, _ = verifier(capacity=2)
    assert check.check(signed(nonce="a", offset=0)) is None
    assert check.check(signed(nonce="b", offset=1)) is None
    assert check.check(signed(nonce="c", offset=2)) == "nonce_capacity"
    assert check.check(signed(nonce="a", offset=3)) == "replay"
    assert count(metrics, "nonce_capacity") == 1


def test_per_sender_keys() -> None:
    check, _, _ = verifier(InboundKeys(per_sender={"agent-a": KEY, "agent-b": OTHER}))
    assert check.check(signed(sender="agent-a", key=KEY, nonce="1")) is None
    assert check.check(signed(sender="agent-b", key=OTHER, nonce="2")) is None
    assert check.check(signed(sender="agent-b", key=KEY, nonce="3")) == "bad_signature"
    assert check.check(signed(sender="agent-c", key=KEY, nonce="4")) == "bad_signature"


def test_key_files_shared_and_per_sender(tmp_path: Path) -> None:
    shared = tmp_path / "shared.key"
    shared.write_text(base64.b64encode(KEY).decode() + "\n")
    assert load_inbound_keys(shared).for_sender("anyone") == KEY
    table = tmp_path / "senders.toml"
    table.write_text(f'"agent-a" = "{base64.b64encode(KEY).decode()}"\n'
                     f'agent-b = "{base64.b64encode(OTHER).decode()}"\n')
    keys = load_inbound_keys(table)
    assert (keys.for_sender("agent-a"), keys.for_sender("agent-b")) == (KEY, OTHER)
    assert keys.for_sender("agent-c") is None


def test_bad_key_files_name_the_file_not_the_key(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_text(base64.b64encode(b"s3cr3t-but-short").decode())
    with pytest.raises(SigningKeyError, match="at least 32") as info:
        load_inbound_keys(short)
    assert "s3cr3t" not in str(info.value)
    bad = tmp_path / "bad.toml"
    bad.write_text('a = "not base64!"\n')
    with pytest.raises(SigningKeyError, match=r"bad\.toml"):
        load_inbound_keys(bad)
    with pytest.raises(SigningKeyError, match="cannot read"):
        load_inbound_keys(tmp_path / "missing")
