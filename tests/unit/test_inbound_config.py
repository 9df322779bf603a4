"""Inbound signature settings: a bad key file stops the processor, named in the message."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from pipeline.app import build_processor
from pipeline.ops.metrics import Metrics
from pipeline.settings import load_settings
from pipeline.signing.signers import HmacSigner, SigningKeyError


def test_a_bad_inbound_key_file_stops_the_processor_naming_the_file(tmp_path: Path) -> None:
    key_file = tmp_path / "inbound.key"
    key_file.write_text(base64.b64encode(b"short-secret").decode())
    settings = load_settings(None, {"GOVPIPE_SOURCE__REQUIRE_SIGNATURE": "true",
                                    "GOVPIPE_SOURCE__KIND": "kafka",
                                    "GOVPIPE_SOURCE__INBOUND_KEY_FILE": str(key_file)})
    with pytest.raises(SigningKeyError, match="at least 32") as info:
        build_processor(settings, HmacSigner(bytes(32)), Metrics(CollectorRegistry()))
    assert "short-secret" not in str(info.value)
