"""HMAC signing, byte-compatible with Agent OS GovernanceEventSigner (SPEC §3)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.signing import (
    HmacSigner,
    SigningKeyError,
    decode_key_text,
    hmac_key_id,
    load_hmac_key,
)

KEY = bytes(range(32))


def agent_os_verify(key: bytes, cloudevent: dict[str, Any]) -> bool:
    """Agent OS GovernanceEventSigner.verify, as published (the compatibility target)."""
    signature = cloudevent.get("agtsignature")
    if not isinstance(signature, str) or cloudevent.get("agtsignaturealg") != "HMAC-SHA256":
        return False
    payload = {k: v for k, v in cloudevent.items() if k != "agtsignature"}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           default=str)
    digest = hmac.new(key, canonical.encode("utf-8"), hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(digest).decode("ascii"), signature)


CE = {"specversion": "1.0", "id": "e1", "type": "ai.agentos.policy.check", "source": "/a",
      "time": "2026-11-25T14:02:10+00:00", "data": {"decision": "deny", "note": "é 日本"}}


def test_signature_verifies_with_agent_os_verifier() -> None:
    signed = HmacSigner(KEY).sign(CE)
    assert signed["agtsignaturealg"] == "HMAC-SHA256"
    assert signed["agtkeyid"] == hmac_key_id(KEY)
    assert agent_os_verify(KEY, signed)
    assert HmacSigner(KEY).verify(signed)


def test_signing_is_deterministic_and_ignores_previous_signature() -> None:
    signer = HmacSigner(KEY)
    first = signer.sign(CE)
    assert signer.sign(first) == first
    assert json.dumps(signer.sign(dict(CE))) == json.dumps(first)


@pytest.mark.parametrize("path", [("id",), ("source",), ("agtkeyid",), ("data", "decision")])
def test_tampering_breaks_the_signature(path: tuple[str, ...]) -> None:
    signed = HmacSigner(KEY).sign(CE)
    tampered = json.loads(json.dumps(signed))
    target = tampered
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = "tampered"
    assert not agent_os_verify(KEY, tampered)
    assert not HmacSigner(KEY).verify(tampered)


def test_wrong_key_or_algorithm_fails() -> None:
    signed = HmacSigner(KEY).sign(CE)
    assert not HmacSigner(bytes(32)).verify(signed)
    assert not HmacSigner(KEY).verify({**signed, "agtsignaturealg": "Ed25519"})


@given(st.dictionaries(st.text(), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20)))
def test_any_json_data_round_trips_through_serialization(data: dict[str, Any]) -> None:
    signed = HmacSigner(KEY).sign({**CE, "data": data})
    assert agent_os_verify(KEY, json.loads(json.dumps(signed, ensure_ascii=False)))


def test_short_keys_are_refused_without_showing_them() -> None:
    with pytest.raises(SigningKeyError) as caught:
        HmacSigner(b"short-secret-key")
    assert "short-secret-key" not in str(caught.value)


def test_keys_load_from_file_then_environment(tmp_path: Path) -> None:
    file_key = base64.b64encode(b"f" * 32).decode()
    env_key = base64.b64encode(b"e" * 32).decode()
    key_file = tmp_path / "signing.key"
    key_file.write_text(file_key + "\n")
    assert load_hmac_key(key_file, {"GOVPIPE_SIGNING_KEY": env_key}) == b"f" * 32
    assert load_hmac_key(None, {"GOVPIPE_SIGNING_KEY": env_key}) == b"e" * 32
    assert load_hmac_key(None, {}) is None


def test_bad_key_text_errors_name_the_origin_not_the_key() -> None:
    with pytest.raises(SigningKeyError) as caught:
        decode_key_text("not base64 at all!!", "GOVPIPE_SIGNING_KEY")
    assert "GOVPIPE_SIGNING_KEY" in str(caught.value)
    assert "not base64 at all" not in str(caught.value)
    shown = repr(HmacSigner(KEY))
    assert base64.b64encode(KEY).decode() not in shown
    assert repr(KEY) not in shown
