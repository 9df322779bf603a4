"""deploy/ cannot run here (no Docker engine, no cluster), so it is checked against the code:
every GOVPIPE_* variable is a valid override landing on the intended key, the configs it
mounts validate, ports equal the server default, probe paths are served by OpsServer, and
the Dockerfile, Prometheus, Collector and Kafka wiring agree with each other."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client import CollectorRegistry

from pipeline.ops.health import HealthRegistry
from pipeline.ops.server import OpsServer
from pipeline.settings import NOT_OVERRIDES, ServerSettings, Settings, load_settings
from tests.ops.rules import ALERTS_YML, ROOT
from tests.support.infra.kafka import kafka_version

DEPLOY = ROOT / "deploy"
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
DEFAULT_PORT = ServerSettings().port


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return document


def service(name: str) -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"][name]
    return found


def k8s(kind: str) -> dict[str, Any]:
    documents = yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text(encoding="utf-8"))
    (found,) = [doc for doc in documents if doc["kind"] == kind]
    return dict(found)


def container() -> dict[str, Any]:
    (found,) = k8s("Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(found)


def k8s_env() -> dict[str, str]:
    return {e["name"]: e["value"] for e in container()["env"] if "value" in e}


def compose_mount(svc: str, target: str) -> Path:
    """The host path (resolved from deploy/) that service ``svc`` mounts at ``target``."""
    for volume in service(svc)["volumes"]:
        source, mounted = volume.split(":")[:2]
        if mounted == target:
            return (DEPLOY / source).resolve()
    raise AssertionError(f"{svc} mounts nothing at {target}")


def dockerfile_cmd() -> list[str]:
    match = re.search(r"^CMD (\[.*\])$", DOCKERFILE, re.MULTILINE)
    assert match, "Dockerfile has no exec-form CMD"
    cmd: list[str] = json.loads(match.group(1))
    return cmd


def image_config_path() -> str:
    cmd = dockerfile_cmd()
    return cmd[cmd.index("--config") + 1]


def k8s_config_file(tmp_path: Path) -> Path:
    path = tmp_path / "govpipe.toml"
    path.write_text(k8s("ConfigMap")["data"]["govpipe.toml"], encoding="utf-8")
    return path


def port_of(listen: str) -> int:
    return int(listen.rpartition(":")[2])


def setting_text(settings: Settings, variable: str) -> str:
    """The value the key named by GOVPIPE_A__B__C has, as an environment variable spells it."""
    value: Any = settings
    for part in variable.removeprefix("GOVPIPE_").lower().split("__"):
        value = getattr(value, part)
    return str(value).lower() if isinstance(value, bool) else str(value)


def assert_overrides_land(config: Path, env: dict[str, str]) -> Settings:
    overrides = {k: v for k, v in env.items() if k.startswith("GOVPIPE_")}
    settings = load_settings(config, overrides)  # ConfigError names a bad key or value
    for variable, value in overrides.items():
        if variable not in NOT_OVERRIDES:
            assert setting_text(settings, variable) == value, variable
    return settings


def test_compose_overrides_are_valid_and_land_on_their_keys() -> None:
    config = compose_mount("govpipe", image_config_path())
    assert config == ROOT / "config" / "govpipe.toml"
    env = {k: str(v) for k, v in service("govpipe")["environment"].items()}
    settings = assert_overrides_land(config, env)
    assert (settings.source.kind, settings.deadletter_kind) == ("kafka", "kafka")
    assert settings.sinks.kafka.enabled
    assert settings.sinks.otlp.enabled


def test_kubernetes_config_map_and_overrides_are_valid(tmp_path: Path) -> None:
    settings = assert_overrides_land(k8s_config_file(tmp_path), k8s_env())
    assert settings.source.kind == "kafka"
    assert port_of(settings.server.listen) == DEFAULT_PORT
    grace = k8s("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > settings.shutdown.timeout_s


def test_compose_signing_key_is_secret_material_not_config() -> None:
    assert "GOVPIPE_SIGNING_KEY" in NOT_OVERRIDES
    # Compose interpolation with `:?`: refuses to start without one, never holds a literal.
    assert re.fullmatch(r"\$\{GOVPIPE_SIGNING_KEY:\?.+\}",
                        service("govpipe")["environment"]["GOVPIPE_SIGNING_KEY"])


def test_kubernetes_secrets_are_files_the_config_reads_not_environment(tmp_path: Path) -> None:
    assert all("valueFrom" not in variable for variable in container()["env"])
    volumes = k8s("Deployment")["spec"]["template"]["spec"]["volumes"]
    secret_volumes = {volume["name"] for volume in volumes if "secret" in volume}
    secret_dirs = {Path(mount["mountPath"]) for mount in container()["volumeMounts"]
                   if mount["name"] in secret_volumes}
    settings = load_settings(k8s_config_file(tmp_path), {})
    kafka = settings.kafka
    secret_files = [settings.signing.key_file, kafka.ssl_ca_file, kafka.sasl_password_file]
    assert {path.parent for path in secret_files if path is not None} == secret_dirs
    assert len([path for path in secret_files if path is not None]) == 3


def test_config_is_mounted_where_the_image_reads_it() -> None:
    mount = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}["config"]
    (config_key,) = k8s("ConfigMap")["data"]
    assert container()["args"] == dockerfile_cmd()
    assert image_config_path() == f"{mount}/{config_key}"
    assert image_config_path().startswith("/etc/govpipe/")


def test_every_port_is_the_server_default() -> None:
    spec = k8s("Deployment")["spec"]["template"]
    (port,) = container()["ports"]
    assert port["containerPort"] == DEFAULT_PORT
    assert spec["metadata"]["annotations"]["prometheus.io/port"] == str(DEFAULT_PORT)
    assert k8s("Service")["spec"]["ports"][0]["targetPort"] == port["name"]
    assert port_of(k8s_env()["GOVPIPE_SERVER__LISTEN"]) == DEFAULT_PORT
    assert port_of(service("govpipe")["environment"]["GOVPIPE_SERVER__LISTEN"]) == DEFAULT_PORT
    assert service("govpipe")["ports"] == [f"{DEFAULT_PORT}:{DEFAULT_PORT}"]
    assert re.search(rf"^EXPOSE {DEFAULT_PORT}$", DOCKERFILE, re.MULTILINE)
    assert re.search(rf"^ENV GOVPIPE_SERVER__LISTEN=0\.0\.0\.0:{DEFAULT_PORT}$", DOCKERFILE,
                     re.MULTILINE)
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    assert scrape[0]["static_configs"][0]["targets"] == [f"govpipe:{DEFAULT_PORT}"]


def probe_paths() -> dict[str, str]:
    probes = {name: container()[name]["httpGet"] for name in ("livenessProbe", "readinessProbe")}
    assert {probe["port"] for probe in probes.values()} == {container()["ports"][0]["name"]}
    healthcheck = re.search(rf"http://127\.0\.0\.1:{DEFAULT_PORT}(/\w+)", DOCKERFILE)
    assert healthcheck, "Dockerfile HEALTHCHECK does not probe the server port"
    annotations = k8s("Deployment")["spec"]["template"]["metadata"]["annotations"]
    return {**{name: probe["path"] for name, probe in probes.items()},
            "HEALTHCHECK": healthcheck.group(1), "scrape": annotations["prometheus.io/path"]}


async def test_probe_and_scrape_paths_are_served_by_the_ops_server() -> None:
    paths = probe_paths()
    assert paths["livenessProbe"] == paths["HEALTHCHECK"] == "/healthz"
    assert paths["readinessProbe"] == "/readyz"
    server = OpsServer(CollectorRegistry(), HealthRegistry(), "127.0.0.1", 0)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            statuses = {}
            for name, path in paths.items():
                async with http.get(f"http://127.0.0.1:{server.bound_port}{path}") as response:
                    statuses[name] = response.status
    finally:
        await server.aclose()
    # /readyz answers 503 here: with no components registered the aggregate is unhealthy.
    assert statuses == {"livenessProbe": 200, "readinessProbe": 503, "HEALTHCHECK": 200,
                        "scrape": 200}


def test_kubernetes_runs_as_the_image_user_with_resources() -> None:
    uid = re.search(r"useradd .*--uid (\d+)", DOCKERFILE)
    assert uid
    pod = k8s("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid.group(1))
    assert container()["resources"]["requests"]["memory"]
    assert container()["resources"]["limits"]["memory"]
    assert k8s("Deployment")["spec"]["template"]["metadata"]["annotations"][
        "prometheus.io/scrape"] == "true"


def test_kafka_wiring_matches_the_settings() -> None:
    kafka = service("kafka")
    assert kafka["image"] == f"apache/kafka:{kafka_version()}"
    advertised = kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    env = service("govpipe")["environment"]
    settings = load_settings(ROOT / "config" / "govpipe.toml",
                             {k: v for k, v in env.items() if k.startswith("GOVPIPE_")})
    for bootstrap in (settings.kafka.bootstrap_servers, settings.sink_kafka.bootstrap_servers):
        assert f"PLAINTEXT://{bootstrap}" in advertised.split(","), bootstrap
    loop = re.search(r"for topic in ([^;]*);", " ".join(service("kafka-topics")["command"]))
    assert loop, "kafka-topics creates no topics"
    assert set(loop.group(1).split()) == {
        settings.source.topic, settings.sinks.kafka.topic, settings.deadletter.topic}


def test_otel_collector_receives_what_the_otlp_sink_sends() -> None:
    assert service("otel-collector")["image"].startswith("otel/opentelemetry-collector-contrib:")
    endpoint = service("govpipe")["environment"]["GOVPIPE_SINKS__OTLP__ENDPOINT"]
    host, port = endpoint.removeprefix("http://").split(":")
    assert host in compose()["services"]
    collector = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    grpc = collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert port_of(grpc) == int(port)
    assert service("govpipe")["environment"]["GOVPIPE_SINKS__OTLP__PROTOCOL"] == "grpc"
    assert "otlp" in collector["service"]["pipelines"]["logs"]["receivers"]
    assert compose_mount("otel-collector", "/etc/otelcol-contrib/config.yaml") == (
        DEPLOY / "otel-collector.yaml")


def test_prometheus_config_loads_the_shipped_alert_rules(tmp_path: Path) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (rules_path,) = config["rule_files"]
    assert compose_mount("prometheus", rules_path) == ALERTS_YML
    assert compose_mount("prometheus", "/etc/prometheus/prometheus.yml") == (
        DEPLOY / "prometheus.yml")
    # promtool validates the config and the rules it loads, with the container path
    # pointed at the repository's file.
    config["rule_files"] = [str(ALERTS_YML)]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: install the Debian package prometheus"
    done = subprocess.run([promtool, "check", "config", str(local)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", sorted(DEPLOY.iterdir()), ids=lambda p: p.name)
def test_deploy_files_are_yaml(path: Path) -> None:
    assert list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
