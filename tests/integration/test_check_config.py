"""`govpipe check-config` and `govpipe run` (subprocesses) refuse the same configurations
with the same one line, exit 2, no traceback and no secret: keys, key files, TLS material,
the source file."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import GOVPIPE, govpipe_env

SECRET = b"check-config-test-secret-0123456789abcdef"
HTTPS = "https://127.0.0.1:4317"

# case → (GOVPIPE_* variables, with {tmp} for the test's folder; what the line names)
REFUSED: dict[str, tuple[dict[str, str], str]] = {
    "bad GOVPIPE_SIGNING_KEY": ({"GOVPIPE_SIGNING_KEY": "not base64 at all!"},
                                "GOVPIPE_SIGNING_KEY"),
    "short GOVPIPE_SIGNING_KEY": ({"GOVPIPE_SIGNING_KEY": base64.b64encode(b"short").decode()},
                                  "at least 32"),
    "missing key_file": ({"GOVPIPE_SIGNING__KEY_FILE": "{tmp}/missing.key"},
                         "signing.key_file {tmp}/missing.key"),
    "missing OTLP ca_file": ({"GOVPIPE_SINKS__OTLP__ENABLED": "true",
                              "GOVPIPE_SINKS__OTLP__ENDPOINT": HTTPS,
                              "GOVPIPE_SINKS__OTLP__CA_FILE": "{tmp}/missing-ca.pem"},
                             "sinks.otlp.ca_file: cannot read {tmp}/missing-ca.pem"),
    "OTLP client key not a key": ({"GOVPIPE_SINKS__OTLP__ENABLED": "true",
                                   "GOVPIPE_SINKS__OTLP__ENDPOINT": HTTPS,
                                   "GOVPIPE_SINKS__OTLP__CLIENT_KEY_FILE": "{tmp}/config.toml"},
                                  "sinks.otlp.client_key_file"),
    "OTLP ca_file on plaintext": ({"GOVPIPE_SINKS__OTLP__ENABLED": "true",
                                   "GOVPIPE_SINKS__OTLP__CA_FILE": "{tmp}/ca.pem"},
                                  "sinks.otlp.ca_file"),
    "missing inbound key file": ({"GOVPIPE_SOURCE__KIND": "kafka",
                                  "GOVPIPE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",
                                  "GOVPIPE_SOURCE__REQUIRE_SIGNATURE": "true",
                                  "GOVPIPE_SOURCE__INBOUND_KEY_FILE": "{tmp}/inbound.key"},
                                 "source.inbound_key_file {tmp}/inbound.key"),
    "missing source file": ({"GOVPIPE_SOURCE__KIND": "file",
                             "GOVPIPE_SOURCE__PATH": "{tmp}/input.jsonl"},
                            "source.path: cannot read {tmp}/input.jsonl"),
}


def refusal_line(stderr: str) -> str:
    """The one stderr line, as text: a JSON log entry's message, or the plain line."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    try:
        entry = json.loads(lines[0])
    except ValueError:
        return lines[0].removeprefix("govpipe: ")
    assert entry["level"] == "error"
    return str(entry["message"])


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_check_config_and_run_refuse_with_the_same_line(tmp_path: Path, case: str) -> None:
    variables, named = REFUSED[case]
    (tmp_path / "config.toml").write_text("# not a key\n")
    env = govpipe_env(SECRET, **{k: v.format(tmp=tmp_path) for k, v in variables.items()})
    results = {command: subprocess.run([str(GOVPIPE), command], cwd=tmp_path, env=env,
                                       input=b"", capture_output=True, timeout=60,
                                       check=False)
               for command in ("check-config", "run")}
    lines = {}
    for command, done in results.items():
        stderr = done.stderr.decode()
        assert done.returncode == 2, (command, stderr)
        assert "Traceback" not in stderr
        assert base64.b64encode(SECRET).decode() not in stderr + done.stdout.decode()
        lines[command] = refusal_line(stderr)
    assert lines["check-config"] == lines["run"]
    assert named.format(tmp=tmp_path) in lines["run"]


def test_check_config_accepts_what_run_runs_and_warns_of_an_ephemeral_key(
        tmp_path: Path) -> None:
    env = govpipe_env(SECRET)
    del env["GOVPIPE_SIGNING_KEY"]
    done = subprocess.run([str(GOVPIPE), "check-config"], cwd=tmp_path, env=env,
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert b"ephemeral key" in done.stderr
    assert json.loads(done.stdout)["signing"]["alg"] == "HMAC-SHA256"
