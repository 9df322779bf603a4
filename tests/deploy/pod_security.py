"""The Pod Security Standards "restricted" profile (with the baseline it includes), as
rules over a pod spec: what `pod-security.kubernetes.io/enforce: restricted` would refuse.
From https://kubernetes.io/docs/concepts/security/pod-security-standards/ (v1.30+)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# Volume types the restricted profile admits.
ALLOWED_VOLUMES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                             "persistentVolumeClaim", "projected", "secret"})
ALLOWED_SECCOMP = frozenset({"RuntimeDefault", "Localhost"})
ADDABLE_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Every rule of the profile that ``pod`` (a PodSpec) breaks, one line each."""
    return [*_pod_level(pod), *(problem for container in _containers(pod)
                                for problem in _container_level(pod, container))]


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod.get("containers", []),
            *pod.get("ephemeralContainers", [])]


def _pod_level(pod: dict[str, Any]) -> Iterator[str]:
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(host):
            yield f"{host}: true"
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            yield f"volume {volume['name']}: type {sorted(kinds)} not allowed"
    context = pod.get("securityContext", {})
    if context.get("runAsUser") == 0:
        yield "pod runAsUser: 0"


def _container_level(pod: dict[str, Any], container: dict[str, Any]) -> Iterator[str]:
    name = container["name"]
    pod_context = pod.get("securityContext", {})
    context = container.get("securityContext", {})
    if context.get("privileged"):
        yield f"{name}: privileged"
    if context.get("allowPrivilegeEscalation") is not False:
        yield f"{name}: allowPrivilegeEscalation must be false"
    if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
        yield f"{name}: runAsNonRoot must be true (pod or container)"
    if context.get("runAsUser") == 0:
        yield f"{name}: runAsUser: 0"
    seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {}))
    if seccomp.get("type") not in ALLOWED_SECCOMP:
        yield f"{name}: seccompProfile.type must be RuntimeDefault or Localhost"
    capabilities = context.get("capabilities", {})
    if "ALL" not in capabilities.get("drop", []):
        yield f"{name}: capabilities must drop ALL"
    if not set(capabilities.get("add", [])) <= ADDABLE_CAPABILITIES:
        yield f"{name}: capabilities may add only NET_BIND_SERVICE"
    if any("hostPort" in port for port in container.get("ports", [])):
        yield f"{name}: hostPort"
