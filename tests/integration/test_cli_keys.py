"""`govpipe keygen`, `run` and `verify` as subprocesses of the installed console script:
keys made, events signed and checked end to end, and key material never printed."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from pipeline.signing.signers import ed25519_key_id, hmac_key_id

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples" / "events.jsonl"
GOVPIPE = Path(sys.executable).parent / "govpipe"
COMMANDS = ("run", "verify", "keygen", "check-config")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVPIPE_")}
    env["GOVPIPE_SERVER__LISTEN"] = "127.0.0.1:0"
    env.update(extra)
    return env


def govpipe(*args: str, cwd: Path, env: dict[str, str] | None = None,
            stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    assert GOVPIPE.exists(), "the govpipe console script is not installed in this environment"
    return subprocess.run([str(GOVPIPE), *args], cwd=cwd, env=env or clean_env(), input=stdin,
                          capture_output=True, timeout=60, check=False)


def test_keygen_hmac_writes_a_0600_base64_key_and_refuses_to_overwrite(tmp_path: Path) -> None:
    made = govpipe("keygen", "--alg", "hmac", "--out", "signing.key", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    key_file = tmp_path / "signing.key"
    text = key_file.read_text()
    secret = base64.b64decode(text.strip(), validate=True)
    assert len(secret) == 32
    assert text.endswith("\n")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert made.stdout.decode() == (f"wrote HMAC-SHA256 key to signing.key (mode 0600); "
                                    f"key id {hmac_key_id(secret)}\n")

    again = govpipe("keygen", "--alg", "hmac", "--out", "signing.key", cwd=tmp_path)
    assert again.returncode == 1
    assert b"already exists" in again.stderr
    assert key_file.read_text() == text
    key_file.chmod(0o644)
    forced = govpipe("keygen", "--alg", "hmac", "--out", "signing.key", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert key_file.read_text() != text
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["signing.key"]  # no temp files left


def test_keygen_ed25519_writes_private_and_public_pem(tmp_path: Path) -> None:
    made = govpipe("keygen", "--alg", "ed25519", "--out", "audit.pem", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    private = load_pem_private_key((tmp_path / "audit.pem").read_bytes(), password=None)
    public = load_pem_public_key((tmp_path / "audit.pem.pub").read_bytes())
    assert isinstance(private, Ed25519PrivateKey)
    assert public == private.public_key()
    assert stat.S_IMODE((tmp_path / "audit.pem").stat().st_mode) == 0o600
    key_id = ed25519_key_id(private.public_key())
    assert made.stdout.decode().strip().endswith(f"key id {key_id}")
    (tmp_path / "audit.pem").unlink()
    refused = govpipe("keygen", "--alg", "ed25519", "--out", "audit.pem", cwd=tmp_path)
    assert refused.returncode == 1  # the .pub is still there
    assert b"audit.pem.pub already exists" in refused.stderr
    assert not (tmp_path / "audit.pem").exists()


def sign_examples(tmp_path: Path, alg: str) -> tuple[bytes, Path]:
    """keygen, then `govpipe run` on the examples: (signed output, verification key file)."""
    key_file = tmp_path / ("hmac.key" if alg == "hmac" else "ed.pem")
    made = govpipe("keygen", "--alg", alg, "--out", key_file.name, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    if alg == "hmac":  # key from the environment
        env = clean_env(GOVPIPE_SIGNING_KEY=key_file.read_text())
        args: tuple[str, ...] = ("run",)
    else:  # key from the config file
        config = tmp_path / "govpipe.toml"
        config.write_text(f'[signing]\nalg = "Ed25519"\nkey_file = "{key_file}"\n')
        env, args = clean_env(), ("run", "--config", str(config))
    ran = govpipe(*args, cwd=tmp_path, env=env, stdin=EXAMPLES.read_bytes())
    assert ran.returncode == 0, ran.stderr
    assert b"NO SIGNING KEY" not in ran.stderr
    verify_key = key_file if alg == "hmac" else tmp_path / "ed.pem.pub"
    return ran.stdout, verify_key


def holds_big_integer(value: object) -> bool:
    if isinstance(value, dict):
        return any(holds_big_integer(v) for v in value.values())
    if isinstance(value, list):
        return any(holds_big_integer(v) for v in value)
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53 - 1


@pytest.mark.parametrize("alg", ["hmac", "ed25519"])
def test_keygen_run_verify_end_to_end(tmp_path: Path, alg: str) -> None:
    signed, key = sign_examples(tmp_path, alg)
    lines = signed.splitlines()
    examples = EXAMPLES.read_bytes().splitlines()
    # Ed25519 refuses integers beyond I-JSON (no RFC 8785 library could check them): those
    # examples are dead-lettered with the reason; every other example is signed.
    beyond = [e for e in examples if alg == "ed25519" and holds_big_integer(json.loads(e))]
    assert len(lines) == len(examples) - len(beyond)
    dead = [json.loads(line) for path in sorted((tmp_path / "deadletter").glob("*.jsonl"))
            for line in path.read_bytes().splitlines()]
    assert [entry["reason"] for entry in dead] == ["number_out_of_range"] * len(beyond)
    (tmp_path / "signed.jsonl").write_bytes(signed)

    ok = govpipe("verify", "--key", str(key), "signed.jsonl", cwd=tmp_path)
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, f"verified {len(lines)}, failed 0\n"
                                                     .encode(), b"")
    from_stdin = govpipe("verify", "--key", str(key), cwd=tmp_path, stdin=signed)
    assert from_stdin.stdout == ok.stdout

    tampered = [json.loads(line) for line in lines]
    tampered[2]["data"]["decision"] = "allow-everything"
    tampered[5]["agtsignaturealg"] = "none"
    body = [json.dumps(event).encode() for event in tampered]
    body.insert(7, b"{not json")
    failed = govpipe("verify", "--key", str(key), cwd=tmp_path, stdin=b"\n".join(body))
    assert failed.returncode == 1
    assert failed.stdout == f"verified {len(lines) - 2}, failed 3\n".encode()
    assert failed.stderr.decode().splitlines() == [
        f"{tampered[2]['id']}: bad_signature", f"{tampered[5]['id']}: unsupported_alg",
        "line 8: not_json"]


def test_verify_with_rotated_keys_and_a_removed_key(tmp_path: Path) -> None:
    old_hmac, hmac_key = sign_examples(tmp_path, "hmac")
    new_ed, ed_pub = sign_examples(tmp_path, "ed25519")
    both = govpipe("verify", "--key", str(hmac_key), "--key", str(ed_pub), cwd=tmp_path,
                   stdin=old_hmac + new_ed)
    count = len(old_hmac.splitlines()) + len(new_ed.splitlines())
    assert both.returncode == 0, both.stderr
    assert both.stdout == f"verified {count}, failed 0\n".encode()
    old = old_hmac.splitlines()[:3]
    removed = govpipe("verify", "--key", str(ed_pub), cwd=tmp_path, stdin=b"\n".join(old))
    assert removed.returncode == 1
    assert removed.stdout == b"verified 0, failed 3\n"
    assert removed.stderr.decode().splitlines() == [
        f"{json.loads(line)['id']}: unknown_key" for line in old]


def test_verify_names_an_hmac_key_signed_under_a_custom_key_id(tmp_path: Path) -> None:
    assert govpipe("keygen", "--alg", "hmac", "--out", "k", cwd=tmp_path).returncode == 0
    (tmp_path / "c.toml").write_text('[signing]\nkey_file = "k"\nkey_id = "audit-2026-11"\n')
    first_four = b"\n".join(EXAMPLES.read_bytes().splitlines()[:4])
    ran = govpipe("run", "--config", "c.toml", cwd=tmp_path, stdin=first_four)
    assert ran.returncode == 0, ran.stderr
    assert all(json.loads(line)["agtkeyid"] == "audit-2026-11" for line in ran.stdout.splitlines())
    named = govpipe("verify", "--key", "audit-2026-11=k", cwd=tmp_path, stdin=ran.stdout)
    assert named.returncode == 0, named.stderr
    unnamed = govpipe("verify", "--key", "k", cwd=tmp_path, stdin=ran.stdout)
    assert unnamed.returncode == 1
    assert b": unknown_key" in unnamed.stderr


def test_verify_refuses_bad_key_files_with_exit_2(tmp_path: Path) -> None:
    (tmp_path / "short.key").write_text(base64.b64encode(b"s" * 16).decode())
    result = govpipe("verify", "--key", "short.key", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == b"govpipe: HMAC key is 16 bytes; at least 32 needed\n"
    missing = govpipe("verify", "--key", "absent.key", cwd=tmp_path)
    assert missing.returncode == 2
    assert b"absent.key: cannot read" in missing.stderr


# --- key material never printed ----------------------------------------------------------

HMAC_SECRET = bytes(range(7, 39))
ED_PRIVATE = Ed25519PrivateKey.from_private_bytes(bytes(range(50, 82)))
ED_PEM = ED_PRIVATE.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def leak_forms() -> list[bytes]:
    """The two keys as raw bytes, base64, hex (both cases) and every PEM body line."""
    raw_ed = ED_PRIVATE.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    forms: list[bytes] = []
    for secret in (HMAC_SECRET, raw_ed):
        forms += [secret, base64.b64encode(secret), secret.hex().encode(),
                  secret.hex().upper().encode(), repr(secret).encode()]
    forms += [line for line in ED_PEM.splitlines() if not line.startswith(b"-----")]
    return forms


def assert_nothing_leaked(result: subprocess.CompletedProcess[bytes], what: str) -> None:
    for form in leak_forms():
        assert form not in result.stdout, f"{what}: key material on stdout"
        assert form not in result.stderr, f"{what}: key material on stderr"


def test_no_command_prints_key_material(tmp_path: Path) -> None:
    (tmp_path / "hmac.key").write_text(base64.b64encode(HMAC_SECRET).decode() + "\n")
    (tmp_path / "ed.pem").write_bytes(ED_PEM)
    (tmp_path / "hmac.toml").write_text('[signing]\nkey_file = "hmac.key"\n')
    (tmp_path / "ed.toml").write_text('[signing]\nalg = "Ed25519"\nkey_file = "ed.pem"\n')
    hmac_env = clean_env(GOVPIPE_SIGNING_KEY=base64.b64encode(HMAC_SECRET).decode())
    ed_env = clean_env(GOVPIPE_SIGNING_KEY=ED_PEM.decode(), GOVPIPE_SIGNING__ALG="Ed25519")
    examples = EXAMPLES.read_bytes()
    runs = {
        "run hmac env": govpipe("run", cwd=tmp_path, env=hmac_env, stdin=examples),
        "run ed25519 env": govpipe("run", cwd=tmp_path, env=ed_env, stdin=examples),
        "run hmac file": govpipe("run", "--config", "hmac.toml", cwd=tmp_path, stdin=examples),
        "run ed25519 file": govpipe("run", "--config", "ed.toml", cwd=tmp_path, stdin=examples),
        "check-config env": govpipe("check-config", cwd=tmp_path, env=ed_env),
        "check-config file": govpipe("check-config", "--config", "ed.toml", cwd=tmp_path,
                                     env=hmac_env),
        "run pem as hmac": govpipe("run", cwd=tmp_path, env=clean_env(
            GOVPIPE_SIGNING_KEY=ED_PEM.decode()), stdin=examples),
        "run hmac as ed25519": govpipe("run", cwd=tmp_path, env=clean_env(
            GOVPIPE_SIGNING_KEY=base64.b64encode(HMAC_SECRET).decode(),
            GOVPIPE_SIGNING__ALG="Ed25519")),
        "run short key": govpipe("run", cwd=tmp_path, env=clean_env(
            GOVPIPE_SIGNING_KEY=base64.b64encode(HMAC_SECRET[:20]).decode())),
        "verify": govpipe("verify", "--key", "hmac.key", "--key", "ed.pem", cwd=tmp_path,
                          stdin=examples),
        "verify bad key": govpipe("verify", "--key", "hmac.toml", cwd=tmp_path),
        "help": govpipe("--help", cwd=tmp_path, env=hmac_env),
    }
    for command in COMMANDS:
        runs[f"{command} --help"] = govpipe(command, "--help", cwd=tmp_path, env=ed_env)
    for name, result in runs.items():
        assert_nothing_leaked(result, name)
    assert runs["run ed25519 env"].returncode == 0
    assert runs["run pem as hmac"].returncode == 2
    assert runs["run hmac as ed25519"].returncode == 2
    assert runs["run short key"].returncode == 2
    assert runs["verify"].returncode == 1  # unsigned input


def test_keygen_prints_neither_the_new_key_nor_its_encodings(tmp_path: Path) -> None:
    for alg in ("hmac", "ed25519"):
        made = govpipe("keygen", "--alg", alg, "--out", f"{alg}.key", cwd=tmp_path)
        assert made.returncode == 0
        written = (tmp_path / f"{alg}.key").read_bytes()
        body = [line for line in written.splitlines() if line and not line.startswith(b"---")]
        for line in body:
            assert line not in made.stdout + made.stderr
        if alg == "hmac":
            secret = base64.b64decode(written)
            assert secret.hex().encode() not in made.stdout
            assert secret not in made.stdout
