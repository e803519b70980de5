"""Up-front checks of benchmark options, shared by every ``vidmat bench`` target.

Why: a benchmark spends seconds to minutes timing before it reports, so a bad count,
size, device or JSON path must be refused with one sentence before that work starts,
not surface as a traceback (or a silent default, or an endless loop) part-way through
or at the very end. Every check raises :class:`VidmatError`, which the CLI prints as
one error line with exit code 2. Nothing heavy is imported here at module level:
``vidmat bench model`` and ``bench train`` must run where PyAV is missing.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vidmat.argtypes import model_size
from vidmat.errors import VidmatError
from vidmat.io.files import (
    check_not_input,
    check_output_path,
    check_results_apart,
    require_file,
)

if TYPE_CHECKING:
    import torch


def _show(value: float) -> str:
    """``3`` rather than ``3.0`` in a message: the user typed a count."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _finite(option: str, value: float) -> None:
    """An endless duration or count is no benchmark (and ``time.sleep(inf)`` overflows)."""
    if math.isinf(value):
        raise VidmatError(f"{option} must be a finite number, got {_show(value)}.")


def at_least(option: str, value: float | None, low: float) -> None:
    """Refuse ``value`` below ``low`` (None is "not given": the benchmark's default).

    Written as ``not value >= low`` so that NaN, which compares false both ways, is
    refused too instead of reaching ``time.sleep`` or a loop bound.
    """
    if value is None:
        return
    _finite(option, value)
    if not value >= low:
        raise VidmatError(f"{option} must be {_show(low)} or more, got {_show(value)}.")


def at_most(option: str, value: float | None, high: float, why: str) -> None:
    """Refuse ``value`` above ``high``, saying ``why`` there is a ceiling: an unbounded
    count tried to allocate 149 GiB (--lowres 100000) or filled /tmp with a source clip."""
    if value is not None and value > high:
        raise VidmatError(f"{option} must be at most {_show(high)} ({why}), got {_show(value)}.")


def above_zero(option: str, value: float | None) -> None:
    """Refuse a duration or rate that is zero, negative or NaN: they loop or divide by it."""
    if value is None:
        return
    _finite(option, value)
    if not value > 0:
        raise VidmatError(f"{option} must be more than 0, got {_show(value)}.")


def each_at_least(option: str, values: Sequence[float] | None, low: float) -> None:
    """Every entry of a comma-separated list option, and the list not empty once given."""
    if values is None:
        return
    if not values:
        raise VidmatError(f"{option} names no value; give at least one, e.g. {option} 1.")
    for v in values:
        at_least(option, v, low)


def model_sizes(option: str, values: Sequence[int] | None) -> None:
    """Model input sides as the rest of vidmat takes them (U-Net halves them five times)."""
    if values is None:
        return
    if not values:
        raise VidmatError(f"{option} names no size; give at least one, e.g. {option} 256.")
    for v in values:
        try:
            model_size(str(v))
        except argparse.ArgumentTypeError as exc:
            raise VidmatError(f"{option} {exc}.") from None


def json_path(args: argparse.Namespace) -> None:
    """Probe where ``--json`` will be written before any timing, not at the end of the run.

    An existing file is refused without ``--overwrite`` (every target has it, from
    vidmat/commands/bench.py), as ``vidmat eval --json`` refuses one: the JSON of an
    earlier run is often the baseline a new one is compared with. Never, --overwrite or
    not, the weights or an input file the benchmark reads.
    """
    if args.json is None:
        return
    if not str(args.json).strip():  # it wrote nothing and said nothing
        raise VidmatError("--json names no file; give a path, e.g. --json result.json.")
    from vidmat.model.weights import weights_file

    path = Path(args.json)
    check_output_path(path, overwrite=args.overwrite, stream_ok=True)
    weights = getattr(args, "weights", None)
    files = [("--weights file", weights_file(weights) if weights else None)]
    for name in ("input", "bg", "camera", "backgrounds"):
        value = getattr(args, name, None)
        if isinstance(value, (str, Path)) and value:
            # --backgrounds green,bg.png names files among its kinds
            files += [(f"--{name} file", Path(v).expanduser()) for v in str(value).split(",")]
    check_results_apart(path, "--json", files, data_folders(args))


def data_folders(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """The folders ``bench train --data`` reads (ROOT/images and ROOT/masks of each)."""
    from vidmat.train.data import SourceSpec, root_folders

    folders = []
    for text in getattr(args, "data", None) or []:
        try:
            root = SourceSpec.parse(str(text)).path
        except VidmatError:
            continue  # refused with its own sentence when the data is read
        folders += [("--data folder", folder) for folder in root_folders(root)]
    return folders


def devices(text: str, option: str = "--devices") -> list[torch.device]:
    """``auto`` or a comma-separated list of cpu, cuda, cuda:N, each usable here.

    ``auto`` is CUDA when there is a GPU, and the CPU. A device named explicitly that
    this machine lacks is an error rather than a skipped row: a table missing the
    row the user asked for is easy to misread.
    """
    import torch

    from vidmat.core.engine import select_device

    text = text.strip()
    if text == "auto":
        return ([torch.device("cuda")] if torch.cuda.is_available() else []) + [torch.device("cpu")]
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise VidmatError(f"{option} names no device; use auto, cpu, cuda, cuda:N or cpu,cuda.")
    out: list[torch.device] = []
    for name in names:
        try:
            device = torch.device(name)
        except RuntimeError:
            device = None
        if device is None or device.type not in ("cpu", "cuda"):
            raise VidmatError(
                f"{option}: unknown device {name!r}; use auto, or cpu, cuda, cuda:N or a list "
                "of them such as cpu,cuda."
            )
        device = select_device(name, option)  # a CUDA device this machine lacks
        if device not in out:
            out.append(device)
    return out


def existing_file(option: str, path: str | Path | None) -> None:
    """An input clip named on the command line must be a file before anything is made."""
    if path is not None:
        require_file(Path(path).expanduser(), option)


def keep_folder(
    option: str,
    path: str | Path,
    clips: Sequence[str] = (),
    overwrite: bool = False,
    source: Path | None = None,
) -> Path:
    """Make (or reuse) the folder that keeps a benchmark's clips, and probe it.

    A regular file of that name, an unwritable parent (/proc) or an unwritable
    folder is refused in one sentence before the clips are made. The ``clips`` it will
    write there (a name ending in ``/`` is a folder) are checked as any output is: an
    existing one is replaced only with ``--overwrite``, and never when it is the
    benchmark's own ``source`` clip (``--input``), which is read to make them.
    """
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise VidmatError(f"{option} {path} is a file; name a folder to keep the clips in.")
    for name in clips:
        clip = folder / name.rstrip("/")
        if source is not None:
            check_not_input(clip, source, output_name="kept clip", source_name="--input")
        if clip.exists():
            check_output_path(clip, overwrite, folder=name.endswith("/"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VidmatError(
            f"cannot make the {option} folder {path} ({exc.strerror or type(exc).__name__})."
        ) from None
    check_output_path(folder / "clip.mp4", overwrite=True)
    return folder
