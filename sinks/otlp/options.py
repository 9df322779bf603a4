"""Where and how the OTLP sink exports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = ["OtlpOptions"]


@dataclass(frozen=True)
class OtlpOptions:
    """Where and how to export; built by the daemon wiring from ``[sinks.otlp]``."""

    endpoint: str = "http://127.0.0.1:4317"
    protocol: Literal["grpc", "http/protobuf"] = "grpc"
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # may be secrets
    timeout_s: float = 10.0
    compression: Literal["none", "gzip"] = "none"
    insecure: bool = True
    ca_file: Path | None = None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    # The resource's service.version and service.instance.id (and the scope's version).
    service_version: str = ""
    service_instance_id: str = ""
