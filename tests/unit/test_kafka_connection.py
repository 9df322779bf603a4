"""The [kafka] table: its rules, the old keys it replaces, and the aiokafka options it makes.
(Connections through real secured listeners: tests/integration/test_secure_kafka.py.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pipeline.app import build_sinks
from pipeline.kafka_connection import TokenFile, client_options
from pipeline.settings import ConfigError, load_settings
from pipeline.startup import check_startup
from sinks.kafka import KafkaSink
from tests.support.processes import GOVPIPE

PASSWORD = "s3cr3t-Pa55"


def error_for(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, env)
    return str(caught.value)


@pytest.mark.parametrize(("env", "expected"), [
    ({"GOVPIPE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL"},
     "config error: kafka.sasl_mechanism: required with security_protocol = SASL_SSL"),
    ({"GOVPIPE_KAFKA__SASL_MECHANISM": "PLAIN"},
     "config error: kafka.security_protocol: PLAINTEXT does not authenticate with SASL"),
    ({"GOVPIPE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
      "GOVPIPE_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512"},
     "config error: kafka.sasl_username: required with sasl_mechanism = SCRAM-SHA-512"),
    ({"GOVPIPE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "GOVPIPE_KAFKA__SASL_MECHANISM": "PLAIN",
      "GOVPIPE_KAFKA__SASL_USERNAME": "u"},
     "config error: kafka.sasl_password_file: give the password in exactly one way"),
    ({"GOVPIPE_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
      "GOVPIPE_KAFKA__SASL_MECHANISM": "OAUTHBEARER"},
     "config error: kafka.sasl_oauth_token_file: required with sasl_mechanism = OAUTHBEARER"),
    ({"GOVPIPE_KAFKA__SSL_CA_FILE": "/ca.pem"},
     "config error: kafka.ssl_ca_file: not used with security_protocol = PLAINTEXT"),
    ({"GOVPIPE_KAFKA__SECURITY_PROTOCOL": "SSL", "GOVPIPE_KAFKA__SSL_CERT_FILE": "/c.pem"},
     "config error: kafka.ssl_key_file: a client certificate needs both"),
    ({"GOVPIPE_KAFKA__SECURITY_PROTOCOL": "TLS"},
     "config error: kafka.security_protocol: Input should be"),
    ({"GOVPIPE_SINKS__KAFKA__CONNECTION__SECURITY_PROTOCOL": "SASL_SSL"},
     "config error: sinks.kafka.connection.sasl_mechanism: required"),
    ({"GOVPIPE_KAFKA__SASL_USERNAME": "u"},
     "config error: kafka.sasl_username: not used without sasl_mechanism"),
    ({"GOVPIPE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
      "GOVPIPE_KAFKA__SASL_MECHANISM": "OAUTHBEARER",
      "GOVPIPE_KAFKA__SASL_OAUTH_TOKEN_FILE": "/t", "GOVPIPE_KAFKA__SASL_PASSWORD": "p"},
     "config error: kafka.sasl_password: not used with sasl_mechanism = OAUTHBEARER"),
    ({"GOVPIPE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "GOVPIPE_KAFKA__SASL_MECHANISM": "PLAIN",
      "GOVPIPE_KAFKA__SASL_USERNAME": "u", "GOVPIPE_KAFKA__SASL_PASSWORD": ""},
     "config error: kafka.sasl_password:"),
])
def test_a_connection_that_cannot_work_names_the_key(env: dict[str, str], expected: str) -> None:
    assert error_for(env).startswith(expected)


def test_the_password_is_masked_wherever_settings_are_shown() -> None:
    env = {"GOVPIPE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
           "GOVPIPE_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
           "GOVPIPE_KAFKA__SASL_USERNAME": "govpipe", "GOVPIPE_KAFKA__SASL_PASSWORD": PASSWORD}
    settings = load_settings(None, env)
    assert PASSWORD not in settings.model_dump_json()
    assert PASSWORD not in repr(settings)
    assert client_options(settings.kafka)["sasl_plain_password"] == PASSWORD


def test_check_config_masks_secrets_and_names_unreadable_files(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GOVPIPE_")},
           "GOVPIPE_SOURCE__KIND": "kafka", "GOVPIPE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
           "GOVPIPE_KAFKA__SASL_MECHANISM": "PLAIN", "GOVPIPE_KAFKA__SASL_USERNAME": "u",
           "GOVPIPE_KAFKA__SASL_PASSWORD": PASSWORD,
           "GOVPIPE_KAFKA__SSL_CA_FILE": str(tmp_path / "missing-ca.pem")}
    done = subprocess.run([str(GOVPIPE), "check-config"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert f"kafka.ssl_ca_file: cannot read {tmp_path / 'missing-ca.pem'}" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    assert '"sasl_password": "**********"' in done.stdout


def test_old_bootstrap_keys_still_work_with_a_notice() -> None:
    settings = load_settings(None, {
        "GOVPIPE_SOURCE__BOOTSTRAP_SERVERS": "a:9092", "GOVPIPE_KAFKA__SECURITY_PROTOCOL": "SSL",
        "GOVPIPE_SINKS__KAFKA__BOOTSTRAP_SERVERS": "b:9092"})
    assert settings.kafka.bootstrap_servers == "a:9092"
    # The sink's other cluster keeps [kafka]'s security settings.
    assert settings.sink_kafka.bootstrap_servers == "b:9092"
    assert settings.sink_kafka.security_protocol == "SSL"
    assert [notice.split(" ")[0] for notice in settings.deprecations] == [
        "source.bootstrap_servers", "sinks.kafka.bootstrap_servers"]


def test_the_new_key_wins_over_the_old_one() -> None:
    settings = load_settings(None, {"GOVPIPE_SOURCE__BOOTSTRAP_SERVERS": "old:9092",
                                    "GOVPIPE_KAFKA__BOOTSTRAP_SERVERS": "new:9092"})
    assert settings.kafka.bootstrap_servers == "new:9092"
    assert "ignored" in settings.deprecations[0]


def test_a_password_file_is_read_and_an_unreadable_one_is_named(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    env = {"GOVPIPE_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "GOVPIPE_KAFKA__SASL_MECHANISM": "SCRAM-SHA-256",
           "GOVPIPE_KAFKA__SASL_USERNAME": "u", "GOVPIPE_KAFKA__SASL_PASSWORD_FILE": str(secret)}
    options = client_options(load_settings(None, env).kafka)
    assert options["sasl_plain_password"] == PASSWORD
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    secret.chmod(0)
    if os.geteuid() != 0:  # root reads anything
        with pytest.raises(ConfigError, match=r"kafka\.sasl_password_file: cannot read"):
            client_options(load_settings(None, env).kafka)
    secret.unlink()
    with pytest.raises(ConfigError, match=r"kafka\.sasl_password_file: cannot read"):
        client_options(load_settings(None, env).kafka)
    with pytest.raises(ConfigError) as caught:  # what run and check-config report
        check_startup(load_settings(None, {**env, "GOVPIPE_SOURCE__KIND": "kafka"}), {})
    assert str(caught.value) == (
        f"config error: kafka.sasl_password_file: cannot read {secret}: No such file or "
        "directory")


async def test_the_token_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    provider = TokenFile(path)
    assert await provider.token() == "first"
    path.write_text("second, longer\n")
    assert await provider.token() == "second, longer"


def test_no_module_outside_the_connection_makes_a_kafka_client_without_it() -> None:
    # Every client takes its brokers and security from client_options: a module that
    # constructs one from bootstrap_servers alone would connect in plaintext.
    root = Path(__file__).parents[2] / "pipeline"
    offenders = [str(path.relative_to(root)) for path in root.rglob("*.py")
                 if "AIOKafka" in (text := path.read_text())
                 and "bootstrap_servers=" in text.replace(" ", "")]
    assert offenders == [], offenders


def test_the_kafka_sink_gets_its_cluster_and_producer_settings() -> None:
    settings = load_settings(None, {
        "GOVPIPE_SINKS__KAFKA__ENABLED": "true", "GOVPIPE_SINKS__KAFKA__COMPRESSION_TYPE": "zstd",
        "GOVPIPE_SINKS__KAFKA__LINGER_MS": "20",
        "GOVPIPE_SINKS__KAFKA__CONNECTION__BOOTSTRAP_SERVERS": "other:9093",
        "GOVPIPE_SINKS__KAFKA__CONNECTION__CLIENT_ID": "govpipe-out"})
    sink = next(sink for sink, _ in build_sinks(settings) if isinstance(sink, KafkaSink))
    options = sink._options
    assert (options["bootstrap_servers"], options["client_id"]) == ("other:9093", "govpipe-out")
    assert (options["compression_type"], options["linger_ms"]) == ("zstd", 20)
    assert options["security_protocol"] == "PLAINTEXT"


def test_an_old_variable_still_beats_the_file(tmp_path: Path) -> None:
    # The shipped config names [kafka] bootstrap_servers; an operator's old-style variable
    # must still win over the file, as every environment override does.
    config = tmp_path / "govpipe.toml"
    config.write_text('[kafka]\nbootstrap_servers = "127.0.0.1:9092"\n')
    settings = load_settings(config, {"GOVPIPE_SOURCE__BOOTSTRAP_SERVERS": "kafka:9092"})
    assert settings.kafka.bootstrap_servers == "kafka:9092"


def test_a_password_in_the_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "govpipe.toml"
    config.write_text('[kafka]\nsasl_password = "hunter2"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config, {})
    assert "kafka.sasl_password: not in the config file" in str(caught.value)
    assert "GOVPIPE_KAFKA__SASL_PASSWORD" in str(caught.value)
    assert "hunter2" not in str(caught.value)
