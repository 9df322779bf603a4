"""Building the OpenTelemetry Collector the tests and the benchmark run: once per machine,
with the collector builder from the Go module proxy, cached under
``${GOVPIPE_CACHE:-~/.cache/govpipe}/otelcol-<version>/`` together with its GOBIN,
GOMODCACHE and GOCACHE.

One binary has everything: OTLP in with debug and file out (the OTLP sink tests), and
Kafka in and out with the batch and transform processors (bench scenarios p and q).
Contrib v0.165.1 on core v0.165.0 is the first line whose Kafka components resolve from
the proxy (``pkg/kafka/configkafka@v0.161.0`` is refused). The transform processor
imports two modules the proxy refuses at every version; ``collector_standins/`` replaces
them (see its README)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

from tests.support.infra.process import (
    ServiceError,
    build_once,
    cache_root,
    require_tool,
    run_tool,
)

__all__ = ["COLLECTOR_VERSION", "CONTRIB_VERSION", "ensure_collector"]

COLLECTOR_VERSION = "0.165.0"  # core components and the builder
CONTRIB_VERSION = "0.165.1"
_BINARY_NAME = "otelcol-govpipe"
_BUILD_TIMEOUT_S = 3600.0  # a cold build compiles ~500 Go packages; slow on 2 cores

_CONTRIB = "github.com/open-telemetry/opentelemetry-collector-contrib"
_STANDINS = Path(__file__).with_name("collector_standins")
_STANDIN_MODULES = {  # module path -> folder under collector_standins/
    f"{_CONTRIB}/pkg/ottl/contexts/xprofile": "xprofile",
    f"{_CONTRIB}/pkg/expohisto": "expohisto",
    f"{_CONTRIB}/extension/encoding/otlpencodingextension": "otlpencodingextension",
}
# Core components at the builder's own version (the builder refuses mixed core versions);
# contrib at its patch release of the same line.
_MANIFEST = f"""\
dist:
  name: {_BINARY_NAME}
  description: govpipe test collector (OTLP and Kafka in; file, debug and Kafka out)
  output_path: ./build
receivers:
  - gomod: go.opentelemetry.io/collector/receiver/otlpreceiver v{COLLECTOR_VERSION}
  - gomod: {_CONTRIB}/receiver/kafkareceiver v{CONTRIB_VERSION}
processors:
  - gomod: go.opentelemetry.io/collector/processor/batchprocessor v{COLLECTOR_VERSION}
  - gomod: {_CONTRIB}/processor/transformprocessor v{CONTRIB_VERSION}
exporters:
  - gomod: go.opentelemetry.io/collector/exporter/debugexporter v{COLLECTOR_VERSION}
  - gomod: {_CONTRIB}/exporter/fileexporter v{CONTRIB_VERSION}
  - gomod: {_CONTRIB}/exporter/kafkaexporter v{CONTRIB_VERSION}
"""


def _manifest(standins: Path) -> str:
    """The manifest with ``replaces:`` pointing at the stand-ins copied under ``standins``."""
    lines = [f"  - {module} => {standins / folder}" for module, folder in _STANDIN_MODULES.items()]
    return _MANIFEST + "replaces:\n" + "\n".join(lines) + "\n"


def _build_digest() -> str:
    """What the build depends on: the manifest and every stand-in file."""
    digest = hashlib.sha256(_MANIFEST.encode())
    for path in sorted(_STANDINS.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(_STANDINS)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# The builder loads every environment variable into its config (koanf env provider, no
# prefix) and matches keys case-insensitively: a variable named like one of its top-level
# keys (builder v0.165.0 internal/builder/config.go) would replace that part of the manifest.
_BUILDER_CONFIG_KEYS = frozenset({
    "DIST", "EXPORTERS", "EXTENSIONS", "RECEIVERS", "PROCESSORS", "CONNECTORS",
    "TELEMETRY", "PROVIDERS", "CONVERTERS", "REPLACES", "EXCLUDES", "CONF_RESOLVER",
})  # fmt: skip


def _go_env(base: Path) -> dict[str, str]:
    """The environment for `go install` and the builder: caches inside ``base``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name.split(".")[0].upper() not in _BUILDER_CONFIG_KEYS
    }
    env.update(
        GOBIN=str(base / "bin"),
        GOMODCACHE=str(base / "gomodcache"),
        GOCACHE=str(base / "gocache"),
        GOFLAGS="-buildvcs=false",  # the build dir is not a VCS checkout
    )
    return env


def ensure_collector() -> Path:
    """Return the path of the collector binary, building it on first use.

    A marker file (holding the manifest's hash) is written only after a successful build,
    so an interrupted build, or a changed manifest, is redone.
    """
    base = cache_root() / f"otelcol-{COLLECTOR_VERSION}"
    binary = base / "build" / _BINARY_NAME
    build_once(base, base / "build.complete", _build_digest(), lambda: _build(base, binary),
               present=binary.is_file)
    return binary


def _build(base: Path, binary: Path) -> None:
    print(f"building OpenTelemetry Collector {COLLECTOR_VERSION}/{CONTRIB_VERSION} with the "
          "collector builder (first run only, several minutes)…", file=sys.stderr, flush=True)
    go = require_tool("go", "to build the collector")
    env = _go_env(base)
    builder_pkg = f"go.opentelemetry.io/collector/cmd/builder@v{COLLECTOR_VERSION}"
    run_tool([go, "install", builder_pkg], "go install (collector builder)", _BUILD_TIMEOUT_S,
             env=env, cwd=base)
    # Copied into the cache so the manifest (and the digest) do not depend on the checkout.
    standins = base / "standins"
    shutil.rmtree(standins, ignore_errors=True)
    shutil.copytree(_STANDINS, standins)
    manifest = base / "manifest.yaml"
    manifest.write_text(_manifest(standins))
    shutil.rmtree(base / "build", ignore_errors=True)  # no half-generated sources
    builder = str(base / "bin" / "builder")
    run_tool([builder, f"--config={manifest}"], "collector builder", _BUILD_TIMEOUT_S, env=env,
             cwd=base)
    if not binary.is_file():
        raise ServiceError(f"the collector builder succeeded but {binary} is missing")
