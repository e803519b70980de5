"""User-facing errors.

Anything a user can cause (a missing file, a non-video, bad weights, an
unwritable folder) raises :class:`VidmatError` with one clear sentence. The CLI
prints that sentence and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations

import re
import sys

#: Terminal escapes (bold, colour, cursor moves) that torch and tqdm write; in a log or a
#: message box they show as garbage such as ``\x1b[1m``.
TERMINAL_CODES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def plain_text(text: str) -> str:
    """Another library's message as one plain line: no terminal escapes, no line breaks."""
    return " ".join(TERMINAL_CODES.sub("", text).split())


class VidmatError(Exception):
    """An error caused by input or environment, with a message meant for the user."""

    exit_code: int = 2


class WeightsError(VidmatError):
    """A weights file is missing, corrupt, of another architecture or not a checkpoint."""


def warn(message: str) -> None:
    """Say on stderr what a user should know of a run that goes on."""
    print(f"vidmat: warning: {message}", file=sys.stderr)
