"""py-spy profiles of the processes under test, for ``bench.run --profile DIR``.

Each profile is recorded over the throughput window only (first read to all events out),
as collapsed stacks (``frame;frame;… count`` per line, the input of flame-graph tools), and
summarised beside it: the share of samples in which each function is on the stack
(inclusive) and at the top of it (self).

Needs py-spy (``pip install -e '.[bench]'``) and permission to ptrace the process (root,
or ``kernel.yama.ptrace_scope = 0``).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

PY_SPY = Path(sys.executable).parent / "py-spy"
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


class Profiler:
    """``py-spy record`` attached to one process until ``stop``."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        self._proc = subprocess.Popen(
            [str(PY_SPY), "record", "--pid", str(pid), "--format", "raw", "--rate", "250",
             "--nonblocking", "--threads", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> Path:
        """End the recording (SIGINT, as Ctrl-C) and write the summary; returns its path."""
        self._proc.send_signal(signal.SIGINT)
        _, err = self._proc.communicate(timeout=60)
        if not self.out.exists():
            raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace')}")
        summary = self.out.with_suffix(".top.txt")
        summary.write_text(summarize(self.out))
        return summary


def _function(frame: str) -> str:
    """``name (path/to/module.py:12)`` → ``name (module.py)``."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    return f"{match['function']} ({Path(match['file']).name})"


def summarize(collapsed: Path, top: int = 25) -> str:
    """The ``top`` functions by inclusive share of samples, with their self share."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for function in set(frames):
            inclusive[function] += count
    lines = [f"{total} samples; % of samples with the function on the stack / on top",
             "incl%   self%  function"]
    share = 100 / max(total, 1)
    for function, count in inclusive.most_common(top):
        lines.append(f"{count * share:5.1f}  {own[function] * share:6.1f}  {function}")
    return "\n".join(lines) + "\n"
