"""PyAV as every reader opens it: one place for what differs between its releases.

Why: pip gives Python 3.11 PyAV 18 and Python 3.12+ PyAV 19, and 19 removed the
``metadata_errors`` option of ``av.open``. Tags that are not UTF-8 (a Latin-1 title from
an old camera) make PyAV 18 raise on opening unless told to ignore them, while 19
escapes the bad bytes by itself.
"""

from __future__ import annotations

from typing import Any

import av

#: PyAV's major version: 18 or later (pyproject's floor).
AV_MAJOR = int(av.__version__.split(".")[0])


def av_errors(*more: type[BaseException]) -> tuple[type[BaseException], ...]:
    """What PyAV raises for a damaged or unusable file (caught where a file is read), and
    ``more`` that the caller catches beside them in one ``except``."""
    return (av.error.FFmpegError, OSError, ValueError, *more)


def open_input(path: Any) -> Any:
    """``av.open(path)`` for reading, never failing on a tag that is not UTF-8."""
    if AV_MAJOR < 19:
        return av.open(str(path), metadata_errors="ignore")
    return av.open(str(path))
