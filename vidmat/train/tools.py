"""What the ``python -m vidmat.train.*`` tools share: how an error ends them, and checks
of the files they write.

``vidmat`` itself (``vidmat.cli.main``) prints a :class:`VidmatError` as one line and
exits with its ``exit_code`` (2); the training tools each repeated their own ``try`` and
drifted apart (exit 1 in some, 2 in others, a message without the tool's name in one),
so a script could not tell a refused input from a failed comparison by the status.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from vidmat.errors import VidmatError
from vidmat.signals import interrupt_once, stopped


def run_tool(name: str, body: Callable[[], int | None]) -> int:
    """``body()``'s exit status (None: 0); a :class:`VidmatError` is printed as
    ``NAME: error: SENTENCE`` on one line and ends with its exit code, and Ctrl-C, kill
    and a hang-up end it as ``vidmat`` ends (130, 143, 129, one line): they printed a
    KeyboardInterrupt traceback and died by the signal."""
    try:
        with interrupt_once():
            return int(body() or 0)
    except VidmatError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        return stopped(name, exc)


def require_safetensors_out(out: Path) -> None:
    """Refuse a weights --out not named ``.safetensors``: the tools write safetensors
    whatever the name, and vidmat picks the format by the suffix, so ``x.pth`` would be
    written and then refused by every command that loads it."""
    if Path(out).suffix != ".safetensors":
        raise VidmatError(
            f"--out {out} must end in .safetensors: the file is written as safetensors, "
            "and vidmat reads a file by its suffix."
        )


def note_leftover_folders(name: str, out: Path) -> None:
    """Say what earlier runs killed outright (``kill -9``, a power cut) left beside a
    folder output ``out``: hidden temporary folders of its whole size, which nothing else
    names (convert and live say theirs alike)."""
    from vidmat.io.files import leftover_parts, leftovers_note

    for note in leftovers_note(out, leftover_parts(out, folder=True)):
        print(f"{name}: note: {note}", file=sys.stderr)
