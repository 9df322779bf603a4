"""Signing and verification: HMAC byte-compatible with Agent OS
GovernanceEventSigner, Ed25519 over JCS, key sets, tampering and algorithm attacks."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from hypothesis import given
from hypothesis import strategies as st

from pipeline.cloudevents.codec import decode_object, encode
from pipeline.cloudevents.mapping import SIGNATURE_ATTRIBUTES, to_cloudevent
from pipeline.cloudevents.position import with_position
from pipeline.model import Position, Record, Rejection, SignedEvent
from pipeline.processor import EventProcessor
from pipeline.signing.jcs import canonicalize
from pipeline.signing.keys import Ed25519Key, HmacKey, KeySet, VerificationKey, load_signer
from pipeline.signing.signers import (
    Ed25519Signer,
    HmacSigner,
    Signer,
    SigningKeyError,
    canonical_hmac_bytes,
    decode_key_text,
    ed25519_key_id,
    hmac_key_id,
    hmac_signature,
)
from pipeline.signing.verification import Verifier
from tests.support.agent_os import agent_os_verify

KEY = bytes(range(32))
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
    from_file = load_signer("HMAC-SHA256", key_file, None, {"GOVPIPE_SIGNING_KEY": env_key})
    from_env = load_signer("HMAC-SHA256", None, None, {"GOVPIPE_SIGNING_KEY": env_key})
    assert from_file is not None
    assert from_env is not None
    assert from_file.key_id == hmac_key_id(b"f" * 32)
    assert from_env.key_id == hmac_key_id(b"e" * 32)
    assert load_signer("HMAC-SHA256", None, None, {}) is None


def test_bad_key_text_errors_name_the_origin_not_the_key() -> None:
    with pytest.raises(SigningKeyError) as caught:
        decode_key_text("not base64 at all!!", "GOVPIPE_SIGNING_KEY")
    assert "GOVPIPE_SIGNING_KEY" in str(caught.value)
    assert "not base64 at all" not in str(caught.value)
    shown = repr(HmacSigner(KEY))
    assert base64.b64encode(KEY).decode() not in shown
    assert repr(KEY) not in shown


# --- Ed25519, the verifier and its key set, on realistic events --------------------------

EXAMPLES = Path(__file__).parents[2] / "examples" / "events.jsonl"
ED_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))
SIGNERS: dict[str, Signer] = {"hmac": HmacSigner(KEY), "ed25519": Ed25519Signer(ED_KEY)}


def keyset() -> KeySet:
    return KeySet([HmacKey(KEY), Ed25519Key(ED_KEY.public_key())])


def example_events() -> list[dict[str, Any]]:
    lines = EXAMPLES.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def realistic_cloudevent() -> dict[str, Any]:
    """An example with every optional field and nested attributes (policy_check, research)."""
    return to_cloudevent(example_events()[0])


def wire(signed: dict[str, Any]) -> dict[str, Any]:
    """What a consumer reads: the output bytes govpipe writes, parsed back."""
    return decode_object(encode(signed), 1 << 30)


@pytest.mark.parametrize("alg", sorted(SIGNERS))
def test_both_algorithms_round_trip_through_the_output_bytes(alg: str) -> None:
    signed = SIGNERS[alg].sign(realistic_cloudevent())
    assert signed["agtsignaturealg"] == SIGNERS[alg].alg
    assert Verifier(keyset()).failure(wire(signed)) is None


def test_ed25519_key_id_is_the_public_key_fingerprint() -> None:
    raw = ED_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    expected = "ed25519-" + hashlib.sha256(raw).hexdigest()[:16]
    assert Ed25519Signer(ED_KEY).key_id == expected == ed25519_key_id(ED_KEY.public_key())
    assert Ed25519Signer(ED_KEY).sign(CE)["agtkeyid"] == expected


def test_ed25519_signs_the_jcs_bytes_with_alg_and_key_id_inside() -> None:
    signed = Ed25519Signer(ED_KEY).sign(CE)
    unsigned = {k: v for k, v in signed.items() if k != "agtsignature"}
    # What an auditor in any language does: JCS the event minus agtsignature, check Ed25519.
    ED_KEY.public_key().verify(base64.b64decode(signed["agtsignature"]), canonicalize(unsigned))
    assert unsigned["agtsignaturealg"] == "Ed25519"


def tamper_paths(ce: dict[str, Any]) -> list[tuple[str, ...]]:
    """Every top-level attribute and every data field (nested ones too)."""
    paths: list[tuple[str, ...]] = [(name,) for name in ce if name != "agtsignature"]

    def walk(prefix: tuple[str, ...], value: Any) -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                paths.append((*prefix, name))
                walk((*prefix, name), item)

    walk(("data",), ce["data"])
    return paths


def changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, "x"]
    return {**value, "x": 1} if isinstance(value, dict) else "x"


@pytest.mark.parametrize("alg", sorted(SIGNERS))
def test_tampering_any_attribute_or_data_field_fails(alg: str) -> None:
    signed = SIGNERS[alg].sign(realistic_cloudevent())
    paths = tamper_paths(signed)
    assert len(paths) > 30  # the realistic event really has many fields
    verifier = Verifier(keyset())
    for path in paths:
        tampered = wire(signed)
        target = tampered
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = changed(target[path[-1]])
        assert verifier.failure(tampered) is not None, path
        removed = wire(signed)
        target = removed
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]
        assert verifier.failure(removed) is not None, path
    injected = wire(signed)
    injected["data"]["injected"] = True
    assert verifier.failure(injected) == "bad_signature"
    assert verifier.failure({**wire(signed), "agtalerts": "none"}) == "bad_signature"


@pytest.mark.parametrize(("alg", "claimed", "reason"), [
    ("hmac", "Ed25519", "unsupported_alg"),      # key id names an HMAC key
    ("ed25519", "HMAC-SHA256", "unsupported_alg"),
    ("hmac", "none", "unsupported_alg"),
    ("ed25519", "none", "unsupported_alg"),
    ("hmac", "hmac-sha256", "unsupported_alg"),
    ("hmac", None, "unsupported_alg"),
    ("ed25519", None, "unsupported_alg"),
])
def test_algorithm_substitution_fails(alg: str, claimed: str | None, reason: str) -> None:
    signed = SIGNERS[alg].sign(realistic_cloudevent())
    swapped = {k: v for k, v in signed.items() if k != "agtsignaturealg"}
    if claimed is not None:
        swapped["agtsignaturealg"] = claimed
    assert Verifier(keyset()).failure(swapped) == reason


def test_unsigned_and_empty_signatures_fail() -> None:
    signed = SIGNERS["ed25519"].sign(realistic_cloudevent())
    verifier = Verifier(keyset())
    assert verifier.failure({k: v for k, v in signed.items() if k != "agtsignature"}) == (
        "unsigned")
    assert verifier.failure({**signed, "agtsignature": None}) == "unsigned"
    assert verifier.failure({**signed, "agtsignature": ""}) == "bad_signature"
    assert verifier.failure({**signed, "agtsignature": "é" * 88}) == "bad_signature"
    hmac_signed = SIGNERS["hmac"].sign(realistic_cloudevent())
    assert verifier.failure({**hmac_signed, "agtsignature": "ü"}) == "bad_signature"


def public_key_forms(public: Ed25519PublicKey) -> list[bytes]:
    """What an attacker may feed an HMAC: the raw key, its PEM, its DER, its base64."""
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    pem = public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    der = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return [raw, pem, pem.strip(), der, base64.b64encode(raw)]


@pytest.mark.parametrize("secret_index", range(5))
def test_algorithm_confusion_public_key_as_hmac_secret_never_verifies(secret_index: int) -> None:
    # The attacker knows only the public key (it is published for auditors), forges an
    # event claiming HMAC-SHA256 under the Ed25519 key id, keyed with the public key bytes.
    public = ED_KEY.public_key()
    secret = public_key_forms(public)[secret_index]
    forged = to_cloudevent({**example_events()[1], "attributes": {"decision": "forged"}})
    forged.update({"agtsignaturealg": "HMAC-SHA256", "agtkeyid": ed25519_key_id(public)})
    forged["agtsignature"] = hmac_signature(secret, forged)
    assert agent_os_verify(secret, forged)  # a naive verifier would accept it
    only_public = KeySet([Ed25519Key(public)])
    assert Verifier(only_public).failure(forged) == "unsupported_alg"
    assert Verifier(keyset()).failure(forged) == "unsupported_alg"
    # Without a key id it is tried against HMAC keys only, never the public key.
    anonymous = {k: v for k, v in forged.items() if k != "agtkeyid"}
    anonymous["agtsignature"] = hmac_signature(secret, anonymous)
    assert Verifier(only_public).failure(anonymous) == "unknown_key"
    assert Verifier(keyset()).failure(anonymous) == "bad_signature"


def test_events_without_key_id_try_every_hmac_key_but_no_ed25519_key() -> None:
    verifier = Verifier(KeySet([HmacKey(bytes(32)), HmacKey(KEY)]))
    for secret in (bytes(32), KEY):
        # Plain Agent OS output: agtsignaturealg and agtsignature only.
        agent_os_style = dict(CE, agtsignaturealg="HMAC-SHA256")
        agent_os_style["agtsignature"] = hmac_signature(secret, agent_os_style)
        assert verifier.failure(agent_os_style) is None
    stranger = dict(CE, agtsignaturealg="HMAC-SHA256")
    stranger["agtsignature"] = hmac_signature(b"s" * 32, stranger)
    assert verifier.failure(stranger) == "bad_signature"
    ed_signed = Ed25519Signer(ED_KEY).sign(CE)
    ed_plain = {k: v for k, v in ed_signed.items() if k != "agtkeyid"}
    assert Verifier(keyset()).failure(ed_plain) == "unknown_key"


@pytest.mark.parametrize("alg", sorted(SIGNERS))
def test_key_rotation_old_and_new_verify_removed_key_is_unknown(alg: str) -> None:
    old_signer: Signer
    new_signer: Signer
    if alg == "hmac":
        old_signer, new_signer = HmacSigner(b"o" * 32), HmacSigner(b"n" * 32)
        old_key: VerificationKey = HmacKey(b"o" * 32)
        new_key: VerificationKey = HmacKey(b"n" * 32)
    else:
        old_private, new_private = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        old_signer, new_signer = Ed25519Signer(old_private), Ed25519Signer(new_private)
        old_key, new_key = Ed25519Key(old_private.public_key()), Ed25519Key(
            new_private.public_key())
    old_event, new_event = old_signer.sign(CE), new_signer.sign(CE)
    during = Verifier(KeySet([old_key, new_key]))
    assert during.failure(wire(old_event)) is None
    assert during.failure(wire(new_event)) is None
    after = Verifier(KeySet([new_key]))
    assert after.failure(wire(new_event)) is None
    assert after.failure(wire(old_event)) == "unknown_key"


def test_mixed_key_set_rotates_from_hmac_to_ed25519() -> None:
    verifier = Verifier(keyset())
    assert verifier.verify(SIGNERS["hmac"].sign(CE))
    assert verifier.verify(SIGNERS["ed25519"].sign(CE))
    assert not Verifier(KeySet([HmacKey(KEY)])).verify(SIGNERS["ed25519"].sign(CE))


@pytest.mark.parametrize("alg", sorted(SIGNERS))
def test_resigning_a_signed_cloudevent_gives_the_same_bytes(alg: str) -> None:
    # Re-read at the same position (a redelivery, or output fed back in): the same bytes.
    processor = EventProcessor(SIGNERS[alg], 1 << 20)
    for line in EXAMPLES.read_bytes().splitlines()[:12]:
        first = processor.process(Record(line, Position("t", 0, 0)))
        if alg == "ed25519" and has_integer_beyond_i_json(json.loads(line)):
            assert isinstance(first, Rejection)
            assert first.reason == "number_out_of_range"
            continue
        assert isinstance(first, SignedEvent)
        again = processor.process(Record(first.body, Position("t", 0, 0)))
        assert isinstance(again, SignedEvent)
        assert again.body == first.body
        # Signing an already-signed dict directly gives the same member order too.
        signer = SIGNERS[alg]
        unsigned = with_position(to_cloudevent(json.loads(line)), Position("t", 0, 0))
        assert encode(signer.sign(signer.sign(unsigned))) == first.body


@pytest.mark.parametrize("alg", sorted(SIGNERS))
def test_resigning_at_another_position_replaces_the_position(alg: str) -> None:
    # A govpipe event re-published elsewhere names where *this* read found it.
    processor = EventProcessor(SIGNERS[alg], 1 << 20)
    line = EXAMPLES.read_bytes().splitlines()[0]
    first = processor.process(Record(line, Position("t", 0, 0)))
    assert isinstance(first, SignedEvent)
    again = processor.process(Record(first.body, Position("stdin", 0, 7, kind="line")))
    assert isinstance(again, SignedEvent)
    assert Verifier(keyset()).verify(again.attributes)
    moved = {name: value for name, value in again.attributes.items()
             if name.startswith("agt") and name not in SIGNATURE_ATTRIBUTES}
    assert moved == {"agtinput": "stdin", "agtline": "7"}


def has_integer_beyond_i_json(value: Any) -> bool:
    """True when `value` holds an integer outside ±(2**53 - 1) anywhere."""
    if isinstance(value, dict):
        return any(has_integer_beyond_i_json(item) for item in value.values())
    if isinstance(value, list):
        return any(has_integer_beyond_i_json(item) for item in value)
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**53


SAFE_TEXT = st.text(st.characters(codec="utf-8"))  # lone surrogates: see below
ATTRIBUTE_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e-7, 1e16, -0.0, 5e-324, 1e21, 2**53 + 1, 2**64 + 1, 1.5e300])
    | SAFE_TEXT | st.sampled_from(["\U0001f600", "日本", "\u2028", "\x00", "\\\"", "\ufb33"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(SAFE_TEXT, children, max_size=4),
    max_leaves=25)


@pytest.mark.parametrize("alg", sorted(SIGNERS))
@given(attributes=st.dictionaries(SAFE_TEXT, ATTRIBUTE_VALUES, max_size=8))
def test_any_attribute_values_verify_after_the_output_round_trip(
    alg: str, attributes: dict[str, Any]
) -> None:
    event = {**example_events()[3], "attributes": attributes}
    processor = EventProcessor(SIGNERS[alg], 1 << 24)
    result = processor.process(Record(json.dumps(event).encode(), Position("t", 0, 0)))
    if alg == "ed25519" and has_integer_beyond_i_json(attributes):
        # RFC 8785 has no form for them: refused with a reason, never rounded.
        assert isinstance(result, Rejection)
        assert result.reason == "number_out_of_range"
        return
    assert isinstance(result, SignedEvent)
    consumed = decode_object(result.body, 1 << 30)
    assert Verifier(keyset()).failure(consumed) is None
    if alg == "hmac":
        assert agent_os_verify(KEY, consumed)


@pytest.mark.parametrize("alg", sorted(SIGNERS))
def test_lone_surrogates_are_rejected_not_signed(alg: str) -> None:
    line = b'{"event_id":"e","kind":"policy_check","agent_id":"a",' \
           b'"occurred_at":"2026-11-25T14:00:00+00:00","attributes":{"x":"\\ud800"}}'
    result = EventProcessor(SIGNERS[alg], 1 << 20).process(Record(line, Position("t", 0, 0)))
    assert isinstance(result, Rejection)
    assert result.reason == "unserializable"


def test_signers_and_keys_never_show_key_material() -> None:
    private_raw = ED_KEY.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    for thing in (SIGNERS["hmac"], SIGNERS["ed25519"], HmacKey(KEY), keyset(),
                  Ed25519Key(ED_KEY.public_key())):
        shown = repr(thing) + str(thing)
        for secret in (KEY, private_raw):
            assert repr(secret) not in shown
            assert base64.b64encode(secret).decode() not in shown
            assert secret.hex() not in shown


@pytest.mark.parametrize("alg", sorted(SIGNERS))
def test_hostile_events_fail_verification_without_crashing_it(alg: str) -> None:
    signed = SIGNERS[alg].sign(CE)
    verifier = Verifier(keyset())
    deep: Any = "bottom"
    for _ in range(3000):
        deep = {"d": deep}
    hostile = [
        {**signed, "agtsignature": "\ud800"},
        {**signed, "data": {"lone": "\udc00"}},
        {**signed, "agtkeyid": ["not", "a", "string"]},
        {**signed, "agtsignaturealg": {"an": "object"}},
        {**signed, "data": deep},
    ]
    for event in hostile:
        assert verifier.failure(event) in ("bad_signature", "unknown_key", "unsupported_alg")


# JSON values as decoding gives them, with the float and string corners where orjson and
# json.dumps could differ: tiny and huge magnitudes, control characters, non-BMP text.
_JSON_SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                 | st.floats(allow_nan=False, allow_infinity=False)
                 | st.sampled_from([1e-4, 9.99e-5, 1e-5, 1.5e-7, 5e-324, 1e16, 1e22, -0.0])
                 | st.text())
_JSON_VALUES = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@given(_JSON_VALUES)
def test_fast_canonical_form_is_byte_identical_for_json_values(value: Any) -> None:
    envelope = {"id": "e1", "data": value}
    fast = canonical_hmac_bytes(envelope, json_values=True)
    assert fast == json.dumps(envelope, sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False).encode("utf-8", "surrogatepass")


def test_sign_json_gives_the_same_signature_as_sign() -> None:
    signer = HmacSigner(KEY)
    ce = dict(CE, data={"tiny": 1e-5, "big": 2**65, "text": "\x00\n\u2028😀", "n": 1.163})
    assert signer.sign_json(ce) == signer.sign(ce)


def orjson_form(envelope: dict[str, Any]) -> bytes | None:
    try:
        return orjson.dumps(envelope, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None


@pytest.mark.parametrize(("alg", "data"), [
    ("hmac", {"f": 1e16, "g": 1e-7}),  # json.dumps writes 1e-07
    ("hmac", {"n": 2**70}),  # beyond what orjson writes
    ("ed25519", {"f": 1e16}),  # JCS writes 10000000000000000
    ("ed25519", {"\U0001f600": 1, "\uff61": 2}),  # JCS orders keys by UTF-16 code units
])  # (Ed25519 refuses integers beyond I-JSON: nothing to fall back for)
def test_verification_falls_back_to_the_canonical_form(alg: str, data: dict[str, Any]) -> None:
    # Verifiers try orjson's sorted form first and trust it only on a match.
    signed = SIGNERS[alg].sign({**CE, "data": data})
    envelope = {k: v for k, v in signed.items() if k != "agtsignature"}
    canonical = canonicalize(envelope) if alg == "ed25519" else canonical_hmac_bytes(envelope)
    assert orjson_form(envelope) != canonical
    assert Verifier(keyset()).verify(signed)
    assert not Verifier(keyset()).verify({**signed, "data": {**data, "x": 1}})
