"""Agent OS code as published, the compatibility target govpipe is tested against."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from pipeline.publisher.results import agent_os_import


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


with agent_os_import():
    from agent_os.integrations.base import BaseIntegration, GovernancePolicy


class GovernedKernel(BaseIntegration):
    """A real Agent OS kernel (BaseIntegration's checks: blocked patterns, a tool-call budget,
    checkpoints, drift) that wraps no framework."""

    def __init__(self, budget: int = 1_000_000) -> None:
        super().__init__(policy=GovernancePolicy(name="test", max_tool_calls=budget,
                                                 blocked_patterns=["rm -rf"],
                                                 checkpoint_frequency=5))
        self.context = self.create_context("test-agent")

    def wrap(self, agent: Any) -> Any:
        return agent

    def unwrap(self, governed_agent: Any) -> Any:
        return governed_agent

    def call_tool(self, number: int) -> None:
        """One governed tool call: every 7th tries a blocked command."""
        command = "rm -rf /tmp/cache" if number % 7 == 3 else f"search docs {number}"
        allowed, _ = self.pre_execute(self.context, {"input": command, "call": number})
        if allowed:
            self.post_execute(self.context, f"result {number}")
