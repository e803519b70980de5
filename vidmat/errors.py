"""User-facing errors.

Anything a user can cause (a missing file, a non-video, bad weights, an
unwritable folder) raises :class:`VidmatError` with one clear sentence. The CLI
prints that sentence and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations


class VidmatError(Exception):
    """An error caused by input or environment, with a message meant for the user."""

    exit_code: int = 2


class WeightsError(VidmatError):
    """A weights file is missing, corrupt, of another architecture or not a checkpoint."""
