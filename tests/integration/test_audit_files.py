"""`govpipe audit` over files: `govpipe run` reads JSON lines on stdin, writes signed events
on stdout and signed entries to its dead-letter; the audit accounts for every input line,
and finds what was deleted, edited or forged afterwards."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from pathlib import Path

import orjson
import pytest

from pipeline.__main__ import main as govpipe
from pipeline.signing.signers import HmacSigner
from tests.support.events import event_value
from tests.support.processes import GOVPIPE, govpipe_env

SUMMARY = "input {}, delivered {}, dead-lettered {}, missing {}, duplicates {}, bad signatures {}"


class Trail:
    """One daemon run's input, output and dead-letter, and the key that signed them."""

    def __init__(self, directory: Path, key: bytes) -> None:
        self.directory = directory
        self.key = key
        self.input = directory / "in.jsonl"
        self.output = directory / "out.jsonl"
        self.deadletter = directory / "deadletter"
        self.key_file = directory / "key"
        self.key_file.write_text(base64.b64encode(key).decode())

    def audit(self, capsys: pytest.CaptureFixture[str], output: Path | None = None,
              *extra: str) -> tuple[int, list[str]]:
        code = govpipe(["audit", "--key", str(self.key_file), "--input", str(self.input),
                        "--input-name", "stdin", "--output", str(output or self.output),
                        "--deadletter", str(self.deadletter), *extra])
        return code, capsys.readouterr().out.splitlines()

    def output_lines(self) -> list[bytes]:
        return self.output.read_bytes().splitlines()

    def write_output(self, name: str, lines: list[bytes]) -> Path:
        path = self.directory / name
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        return path


@pytest.fixture
async def trail(tmp_path: Path) -> Trail:
    """20 events, a blank line (line 6) and two records that are not JSON (lines 4 and 12)."""
    made = Trail(tmp_path, secrets.token_bytes(32))
    lines = [event_value(n, "audit") for n in range(20)]
    lines.insert(3, b"not json at all")
    lines.insert(5, b"")
    lines.insert(11, b"[1, 2]")
    made.input.write_bytes(b"\n".join(lines) + b"\n")
    with made.input.open("rb") as stdin, made.output.open("wb") as stdout:
        proc = await asyncio.create_subprocess_exec(
            str(GOVPIPE), "run", cwd=tmp_path, env=govpipe_env(made.key), stdin=stdin,
            stdout=stdout, stderr=asyncio.subprocess.PIPE)
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
    return made


def test_a_clean_run_accounts_for_every_line(trail: Trail,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = trail.audit(capsys)
    assert lines == [SUMMARY.format(22, 20, 2, 0, 0, 0)]
    assert code == 0


def test_a_deleted_output_line_is_missing_at_its_position(
        trail: Trail, capsys: pytest.CaptureFixture[str]) -> None:
    events = trail.output_lines()
    assert json.loads(events[6])["agtline"] == "9"  # lines 4 and 6 are no events
    code, lines = trail.audit(capsys, trail.write_output("cut.jsonl",
                                                         events[:6] + events[7:]))
    assert lines == ["missing stdin line 9", SUMMARY.format(22, 19, 2, 1, 0, 0)]
    assert code == 1


def test_an_edited_output_line_is_a_bad_signature(
        trail: Trail, capsys: pytest.CaptureFixture[str]) -> None:
    events = trail.output_lines()
    events[2] = events[2].replace(b'"decision":"allow"', b'"decision":"deny"')
    code, lines = trail.audit(capsys, trail.write_output("edited.jsonl", events))
    assert lines[0].startswith("bad signature ")
    assert lines[0].endswith("edited.jsonl line 3: bad_signature")
    # An event that does not verify proves nothing: its line is missing too.
    assert lines[1:] == ["missing stdin line 3", SUMMARY.format(22, 19, 2, 1, 0, 1)]
    assert code == 1


def test_an_edited_deadletter_entry_is_a_bad_signature(
        trail: Trail, capsys: pytest.CaptureFixture[str]) -> None:
    [entries] = trail.deadletter.glob("deadletter-*.jsonl")
    first, second = entries.read_bytes().splitlines()
    entries.write_bytes(first.replace(b'"origin":"source"', b'"origin":"stdout"') + b"\n"
                        + second + b"\n")
    code, lines = trail.audit(capsys)
    assert lines[0] == f"bad signature {entries} line 1: bad_signature"
    assert lines[-1] == SUMMARY.format(22, 20, 1, 1, 0, 1)
    assert code == 1


def test_a_forged_event_at_an_unknown_position_is_reported(
        trail: Trail, capsys: pytest.CaptureFixture[str]) -> None:
    # Signed with the right key (an insider), claiming a line the input does not have.
    forged = {**json.loads(trail.output_lines()[0]), "id": "forged", "agtline": "99"}
    events = [*trail.output_lines(), orjson.dumps(HmacSigner(trail.key).sign(forged))]
    code, lines = trail.audit(capsys, trail.write_output("forged.jsonl", events))
    assert lines == ["unknown position stdin line 99: no such input record",
                     SUMMARY.format(22, 20, 2, 0, 0, 0)]
    assert code == 1


def test_duplicates_are_counted_byte_identical_or_not(
        trail: Trail, capsys: pytest.CaptureFixture[str]) -> None:
    events = trail.output_lines()
    other = HmacSigner(trail.key).sign({**json.loads(events[1]), "id": "re-keyed"})
    doubled = [*events, events[0], orjson.dumps(other)]
    code, lines = trail.audit(capsys, trail.write_output("doubled.jsonl", doubled))
    assert lines == ["duplicate stdin line 1: 2 copies, byte-identical",
                     "duplicate stdin line 2: 2 copies, not byte-identical",
                     SUMMARY.format(22, 20, 2, 0, 2, 0)]
    assert code == 0


def test_the_json_report_comes_before_the_summary(
        trail: Trail, capsys: pytest.CaptureFixture[str]) -> None:
    events = trail.output_lines()
    code, lines = trail.audit(capsys, trail.write_output("cut.jsonl", events[1:]), "--json")
    report = json.loads(lines[0])
    assert (report["missing"], report["clean"]) == (1, False)
    assert report["missing_positions"] == [{"kind": "line", "name": "stdin", "first": 1,
                                            "last": 1}]
    assert lines[1] == SUMMARY.format(22, 19, 2, 1, 0, 0)
    assert code == 1


def test_a_wrong_key_makes_every_signature_bad(
        trail: Trail, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.key"
    other.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
    code = govpipe(["audit", "--key", str(other), "--input", str(trail.input),
                    "--input-name", "stdin", "--output", str(trail.output)])
    assert capsys.readouterr().out.splitlines()[-1] == SUMMARY.format(22, 0, 0, 22, 0, 20)
    assert code == 1


def test_files_and_topics_do_not_mix(trail: Trail, capsys: pytest.CaptureFixture[str]) -> None:
    code = govpipe(["audit", "--key", str(trail.key_file), "--input", str(trail.input),
                    "--output", str(trail.output), "--output-topic", "out"])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert "leave out the --*-topic options" in err


def test_worker_processes_report_the_same(trail: Trail,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    events = trail.output_lines()
    events[2] = events[2].replace(b'"decision":"allow"', b'"decision":"deny"')
    edited = trail.write_output("edited.jsonl", [*events, events[0]])
    alone = trail.audit(capsys, edited)
    assert trail.audit(capsys, edited, "--jobs", "2") == alone
    assert alone[1][-1] == SUMMARY.format(22, 19, 2, 1, 1, 1)
