"""Settings: TOML plus environment overrides, every problem named by its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.settings import ConfigError, Settings, load_settings

SHIPPED = Path(__file__).parents[2] / "config" / "govpipe.toml"


def test_defaults_are_the_embedded_default() -> None:
    settings = load_settings(None, {})
    assert settings.source.kind == "stdin"
    assert settings.sinks.stdout.enabled
    assert not settings.sinks.otlp.enabled
    assert not settings.sinks.kafka.enabled
    assert settings.deadletter_kind == "file"
    assert settings.deadletter.path == Path("deadletter")
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 9464)


def test_shipped_config_documents_the_defaults() -> None:
    assert load_settings(SHIPPED, {}) == Settings()


def test_every_key_of_the_model_appears_in_the_shipped_config() -> None:
    text = SHIPPED.read_text()

    def keys(model: type, prefix: str = "") -> list[str]:
        found = []
        for name, info in model.model_fields.items():  # type: ignore[attr-defined]
            sub = info.annotation
            if isinstance(sub, type) and hasattr(sub, "model_fields"):
                found += keys(sub, f"{prefix}{name}.")
            else:
                found.append(name)
        return found

    # A table of its own (an optional one) appears as its header.
    missing = [key for key in keys(Settings)
               if f"{key} =" not in text and f".{key}]" not in text]
    assert missing == []


def test_environment_overrides_file(tmp_path: Path) -> None:
    config = tmp_path / "govpipe.toml"
    config.write_text('[sinks.kafka]\ntopic = "from-file"\nqueue_size = 5\n')
    env = {"GOVPIPE_SINKS__KAFKA__TOPIC": "from-env", "GOVPIPE_SHUTDOWN__TIMEOUT_S": "2.5",
           "GOVPIPE_SINKS__STDOUT__ON_FULL": "drop", "GOVPIPE_SIGNING_KEY": "not-an-override"}
    settings = load_settings(config, env)
    assert settings.sinks.kafka.topic == "from-env"
    assert settings.sinks.kafka.queue_size == 5
    assert settings.shutdown.timeout_s == 2.5
    assert settings.sinks.stdout.on_full == "drop"


def test_deadletter_defaults_to_kafka_with_a_kafka_source() -> None:
    assert load_settings(None, {"GOVPIPE_SOURCE__KIND": "kafka"}).deadletter_kind == "kafka"


@pytest.mark.parametrize(("env", "expected"), [
    ({"GOVPIPE_SINKS__KAFKA__QUEUE_SIZE": "0"},
     "config error: sinks.kafka.queue_size: Input should be greater than or equal to 1 "
     "(from GOVPIPE_SINKS__KAFKA__QUEUE_SIZE)"),
    ({"GOVPIPE_SINKS__KAFKA__QUEUEZ": "1"},
     "config error: sinks.kafka.queuez: unknown key (from GOVPIPE_SINKS__KAFKA__QUEUEZ)"),
    ({"GOVPIPE_SOURCE__KIND": "rabbitmq"}, "config error: source.kind: Input should be"),
    ({"GOVPIPE_SERVER__LISTEN": "9464"}, "config error: server.listen: expected HOST:PORT"),
    ({"GOVPIPE_SOURCE__KIND__": "kafka"}, "GOVPIPE_SOURCE__KIND__: not a config override"),
    ({"GOVPIPE___KIND": "kafka"}, "GOVPIPE___KIND: not a config override"),
    ({"GOVPIPE_SOURCE__KIND": "file"}, "config error: source.path: required"),
    ({"GOVPIPE_SOURCE__NONCE_SENDER_SHARE": "0"},
     "config error: source.nonce_sender_share: Input should be greater than 0"),
])
def test_bad_environment_is_one_line_naming_the_key(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, env)
    assert str(caught.value).startswith(expected)
    assert "\n" not in str(caught.value)


# What Kubernetes injects for a Service named govpipe, plus unrelated variables of ours.
SERVICE_LINKS = {
    "GOVPIPE_SERVICE_HOST": "10.96.0.12", "GOVPIPE_SERVICE_PORT": "9464",
    "GOVPIPE_SERVICE_PORT_METRICS": "9464", "GOVPIPE_PORT": "tcp://10.96.0.12:9464",
    "GOVPIPE_PORT_9464_TCP": "tcp://10.96.0.12:9464", "GOVPIPE_PORT_9464_TCP_PROTO": "tcp",
    "GOVPIPE_PORT_9464_TCP_PORT": "9464", "GOVPIPE_PORT_9464_TCP_ADDR": "10.96.0.12",
    "GOVPIPE_HOME": "/var/lib/secret-looking-value", "GOVPIPE_SOURCE_KIND": "kafka",
}


def test_variables_that_are_not_overrides_are_ignored_with_one_notice_naming_them() -> None:
    env = {**SERVICE_LINKS, "GOVPIPE_SIGNING_KEY": "k" * 32,
           "GOVPIPE_SERVER__LISTEN": "0.0.0.0:9464"}
    settings = load_settings(None, env)
    assert settings.server.listen == "0.0.0.0:9464"
    assert settings.source.kind == "stdin"  # GOVPIPE_SOURCE_KIND is not an override
    (notice,) = settings.deprecations
    named = notice.rpartition(": ")[2].split(", ")
    assert named == sorted(SERVICE_LINKS)  # neither the key material nor the override
    assert "10.96.0.12" not in notice
    assert "secret-looking" not in notice


def test_no_notice_without_foreign_variables() -> None:
    env = {"GOVPIPE_SIGNING_KEY": "k" * 32, "GOVPIPE_CACHE": "/c", "HOME": "/root"}
    assert load_settings(None, env).deprecations == ()


def test_a_misspelt_override_beside_service_links_is_still_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {**SERVICE_LINKS, "GOVPIPE_SERVER__LISTN": "0.0.0.0:9464"})
    assert str(caught.value) == ("config error: server.listn: unknown key "
                                 "(from GOVPIPE_SERVER__LISTN)")


@pytest.mark.parametrize(("env", "expected"), [
    ({"GOVPIPE_SOURCE__REQUIRE_SIGNATURE": "true", "GOVPIPE_SOURCE__INBOUND_KEY_FILE": "k"},
     'config error: source.require_signature: needs source.kind = "kafka" (producer '
     "signatures travel in Kafka headers)"),
    ({"GOVPIPE_SOURCE__REQUIRE_SIGNATURE": "true", "GOVPIPE_SOURCE__KIND": "kafka"},
     "config error: source.inbound_key_file: required when source.require_signature = true"),
    ({"GOVPIPE_SINKS__STDOUT__ENABLED": "false"}, "config error: sinks: no sink is enabled"),
    ({"GOVPIPE_SIGNING__ALG": "Ed25519", "GOVPIPE_SIGNING__KEY_ID": "mine"},
     'config error: signing.key_id: not used with alg = "Ed25519" (the key id is the public '
     "key's fingerprint); remove it"),
])
def test_keys_that_cannot_work_together_are_refused_naming_one(
        env: dict[str, str], expected: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, env)
    assert str(caught.value) == expected
    # The same message from a file: a rule across keys names no origin.
    tables: dict[str, list[str]] = {}
    for name, value in env.items():
        *table, key = name.removeprefix("GOVPIPE_").lower().split("__")
        tables.setdefault(".".join(table), []).append(f'{key} = "{value}"\n')
    config = tmp_path / "govpipe.toml"
    config.write_text("".join(f"[{table}]\n" + "".join(lines) for table, lines in tables.items()))
    with pytest.raises(ConfigError) as from_file:
        load_settings(config, {})
    assert str(from_file.value) == expected


def test_keys_that_work_together_are_accepted() -> None:
    settings = load_settings(None, {"GOVPIPE_SOURCE__KIND": "kafka",
                                    "GOVPIPE_SOURCE__REQUIRE_SIGNATURE": "true",
                                    "GOVPIPE_SOURCE__INBOUND_KEY_FILE": "inbound.key",
                                    "GOVPIPE_SINKS__STDOUT__ENABLED": "false",
                                    "GOVPIPE_SINKS__KAFKA__ENABLED": "true",
                                    "GOVPIPE_SIGNING__ALG": "Ed25519"})
    assert list(settings.sinks.enabled_by_name()) == ["kafka"]
    assert settings.source.require_signature


def test_bad_file_names_key_and_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[sinks.stdout.retry]\nmax_attempts = \"many\"\n")
    with pytest.raises(ConfigError, match=r"sinks\.stdout\.retry\.max_attempts: .*bad\.toml"):
        load_settings(config, {})
    config.write_text("[sinks.stdout\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(config, {})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml", {})


def test_header_secrets_are_hidden_when_dumped() -> None:
    settings = load_settings(None, {"GOVPIPE_SINKS__OTLP__HEADERS": "authorization=Bearer s3cr3t"})
    assert settings.sinks.otlp.headers["authorization"].get_secret_value() == "Bearer s3cr3t"
    assert "s3cr3t" not in settings.model_dump_json()
    assert "s3cr3t" not in repr(settings)


@pytest.mark.parametrize(("protocol", "endpoint"), [("grpc", "http://127.0.0.1:4317"),
                                                    ("http/protobuf", "http://127.0.0.1:4318")])
def test_otlp_endpoint_defaults_to_the_port_of_its_protocol(protocol: str, endpoint: str) -> None:
    settings = load_settings(None, {"GOVPIPE_SINKS__OTLP__PROTOCOL": protocol})
    assert settings.sinks.otlp.endpoint == endpoint
    given = load_settings(None, {"GOVPIPE_SINKS__OTLP__PROTOCOL": protocol,
                                 "GOVPIPE_SINKS__OTLP__ENDPOINT": "https://otel.example:443"})
    assert given.sinks.otlp.endpoint == "https://otel.example:443"


def test_a_protocol_that_is_not_a_string_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "govpipe.toml"
    config.write_text('[sinks.otlp]\nprotocol = ["grpc"]\n')
    with pytest.raises(ConfigError, match=r"sinks\.otlp\.protocol"):
        load_settings(config, {})


def test_a_cloudevents_source_that_is_no_uri_reference_is_refused_at_start() -> None:
    # Otherwise every event would be rejected invalid_cloudevent, one by one.
    with pytest.raises(ConfigError, match=r"cloudevents\.source.*URI-reference"):
        load_settings(None, {"GOVPIPE_CLOUDEVENTS__SOURCE": "has spaces in it"})
    assert load_settings(None, {"GOVPIPE_CLOUDEVENTS__SOURCE": "/govpipe/prod"}
                         ).cloudevents.source == "/govpipe/prod"
