"""Inbound signatures beyond the value: binary-mode headers (signed string version 2),
broker append time, nonces recalled from a partition, and the replay seal."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry

from pipeline.inbound.keys import InboundKeys
from pipeline.inbound.replay_seal import make_seal, seal_check, signed_by
from pipeline.inbound.signed_string import signature_headers, signed_bytes
from pipeline.inbound.verifier import InboundVerifier
from pipeline.model import Position, Record
from pipeline.ops.metrics import Metrics
from pipeline.signing.signers import Ed25519Signer, HmacSigner, ephemeral_signer

KEY = bytes(range(32))
NOW = 1_764_000_000_000
WINDOW_MS = 300_000
CE = (("ce_specversion", b"1.0"), ("ce_id", b"e-1"), ("ce_type", b"ai.agentos.policy.check"),
      ("ce_source", b"/agents/a"), ("content-type", b"application/json"))
DAEMON = HmacSigner(bytes(range(50, 82)))


def verifier(signer: HmacSigner | Ed25519Signer = DAEMON) -> InboundVerifier:
    return InboundVerifier(InboundKeys(shared=KEY), WINDOW_MS / 1000, 100,
                           Metrics(CollectorRegistry()), lambda: NOW,
                           seal_check=seal_check(signer))


def binary(value: bytes = b'{"a":1}', *, ce: tuple[tuple[str, bytes], ...] = CE,
           nonce: str = "n1", offset: int = 0) -> Record:
    headers = (*ce, *signature_headers(KEY, nonce, NOW, "agent-a", value, ce))
    return Record(value, Position("t", 0, offset), headers=headers)


def test_version_2_covers_the_binary_mode_headers_in_one_order() -> None:
    covered = [("ce_id", b"e-1"), ("ce_type", b"x")]
    assert signed_bytes("n", 12, "s", b"{}", covered) == (
        b"|v2|n|12|s|2|5|ce_id|3|e-17|ce_type|1|x{}")
    # A "|" in a header name cannot make two header blocks sign alike.
    assert signed_bytes("n", 1, "s", b"", [("ce_a", b"Xce_c|1|Y"), ("ce_b", b"Z")]) != (
        signed_bytes("n", 1, "s", b"", [("ce_a|9|Xce_c", b"Y"), ("ce_b", b"Z")]))
    headers = dict(signature_headers(KEY, "n", 12, "s", b"{}", list(reversed(covered))))
    assert headers["agt-sigver"] == b"2"
    assert "agt-sigver" not in dict(signature_headers(KEY, "n", 12, "s", b"{}"))


def test_a_binary_mode_record_signed_with_its_headers_passes() -> None:
    assert verifier().check(binary()) is None


def test_a_tampered_or_added_ce_header_is_refused() -> None:
    record = binary()
    retyped = tuple((n, b"ai.agentos.identity.verified") if n == "ce_type" else (n, v)
                    for n, v in record.headers)
    added = (*record.headers, ("ce_subject", b"someone"))
    check = verifier()
    assert check.check(Record(record.value, record.position, headers=retyped)) == (
        "bad_signature")
    assert check.check(Record(record.value, record.position, headers=added)) == (
        "bad_signature")


def test_ce_headers_under_a_version_1_signature_are_refused() -> None:
    value = b'{"a":1}'
    headers = (*CE, *signature_headers(KEY, "n1", NOW, "agent-a", value))  # value only
    assert verifier().check(Record(value, Position("t", 0, 0), headers=headers)) == (
        "bad_signature")


def test_stripping_the_version_header_does_not_help() -> None:
    record = binary()
    stripped = tuple((n, v) for n, v in record.headers if n != "agt-sigver")
    assert verifier().check(Record(record.value, record.position, headers=stripped)) == (
        "bad_signature")


def appended(value: bytes, ts: int, append_ms: int, offset: int, nonce: str = "n1") -> Record:
    return Record(value, Position("t", 0, offset),
                  headers=tuple(signature_headers(KEY, nonce, ts, "agent-a", value)),
                  timestamp_ms=append_ms, log_append_time=True)


def test_log_append_time_judges_a_backlog_by_when_it_arrived() -> None:
    hours_ago = NOW - 5 * 3_600_000
    check = verifier()
    assert check.check(appended(b"{}", hours_ago, hours_ago + 100, 0)) is None
    # A copy appended later than the window allows is expired, whatever the reader's clock.
    assert check.check(appended(b"{}", hours_ago, hours_ago + WINDOW_MS + 1, 1)) == "expired"
    # A copy appended inside the window is a replay.
    assert check.check(appended(b"{}", hours_ago, hours_ago + 2_000, 2)) == "replay"


def test_create_time_is_judged_by_the_consumer_clock() -> None:
    old = NOW - WINDOW_MS - 1
    record = Record(b"{}", Position("t", 0, 0),
                    headers=tuple(signature_headers(KEY, "n", old, "agent-a", b"{}")),
                    timestamp_ms=old, log_append_time=False)
    assert verifier().check(record) == "expired"


def test_recalled_nonces_catch_a_replay_this_replica_never_saw() -> None:
    check = verifier()
    original = appended(b"{}", NOW, NOW, 7)
    assert check.recall(original)
    assert check.check(appended(b"{}", NOW, NOW + 1_000, 8)) == "replay"
    assert check.check(original) is None  # the same offset again: a redelivery
    forged = Record(b"{}", Position("t", 0, 9), headers=tuple(
        signature_headers(bytes(32), "n2", NOW, "agent-a", b"{}")))
    assert not check.recall(forged)  # forged records burn no nonce on a rebuild either


def sealed(signer: HmacSigner | Ed25519Signer, value: bytes, offset: int,
           replayed_at: int = NOW, entry: str = "entry-1") -> Record:
    headers = (("govpipe-replayed", entry.encode()),
               ("govpipe-replay-seal", make_seal(signer, entry, replayed_at, value)))
    return Record(value, Position("t", 0, offset), headers=headers)


def test_a_sealed_replay_is_accepted_once() -> None:
    for signer in (DAEMON, ephemeral_signer("Ed25519")):
        assert isinstance(signer, HmacSigner | Ed25519Signer)
        check = verifier(signer)
        event = b'{"id":"e-1"}'
        assert check.check(sealed(signer, event, 0)) is None
        assert check.check(sealed(signer, event, 1)) == "replay"
        assert check.check(sealed(signer, event, 2, replayed_at=NOW - WINDOW_MS - 1,
                                  entry="entry-2")) == "expired"


def test_a_seal_from_another_key_or_over_another_value_is_refused() -> None:
    check = verifier()
    assert check.check(sealed(HmacSigner(bytes(32)), b"{}", 0)) == "bad_signature"
    good = sealed(DAEMON, b'{"id":"e-1"}', 1)
    assert check.check(Record(b'{"id":"e-2"}', good.position, headers=good.headers)) == (
        "bad_signature")
    with_ce = Record(good.value, good.position, headers=(*good.headers, *CE))
    assert check.check(with_ce) == "bad_signature"


def test_the_remembered_nonces_are_a_gauge() -> None:
    metrics = Metrics(CollectorRegistry())
    check = InboundVerifier(InboundKeys(shared=KEY), WINDOW_MS / 1000, 100, metrics,
                            lambda: NOW)
    assert check.check(binary(nonce="a", offset=0)) is None
    assert check.check(binary(nonce="b", offset=1)) is None
    assert metrics.registry.get_sample_value("govpipe_inbound_nonces") == 2
    check.forget([("t", 0)])
    assert metrics.registry.get_sample_value("govpipe_inbound_nonces") == 0


def test_signed_by_recognises_the_daemons_own_events() -> None:
    event = DAEMON.sign({"specversion": "1.0", "id": "e-1", "type": "t", "source": "s"})
    assert signed_by(seal_check(DAEMON), json.dumps(event).encode())
    assert not signed_by(seal_check(HmacSigner(bytes(32))), json.dumps(event).encode())


def test_seals_follow_a_rotation_of_the_daemon_key() -> None:
    # After SIGHUP rotates the signing key, `govpipe replay` seals with the new key; a seal
    # made just before the rotation stays good, one from two keys ago does not.
    new, newer = HmacSigner(bytes(range(90, 122))), HmacSigner(bytes(range(130, 162)))
    check = verifier(DAEMON)
    check.use_keys(InboundKeys(shared=KEY), seal_check(new))
    assert check.check(sealed(new, b'{"id":"e-1"}', 0, entry="a")) is None
    assert check.check(sealed(DAEMON, b'{"id":"e-2"}', 1, entry="b")) is None
    check.use_keys(InboundKeys(shared=KEY), seal_check(newer))
    assert check.check(sealed(newer, b'{"id":"e-3"}', 2, entry="c")) is None
    assert check.check(sealed(DAEMON, b'{"id":"e-4"}', 3, entry="d")) == "bad_signature"
