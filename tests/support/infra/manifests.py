"""Checking Kubernetes manifests with no cluster and no schema download: a small Go program
(``manifestcheck/``) strict-decodes every document into the k8s.io/api types, built once
per machine from the Go module proxy and cached, with its GOMODCACHE and GOCACHE, under
``${GOVPIPE_CACHE:-~/.cache/govpipe}/k8s-manifest-check/``."""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.infra.process import build_once, cache_root, require_tool, run_tool

__all__ = ["ManifestCheck", "check_manifests", "ensure_manifest_checker"]

_SOURCE = Path(__file__).parent / "manifestcheck"
_BUILD_TIMEOUT_S = 1800.0  # a cold build downloads k8s.io/api and compiles it on 2 cores


def _source_digest() -> str:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((_SOURCE / name).read_bytes())
    return digest.hexdigest()


def ensure_manifest_checker() -> Path:
    """The path of the checker binary, built on first use and whenever its source changes."""
    base = cache_root() / "k8s-manifest-check"
    binary = base / "bin" / "manifestcheck"
    build_once(base, base / "build.complete", _source_digest(), lambda: _build(base, binary),
               present=binary.is_file)
    return binary


def _build(base: Path, binary: Path) -> None:
    go = require_tool("go", "to build the Kubernetes manifest checker")
    env = {**os.environ, "GOMODCACHE": str(base / "gomodcache"),
           "GOCACHE": str(base / "gocache"),
           # go.sum is committed: the build may not change it, nor stamp VCS details.
           "GOFLAGS": "-mod=readonly -buildvcs=false"}
    run_tool([go, "build", "-o", str(binary), "."], "go build (manifestcheck)",
             _BUILD_TIMEOUT_S, env=env, cwd=_SOURCE)


@dataclass(frozen=True, slots=True)
class ManifestCheck:
    """What the checker said: ``objects`` ("Kind/name" per valid document) or ``error``."""

    objects: list[str]
    error: str
    ok: bool


def check_manifests(path: Path) -> ManifestCheck:
    """Strict-decode every document of ``path`` with the Kubernetes API types."""
    done = subprocess.run([str(ensure_manifest_checker()), str(path)], capture_output=True,
                          text=True, timeout=60, check=False)
    return ManifestCheck(objects=done.stdout.split(), error=done.stderr.strip(),
                         ok=done.returncode == 0)
