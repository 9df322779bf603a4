"""Producer keys in every form `govpipe keygen` gives them, and per-event serialization."""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.inbound.verifier import InboundKeys, sign_record
from pipeline.publisher.events import EventRefused, encode_event
from pipeline.publisher.keys import RecordSigner, load_producer_key
from pipeline.signing.signers import SigningKeyError

KEY = bytes(range(100, 132))
TEXT = base64.b64encode(KEY).decode() + "\n"


def test_a_key_file_path_its_text_its_bytes_and_the_raw_key_give_the_same_key(
        tmp_path: Path) -> None:
    path = tmp_path / "inbound.key"
    path.write_text(TEXT)
    forms = [path, str(path), TEXT, TEXT.encode(), KEY]
    assert [load_producer_key(form, "agent") for form in forms] == [KEY] * 5


def test_a_per_sender_table_gives_the_senders_key(tmp_path: Path) -> None:
    other = bytes(range(32))
    table = (f'"billing-bot" = "{base64.b64encode(KEY).decode()}"\n'
             f'other = "{base64.b64encode(other).decode()}"\n')
    path = tmp_path / "senders.toml"
    path.write_text(table)
    assert load_producer_key(path, "billing-bot") == KEY
    assert load_producer_key(table.encode(), "other") == other
    with pytest.raises(SigningKeyError, match="no key for sender 'nobody'"):
        load_producer_key(path, "nobody")


@pytest.mark.parametrize(("sign_key", "message"), [
    (b"short", "the key is 5 bytes; at least 32 needed"),
    (base64.b64encode(b"x" * 16).decode(), "not valid base64|at least 32"),
    ("/no/such/key/file", "cannot read"),
    ('a = "not base64!"', "not valid base64"),
])
def test_a_bad_key_is_refused_with_a_clear_error_that_never_shows_it(
        sign_key: bytes | str, message: str) -> None:
    with pytest.raises(SigningKeyError, match=message) as raised:
        load_producer_key(sign_key, "agent")
    if not str(sign_key).startswith("/"):  # a path is named; key material never is
        assert str(sign_key) not in str(raised.value)


def test_headers_verify_with_the_inbound_signature() -> None:
    signer = RecordSigner(KEY, "agent-a")
    value = b'{"event_id":"x"}'
    headers = dict(signer.headers(value))
    nonce, timestamp = headers["agt-nonce"].decode(), int(headers["agt-timestamp"])
    expected = sign_record(KEY, nonce, timestamp, "agent-a", value)
    assert headers["agt-signature"].decode() == expected
    assert InboundKeys(shared=KEY).for_sender("agent-a") == KEY
    assert RecordSigner(None, "").headers(value) == []


def test_values_agent_os_writes_with_default_str_are_written_the_same_way() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    encoded = encode_event({"event_id": "e1", "agent_id": "a", "attributes": {"at": when}},
                           1000)
    assert b'"at":"2026-01-02 03:04:05+00:00"' in encoded.value
    assert encoded.key == b"a"


@pytest.mark.parametrize(("event", "reason"), [
    ({"event_id": "n", "latency_ms": math.nan}, "not_finite"),
    ({"event_id": "i", "attributes": {"x": math.inf}}, "not_finite"),
    ({"event_id": "big", "attributes": {"x": "y" * 2000}}, "too_large"),
    ("not an event", "not_an_event"),
    ({"event_id": "s", "reason": "\ud800"}, "not_serializable"),
])
def test_a_bad_event_is_refused_alone_with_its_reason(event: object, reason: str) -> None:
    with pytest.raises(EventRefused) as refused:
        encode_event(event, 1000)
    assert refused.value.reason == reason
