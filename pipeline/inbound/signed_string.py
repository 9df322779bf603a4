"""What an inbound producer signature covers: the one construction of the signed string,
used by the daemon's verifier and by every govpipe publisher (`pipeline.publisher`,
`govpipe publish`), so signer and verifier cannot drift apart.

Version 1 (no `agt-sigver` header), the Agent OS form, covers the value only:
    "{nonce}|{timestamp_ms}|{sender}|" + value
Version 2 (`agt-sigver: 2`) also covers the headers a CloudEvent in Kafka binary content
mode is made of (every `ce_*` header and `content-type`), so none of them can be changed
or added on the way:
    "|v2|{nonce}|{timestamp_ms}|{sender}|{n}|"
    + for each covered header, sorted by name then value:
        "{len(name)}|{name}|{len(value)}|" + value   (lengths in bytes)
    + value
Lengths make the header block split one way only (a header name may hold "|"); the
leading "|" keeps a version 2 string from ever reading as a version 1 string (a version 1
nonce is never empty).
A record with covered headers and a version 1 signature is refused.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Sequence

NONCE_HEADER = "agt-nonce"
TIMESTAMP_HEADER = "agt-timestamp"
SENDER_HEADER = "agt-sender"
SIGNATURE_HEADER = "agt-signature"
VERSION_HEADER = "agt-sigver"
HEADERS_VERSION = 2

Headers = Sequence[tuple[str, bytes]]


def is_covered_header(name: str) -> bool:
    """The headers binary content mode reads (see `pipeline.cloudevents.binding`)."""
    lowered = name.lower()
    return lowered.startswith("ce_") or lowered == "content-type"


def covered_headers(headers: Headers) -> list[tuple[str, bytes]]:
    """The headers a version 2 signature covers, in signing order."""
    return sorted((name, value) for name, value in headers if is_covered_header(name))


def signed_bytes(nonce: str, timestamp_ms: int, sender: str, value: bytes,
                 covered: Headers | None = None) -> bytes:
    """The signed string: version 1 when `covered` is None, else version 2 over `covered`
    (as `covered_headers` orders them)."""
    if covered is None:
        return f"{nonce}|{timestamp_ms}|{sender}|".encode() + value
    parts = [f"|v{HEADERS_VERSION}|{nonce}|{timestamp_ms}|{sender}|{len(covered)}|".encode()]
    for name, header_value in covered:
        encoded = name.encode()
        parts.append(f"{len(encoded)}|".encode() + encoded
                     + f"|{len(header_value)}|".encode() + header_value)
    parts.append(value)
    return b"".join(parts)


def sign_record(key: bytes, nonce: str, timestamp_ms: int, sender: str, value: bytes,
                covered: Headers | None = None) -> str:
    """The `agt-signature` header value: standard padded base64 of the HMAC-SHA256."""
    signed = signed_bytes(nonce, timestamp_ms, sender, value, covered)
    return base64.b64encode(hmac.digest(key, signed, "sha256")).decode("ascii")


def signature_headers(key: bytes, nonce: str, timestamp_ms: int, sender: str, value: bytes,
                      headers: Headers = ()) -> list[tuple[str, bytes]]:
    """The `agt-*` headers that sign a record with `value` and its other `headers`:
    version 2 when any of them is a CloudEvents binary-mode header, else version 1."""
    covered = covered_headers(headers) or None
    signature = sign_record(key, nonce, timestamp_ms, sender, value, covered)
    signed = [(NONCE_HEADER, nonce.encode()), (TIMESTAMP_HEADER, str(timestamp_ms).encode()),
              (SENDER_HEADER, sender.encode()), (SIGNATURE_HEADER, signature.encode())]
    if covered is not None:
        signed.append((VERSION_HEADER, str(HEADERS_VERSION).encode()))
    return signed
