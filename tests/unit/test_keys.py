"""Keys from files and the environment, key sets, and the signer wiring."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from pipeline.app import build_signer
from pipeline.settings import load_settings
from pipeline.signing.keys import (
    Ed25519Key,
    HmacKey,
    KeySet,
    load_signer,
    load_verification_key,
    parse_verification_key,
)
from pipeline.signing.signers import (
    Ed25519Signer,
    HmacSigner,
    SigningKeyError,
    ed25519_key_id,
    hmac_key_id,
)

PRIVATE = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
PRIVATE_PEM = PRIVATE.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
PUBLIC_PEM = PRIVATE.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
HMAC_SECRET = bytes(range(200, 240))
HMAC_TEXT = base64.b64encode(HMAC_SECRET).decode() + "\n"


def secret_forms() -> list[str]:
    """The key material in every form it could leak as."""
    raw = PRIVATE.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    pem_body = [line for line in PRIVATE_PEM.decode().splitlines() if "-----" not in line]
    return [*pem_body, raw.hex(), base64.b64encode(raw).decode(), repr(raw),
            HMAC_TEXT.strip(), HMAC_SECRET.hex(), repr(HMAC_SECRET)]


def assert_no_secret(text: str) -> None:
    for form in secret_forms():
        assert form not in text


def test_ed25519_signer_from_key_file_or_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(PRIVATE_PEM)
    from_file = load_signer("Ed25519", key_file, None, {})
    from_env = load_signer("Ed25519", None, None, {"GOVPIPE_SIGNING_KEY": PRIVATE_PEM.decode()})
    assert isinstance(from_file, Ed25519Signer)
    assert isinstance(from_env, Ed25519Signer)
    assert from_file.key_id == from_env.key_id == ed25519_key_id(PRIVATE.public_key())


def test_key_file_wins_over_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "hmac.key"
    key_file.write_text(HMAC_TEXT)
    other = base64.b64encode(b"o" * 32).decode()
    signer = load_signer("HMAC-SHA256", key_file, None, {"GOVPIPE_SIGNING_KEY": other})
    assert signer is not None
    assert signer.key_id == hmac_key_id(HMAC_SECRET)
    named = load_signer("HMAC-SHA256", key_file, "audit-2026-11", {})
    assert named is not None
    assert named.key_id == "audit-2026-11"


@pytest.mark.parametrize("length", [0, 1, 16, 31])
def test_short_hmac_keys_are_refused_everywhere(tmp_path: Path, length: int) -> None:
    short = base64.b64encode(b"k" * length).decode()
    key_file = tmp_path / "short.key"
    key_file.write_text(short)
    for attempt in (
        lambda: load_signer("HMAC-SHA256", None, None, {"GOVPIPE_SIGNING_KEY": short or "="}),
        lambda: load_signer("HMAC-SHA256", key_file, None, {}),
        lambda: load_verification_key(key_file),
    ):
        with pytest.raises(SigningKeyError) as caught:
            attempt()
        if length:
            assert f"HMAC key is {length} bytes; at least 32 needed" in str(caught.value)
        assert short not in str(caught.value) or not short


@pytest.mark.parametrize(("alg", "material", "expected"), [
    ("HMAC-SHA256", PRIVATE_PEM, "a PEM key, but signing.alg = \"HMAC-SHA256\""),
    ("Ed25519", HMAC_TEXT.encode(), "not a PEM key"),
    ("Ed25519", PUBLIC_PEM, "a public key cannot sign"),
    ("Ed25519", ec.generate_private_key(ec.SECP256R1()).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()), "not an Ed25519 key"),
    ("Ed25519", PRIVATE.private_bytes(Encoding.PEM, PrivateFormat.PKCS8,
                                      BestAvailableEncryption(b"pw")), "encrypted PEM"),
    ("Ed25519", b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n",
     "not a readable private key PEM"),
])
def test_wrong_key_kinds_get_a_clear_error_without_the_key(
    tmp_path: Path, alg: str, material: bytes, expected: str
) -> None:
    key_file = tmp_path / "key"
    key_file.write_bytes(material)
    for source, environ in ((key_file, {}), (None, {"GOVPIPE_SIGNING_KEY": material.decode()})):
        with pytest.raises(SigningKeyError) as caught:
            load_signer(alg, source, None, environ)
        message = str(caught.value)
        assert expected in message
        assert "signing.key_file" in message or "GOVPIPE_SIGNING_KEY" in message
        assert_no_secret(message)
        # No chained library exception (its traceback could quote the input).
        error = caught.value
        assert error.__cause__ is None
        assert error.__context__ is None or error.__suppress_context__


def test_unreadable_key_file_names_the_file() -> None:
    with pytest.raises(SigningKeyError, match=r"nowhere/signing\.key: cannot read"):
        load_signer("HMAC-SHA256", Path("/nowhere/signing.key"), None, {})


def test_verification_keys_from_public_or_private_pem_or_base64(tmp_path: Path) -> None:
    public = parse_verification_key(PUBLIC_PEM, "pub")
    private = parse_verification_key(PRIVATE_PEM, "private")
    hmac_key = parse_verification_key(HMAC_TEXT.encode(), "hmac")
    assert isinstance(public, Ed25519Key)
    assert isinstance(private, Ed25519Key)
    assert public.key_id == private.key_id == ed25519_key_id(PRIVATE.public_key())
    assert isinstance(hmac_key, HmacKey)
    assert hmac_key.key_id == hmac_key_id(HMAC_SECRET)
    assert parse_verification_key(HMAC_TEXT.encode(), "hmac", "audit-1").key_id == "audit-1"
    with pytest.raises(SigningKeyError, match="fingerprint"):
        parse_verification_key(PUBLIC_PEM, "pub", "custom-id")
    rsa_like = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(SigningKeyError, match="not an Ed25519 key"):
        parse_verification_key(rsa_like, "ec.pub")


def test_key_set_picks_by_id_and_refuses_two_keys_under_one_id() -> None:
    keys = KeySet([HmacKey(HMAC_SECRET), Ed25519Key(PRIVATE.public_key()),
                   HmacKey(HMAC_SECRET)])
    assert len(keys) == 2
    found = keys.get(hmac_key_id(HMAC_SECRET))
    assert found is not None
    assert found.alg == "HMAC-SHA256"
    assert [key.alg for key in keys.of_alg("Ed25519")] == ["Ed25519"]
    assert keys.get("nope") is None
    with pytest.raises(SigningKeyError) as caught:
        KeySet([HmacKey(HMAC_SECRET, "k1"), HmacKey(b"x" * 32, "k1")])
    assert "'k1'" in str(caught.value)
    assert_no_secret(str(caught.value))


def test_build_signer_uses_the_configured_algorithm(tmp_path: Path) -> None:
    key_file = tmp_path / "ed.pem"
    key_file.write_bytes(PRIVATE_PEM)
    settings = load_settings(None, {"GOVPIPE_SIGNING__ALG": "Ed25519",
                                    "GOVPIPE_SIGNING__KEY_FILE": str(key_file)})
    signer = build_signer(settings, {})
    assert isinstance(signer, Ed25519Signer)
    assert signer.key_id == ed25519_key_id(PRIVATE.public_key())


@pytest.mark.parametrize(("alg", "kind"), [("HMAC-SHA256", HmacSigner),
                                           ("Ed25519", Ed25519Signer)])
def test_without_a_key_both_algorithms_fall_back_loudly_to_an_ephemeral_key(
    caplog: pytest.LogCaptureFixture, alg: str, kind: type
) -> None:
    settings = load_settings(None, {"GOVPIPE_SIGNING__ALG": alg})
    with caplog.at_level(logging.WARNING):
        first, second = build_signer(settings, {}), build_signer(settings, {})
    assert isinstance(first, kind)
    assert first.alg == alg
    assert first.key_id != second.key_id  # a fresh random key each time
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all("NO SIGNING KEY CONFIGURED" in message for message in warnings)
