"""govpipe output read by clients nobody here wrote: the CloudEvents Python SDK
(`cloudevents.core`), the CloudEvents Go SDK (sdk-go/v2, in the `cecheck` program built from
the Go module proxy), Python `rfc8785` and Go `gowebpki/jcs`, over a corpus of edge cases,
through stdout lines and structured and binary Kafka records on a real broker. Every event
is valid for both SDKs and verifies, or was refused with its reason."""

from __future__ import annotations

import base64
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
import rfc8785
from aiokafka.structs import ConsumerRecord
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary, from_structured
from cloudevents.core.formats.json import JSONFormat
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pipeline.model import Position, Record, Rejection, SignedEvent
from pipeline.processor import EventProcessor
from pipeline.signing.signers import Ed25519Signer, HmacSigner, Signer
from sinks.kafka import KafkaSink
from tests.support.agent_os import agent_os_verify
from tests.support.events import TEST_KEY, example_lines
from tests.support.infra.go_interop import ensure_cecheck
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import consume_all

pytestmark = pytest.mark.integration

Alg = Literal["hmac", "ed25519"]
Mode = Literal["stdout", "structured", "binary"]
ED_KEY = Ed25519PrivateKey.generate()
PUBLIC_HEX = ED_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
CE: dict[str, Any] = {"specversion": "1.0", "id": "ce-1", "source": "/agents/a",
                      "type": "com.example.audit", "time": "2026-11-25T14:00:00.5+01:00"}


@dataclass(frozen=True)
class Case:
    name: str
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    refused: str | None = None          # the reason in every mode
    ed25519_refused: str | None = None  # the reason under Ed25519 only
    binary_refused: str | None = None   # the reason when Kafka binary mode is written

    def reason(self, alg: Alg, mode: Mode) -> str | None:
        if self.refused:
            return self.refused
        if alg == "ed25519" and self.ed25519_refused:
            return self.ed25519_refused
        return self.binary_refused if mode == "binary" else None


def _ce(name: str, **members: Any) -> Case:
    return Case(name, json.dumps({**CE, "id": name, **members}, ensure_ascii=False).encode())


def _beyond_i_json(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_beyond_i_json(item) for item in value.values())
    if isinstance(value, list):
        return any(_beyond_i_json(item) for item in value)
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**53


def corpus() -> list[Case]:
    tiny = _ce("tiny", data={"t": 1.5})
    cases = [
        _ce("subject-non-ascii", subject="café ✓ 日本", datacontenttype="application/json",
            data={"名前": "😀", "e\u0301": 1, "\u20ac": ["ü", "\U0001f600"], "z": -7}),
        _ce("typed-extensions", count=7, flag=True, negative=-(2**31), label="x",
            data={"a": 1}),
        _ce("text-data", datacontenttype="text/plain", data="hello world"),
        _ce("text-non-ascii", datacontenttype="text/plain; charset=utf-8", data="grüße ✓ 😀"),
        _ce("xml-text", datacontenttype="application/xml", data="<a>ü</a>"),
        _ce("text-empty", datacontenttype="text/plain", data=""),
        _ce("binary-data", datacontenttype="application/octet-stream",
            data_base64=base64.b64encode(b"\x00\xff\xfe\x80").decode()),
        _ce("json-string-data", datacontenttype="application/json", data="a JSON string"),
        _ce("no-data"),
        _ce("no-data-json-type", datacontenttype="application/json"),
        _ce("schema-and-subject", dataschema="https://schemas.example/audit/v1",
            subject="policy/7", data={"ok": True}),
        _ce("bad-name-upper", Bad_Name="x", data={}),
        _ce("bad-name-long", averyveryverylongextensionname="x", data={}),
        _ce("big-integer", data={"state_bytes": 9007199254740993}),
        _ce("safe-integers", data={"max": 2**53 - 1, "min": -(2**53) + 1}),
        _ce("small-and-big-doubles", data={"tiny": 5e-324, "small": 1e-7, "big": 1e21,
                                           "max": 1.7976931348623157e308, "neg": -0.0}),
        Case("tiny-underflow", tiny.value.replace(b"1.5", b"1e-400"),
             refused="number_out_of_range"),
        Case("binary-input-text", b"plain text in",
             (("ce_specversion", b"1.0"), ("ce_id", b"bin-text"), ("ce_source", b"/s"),
              ("ce_type", b"com.example.t"), ("content-type", b"text/plain"))),
        Case("binary-input-bad-name", b"{}",
             (("ce_specversion", b"1.0"), ("ce_id", b"bin-bad"), ("ce_source", b"/s"),
              ("ce_type", b"com.example.t"), ("ce_Bad_Name", b"x")),
             refused="invalid_cloudevent"),
    ]
    cases = [_with_expectation(case) for case in cases]
    for n, line in enumerate(example_lines()):
        big = _beyond_i_json(json.loads(line))
        cases.append(Case(f"example-{n}", line,
                          ed25519_refused="number_out_of_range" if big else None))
    return cases


def _with_expectation(case: Case) -> Case:
    refused = {"bad-name-upper": "invalid_cloudevent", "bad-name-long": "invalid_cloudevent"}
    if case.name in refused:
        return Case(case.name, case.value, case.headers, refused=refused[case.name])
    if case.name == "big-integer":
        return Case(case.name, case.value, ed25519_refused="number_out_of_range")
    if case.name == "typed-extensions":
        return Case(case.name, case.value, binary_refused="typed_extension")
    if case.name in ("xml-text", "text-empty"):
        # A binary-mode reader gets bytes for application/xml, no data for an empty value.
        return Case(case.name, case.value, binary_refused="ambiguous_data")
    return case


def _signer(alg: Alg) -> Signer:
    return HmacSigner(TEST_KEY) if alg == "hmac" else Ed25519Signer(ED_KEY)


def process_corpus(alg: Alg, mode: Mode) -> list[SignedEvent]:
    """Every case through the real processor; refusals checked against their reasons."""
    processor = EventProcessor(_signer(alg), 1 << 20, binary_output=mode == "binary")
    signed = []
    for n, case in enumerate(corpus()):
        result = processor.process(Record(case.value, Position("corpus", 0, n),
                                          headers=case.headers))
        expected = case.reason(alg, mode)
        got = result.reason if isinstance(result, Rejection) else None
        assert got == expected, f"{case.name}: {got} ({getattr(result, 'detail', '')})"
        if isinstance(result, SignedEvent):
            signed.append(result)
    return signed


def verify(form: dict[str, Any], alg: Alg) -> None:
    """Check the signature with code that is not govpipe's: Agent OS's HMAC check, or
    Ed25519 over Python rfc8785's canonical form."""
    if alg == "hmac":
        assert agent_os_verify(TEST_KEY, form), form["id"]
        return
    envelope = {k: v for k, v in form.items() if k != "agtsignature"}
    ED_KEY.public_key().verify(base64.b64decode(form["agtsignature"]),
                               rfc8785.dumps(envelope))


def json_form(headers: dict[str, bytes], value: bytes) -> dict[str, Any]:
    """The structured form of a binary-mode record, attribute strings as written."""
    form: dict[str, Any] = {("datacontenttype" if name == "content-type" else name[3:]):
                            raw.decode() for name, raw in headers.items()
                            if name.startswith("ce_") or name == "content-type"}
    if not value:
        return form
    media = form.get("datacontenttype", "application/json").split(";")[0].strip().lower()
    if media in ("application/json", "text/json") or media.endswith("+json"):
        form["data"] = json.loads(value)
    elif media.startswith("text/"):
        form["data"] = value.decode()
    else:
        form["data_base64"] = base64.b64encode(value).decode()
    return form


def check_with_python_sdk(headers: dict[str, bytes], key: bytes | None, value: bytes,
                          sent: dict[str, Any]) -> None:
    """The Python SDK accepts the record and reads the attributes and data that were sent."""
    message = KafkaMessage(headers=headers, key=key, value=value)
    binary = headers.get("content-type", b"").startswith(b"application/cloudevents") is False
    event = (from_binary(message, JSONFormat()) if binary
             else from_structured(message, JSONFormat()))
    attributes = dict(event.get_attributes())
    time = attributes.pop("time", None)
    if "time" in sent:
        assert time is not None
        assert time.isoformat() == _as_python_iso(sent["time"])
    expected = {k: v for k, v in sent.items() if k not in ("time", "data", "data_base64")}
    assert attributes == expected
    data = event.get_data()
    if "data_base64" in sent:
        raw = base64.b64decode(sent["data_base64"])
        assert data in (raw, raw.decode("utf-8", "replace"))
    else:
        assert data == sent.get("data")


def _as_python_iso(text: str) -> str:
    from datetime import datetime
    return datetime.fromisoformat(text).isoformat()


def run_go_checker(requests: list[dict[str, Any]]) -> list[str]:
    binary = ensure_cecheck()
    lines = "".join(json.dumps(r) + "\n" for r in requests)
    done = subprocess.run([str(binary), PUBLIC_HEX], input=lines, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def _go_request(value: bytes, headers: dict[str, bytes] | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"value": base64.b64encode(value).decode()}
    if headers is not None:
        request["headers"] = [[n, base64.b64encode(v).decode()] for n, v in headers.items()]
    return request


@pytest.fixture(scope="module")
def cecheck() -> Path:
    return ensure_cecheck()


@pytest.mark.parametrize("alg", ["hmac", "ed25519"])
def test_stdout_lines_are_valid_for_both_sdks_and_verify_with_both_jcs(
        alg: Alg, cecheck: Path) -> None:
    events = process_corpus(alg, "stdout")
    for event in events:
        sent = json.loads(event.body)
        parsed = JSONFormat().read(None, event.body)  # validates as it builds
        assert parsed.get_id() == event.id
        verify(sent, alg)
    replies = run_go_checker([_go_request(e.body) for e in events])
    assert replies == ["ok"] * len(events), [
        (e.id, r) for e, r in zip(events, replies, strict=True) if r != "ok"]


@pytest.mark.parametrize("mode", ["structured", "binary"])
@pytest.mark.parametrize("alg", ["hmac", "ed25519"])
async def test_kafka_records_are_valid_for_both_sdks_and_verify_with_both_jcs(
        kafka_broker: KafkaBroker, kafka_topic: str, alg: Alg, mode: Mode,
        cecheck: Path) -> None:
    events = process_corpus(alg, mode)
    sink = KafkaSink(kafka_broker.bootstrap, kafka_topic, content_mode=mode, timeout_s=10)
    try:
        await sink.send(events)
    finally:
        await sink.aclose()
    records = await consume_all(kafka_broker.bootstrap, kafka_topic, len(events))
    assert len(records) == len(events)
    requests = []
    for record, event in zip(records, events, strict=True):
        requests.append(_check_record(record, event, alg, mode))
    replies = run_go_checker(requests)
    assert replies == ["ok"] * len(events), [
        (e.id, r) for e, r in zip(events, replies, strict=True) if r != "ok"]


def _check_record(record: ConsumerRecord, event: SignedEvent, alg: Alg,
                  mode: Mode) -> dict[str, Any]:
    headers = dict(record.headers)
    assert len(headers) == len(record.headers)
    assert record.value is not None, f"{event.id}: a tombstone"
    sent = json.loads(event.body)
    form = json.loads(record.value) if mode == "structured" else json_form(headers,
                                                                           record.value)
    assert form == sent
    verify(form, alg)
    check_with_python_sdk(headers, record.key, record.value, sent)
    return _go_request(record.value, headers)


def test_the_go_checker_refuses_what_govpipe_refuses(cecheck: Path) -> None:
    # So an "ok" from it means something: unsigned inputs govpipe rejects, as written.
    bad = [{**CE, "Bad_Name": "x"}, {**CE, "time": "2026-11-25t14:00:00z"}]
    replies = run_go_checker([_go_request(json.dumps(event).encode()) for event in bad])
    assert all(reply.startswith("error: sdk-go refused") for reply in replies), replies
