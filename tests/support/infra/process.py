"""What the service harnesses (Kafka, Collector, Prometheus) share: a process in its own
temp dir on loopback ports, started and waited for, stopped by its process id, and killed
with the test run even when the run itself is killed."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1


class ServiceError(RuntimeError):
    """A test service (its tools, download or process) could not be prepared or started."""


def die_with_parent() -> None:
    """A `preexec_fn`: the kernel sends SIGKILL to the child when its parent exits.

    atexit hooks do not run when pytest is killed (a CI timeout, SIGKILL); without this a
    killed run leaves its services behind.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def cache_root() -> Path:
    """Where downloads and builds are kept between runs: ${GOVPIPE_CACHE:-~/.cache/govpipe}."""
    configured = os.environ.get("GOVPIPE_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "govpipe"


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def build_once(base: Path, marker: Path, digest: str, build: Callable[[], None],
               present: Callable[[], bool] = lambda: True) -> None:
    """Run `build` (a download, a compile) into the cache dir `base`, unless `marker` already
    holds `digest` (the hash of what is built) and `present()`. The marker is written only
    after `build` returns, so an interrupted build, or a changed input, is redone; a file
    lock, because parallel test workers or benchmark runs may share the cache."""
    base.mkdir(parents=True, exist_ok=True)
    with (base / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and marker.read_text().strip() == digest and present():
            return
        marker.unlink(missing_ok=True)
        build()
        marker.write_text(digest + "\n")


def require_tool(name: str, purpose: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ServiceError(f"`{name}` not found on PATH; it is needed {purpose}")
    return found


def run_tool(argv: Sequence[str], what: str, timeout_s: float, *,
             env: Mapping[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run a helper command (a download, a build, a format) to completion and return its
    stdout; ServiceError naming it, with its output tail, if it cannot run, times out or
    fails."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                              check=False, env=None if env is None else dict(env), cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout
        raise ServiceError(f"{what} timed out after {timeout_s:.0f}s\n{tail(out or '')}") from exc
    except OSError as exc:
        raise ServiceError(f"{what} could not be run: {exc}") from exc
    if done.returncode != 0:
        output = tail(done.stdout + done.stderr)
        raise ServiceError(f"{what} failed (exit {done.returncode}):\n{output}")
    return done.stdout


def free_ports(count: int) -> list[int]:
    """Ask the kernel for distinct free ports on 127.0.0.1 (all held open while choosing)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class ServiceProcess:
    """One service process. Subclasses say how to prepare, what to run, and when it is
    ready; ports and the work dir are fixed at construction, so `restart()` brings the
    same service back on the same addresses with its data."""

    name = "service"
    stop_timeout_s = 15.0
    poll_s = 0.1

    def __init__(self, prefix: str, log_name: str, startup_timeout_s: float) -> None:
        self.work_dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.log_path = self.work_dir / log_name
        self._startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    # -- what subclasses provide

    def _prepare(self) -> None:
        """Write config, fetch or build what is missing (before each start)."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _is_ready(self, log_offset: int) -> bool:
        raise NotImplementedError

    def _where(self) -> str:
        """How to reach the service, for error messages."""
        return ""

    # -- lifecycle

    @property
    def pid(self) -> int | None:
        """Process id while running, else None."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start and block until ready; ServiceError (with the log tail) if it is not."""
        if self.running:
            return
        self._prepare()
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        # Append: a restarted service keeps the earlier run's log for post-mortems.
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                cwd=self.work_dir,
                start_new_session=True,  # a terminal ^C goes to pytest, which then stops us
                preexec_fn=die_with_parent)
        atexit.register(self.stop)  # a crashing benchmark script must not leak the process
        try:
            self._wait_ready(log_offset)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_s: float | None = None) -> None:
        """SIGTERM (by pid), wait, SIGKILL if still alive after the timeout."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=self.stop_timeout_s if timeout_s is None else timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL (a crash, no controlled shutdown); `start()` recovers it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self.stop()

    def restart(self) -> None:
        """Stop then start again on the same ports and work dir."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and delete the temp dir."""
        self.stop()
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        """The last `lines` lines of the service's stdout+stderr."""
        try:
            return tail(self.log_path.read_text(errors="replace"), lines)
        except FileNotFoundError:
            return f"(no {self.log_path.name})"

    def logged_since(self, log_offset: int, line: str) -> bool:
        """Whether this run (after `log_offset`) logged `line`."""
        with self.log_path.open("rb") as log:
            log.seek(log_offset)  # only this run's output counts after a restart
            return line.encode() in log.read()

    def _wait_ready(self, log_offset: int) -> None:
        deadline = time.monotonic() + self._startup_timeout_s
        while time.monotonic() < deadline:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise ServiceError(f"{self.name} exited during startup (exit {code}); "
                                   f"{self.log_path}:\n{self.log_tail()}")
            if self._is_ready(log_offset):
                return
            time.sleep(self.poll_s)
        raise ServiceError(f"{self.name} not ready within {self._startup_timeout_s:.0f}s "
                           f"{self._where()}; {self.log_path}:\n{self.log_tail()}")

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
