"""Dead-letter files hold whole events and rejected records, so only the daemon's user may
read them: the folder is 0700 and every file in it 0600, whatever the umask.

A folder or file found looser (made by an older govpipe, or by hand) is tightened, with a
warning naming it; one that cannot be tightened (another user owns it) is used as it is,
with a warning, rather than stopping the dead-letter and so the pipeline.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def ensure_private_folder(directory: Path) -> None:
    """Create `directory` (and its parents) with the folder made 0700, or tighten it."""
    with contextlib.suppress(FileExistsError):
        directory.mkdir(parents=True, mode=FOLDER_MODE)
    _tighten(directory, os.stat(directory).st_mode, FOLDER_MODE,
             lambda mode: os.chmod(directory, mode))


def open_private(path: Path, flags: int) -> int:
    """`os.open(path, flags | O_CREAT)` with the file made 0600 (an existing looser file is
    tightened); the caller closes the descriptor."""
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    try:
        _tighten(path, os.fstat(fd).st_mode, FILE_MODE, lambda mode: os.fchmod(fd, mode))
    except BaseException:
        os.close(fd)
        raise
    return fd


def tighten_folder(directory: Path) -> None:
    """At start-up: the folder and every file in it to their private modes (if it exists)."""
    if not directory.is_dir():
        return
    ensure_private_folder(directory)
    for path in directory.iterdir():
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(info.st_mode):
            _tighten(path, info.st_mode, FILE_MODE, functools.partial(os.chmod, path))


def _tighten(path: Path, current: int, wanted: int, change: Callable[[int], None]) -> None:
    mode = stat.S_IMODE(current)
    if mode == wanted:
        return
    try:
        change(wanted)
    except OSError as exc:
        log.warning("cannot make %s mode %o (it is %o: %s); dead-letter entries in it may "
                    "be readable by others", path, wanted, mode, exc.strerror)
        return
    if mode & ~wanted:  # looser than wanted: say so (a stricter umask only needs a fix)
        log.warning("made %s mode %o (it was %o): dead-letter entries hold whole events",
                    path, wanted, mode)
