"""The repository's container image, built and run with no registry and no container engine.

Debian's `buildah` builds the Dockerfile (``--isolation chroot``) on a base that `mmdebstrap`
makes: a Debian bookworm root with python3 and python3-venv, the stand-in for
python:3.11-slim. The base tarball is cached under ``${GOVPIPE_CACHE:-~/.cache/govpipe}/
image-base/`` and imported into buildah's store once; buildah caches the layers.

An image is run as a container runtime would, from what the image itself says (Env, User,
WorkingDir, Entrypoint, Cmd, Healthcheck): its root is mounted with `buildah mount`, and the
command runs there with `chroot --userspec` inside a fresh network namespace (`unshare -n`),
so the image's fixed port cannot clash with anything on the machine::

    with MountedImage(build_image(ROOT)) as image:
        daemon = subprocess.Popen(image.command(image.entrypoint_and_cmd()), ...)
        subprocess.run(image.command(image.healthcheck(), network_of=daemon.pid))
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from shlex import quote
from types import TracebackType
from typing import Any, Self

from tests.support.infra.process import (
    ServiceError,
    build_once,
    cache_root,
    require_tool,
    run_tool,
)

__all__ = ["ImageConfig", "MountedImage", "build_image", "ensure_base_image", "in_own_network"]

_SUITE = "bookworm"
_PACKAGES = "python3,python3-venv,ca-certificates"
_MMDEBSTRAP = ["--variant=minbase", f"--include={_PACKAGES}", "--format=tar", _SUITE]
_BASE_TAG = f"localhost/govpipe-test-base:{_SUITE}"
IMAGE_TAG = "localhost/govpipe-test:latest"
BUILD_STAGE_TAG = "localhost/govpipe-test:build-stage"
# A machine may reach the package index through a TLS proxy whose CA is in the host's
# bundle, and name it in pip.conf: pip inside the build reads the host's (those present).
_HOST_FILES = ["/etc/pip.conf", "/etc/ssl/certs"]
_BUILD_TIMEOUT_S = 900.0


def _buildah(*args: str, what: str, timeout_s: float = 120.0) -> str:
    return run_tool([require_tool("buildah", "to build the image"), *args], what,
                    timeout_s).strip()


def ensure_base_image() -> str:
    """The tag of the Debian-python base in buildah's store, made and imported on first use."""
    base = cache_root() / "image-base"
    tarball = base / f"{_SUITE}-python3.tar"
    digest = hashlib.sha256(" ".join(_MMDEBSTRAP).encode()).hexdigest()
    build_once(base, base / "tar.complete", digest, lambda: _debootstrap(tarball),
               present=tarball.is_file)
    tag = f"{_BASE_TAG}-{digest[:12]}"
    if _image_id(tag) is None:
        _import(tarball, tag)
    return tag


def _debootstrap(tarball: Path) -> None:
    mmdebstrap = require_tool("mmdebstrap", "to make the image's base (Debian package)")
    run_tool([mmdebstrap, "--quiet", *_MMDEBSTRAP, str(tarball)],
             "mmdebstrap (the image base)", _BUILD_TIMEOUT_S)


def _image_id(tag: str) -> str | None:
    done = subprocess.run(["buildah", "inspect", "--type", "image", "--format",
                           "{{.FromImageID}}", tag],
                          capture_output=True, text=True, check=False, timeout=60)
    return done.stdout.strip() if done.returncode == 0 else None


def _import(tarball: Path, tag: str) -> None:
    container = _buildah("from", "scratch", what="buildah from scratch")
    try:
        _buildah("add", "--quiet", container, str(tarball), "/",
                 what="buildah add (the base tarball)", timeout_s=600)
        _buildah("commit", "--quiet", container, tag, what="buildah commit (the base)",
                 timeout_s=600)
    finally:
        _buildah("rm", container, what="buildah rm")


def build_image(context: Path) -> str:
    """Build ``context``'s Dockerfile on the Debian-python base; return the image id.

    Layers are cached (a change of the code rebuilds from the copy of the sources on, not
    the dependencies), and the build stage is tagged too so that its layers stay
    referenced. What this build left unreferenced (the previous build's tail) is removed,
    so the store holds one build, not a copy of the virtualenv per change of the code."""
    base = ensure_base_image()
    unreferenced_before = _unreferenced_images()
    for target, tag in (("build", BUILD_STAGE_TAG), (None, IMAGE_TAG)):
        _buildah("bud", "--quiet", "--format", "docker", "--isolation", "chroot", "--layers",
                 "--build-arg", f"BASE_IMAGE={base}",
                 *[arg for path in _HOST_FILES if Path(path).exists()
                   for arg in ("--volume", f"{path}:{path}:ro")],
                 *(["--target", target] if target else []), "--tag", tag, str(context),
                 what=f"buildah bud (the Dockerfile, {target or 'runtime'} stage)",
                 timeout_s=_BUILD_TIMEOUT_S)
    _remove_new_unreferenced(unreferenced_before)
    built = _image_id(IMAGE_TAG)
    if built is None:
        raise ServiceError(f"buildah bud tagged no {IMAGE_TAG}")
    return built


def _unreferenced_images() -> set[str]:
    """Images with no name and no child image (buildah's "dangling")."""
    listed = _buildah("images", "--all", "--quiet", "--no-trunc", "--filter", "dangling=true",
                      what="buildah images")
    return set(listed.split())


def _remove_new_unreferenced(before: set[str]) -> None:
    # Removing a layer's image can leave its parent unreferenced in turn: repeat.
    while new := _unreferenced_images() - before:
        done = subprocess.run(["buildah", "rmi", *sorted(new)], capture_output=True,
                              check=False, timeout=300)
        if done.returncode != 0:  # in use (a container left by a killed run): kept
            return


def in_own_network(argv: list[str]) -> list[str]:
    """``argv`` run in a fresh network namespace with only loopback, up (needs root): a
    fixed port such as 0.0.0.0:9464 binds there without clashing with the machine's.
    unshare execs in place, so the pid the caller sees is the one of the namespace."""
    return ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
            *argv]


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """What the image says about running it (the Docker image config)."""

    env: dict[str, str]
    user: str
    working_dir: str
    entrypoint: list[str]
    cmd: list[str]
    healthcheck: list[str]

    @classmethod
    def from_docker(cls, config: dict[str, Any]) -> ImageConfig:
        env = dict(item.split("=", 1) for item in config.get("Env") or [])
        return cls(env=env, user=config.get("User") or "0:0",
                   working_dir=config.get("WorkingDir") or "/",
                   entrypoint=list(config.get("Entrypoint") or []),
                   cmd=list(config.get("Cmd") or []),
                   healthcheck=list((config.get("Healthcheck") or {}).get("Test") or []))


class MountedImage:
    """A working container of an image, its root mounted; `close()` unmounts and removes
    it by its id."""

    def __init__(self, image_id: str) -> None:
        self.container: str | None = _buildah(
            "from", "--quiet", "--pull=never", image_id, what="buildah from (the built image)")
        try:
            self.root = Path(_buildah("mount", self.container, what="buildah mount"))
            inspected = json.loads(_buildah("inspect", "--type", "container", self.container,
                                            what="buildah inspect (the container)"))
            self.config = ImageConfig.from_docker(inspected["Docker"]["config"])
        except BaseException:
            self.close()
            raise

    def entrypoint_and_cmd(self) -> list[str]:
        return self.config.entrypoint + self.config.cmd

    def healthcheck(self) -> list[str]:
        """The HEALTHCHECK command as an argv (exec form, or the shell form through sh)."""
        kind, *command = self.config.healthcheck
        if kind == "CMD-SHELL":
            return ["/bin/sh", "-c", *command]
        if kind != "CMD":
            raise ServiceError(f"the image has no HEALTHCHECK command: {kind}")
        return command

    def command(self, argv: list[str], *, env: dict[str, str] | None = None,
                network_of: int | None = None) -> list[str]:
        """The host argv that runs ``argv`` in the image as its user, in its working dir,
        with only the image's environment plus ``env``: in a fresh network namespace with
        loopback up, or in the namespace of process ``network_of``."""
        inside = self._as_image_user(argv, env)
        if network_of is not None:
            return ["nsenter", f"--net=/proc/{network_of}/ns/net", "--", *inside]
        return in_own_network(inside)

    def read_only_command(self, argv: list[str], *, writable: Sequence[str],
                          env: dict[str, str] | None = None) -> list[str]:
        """`command` on a read-only root where only the ``writable`` paths (absolute, each
        an empty tmpfs) can be written: what Kubernetes' readOnlyRootFilesystem with
        emptyDir volumes gives. Fresh mount and network namespaces: nothing changes for
        other processes."""
        root = str(self.root)
        steps = [f"mount --bind {quote(root)} {quote(root)}",
                 f"mount -o remount,bind,ro {quote(root)}",
                 *(f"mount -t tmpfs -o mode=0777 tmpfs {quote(root + path)}"
                   for path in writable),
                 "ip link set lo up", 'exec "$@"']
        return ["unshare", "--net", "--mount", "--", "sh", "-c", " && ".join(steps), "sh",
                *self._as_image_user(argv, env)]

    def _as_image_user(self, argv: list[str], env: dict[str, str] | None) -> list[str]:
        variables = [f"{k}={v}" for k, v in {**self.config.env, **(env or {})}.items()]
        return ["chroot", f"--userspec={self.config.user}", str(self.root),
                "/usr/bin/env", "-i", "-C", self.config.working_dir, *variables, *argv]

    def close(self) -> None:
        container, self.container = self.container, None
        if container is None:
            return
        errors = []
        for step in ("umount", "rm"):
            done = subprocess.run(["buildah", step, container], capture_output=True,
                                  text=True, check=False, timeout=120)
            if done.returncode != 0:
                errors.append(f"buildah {step} {container}: {done.stderr.strip()}")
        if errors:
            raise ServiceError("; ".join(errors))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
