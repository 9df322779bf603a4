"""Config rules added for operators: algorithm names in any case, OTLP TLS files only on a
TLS connection (else bearer headers would go in cleartext and the files go unused)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.settings import ConfigError, load_settings
from pipeline.signing.signers import canonical_alg

HTTPS = "https://collector:4317"


@pytest.mark.parametrize(("given", "canonical"), [
    ("ed25519", "Ed25519"), ("ED25519", "Ed25519"), ("Ed25519", "Ed25519"),
    ("hmac-sha256", "HMAC-SHA256"), ("Hmac-Sha256", "HMAC-SHA256"),
])
def test_signing_alg_is_accepted_in_any_case_and_normalised(
        given: str, canonical: str, tmp_path: Path) -> None:
    assert load_settings(None, {"GOVPIPE_SIGNING__ALG": given}).signing.alg == canonical
    config = tmp_path / "govpipe.toml"
    config.write_text(f'[signing]\nalg = "{given}"\n')
    assert load_settings(config, {}).signing.alg == canonical


def test_an_unknown_alg_is_still_refused_naming_the_key() -> None:
    assert canonical_alg("rsa") is None
    with pytest.raises(ConfigError, match=r"^config error: signing\.alg: .*HMAC-SHA256"):
        load_settings(None, {"GOVPIPE_SIGNING__ALG": "rsa"})


@pytest.mark.parametrize("key", ["CA_FILE", "CLIENT_CERT_FILE", "CLIENT_KEY_FILE"])
@pytest.mark.parametrize(("endpoint", "insecure", "problem"), [
    ("http://collector:4317", None, "is plaintext"),
    ("collector:4317", None, "is plaintext"),
    (HTTPS, "true", "insecure = true"),
    ("collector:4317", "true", "insecure = true"),
])
def test_otlp_tls_files_on_a_plaintext_connection_are_refused_naming_the_file(
        key: str, endpoint: str, insecure: str | None, problem: str) -> None:
    env = {"GOVPIPE_SINKS__OTLP__ENDPOINT": endpoint, f"GOVPIPE_SINKS__OTLP__{key}": "/x.pem"}
    if insecure is not None:
        env["GOVPIPE_SINKS__OTLP__INSECURE"] = insecure
    with pytest.raises(ConfigError) as caught:
        load_settings(None, env)
    assert str(caught.value).startswith(f"config error: sinks.otlp.{key.lower()}: ")
    assert problem in str(caught.value)


@pytest.mark.parametrize(("endpoint", "protocol", "insecure"), [
    (HTTPS, "grpc", None), (HTTPS, "grpc", "false"), ("collector:4317", "grpc", "false"),
    ("https://collector:4318", "http/protobuf", None),
])
def test_otlp_tls_files_on_a_tls_connection_are_accepted(
        endpoint: str, protocol: str, insecure: str | None) -> None:
    env = {"GOVPIPE_SINKS__OTLP__ENDPOINT": endpoint, "GOVPIPE_SINKS__OTLP__PROTOCOL": protocol,
           "GOVPIPE_SINKS__OTLP__CA_FILE": "/ca.pem"}
    if insecure is not None:
        env["GOVPIPE_SINKS__OTLP__INSECURE"] = insecure
    assert load_settings(None, env).sinks.otlp.uses_tls


def test_otlp_without_tls_files_keeps_the_endpoint_scheme() -> None:
    assert not load_settings(None, {}).sinks.otlp.uses_tls
    assert load_settings(None, {"GOVPIPE_SINKS__OTLP__ENDPOINT": HTTPS}).sinks.otlp.uses_tls
