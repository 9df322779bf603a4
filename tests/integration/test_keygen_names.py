"""`govpipe keygen` (subprocess): the algorithm named in any case, printed canonically;
errors name the file the user gave, never the temp file the key is first written to."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_cli_keys import govpipe


@pytest.mark.parametrize(("spelling", "canonical"), [
    ("ed25519", "Ed25519"), ("Ed25519", "Ed25519"), ("ED25519", "Ed25519"),
    ("hmac", "HMAC-SHA256"), ("HMAC", "HMAC-SHA256"), ("hmac-sha256", "HMAC-SHA256"),
])
def test_keygen_takes_the_alg_in_any_case(tmp_path: Path, spelling: str, canonical: str) -> None:
    made = govpipe("keygen", "--alg", spelling, "--out", "signing.key", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.stdout.decode().startswith(f"wrote {canonical} ")


def test_keygen_refuses_an_unknown_alg_listing_the_choices(tmp_path: Path) -> None:
    made = govpipe("keygen", "--alg", "rsa", "--out", "signing.key", cwd=tmp_path)
    assert made.returncode == 2
    assert b"choose from 'hmac', 'ed25519'" in made.stderr


@pytest.mark.parametrize("alg", ["hmac", "ed25519"])
def test_keygen_errors_name_the_file_given(tmp_path: Path, alg: str) -> None:
    out = tmp_path / "no-such-dir" / "signing.key"
    made = govpipe("keygen", "--alg", alg, "--out", str(out), cwd=tmp_path)
    assert made.returncode == 1
    assert made.stderr.decode() == (f"govpipe: cannot write the key to {out}: "
                                    "No such file or directory\n")
