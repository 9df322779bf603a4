"""Building `cecheck`, the Go consumer the interop tests run (tests/support/interop/): the
CloudEvents Go SDK (sdk-go/v2) and gowebpki/jcs from the Go module proxy, pinned by the
go.mod/go.sum there. Built once per source version, cached under
``${GOVPIPE_CACHE:-~/.cache/govpipe}/cecheck-<hash>/`` with its GOMODCACHE and GOCACHE.

`python -m tests.support.infra.go_interop` builds it ahead of a test run; without Go the
tests that need it fail (never skip), as with the broker and the collector."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

from tests.support.infra.process import ServiceError, build_once, cache_root, require_tool, run_tool

__all__ = ["SOURCES", "ensure_cecheck"]

SOURCES = Path(__file__).parents[1] / "interop"
_FILES = ("cecheck.go", "go.mod", "go.sum")
_BUILD_TIMEOUT_S = 1800.0


def _digest() -> str:
    sha = hashlib.sha256()
    for name in _FILES:
        sha.update(name.encode() + b"\0" + (SOURCES / name).read_bytes())
    return sha.hexdigest()


def ensure_cecheck() -> Path:
    """The path of the built `cecheck` binary; builds it on first use (ServiceError if the
    build cannot be done, e.g. no `go` on PATH)."""
    digest = _digest()
    base = cache_root() / f"cecheck-{digest[:12]}"
    binary = base / "cecheck"
    build_once(base, base / "build.complete", digest, lambda: _build(base, binary),
               present=binary.is_file)
    return binary


def _build(base: Path, binary: Path) -> None:
    print("building cecheck (CloudEvents Go SDK + gowebpki/jcs; first run only)…",
          file=sys.stderr, flush=True)
    go = require_tool("go", "to build the Go CloudEvents interop checker")
    src = base / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for name in _FILES:
        shutil.copy(SOURCES / name, src / name)
    env = {**os.environ, "GOMODCACHE": str(base / "gomodcache"),
           "GOCACHE": str(base / "gocache"), "GOFLAGS": "-buildvcs=false -mod=readonly"}
    run_tool([go, "build", "-o", str(binary), "."], "go build (cecheck)", _BUILD_TIMEOUT_S,
             env=env, cwd=src)
    if not binary.is_file():
        raise ServiceError(f"go build succeeded but {binary} is missing")


if __name__ == "__main__":
    print(ensure_cecheck())
