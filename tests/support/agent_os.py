"""Agent OS code as published, the compatibility target govpipe is tested against."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any


def agent_os_verify(key: bytes, cloudevent: dict[str, Any]) -> bool:
    """Agent OS GovernanceEventSigner.verify, as published (the compatibility target)."""
    signature = cloudevent.get("agtsignature")
    if not isinstance(signature, str) or cloudevent.get("agtsignaturealg") != "HMAC-SHA256":
        return False
    payload = {k: v for k, v in cloudevent.items() if k != "agtsignature"}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           default=str)
    digest = hmac.new(key, canonical.encode("utf-8"), hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(digest).decode("ascii"), signature)
