"""The values `AgentOsSink.emit` returns: Agent OS's own `SinkExportResult` when Agent OS is
importable (its processor compares results by identity with its enum), else plain ints with
the same values, so govpipe never needs Agent OS installed."""

from __future__ import annotations

import contextlib
import enum
import warnings
from collections.abc import Iterator
from typing import cast

# Agent OS 5 warns, on import, that its old package names are deprecated, whichever package
# installed it; the warning is not about anything govpipe or its user can change.
AGENT_OS_RENAME_WARNING = r".* is deprecated.* Use agent-governance-toolkit-core instead"


@contextlib.contextmanager
def agent_os_import() -> Iterator[None]:
    """Import Agent OS modules inside this, without its package-rename warnings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=AGENT_OS_RENAME_WARNING,
                                category=DeprecationWarning)
        yield


class PlainExportResult(enum.IntEnum):
    """Agent OS `SinkExportResult` values, for when Agent OS is not installed."""

    SUCCESS = 0
    FAILURE = 1
    DROPPED = 2


def _export_result_type() -> type[PlainExportResult]:
    try:
        with agent_os_import():
            from agent_os.event_sink import SinkExportResult
    except ImportError:
        return PlainExportResult
    # Same member names and values; typed as the plain enum so callers read .SUCCESS etc.
    return cast(type[PlainExportResult], SinkExportResult)


ExportResult = _export_result_type()
