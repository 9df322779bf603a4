"""deploy/kubernetes.yaml against the Kubernetes API types (strict decoding by a Go program
built from k8s.io/api, see tests/support/infra/manifests.py), the Pod Security "restricted"
profile, and govpipe itself started with the environment a pod of it gets, the variables
Kubernetes adds for a Service named govpipe included.

Slow the first time only: building the checker downloads and compiles k8s.io/api."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.pod_security import restricted_violations
from tests.support.agent_os import agent_os_verify
from tests.support.events import EXAMPLES
from tests.support.infra.certs import make_pki
from tests.support.infra.image import in_own_network
from tests.support.infra.manifests import check_manifests
from tests.support.processes import GOVPIPE

ROOT = Path(__file__).parents[2]
MANIFEST = ROOT / "deploy" / "kubernetes.yaml"
SECRETS_MOUNT = "/run/secrets/govpipe/"
CLUSTER_IP = "10.96.41.7"
pytestmark = pytest.mark.timeout(1800)  # the checker's first build, on a busy machine


def documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(MANIFEST.read_text(encoding="utf-8")) if doc]


def document(kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in documents() if doc["kind"] == kind]
    return found


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = document("Deployment")["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    (found,) = pod_spec()["containers"]
    return dict(found)


def test_every_document_decodes_strictly_into_the_api_types() -> None:
    checked = check_manifests(MANIFEST)
    assert checked.ok, checked.error
    assert checked.objects == [f"{doc['kind']}/{doc['metadata']['name']}"
                               for doc in documents()]


@pytest.mark.parametrize(("mutation", "complaint"), [
    (("  enableServiceLinks:", "  enableServiceLink:"), 'unknown field "enableServiceLink"'),
    (("memory: 512Mi", "memory: 512MB"), "quantities must match"),
    (("kind: PodDisruptionBudget", "kind: PodDisruptionBudgets"), "unknown kind"),
    (("  maxUnavailable: 1", "  maxUnavailable: 1\n  maxUnavailable: 2"), "already set"),
])
def test_the_checker_refuses_what_the_api_server_would(
        mutation: tuple[str, str], complaint: str, tmp_path: Path) -> None:
    text = MANIFEST.read_text(encoding="utf-8")
    assert mutation[0] in text
    broken = tmp_path / "kubernetes.yaml"
    broken.write_text(text.replace(mutation[0], mutation[1], 1), encoding="utf-8")
    checked = check_manifests(broken)
    assert not checked.ok
    assert complaint in checked.error


def test_the_pod_meets_the_restricted_profile() -> None:
    assert restricted_violations(pod_spec()) == []


@pytest.mark.parametrize("breach", [
    lambda pod: pod["securityContext"].pop("seccompProfile")
    and pod["containers"][0]["securityContext"].pop("seccompProfile"),
    lambda pod: pod["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True),
    lambda pod: pod["containers"][0]["securityContext"]["capabilities"].update(drop=[]),
    lambda pod: pod["containers"][0]["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
    lambda pod: pod["securityContext"].pop("runAsNonRoot")
    and pod["containers"][0]["securityContext"].pop("runAsNonRoot"),
    lambda pod: pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
    lambda pod: pod.update(hostNetwork=True),
])
def test_the_profile_rules_catch_a_breach(breach: Any) -> None:
    pod = copy.deepcopy(pod_spec())
    breach(pod)
    assert restricted_violations(pod)


def test_writable_paths_are_empty_dirs_on_a_read_only_root() -> None:
    assert container()["securityContext"]["readOnlyRootFilesystem"] is True
    empty_dirs = {volume["name"] for volume in pod_spec()["volumes"] if "emptyDir" in volume}
    writable = {mount["mountPath"] for mount in container()["volumeMounts"]
                if mount["name"] in empty_dirs}
    workdir = re.findall(r"^WORKDIR (\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert writable == {"/tmp", workdir[-1]}  # the runtime stage's working dir


def test_no_service_account_token_and_no_service_links() -> None:
    pod = pod_spec()
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    account = document("ServiceAccount")
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert account["automountServiceAccountToken"] is False


def test_disruption_budget_and_network_policy_cover_the_pods() -> None:
    deployment = document("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    budget = document("PodDisruptionBudget")["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget["maxUnavailable"] < deployment["spec"]["replicas"]
    policy = document("NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    (port,) = container()["ports"]
    assert rule["ports"] == [{"protocol": "TCP", "port": port["name"]}]
    assert rule["from"] == [{"namespaceSelector": {}, "podSelector": {
        "matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]


def service_links(service: dict[str, Any], cluster_ip: str) -> dict[str, str]:
    """The variables the kubelet sets in every pod of the namespace for ``service``."""
    prefix = service["metadata"]["name"].upper().replace("-", "_")
    ports = service["spec"]["ports"]
    first = ports[0]["port"]
    links = {f"{prefix}_SERVICE_HOST": cluster_ip, f"{prefix}_SERVICE_PORT": str(first),
             f"{prefix}_PORT": f"tcp://{cluster_ip}:{first}"}
    for port in ports:
        number, protocol = port["port"], port.get("protocol", "TCP")
        if "name" in port:
            links[f"{prefix}_SERVICE_PORT_{port['name'].upper()}"] = str(number)
        base = f"{prefix}_PORT_{number}_{protocol}"
        links.update({base: f"{protocol.lower()}://{cluster_ip}:{number}",
                      f"{base}_PROTO": protocol.lower(), f"{base}_PORT": str(number),
                      f"{base}_ADDR": cluster_ip})
    return links


def pod_environment() -> dict[str, str]:
    """The container's own variables plus the Service links, on top of a clean host env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVPIPE_")}
    env.update({variable["name"]: variable["value"] for variable in container()["env"]})
    env.update(service_links(document("Service"), CLUSTER_IP))
    return env


def mounted_config(tmp_path: Path) -> tuple[Path, bytes]:
    """The ConfigMap's config, its Secret paths pointing at files made here; and the key."""
    secrets = tmp_path / "secrets"
    (secrets / "kafka").mkdir(parents=True)
    (secrets / "signing").mkdir()
    subprocess.run([str(GOVPIPE), "keygen", "--alg", "hmac", "--out",
                    str(secrets / "signing" / "key")], check=True, capture_output=True)
    make_pki(secrets / "kafka")
    (secrets / "kafka" / "password").write_text("kafka-password\n")
    text = document("ConfigMap")["data"]["govpipe.toml"]
    assert text.count(SECRETS_MOUNT) == 3
    config = tmp_path / "govpipe.toml"
    config.write_text(text.replace(SECRETS_MOUNT, f"{secrets}/"), encoding="utf-8")
    key = base64.b64decode((secrets / "signing" / "key").read_text())
    return config, key


def assert_one_notice_naming_the_links(stderr: str) -> None:
    (notice,) = [line for line in stderr.splitlines() if "GOVPIPE_PORT_9464_TCP" in line]
    assert all(name in notice for name in service_links(document("Service"), CLUSTER_IP))
    assert CLUSTER_IP not in stderr


def test_check_config_accepts_the_pod_environment(tmp_path: Path) -> None:
    config, _ = mounted_config(tmp_path)
    done = subprocess.run([str(GOVPIPE), "check-config", "--config", str(config)],
                          env=pod_environment(), capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert_one_notice_naming_the_links(done.stderr)
    assert json.loads(done.stdout)["server"]["listen"] == "0.0.0.0:9464"


def test_run_starts_and_signs_with_the_pod_environment(tmp_path: Path) -> None:
    """The pod's config and environment, with only the input and output made local (stdin,
    stdout) and the server's fixed 0.0.0.0:9464 in a network namespace of its own."""
    config, key = mounted_config(tmp_path)
    env = {**pod_environment(), "GOVPIPE_SOURCE__KIND": "stdin",
           "GOVPIPE_SINKS__KAFKA__ENABLED": "false", "GOVPIPE_SINKS__OTLP__ENABLED": "false",
           "GOVPIPE_SINKS__STDOUT__ENABLED": "true", "GOVPIPE_DEADLETTER__KIND": "file"}
    done = subprocess.run(in_own_network([str(GOVPIPE), "run", "--config", str(config)]),
                          input=EXAMPLES.read_bytes(), env=env, cwd=tmp_path,
                          capture_output=True, timeout=120, check=False)
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    assert_one_notice_naming_the_links(stderr)
    signed = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(signed) == len(EXAMPLES.read_bytes().splitlines())
    assert all(event["agtkeyid"] == "audit-2026-11" for event in signed)
    assert all(agent_os_verify(key, event) for event in signed)
