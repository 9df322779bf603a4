"""Building the OpenTelemetry Collector the tests run: once per machine, with the collector
builder from the Go module proxy, cached under
``${GOVPIPE_CACHE:-~/.cache/govpipe}/otelcol-<version>/`` together with its GOBIN,
GOMODCACHE and GOCACHE."""

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

__all__ = ["COLLECTOR_VERSION", "ensure_collector"]

COLLECTOR_VERSION = "0.161.0"
_BINARY_NAME = "otelcol-govpipe"
_BUILD_TIMEOUT_S = 3600.0  # a cold build compiles ~500 Go packages; slow on 2 cores

_CONTRIB = "github.com/open-telemetry/opentelemetry-collector-contrib"
# Every component at the builder's own version: the builder refuses mixed core versions.
_MANIFEST = f"""\
dist:
  name: {_BINARY_NAME}
  description: govpipe test collector (OTLP in, JSON file out)
  output_path: ./build
receivers:
  - gomod: go.opentelemetry.io/collector/receiver/otlpreceiver v{COLLECTOR_VERSION}
exporters:
  - gomod: go.opentelemetry.io/collector/exporter/debugexporter v{COLLECTOR_VERSION}
  - gomod: {_CONTRIB}/exporter/fileexporter v{COLLECTOR_VERSION}
"""

# The builder loads every environment variable into its config (koanf env provider, no
# prefix) and matches keys case-insensitively: a variable named like one of its top-level
# keys (builder v0.161.0 internal/builder/config.go) would replace that part of the manifest.
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
    manifest_hash = hashlib.sha256(_MANIFEST.encode()).hexdigest()
    build_once(base, base / "build.complete", manifest_hash, lambda: _build(base, binary),
               present=binary.is_file)
    return binary


def _build(base: Path, binary: Path) -> None:
    print(f"building OpenTelemetry Collector {COLLECTOR_VERSION} with the collector builder "
          "(first run only, several minutes)…", file=sys.stderr, flush=True)
    go = require_tool("go", "to build the collector")
    env = _go_env(base)
    builder_pkg = f"go.opentelemetry.io/collector/cmd/builder@v{COLLECTOR_VERSION}"
    run_tool([go, "install", builder_pkg], "go install (collector builder)", _BUILD_TIMEOUT_S,
             env=env, cwd=base)
    manifest = base / "manifest.yaml"
    manifest.write_text(_MANIFEST)
    shutil.rmtree(base / "build", ignore_errors=True)  # no half-generated sources
    builder = str(base / "bin" / "builder")
    run_tool([builder, f"--config={manifest}"], "collector builder", _BUILD_TIMEOUT_S, env=env,
             cwd=base)
    if not binary.is_file():
        raise ServiceError(f"the collector builder succeeded but {binary} is missing")
