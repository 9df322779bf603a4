"""Child processes of the test harnesses die with the test run, even when it is killed."""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """A `preexec_fn`: the kernel sends SIGKILL to the child when its parent exits.

    atexit hooks do not run when pytest is killed (a CI timeout, SIGKILL); without this a
    killed run leaves its brokers behind.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
