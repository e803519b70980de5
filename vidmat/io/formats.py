"""Output formats by name, kept apart from :mod:`vidmat.io.video` so naming one needs no PyAV.

``vidmat bench`` lists ``--format`` choices while it builds its parser, and a GPU machine
that only trains or benchmarks the model may have no PyAV at all.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from vidmat.io.files import FolderKind

#: Input files by suffix, the one list for convert's folder scan, its image/video split
#: and background files: still images, and videos (an animated GIF plays as a video).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset(
    {
        ".mp4",
        ".mov",
        ".mkv",
        ".avi",
        ".webm",
        ".m4v",
        ".mpg",
        ".mpeg",
        ".ts",
        ".wmv",
        ".flv",
        ".gif",
        # camcorders (AVCHD), phones of old, broadcast and web: a folder run left them out
        ".mts",
        ".m2ts",
        ".3gp",
        ".3g2",
        ".mxf",
        ".ogv",
        ".vob",
        ".dv",
    }
)

#: Output formats: name -> (file suffix, has alpha).
FORMATS: dict[str, tuple[str, bool]] = {
    "mp4": (".mp4", False),
    "mov": (".mov", True),
    "webm": (".webm", True),
    "png": ("", True),  # a folder
    "mask": (".mp4", False),
}

#: One line per format for ``--help``.
FORMAT_HELP: dict[str, str] = {
    "mp4": "H.264 mp4 with the background composited in; plays everywhere (no alpha)",
    "mov": "ProRes 4444 .mov with alpha; for Final Cut, Premiere, DaVinci, After Effects",
    "webm": "VP9 .webm with alpha; plays transparent in Chrome/Firefox/Edge and OBS (not Safari)",
    "png": "folder of RGBA PNGs (+ frames.csv timestamps, audio.m4a); any editor",
    "mask": "greyscale matte as H.264 mp4 (white = person), for a luma track matte",
}

#: The files of a PNG-sequence output (``--format png``): frame_000001.png ..., the
#: timestamps, and the sound beside them.
FRAME_CSV = "frames.csv"
FRAME_AUDIO = "audio.m4a"
_FRAME_FILE = re.compile(r"frame_\d{6,}\.png")
#: What a file browser leaves in a folder it showed (macOS, Windows): not the user's files.
_FOLDER_JUNK = (".DS_Store", "Thumbs.db", "desktop.ini")


def frame_name(number: int) -> str:
    """The file name of frame ``number`` (from 1) of a PNG sequence."""
    return f"frame_{number:06d}.png"


def is_frame_folder(path: Path) -> bool:
    """Whether ``path`` is a folder holding a PNG sequence vidmat wrote and nothing else:
    the only kind of folder ``--overwrite`` replaces. A project folder that happened to
    hold a ``frames.csv`` was deleted whole, with everything else in it."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        return False
    names = {e.name for e in entries}
    return FRAME_CSV in names and all(
        e.is_file(follow_symlinks=False)
        and (e.name in (FRAME_CSV, FRAME_AUDIO, *_FOLDER_JUNK) or _FRAME_FILE.fullmatch(e.name))
        for e in entries
    )


#: What ``--format png`` replaces with ``--overwrite``.
FRAME_FOLDER = FolderKind("a PNG frame folder vidmat wrote", is_frame_folder)
