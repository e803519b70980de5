"""OpenCV's own log lines kept off the user's terminal, where vidmat says in one sentence
what went wrong: a damaged still printed "libpng error: PNG input buffer is incomplete",
"[ERROR:0@2.1] global loadsave.cpp ... imdecode_" or "TIFF_Error ..." before it, and a
missing camera a screenful of backend warnings."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import cv2
import numpy as np

_PNG = b"\x89PNG\r\n\x1a\n"


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """OpenCV's log silenced inside the block (it is one setting for the process)."""
    logging_mod = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_mod is None:
        yield
        return
    level = logging_mod.getLogLevel()
    logging_mod.setLogLevel(logging_mod.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging_mod.setLogLevel(level)


def decode_image(data: np.ndarray, flag: int) -> np.ndarray | None:
    """``cv2.imdecode`` without OpenCV's lines on stderr; None when it cannot be decoded.

    A PNG without its end chunk is cut short and refused before libpng sees it: libpng
    prints its error itself, past OpenCV's log."""
    # the end chunk closes the file; a few bytes after it are tolerated, so look at its tail
    if data[:8].tobytes() == _PNG and b"IEND" not in data[-65536:].tobytes():
        return None
    with quiet_opencv():
        return cv2.imdecode(data, flag)
