"""OpenCV's own log lines kept off the user's terminal, where vidmat says in one sentence
what went wrong: a damaged still printed "libpng error: PNG input buffer is incomplete",
"[ERROR:0@2.1] global loadsave.cpp ... imdecode_" or "TIFF_Error ..." before it, and a
missing camera a screenful of backend warnings."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from vidmat.errors import VidmatError

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


@contextlib.contextmanager
def pixels_checked(path: Path) -> Iterator[None]:
    """OpenCV's refusal of a picture over its size limits (2^30 pixels, 2^20 a side,
    unless the environment's OPENCV_IO_MAX_IMAGE_* say otherwise) as one sentence: it is an exception, not
    the None of any other unreadable file, and a background file of 60000x60000 (or a
    header claiming so) ended the live window with a C++ assertion."""
    try:
        yield
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE" not in str(exc):  # _PIXELS, _WIDTH, _HEIGHT
            raise
        raise VidmatError(
            f"{path} is larger than OpenCV reads (its header says over 2^30 pixels or a "
            "side over 2^20, or over the OPENCV_IO_MAX_IMAGE_* settings); scale it down."
        ) from None


def decode_image(data: np.ndarray, flag: int, path: Path) -> np.ndarray | None:
    """``cv2.imdecode`` of ``path``'s bytes without OpenCV's lines on stderr; None when it
    cannot be decoded.

    A PNG without its end chunk is cut short and refused before libpng sees it: libpng
    prints its error itself, past OpenCV's log."""
    # the end chunk closes the file; a few bytes after it are tolerated, so look at its tail
    if data[:8].tobytes() == _PNG and b"IEND" not in data[-65536:].tobytes():
        return None
    with quiet_opencv(), pixels_checked(path):
        return cv2.imdecode(data, flag)


def read_image_file(path: Path, flag: int) -> np.ndarray | None:
    """``cv2.imread`` with a picture over OpenCV's pixel limit told in one sentence."""
    with pixels_checked(path):
        return cv2.imread(str(path), flag)
