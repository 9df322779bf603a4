"""The CloudEvent mapping (`to_cloudevent`), checked against Agent OS's own rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.cloudevents.mapping import InvalidEvent, cloudevent_type, to_cloudevent
from pipeline.model import KIND_TYPES
from pipeline.signing.keys import Ed25519Key, KeySet
from pipeline.signing.signers import Ed25519Signer, HmacSigner, ephemeral_signer
from pipeline.signing.verification import Verifier

EXAMPLES = Path(__file__).parents[2] / "examples" / "events.jsonl"


def governance_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema_version": "1", "event_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "occurred_at": "2026-11-25T14:02:10.039522+00:00", "kind": "policy_violation",
        "severity": "high", "agent_id": "billing-bot", "session_id": "s-1",
        "action": "send_email", "resource": "smtp://mail", "decision": "deny",
        "reason": "external recipient", "policy_name": "egress", "latency_ms": 1.5,
        "trace_id": "1c5f39e191095278da7bb8a0aece3e47", "span_id": "de6e169f233c5ae6",
        "attributes": {"recipient": "x@example.com"},
    }
    event.update(overrides)
    return event


def test_maps_every_agent_os_field() -> None:
    ce = to_cloudevent(governance_event())
    assert ce == {
        "specversion": "1.0", "id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "type": "ai.agentos.policy.violation", "source": "/agent-os/agent/billing-bot",
        "time": "2026-11-25T14:02:10.039522+00:00", "datacontenttype": "application/json",
        "data": {"recipient": "x@example.com", "action": "send_email", "decision": "deny",
                 "reason": "external recipient", "severity": "high", "latency_ms": 1.5,
                 "resource": "smtp://mail", "policy_name": "egress", "agent_id": "billing-bot"},
        "schemaversion": "1", "sessionid": "s-1",
        "traceid": "1c5f39e191095278da7bb8a0aece3e47", "spanid": "de6e169f233c5ae6",
        "partitionkey": "billing-bot",
    }


@pytest.mark.parametrize(("kind", "suffix"), sorted(KIND_TYPES.items()))
def test_every_kind_has_its_agent_os_type(kind: str, suffix: str) -> None:
    assert to_cloudevent(governance_event(kind=kind))["type"] == "ai.agentos." + suffix


def test_unknown_kind_maps_under_governance() -> None:
    assert cloudevent_type("quota_exceeded") == "ai.agentos.governance.quota_exceeded"
    assert len(KIND_TYPES) == 12


def test_attributes_cannot_shadow_authoritative_fields() -> None:
    forged = {"decision": "allow", "agent_id": "root", "severity": "info", "action": "noop"}
    data = to_cloudevent(governance_event(attributes=forged))["data"]
    assert (data["decision"], data["agent_id"], data["severity"], data["action"]) == (
        "deny", "billing-bot", "high", "send_email")


def test_source_precedence_and_percent_encoding() -> None:
    event = governance_event(agent_id="team a/agent:1")
    assert to_cloudevent(event)["source"] == "/agent-os/agent/team%20a%2Fagent%3A1"
    assert to_cloudevent(governance_event(agent_id="翻訳"))["source"] == (
        "/agent-os/agent/%E7%BF%BB%E8%A8%B3")
    assert to_cloudevent(governance_event(agent_did="did:mesh:1"))["source"] == "did:mesh:1"
    assert to_cloudevent(governance_event(agent_did="did:mesh:1"), "/fleet")["source"] == "/fleet"


def test_missing_fields_take_agent_os_defaults() -> None:
    minimal = {"event_id": "e1", "occurred_at": "2026-11-25T14:04:27+00:00",
               "kind": "policy_check", "agent_id": "a"}
    ce = to_cloudevent(minimal)
    assert ce["schemaversion"] == "1"
    assert ce["data"] == {"action": "", "decision": "", "reason": "", "severity": "info",
                          "latency_ms": 0.0, "agent_id": "a"}
    assert "sessionid" not in ce
    assert "traceid" not in ce


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"event_id": None}, "missing_event_id"),
    ({"event_id": ""}, "missing_event_id"),
    ({"event_id": 7}, "missing_event_id"),
    ({"kind": 3}, "bad_field"),
    ({"severity": ["high"]}, "bad_field"),
    ({"latency_ms": "fast"}, "bad_field"),
    ({"latency_ms": True}, "bad_field"),
    ({"attributes": [1, 2]}, "bad_field"),
    ({"occurred_at": "yesterday"}, "bad_timestamp"),
    ({"occurred_at": "2026-11-25T14:02:10"}, "bad_timestamp"),
    ({"occurred_at": "2026-11-25"}, "bad_timestamp"),
    ({"occurred_at": 1764079330}, "bad_timestamp"),
    ({"agent_id": "", "agent_did": None}, "no_source"),
])
def test_invalid_governance_events_are_rejected_with_reason(
    overrides: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        to_cloudevent(governance_event(**overrides))
    assert caught.value.reason == reason


def test_cloudevent_input_is_kept_and_old_signature_dropped() -> None:
    incoming = {"specversion": "1.0", "id": "x", "source": "/s", "type": "t",
                "data": {"a": 1}, "agtsignature": "old", "agtsignaturealg": "HMAC-SHA256",
                "agtkeyid": "k0", "custom": "ext"}
    assert to_cloudevent(incoming) == {"specversion": "1.0", "id": "x", "source": "/s",
                                       "type": "t", "data": {"a": 1}, "custom": "ext"}


@pytest.mark.parametrize("broken", [
    {"specversion": "0.3", "id": "x", "source": "/s", "type": "t"},
    {"specversion": "1.0", "source": "/s", "type": "t"},
    {"specversion": "1.0", "id": "x", "type": "t"},
    {"specversion": "1.0", "id": "x", "source": "/s", "type": "t", "time": "noon"},
])
def test_invalid_cloudevents_are_rejected(broken: dict[str, Any]) -> None:
    with pytest.raises(InvalidEvent):
        to_cloudevent(broken)


def test_unknown_shape_is_rejected() -> None:
    with pytest.raises(InvalidEvent) as caught:
        to_cloudevent({"hello": "world"})
    assert caught.value.reason == "unknown_shape"


def test_mapping_is_deterministic_and_covers_the_examples() -> None:
    lines = EXAMPLES.read_text(encoding="utf-8").splitlines()
    kinds = set()
    for line in lines:
        event = json.loads(line)
        kinds.add(event["kind"])
        assert to_cloudevent(event) == to_cloudevent(json.loads(line))
        assert list(to_cloudevent(event)) == list(to_cloudevent(json.loads(line)))
    assert kinds == set(KIND_TYPES)


# --- the mapping under a signature (issue 3) ----------------------------------------------

AUTHORITATIVE = ("action", "decision", "reason", "severity", "latency_ms", "resource",
                 "policy_name", "agent_id", "agent_did")


@pytest.mark.parametrize("alg", ["HMAC-SHA256", "Ed25519"])
def test_no_attribute_can_shadow_any_authoritative_field_of_a_signed_event(alg: str) -> None:
    forged = {name: "forged" for name in AUTHORITATIVE}
    event = governance_event(agent_did="did:mesh:real", attributes={**forged, "note": "kept"})
    signer = ephemeral_signer(alg)
    data = signer.sign(to_cloudevent(event))["data"]
    assert data["note"] == "kept"
    assert {name: data[name] for name in AUTHORITATIVE} == {
        name: event[name] for name in AUTHORITATIVE}


def test_unset_authoritative_fields_leave_attribute_values_in_place() -> None:
    # Agent OS only writes resource/policy_name/agent_did when set, so an attribute of the
    # same name survives; it is still signed and cannot be told apart from a real field
    # without the input, exactly as in Agent OS.
    event = governance_event(resource=None, policy_name="", attributes={"resource": "attr"})
    assert to_cloudevent(event)["data"]["resource"] == "attr"
    assert "policy_name" not in to_cloudevent(event)["data"]


@pytest.mark.parametrize(("agent_id", "encoded"), [
    ("plain-id_1.2~x", "plain-id_1.2~x"),
    ("a b", "a%20b"), ("a/b", "a%2Fb"), ("50%", "50%25"), ("a+b", "a%2Bb"),
    ("q?x=1#f", "q%3Fx%3D1%23f"), ("é", "%C3%A9"), ("\U0001f600", "%F0%9F%98%80"),
    ("did:x", "did%3Ax"),
])
def test_source_percent_encodes_agent_id_with_no_safe_characters(
    agent_id: str, encoded: str
) -> None:
    ce = to_cloudevent(governance_event(agent_id=agent_id))
    assert ce["source"] == "/agent-os/agent/" + encoded
    assert ce["partitionkey"] == agent_id
    assert ce["data"]["agent_id"] == agent_id


@pytest.mark.parametrize("alg", ["HMAC-SHA256", "Ed25519"])
def test_unknown_kind_maps_signs_and_verifies(alg: str) -> None:
    signer = ephemeral_signer(alg)
    signed = signer.sign(to_cloudevent(governance_event(kind="quota_exceeded")))
    assert signed["type"] == "ai.agentos.governance.quota_exceeded"
    if isinstance(signer, Ed25519Signer):
        assert Verifier(KeySet([Ed25519Key(signer.public_key)])).verify(signed)
    else:
        assert isinstance(signer, HmacSigner)
        assert signer.verify(signed)
