"""bench.run --experiment DIR: scenario x is b with DIR first on govpipe's PYTHONPATH, and
exists only when asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.procs import Topics
from bench.producer_signing import ProducerSigner
from bench.run import parse_args
from bench.scenarios import Context, Progress, govpipe_env, scenarios

TOPICS = Topics("127.0.0.1:9092", "in", "out", "g")


def context(tmp_path: Path) -> Context:
    key_file = tmp_path / "inbound.key"
    return Context("127.0.0.1:9092", "127.0.0.1:4317", tmp_path, "a2V5", tmp_path / "k.pem",
                   ProducerSigner(b"k" * 32), key_file, Progress())


def test_x_is_a_scenario_only_with_an_experiment(tmp_path: Path) -> None:
    assert "x" not in [s.key for s in scenarios(2)]
    x = scenarios(2, tmp_path)[-1]
    assert x.key == "x"
    assert x.pythonpath == str(tmp_path.resolve())
    assert (x.sinks, x.alg, x.processes) == (("kafka",), "HMAC-SHA256", 1)  # as b
    assert parse_args(["--experiment", str(tmp_path)]).experiment == tmp_path


def test_x_puts_the_experiment_first_on_the_path_and_b_does_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    b, x = (s for s in scenarios(1, tmp_path) if s.key in ("b", "x"))
    assert govpipe_env(b, TOPICS, context(tmp_path), tmp_path)["PYTHONPATH"] == "/elsewhere"
    env = govpipe_env(x, TOPICS, context(tmp_path), tmp_path)
    assert env["PYTHONPATH"] == f"{tmp_path.resolve()}:/elsewhere"
    assert {k: v for k, v in env.items() if k != "PYTHONPATH"} == {
        k: v for k, v in govpipe_env(b, TOPICS, context(tmp_path), tmp_path).items()
        if k != "PYTHONPATH"}
