"""The Dockerfile, built and run: buildah builds it on a Debian-python base (the stand-in for
python:3.11-slim, no registry here), and the image's own entrypoint, command, user,
environment and HEALTHCHECK run inside its root (see tests/support/infra/image.py).

Slow: the first run makes the base (mmdebstrap, ~30 s) and every run whose sources changed
reinstalls govpipe in the build stage (~20 s)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.agent_os import agent_os_verify
from tests.support.events import EXAMPLES
from tests.support.infra.image import MountedImage, build_image
from tests.support.processes import GOVPIPE, govpipe_env

ROOT = Path(__file__).parents[2]
KEY = b"govpipe-image-test-hmac-key-0123456789abcdef"
READ_TIMEOUT_S = 120.0
# One build may be cold (base made, every dependency downloaded) on a busy machine.
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def image() -> Iterator[MountedImage]:
    """The image built from this checkout, mounted; unmounted and removed by id afterwards.
    A machine without buildah or mmdebstrap fails here (./scripts/test installs them)."""
    with MountedImage(build_image(ROOT)) as mounted:
        yield mounted


def signed_here(tmp_path: Path) -> list[bytes]:
    """What `govpipe run` of this checkout writes for the examples, with the image's config."""
    env = govpipe_env(KEY)
    done = subprocess.run([str(GOVPIPE), "run", "--config", str(ROOT / "config/govpipe.toml")],
                          input=EXAMPLES.read_bytes(), capture_output=True, env=env,
                          cwd=tmp_path, timeout=120, check=True)
    return done.stdout.splitlines(keepends=True)


def run_healthcheck(image: MountedImage, network_of: int | None = None) -> int:
    done = subprocess.run(image.command(image.healthcheck(), network_of=network_of),
                          capture_output=True, timeout=60, check=False)
    return done.returncode


def test_the_image_signs_the_examples_and_its_healthcheck_passes(
        image: MountedImage, tmp_path: Path) -> None:
    expected = signed_here(tmp_path)
    secret = {"GOVPIPE_SIGNING_KEY": base64.b64encode(KEY).decode()}
    log = tmp_path / "image.log"
    with log.open("wb") as stderr, subprocess.Popen(
            image.command(image.entrypoint_and_cmd(), env=secret),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr) as daemon:
        assert daemon.stdin is not None
        assert daemon.stdout is not None
        # A daemon that signs fewer lines would leave the reads below waiting for ever.
        watchdog = threading.Timer(READ_TIMEOUT_S, daemon.kill)
        watchdog.start()
        try:
            daemon.stdin.write(EXAMPLES.read_bytes())
            daemon.stdin.flush()  # kept open: the daemon keeps running for its healthcheck
            signed = [daemon.stdout.readline() for _ in expected]
            healthcheck = run_healthcheck(image, network_of=daemon.pid)
            daemon.stdin.close()
            assert daemon.wait(timeout=60) == 0, log.read_text()
        finally:
            watchdog.cancel()
            if daemon.poll() is None:
                daemon.kill()
    assert signed == expected  # byte-identical to the checkout's own output
    assert all(agent_os_verify(KEY, json.loads(line)) for line in signed)
    assert healthcheck == 0
    # With no daemon in its network namespace the same check fails: it does probe.
    assert run_healthcheck(image) != 0


def test_the_image_runs_as_a_non_root_user(image: MountedImage) -> None:
    uid, _, gid = image.config.user.partition(":")
    assert uid.isdigit(), "a numeric USER, so that runAsNonRoot can check it"
    assert int(uid) != 0
    assert gid.isdigit()
    assert int(gid) != 0
    owner = os.stat(image.root / image.config.working_dir.lstrip("/")).st_uid
    assert owner == int(uid), "the working dir (dead-letters by default) is the user's"


def test_the_runtime_image_holds_no_installer(image: MountedImage) -> None:
    """Neither the virtualenv nor the base interpreter it links to can import pip or
    setuptools, and no wheel is left to reinstall them from (ensurepip's)."""
    probe = ("import importlib.util, sys; "
             "found = [m for m in ('pip', 'setuptools') if importlib.util.find_spec(m)]; "
             "sys.exit(', '.join(found) or None)")
    home = next(line.split("=", 1)[1].strip()
                for line in (image.root / "opt/govpipe/pyvenv.cfg").read_text().splitlines()
                if line.startswith("home"))
    for python in ("python", f"{home}/python3"):
        done = subprocess.run(image.command([python, "-c", probe]), capture_output=True,
                              text=True, timeout=60, check=False)
        assert (done.returncode, done.stderr) == (0, ""), python
    wheels = [path for folder in ("usr", "opt") for path in (image.root / folder).rglob("*.whl")]
    assert wheels == []


def manifest_writable_paths() -> list[str]:
    """The paths deploy/kubernetes.yaml mounts as emptyDir over its read-only root."""
    documents = yaml.safe_load_all((ROOT / "deploy" / "kubernetes.yaml").read_text())
    (pod,) = [doc["spec"]["template"]["spec"] for doc in documents
              if doc and doc["kind"] == "Deployment"]
    empty_dirs = {volume["name"] for volume in pod["volumes"] if "emptyDir" in volume}
    (container,) = pod["containers"]
    return sorted(mount["mountPath"] for mount in container["volumeMounts"]
                  if mount["name"] in empty_dirs)


def test_the_image_runs_on_a_read_only_root_with_the_manifests_writable_paths(
        image: MountedImage) -> None:
    writable = manifest_writable_paths()
    probe = ("import sys\nfor path in sys.argv[1:]:\n"
             "    try:\n        open(path + '/probe', 'w').close()\n"
             "    except OSError:\n        print(path)\n")
    refused = subprocess.run(
        image.read_only_command(["python", "-c", probe, "/etc/govpipe", "/opt/govpipe",
                                 *writable], writable=writable),
        capture_output=True, text=True, timeout=60, check=True)
    assert refused.stdout.split() == ["/etc/govpipe", "/opt/govpipe"]
    # A bad line on the way: its dead-letter entry is written into the working dir.
    secret = {"GOVPIPE_SIGNING_KEY": base64.b64encode(KEY).decode()}
    done = subprocess.run(
        image.read_only_command(image.entrypoint_and_cmd(), writable=writable, env=secret),
        input=EXAMPLES.read_bytes() + b"this is not json\n", capture_output=True,
        timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()
    stopped = [json.loads(line) for line in done.stderr.splitlines()
               if b'"govpipe stopped"' in line]
    assert [(log["rejected"], log["unsettled"]) for log in stopped] == [(1, 0)]
    assert len(done.stdout.splitlines()) == len(EXAMPLES.read_bytes().splitlines())
