"""OTLP/HTTP (protobuf) transport: the SDK's HTTP log exporter, sent pre-encoded requests.

A response hook on the exporter's ``requests`` session records the status. A 4xx other
than 408/429 means the collector refuses the request (bad path, auth, too large):
non-retriable. No response, timeouts and other statuses are retriable.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as HttpLogExporter,
)

from sinks.base import SinkError
from sinks.otlp.options import OtlpOptions
from sinks.otlp.transport import export_error

__all__ = ["HttpTransport", "logs_url"]

_RETRIABLE_4XX = frozenset({408, 429})
_LOGS_PATH = "/v1/logs"


def logs_url(endpoint: str) -> str:
    """The OTLP/HTTP logs URL: the endpoint with ``/v1/logs`` appended unless already there."""
    parts = urlsplit(endpoint)
    path = parts.path.rstrip("/")
    if not path.endswith(_LOGS_PATH):
        path += _LOGS_PATH
    return urlunsplit(parts._replace(path=path))


class _Session(requests.Session):
    """A session whose explicit CA bundle beats REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE.

    requests lets those variables override ``session.verify`` (requests issue 3829), which
    would silently ignore ``ca_file`` on any machine that sets them. Proxies and the rest of
    the environment still apply.
    """

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> Any:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if isinstance(self.verify, str):
            settings["verify"] = self.verify
        return settings


class _SerializedHttpExporter(HttpLogExporter):
    """The SDK HTTP log exporter, given request bytes instead of SDK log records.

    ``export`` itself would encode SDK records; this sends through the exporter's own
    (private) HTTP client, which does the retries, compression and headers. The contract
    tests over HTTP fail if a later SDK renames it.
    """

    def export_serialized(self, payload: bytes) -> bool:
        if self._shutdown:
            return False
        return bool(self._client.export(payload).success)


class HttpTransport:
    def __init__(self, options: OtlpOptions) -> None:
        self.status: int | None = None
        session = _Session()
        session.hooks["response"].append(self._record)
        client_cert = str(options.client_cert_file) if options.client_cert_file else None
        client_key = str(options.client_key_file) if options.client_key_file else None
        self._exporter = _SerializedHttpExporter(
            endpoint=logs_url(options.endpoint),
            certificate_file=str(options.ca_file) if options.ca_file else None,
            client_certificate_file=client_cert,
            client_key_file=client_key,
            headers=dict(options.headers),
            timeout=options.timeout_s,
            compression=(HttpCompression.Gzip if options.compression == "gzip"
                         else HttpCompression.NoCompression),
            session=session,
            # No client-side size cap: the collector's answer (413) says what it accepts.
            max_request_size=0,
        )

    def _record(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        self.status = response.status_code

    def export(self, payload: bytes, count: int) -> bool:
        return self._exporter.export_serialized(payload)

    def shutdown(self) -> None:
        self._exporter.shutdown()  # type: ignore[no-untyped-call]

    def reset(self) -> None:
        self.status = None

    def failure(self) -> SinkError:
        status = self.status
        if status is None:
            return export_error("OTLP/HTTP", "no response (refused, timed out…)", refused=False)
        refused = 400 <= status < 500 and status not in _RETRIABLE_4XX
        return export_error("OTLP/HTTP", f"HTTP {status}", refused=refused)
