"""Output files that are never half-written: write to a temporary name, rename when complete."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vidmat.errors import VidmatError


def check_output_path(path: Path, overwrite: bool) -> None:
    """Refuse early, with one sentence, what would fail or destroy data later."""
    if path.exists() and not overwrite:
        raise VidmatError(f"{path} already exists; pass --overwrite to replace it.")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise VidmatError(f"output folder {folder} does not exist.")
    if not os.access(folder, os.W_OK):
        raise VidmatError(f"output folder {folder} is not writable.")


@contextlib.contextmanager
def atomic_output(path: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    The temporary name keeps the real extension (``suffix``) because muxers pick
    the container from it. On any exception, Ctrl-C included, the temporary file
    is removed and nothing appears at ``path``.
    """
    path = Path(path)
    ext = suffix if suffix is not None else path.suffix
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".part{ext}", dir=path.parent or "."
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)
