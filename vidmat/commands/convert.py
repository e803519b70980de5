"""``vidmat convert INPUT... [-o OUTPUT|DIR]``: video files (and stills) to greenscreen or alpha.

Every input is tried; one that fails gets one sentence on stderr and the others still
convert; the exit code is non-zero when any failed. Outputs appear only when complete. A
truncated or damaged input that decodes part way is an error too (exit 2), but the frames
that decode are converted rather than lost.
"""

from __future__ import annotations

import argparse
import glob
import re
import sys
import textwrap
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from vidmat.argtypes import positive_int
from vidmat.commands._options import (
    CONTRAST_HELP,
    FEATHER_HELP,
    GROW_HELP,
    add_engine_options,
    engine_config_from_args,
)
from vidmat.core.backgrounds import parse_background
from vidmat.core.settings import MAX_LOOKAHEAD, PostprocessConfig
from vidmat.errors import VidmatError, warn
from vidmat.io.files import check_not_input
from vidmat.io.formats import (
    FORMAT_HELP,
    FORMATS,
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    is_frame_folder,
)
from vidmat.progress import progress_bar
from vidmat.signals import interrupt_once

if TYPE_CHECKING:
    from vidmat.io.video import VideoInfo
    from vidmat.pipelines.convert import ConvertConfig, ConvertResult

# PyAV, torch and OpenCV are imported where a conversion needs them, not at the top:
# `vidmat convert --help` then prints at once, without loading any of them.


def add_parser(sub: argparse._SubParsersAction) -> None:
    formats = "\n".join(f"  {name:5s} {text}" for name, text in FORMAT_HELP.items())
    p = sub.add_parser(
        "convert",
        help="convert video files (or images) to greenscreen, alpha or a new background",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            textwrap.fill(
                "Separate the person from the background in video files and write a "
                "composite (greenscreen by default) or a video with alpha. Timestamps "
                "(23.976, variable frame rate), frame count, rotation and every audio "
                "track (with its name and language) are kept; subtitle and data streams, "
                "chapters and the file's own metadata (title, creation time) are not. "
                "Still images (jpg, png, webp) give an RGBA PNG, or a composite when --bg "
                "is given (an animated WebP or PNG: its first picture, with a warning). "
                "Each output appears only when complete.",
                78,
            )
            + "\n\n"
            "Formats and where they play:\n" + formats + "\n\n"
            "mp4 has no alpha channel: for transparency use mov, webm or png."
        ),
        epilog=(
            "examples:\n"
            "  vidmat convert clip.mp4                      # -> clip_green.mp4\n"
            "  vidmat convert clip.mp4 --bg beach.jpg -o out.mp4\n"
            "  vidmat convert clip.mp4 --format webm        # -> clip_alpha.webm (VP9 + alpha)\n"
            "  vidmat convert videos/ '*.mov' -o converted/ --format mov\n"
            "  vidmat convert portrait.jpg                  # -> portrait_alpha.png (RGBA)\n"
            "\n"
            "exit status:\n"
            "  0    every input converted\n"
            "  2    an input failed or was truncated (the others, and a truncated input's\n"
            "       decodable frames, are still converted), or an option was refused before\n"
            "       anything ran (a usage error, a --bg file that cannot be read, --crf out\n"
            "       of range)\n"
            "  1    an unexpected error, shown with a traceback (a bug: please report it)\n"
            "  130  Ctrl-C (SIGINT; a second one while it stops is ignored)\n"
            "  143  kill or timeout (SIGTERM)\n"
            "  129  the terminal closed (SIGHUP; under nohup the run goes on)\n"
            "  141  the reader of stdout went away (SIGPIPE)\n"
            "No partial output is left behind in any case."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video/image files, folders or globs")
    p.add_argument(
        "-o",
        "--output",
        metavar="OUTPUT|DIR",
        help="default: beside each input (clip.mp4 -> clip_green.mp4). A name with the "
        "format's suffix (out.mp4, out.mov, out.webm; cut.png for a still) is that file, for "
        "one input only. Otherwise it is a folder, created if missing, that gets each input's "
        "default name: an existing folder, a name ending in /, any name when several inputs "
        "are given (after folders and patterns are expanded), and a name without a suffix "
        "(-o takes -> takes/clip_green.mp4). Exception: --format png writes a video as a "
        "folder of frames, and one input's -o NAME without a suffix is that frame folder "
        "itself (NAME/frame_000001.png)",
    )
    p.add_argument(
        "--bg",
        default=None,
        metavar="BG",
        help="background: green (default for mp4), blue, a common colour name (red, white, "
        "black, ...) or #RRGGBB, blur or blur:SIGMA, an image or video file, transparent "
        "(mov/webm/png only) or mask (the matte as white on black)",
    )
    p.add_argument(
        "--format",
        choices=list(FORMATS),
        default=None,
        help="mp4 (default), mov, webm, png or mask; taken from -o's suffix when not given",
    )
    p.add_argument(
        "--smoothing",
        type=float,
        default=PostprocessConfig().smoothing,
        metavar="S",
        help="temporal smoothing of the matte, 0 (off) .. 1 (strong); "
        f"default {PostprocessConfig().smoothing}",
    )
    p.add_argument(
        "--lookahead",
        type=int,
        default=PostprocessConfig().lookahead,
        metavar="K",
        help="smooth each frame with the K frames before and after it: no lag, less flicker "
        f"than live can have; 0 = the causal filter live uses; 0..{MAX_LOOKAHEAD} "
        f"(default {PostprocessConfig().lookahead})",
    )
    matte = p.add_argument_group(
        "matte",
        textwrap.fill(
            "shape the matte after smoothing and edge refinement, as live's sliders do: "
            "e.g. --threshold 0.6 --contrast 2 drops faint ghosts of objects the model was "
            "unsure of (alpha around 0.3) and hardens soft edges",
            78,
        ),
    )
    d = PostprocessConfig()
    matte.add_argument(
        "--threshold",
        type=float,
        default=d.threshold,
        metavar="T",
        help="the matte level 0..1 that becomes half, the centre of the contrast curve: "
        "higher keeps less; solid person and background stay solid "
        f"(default {d.threshold:g})",
    )
    matte.add_argument(
        "--contrast",
        type=float,
        default=d.contrast,
        metavar="C",
        help=CONTRAST_HELP,
    )
    matte.add_argument(
        "--grow",
        type=int,
        default=d.erode_dilate_px,
        metavar="PX",
        help=GROW_HELP,
    )
    matte.add_argument(
        "--feather",
        type=float,
        default=d.feather_px,
        metavar="PX",
        help=FEATHER_HELP,
    )
    p.add_argument(
        "--crf",
        type=int,
        default=None,
        help="quality of mp4 and mask (H.264: 0..51, default 18) and webm (VP9: 0..63, default "
        "30); lower is better and larger. mov (ProRes 4444, fixed quality) and png (lossless) "
        "ignore it",
    )
    p.add_argument(
        "--batch",
        type=positive_int,
        default=None,
        help="frames per model call (default 8 on CUDA; on a CPU one per --workers, the "
        "calls run side by side)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars, and no summary unless an input failed (then on stderr)",
    )
    add_engine_options(p, workers=True)
    p.set_defaults(func=run)


# --------------------------------------------------------------------------- inputs
@dataclass
class Job:
    src: Path
    dst: Path | None = None
    error: str | None = None  # set when the input itself is bad

    @property
    def is_image(self) -> bool:
        return self.src.suffix.lower() in IMAGE_SUFFIXES


def expand_inputs(items: list[str]) -> tuple[list[Job], list[Path]]:
    """Files, folders (their videos and images, sorted) and globs; bad items become errors.

    Returns the jobs, in the order given, and what a folder or pattern found that is this
    tool's own earlier output of another input found with it (``clip_green.mp4`` beside
    ``clip.mp4``, a ``clip_alpha/`` PNG folder): converting a folder twice must not convert
    its own results. A file the user names is always converted.
    """
    # Each entry: an error Job, or a path, whether the user named it (not a match), and
    # the files it stands for (a folder's listed once, here).
    entries: list[Job | tuple[Path, bool, list[Path] | None]] = []
    for item in items:
        path = Path(item).expanduser()
        if any(ch in item for ch in "*?[") and not path.exists():
            matches = sorted(glob.glob(str(path)))
            # What a folder scan would take of them: its videos and images, and folders
            # that hold some ('clips/*' matched a README and an empty folder: 2 failed).
            found = [
                f
                for f in (_found(Path(m), named=False) for m in matches)
                if (bool(f[2]) if f[2] is not None else _is_media(f[0]))
            ]
            if not matches:
                entries.append(Job(path, error=f"{item}: no file matches this pattern."))
            elif not found:
                entries.append(Job(path, error=f"{item}: no video or image matches this pattern."))
            entries += found
        elif not path.exists():
            entries.append(Job(path, error=f"{path} does not exist."))
        else:
            entries.append(_found(path, named=True))
    stems = {
        f.stem
        for e in entries
        if not isinstance(e, Job)
        for f in ([e[0]] if e[2] is None else e[2])
    }
    skipped: list[Path] = []
    jobs: list[Job] = []
    seen: set[Path] = set()
    for entry in entries:
        if isinstance(entry, Job):
            jobs.append(entry)
            continue
        path, named, listed = entry
        if listed is None:
            files = [path]
        elif _own_output(path.name, stems) and (not named or is_frame_folder(path)):
            # named too: 'clips/*' in the shell names the earlier clip_alpha/ frame folder,
            # whose frames were converted into it, and clip.mp4 then refused as replacing them
            skipped.append(path)
            continue
        else:
            files = listed
            if not files:
                jobs.append(Job(path, error=f"{path} contains no videos or images to convert."))
        named_file = named and listed is None
        for f in files:
            if not named_file and _own_output(f.stem, stems):
                skipped.append(f)
            elif f.resolve() not in seen:  # the same file named twice converts once
                seen.add(f.resolve())
                jobs.append(Job(f))
    # a file found by a folder and named as well is converted, not left out
    return jobs, [p for p in skipped if p.resolve() not in seen]


def _found(path: Path, named: bool) -> tuple[Path, bool, list[Path] | None]:
    """An input path, whether the user named it, and a folder's files (None for a file)."""
    return path, named, (_folder(path) if path.is_dir() else None)


def _own_output(name: str, stems: set[str]) -> bool:
    """``clip_green`` when ``clip`` is among the inputs: an earlier result, not a source.

    Also ``clip_mov_green``: the name a clash of ``clip.mov`` with ``clip.mp4`` tells the
    user to give (see :func:`_clash_error`), and ``clip_green-2``.
    """
    from vidmat.pipelines.convert import OUTPUT_TAGS

    base, _, tag = name.rpartition("_")
    # clip_green-2: kept under that name when another run took clip_green meanwhile
    if re.sub(r"-\d+$", "", tag) not in OUTPUT_TAGS:
        return False
    stem, _, ext = base.rpartition("_")
    return base in stems or (stem in stems and f".{ext}" in VIDEO_SUFFIXES | IMAGE_SUFFIXES)


def _is_media(path: Path) -> bool:
    """A video or image by its suffix: what a folder scan or a pattern takes."""
    return path.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES


def _folder(folder: Path) -> list[Path]:
    """A folder's videos and images, sorted (not its sub-folders: PNG outputs live there)."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and _is_media(p)
    )


def _format_from(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    if args.output:
        suffix = Path(args.output).suffix.lower()
        for name in ("mov", "webm", "mp4"):
            if suffix == FORMATS[name][0]:
                return name
        if suffix in IMAGE_SUFFIXES:
            # An image name: a still is written as that image (RGBA where it can be), and a
            # video is refused by plan_outputs rather than written as H.264 under it.
            return "png"
    return "mp4"


def plan_outputs(jobs: list[Job], args: argparse.Namespace, cfg: ConvertConfig) -> Path | None:
    """Fill in each job's output path; -o is a file only for a single input.

    Returns the output folder if this call created it (removed again if nothing lands in it).
    """
    from vidmat.pipelines.convert import check_paths, default_output, image_config

    out = Path(args.output).expanduser() if args.output else None
    live = [j for j in jobs if j.error is None]
    slash = str(args.output).endswith(("/", "\\"))  # "-o v1.mp4/": a folder, as help says
    if (
        out is not None
        and len(jobs) > 1
        and not out.is_dir()
        and not slash
        and out.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES
    ):
        raise VidmatError(
            f"{len(jobs)} inputs cannot all be written to the one file {out}; "
            "give -o a folder instead."
        )
    # --format png writes one video's frames into -o NAME itself; a still's is a file
    frames_itself = cfg.fmt == "png" and len(jobs) == 1 and not jobs[0].is_image
    as_folder = out is not None and (
        # An earlier frame folder of that one video is replaced, not written into: the
        # same command run again put its frames in out/clip_alpha/ beside the old ones,
        # even with --overwrite.
        (out.is_dir() and not (frames_itself and is_frame_folder(out)))
        or slash
        or len(jobs) > 1
        or (not out.suffix and not frames_itself)
    )
    for j in live:
        jcfg = image_config(cfg, args.bg is not None) if j.is_image else cfg
        if out is None:
            j.dst = default_output(j.src, jcfg)
        elif as_folder:
            j.dst = default_output(j.src, jcfg, out)
        else:
            if j.is_image:
                _check_image_suffix(out)
            else:
                _check_suffix(out, cfg.fmt, args.format is not None)
            j.dst = out
    # Inputs whose outputs would land on one path fail, each with its sentence, in their
    # place in the batch; the rest still convert (one clash must not stop a folder).
    by_dst: dict[Path, list[Job]] = {}
    for j in live:
        assert j.dst is not None
        by_dst.setdefault(j.dst.resolve(), []).append(j)
    for group in by_dst.values():
        if len(group) > 1:
            for j in group:
                j.error = _clash_error(j, group)
    live = [j for j in live if j.error is None]
    held = _held_by_inputs(jobs)
    for j in live:
        j.error = _onto_other_input(j, held)
    live = [j for j in live if j.error is None]
    created = None
    if as_folder and out is not None and not out.exists() and live:
        top = out  # the highest folder this call creates
        while not top.parent.exists():
            top = top.parent
        try:
            out.mkdir(parents=True)
        except OSError as exc:
            raise VidmatError(f"cannot create the output folder {out} ({exc.strerror}).") from None
        created = top
    # Outputs that cannot be written are known now, before a bar starts or a model loads.
    bg = parse_background(args.bg) if args.bg is not None else None
    weights = _weights_path(args.weights)
    try:
        for j in live:
            assert j.dst is not None
            try:
                if bg is not None and bg.kind == "file" and bg.path is not None:
                    check_not_input(j.dst, Path(bg.path).expanduser(), source_name="--bg file")
                if weights is not None:
                    check_not_input(j.dst, weights, source_name="--weights file")
                check_paths(
                    j.src, j.dst, args.overwrite, folder=cfg.fmt == "png" and not j.is_image
                )
            except VidmatError as exc:
                j.error = str(exc)
    except BaseException:  # Ctrl-C in the checks (thousands of inputs): the folder made goes
        if created is not None:
            _remove_empty_tree(created)
        raise
    return created


def _held_by_inputs(jobs: list[Job]) -> dict[Path, Job]:
    """Every input of the run and every folder above one (resolved), with the job it is or
    holds: built once, so a folder of a thousand clips is not resolved a million times."""
    held: dict[Path, Job] = {}
    for j in jobs:
        src = j.src.resolve()
        for place in (src, *src.parents):
            held.setdefault(place, j)
    return held


def _onto_other_input(job: Job, held: dict[Path, Job]) -> str | None:
    """Why ``job``'s output would destroy another input of this run, or None.

    ``vidmat convert clip.mp4 clip_green.mp4 --overwrite`` replaced the second input with
    the first one's result (and a PNG frame folder would take an input inside it along);
    inputs are never written, --overwrite or not. ``held`` is :func:`_held_by_inputs`.
    """
    assert job.dst is not None
    other = held.get(job.dst.resolve())
    if other is None or other is job:
        return None
    return (
        f"the output of {job.src}, {job.dst}, would replace {other.src}, another input of "
        f"this run; convert {job.src} with -o and another name."
    )


def _clash_error(job: Job, group: list[Job]) -> str:
    """Why ``job`` was not converted, and a run that converts it: on its own, with ``-o``.

    Separate runs alone do not help, since each would write the same default name (the
    second then finds it already exists). The example name adds what tells the inputs apart
    (``take1_mov_green.mp4``, ``clip_b_green.mp4``); :func:`_own_output` knows the first
    form too, so converting the folder again does not take that output for a new input.
    """
    assert job.dst is not None
    others = [str(o.src) for o in group if o is not job]
    names = ", ".join([str(job.src), *others[:-1]]) + f" and {others[-1]}"
    verb, none = ("both", "neither") if len(group) == 2 else ("all", "none")
    text = f"{names} would {verb} be written to {job.dst}, so {none} was converted; "
    suffix = job.src.suffix.lower()
    parent = job.src.resolve().parent.name
    if all(o.src.suffix.lower() != suffix for o in group if o is not job) and suffix:
        mark = suffix[1:]
    elif parent and all(o.src.resolve().parent.name != parent for o in group if o is not job):
        mark = parent
    else:
        return text + f"convert {job.src} in a run of its own with -o and a name of its own."
    rest = job.dst.name[len(job.src.stem) :]  # "_green.mp4", "_alpha" (a PNG folder)
    example = job.dst.with_name(f"{job.src.stem}_{mark}{rest}")
    return text + f"convert {job.src} in a run of its own, adding -o {example} to the same options."


def _check_suffix(out: Path, fmt: str, given: bool = True) -> None:
    """A file named .mp4 must not hold WebM, nor a PNG sequence be named like a video.
    ``given``: --format was on the command line (else it came from -o's suffix, and the
    refusal speaks of the suffix: "-o y.mkv" was told "--format mp4 writes .mp4 files")."""
    suffix = out.suffix.lower()
    want = FORMATS[fmt][0]
    if fmt == "png" and suffix in VIDEO_SUFFIXES | IMAGE_SUFFIXES:
        # "-o out.mp4 --format png" was told to "name the output out.mp4 for a video"
        other = (
            f"or leave out --format png to write {out.name}"
            if given and suffix in (".mp4", ".mov", ".webm")
            else f"or name the output {out.stem}.mp4 for a video"
        )
        raise VidmatError(
            f"a video is written as PNG frames into a folder (--format png); give -o a folder "
            f"name such as {out.stem}, not {out.name}, {other}."
        )
    if fmt != "png" and suffix and suffix != want:
        if not given:
            raise VidmatError(
                f"vidmat does not write {suffix} files; name the output {out.stem}.mp4 "
                f"(or .mov or .webm, which keep alpha), or {out.name}/ for a folder."
            )
        raise VidmatError(f"--format {fmt} writes {want} files; name the output {out.stem}{want}.")


def _check_image_suffix(out: Path) -> None:
    """A still image is written as an image; a video container name would only mislead."""
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise VidmatError(
            f"a still image is written as an image; name the output {out.stem}.png "
            "(or .webp, .tif; .jpg carries no transparency)."
        )


# --------------------------------------------------------------------------- running
#: The formats --crf sets, and the top of each one's scale (x264's, VP9's). ProRes 4444
#: (mov) has a fixed quality and PNG is lossless: --crf does nothing there.
CRF_TOP: dict[str, int] = {"mp4": 51, "mask": 51, "webm": 63}


def _config(args: argparse.Namespace) -> ConvertConfig:
    if args.output is not None and not str(args.output).strip():
        # "" meant "no -o" without a word: a script's empty variable wrote beside the input
        raise VidmatError(
            "-o was given an empty name; name a file or folder, or leave -o out to write "
            "beside each input."
        )
    fmt = _format_from(args)
    top = CRF_TOP.get(fmt)
    if args.crf is not None and top is not None and not 0 <= args.crf <= top:
        raise VidmatError(f"--crf must be between 0 and {top} for {fmt}, got {args.crf}.")
    post = PostprocessConfig(
        smoothing=args.smoothing,
        lookahead=args.lookahead,
        threshold=args.threshold,
        contrast=args.contrast,
        erode_dilate_px=args.grow,
        feather_px=args.feather,
    ).validate()  # a value out of range is said before torch and PyAV load (a second)
    from vidmat.io.images import load_background
    from vidmat.io.video import EncodeConfig
    from vidmat.pipelines.convert import ConvertConfig

    cfg = ConvertConfig(
        fmt=fmt,
        background=args.bg,
        post=post,
        encode=EncodeConfig(crf=args.crf),
        batch=args.batch,
    ).validate()  # --bg as given: "leave out --bg" for a mask, before "no such file"
    if args.bg is None:
        return cfg
    # Open a background file once, before any input: a bad one is one error, not one per file.
    return replace(cfg, background=load_background(args.bg, warn=warn))  # checked as given above


class _Bars:
    """Bars on stderr: one over the frames of all files, one for the current file (only
    when there are several)."""

    def __init__(self, total_frames: int | None, files: int, quiet: bool) -> None:
        self.quiet = quiet
        self.total = None
        self.file = None
        self.several = files > 1
        if quiet:
            return
        self.total = progress_bar(
            total=total_frames,
            unit="frame",
            desc=f"all {files} files" if self.several else "converting",
            position=0,
        )

    def start_file(self, name: str, info: VideoInfo | None) -> None:
        if self.quiet or not self.several:
            return
        frames = info.frames_expected if info is not None else 1
        self.file = progress_bar(
            total=frames, unit="frame", desc=name[:40], position=1, leave=False
        )

    def step(self, n: int) -> None:
        if self.file is not None:
            self.file.update(n)
        if self.total is not None:
            self.total.update(n)

    def end_file(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def finish(self) -> None:
        """Every input done: the overall bar ends full, where a frame count was estimated
        (:attr:`VideoInfo.frames_expected`) a little off, or an input failed."""
        if self.total is not None and self.total.total and self.total.n != self.total.total:
            self.total.total = self.total.n
            self.total.refresh()

    def write(self, text: str) -> None:
        if self.total is not None:
            self.total.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.total is not None:
            self.total.close()


def _probe_all(jobs: list[Job]) -> int | None:
    """Read every video's header first: the overall bar needs the frame total, and a bad
    file is known before an hour of converting the others."""
    from vidmat.io.video import probe

    total = 0
    for j in jobs:
        if j.error is not None:
            continue
        if j.is_image:
            total += 1
            continue
        try:
            frames = probe(j.src).frames_expected
        except VidmatError as exc:
            j.error = str(exc)
            continue
        if frames is None:
            return None
        total += frames
    return total


def run(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if args.crf is not None and cfg.fmt not in CRF_TOP and not args.quiet:
        print(
            f"vidmat: note: --crf has no effect on --format {cfg.fmt} "
            f"({'ProRes 4444 has a fixed quality' if cfg.fmt == 'mov' else 'PNG is lossless'}); "
            f"it sets the quality of {', '.join(CRF_TOP)} only.",
            file=sys.stderr,
        )
    jobs, skipped = expand_inputs(args.inputs)
    if skipped and not args.quiet:
        names = ", ".join(p.name for p in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        print(
            f"vidmat: note: left out {len(skipped)} earlier output(s) of these inputs ({names}); "
            "name a file to convert it anyway.",
            file=sys.stderr,
        )
    if (
        args.format in ("mp4", "mov", "webm")
        and args.bg is None
        and not args.quiet
        and any(j.is_image for j in jobs)
    ):
        print(
            f"vidmat: note: stills are written as transparent PNGs whatever --format says "
            f"(--format {args.format} is for the videos); give --bg, e.g. --bg green, for "
            "a composite.",
            file=sys.stderr,
        )
    created = plan_outputs(jobs, args, cfg)
    try:
        return _convert_all(args, cfg, jobs)
    finally:
        if created is not None:  # made for outputs that all failed (or Ctrl-C): leave no trace
            _remove_empty_tree(created)


def _weights_path(name: str | None) -> Path | None:
    """The file --weights reads, that no output may replace (``-o w.mp4 --overwrite
    --weights w.mp4`` wrote the video over the checkpoint), or None where it names none
    (loading says why)."""
    if name is None:
        return None
    from vidmat.model.weights import weights_file

    return weights_file(name)


def _remove_empty_tree(top: Path) -> None:
    """Remove ``top`` if it holds nothing but empty folders."""
    if not top.is_dir() or any(p.is_file() for p in top.rglob("*")):
        return
    for d in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        d.rmdir()
    top.rmdir()


def _convert_all(args: argparse.Namespace, cfg: ConvertConfig, jobs: list[Job]) -> int:
    from vidmat.pipelines.convert import (
        convert_image,
        convert_video,
        engine_config_for_files,
        image_config,
    )

    total = _probe_all(jobs)
    work = [j for j in jobs if j.error is None]
    engine = None
    if work:
        from vidmat.core.engine import Engine

        engine = Engine.from_config(engine_config_for_files(engine_config_from_args(args)))
    # With nothing to convert a bar would only sit at 0 in front of the error lines.
    bars = _Bars(total, len(jobs), args.quiet or not work)
    results: list[ConvertResult] = []
    failed = damaged = 0
    t0 = time.perf_counter()
    # The first Ctrl-C or kill stops the run; a second one must not cut its cleanup short
    # (worker threads outliving the interpreter abort the process).
    with interrupt_once():
        try:
            for job in jobs:
                if job.error is not None:
                    failed += 1
                    bars.write(f"vidmat: error: {job.error}")
                    bars.end_file()
                    continue
                assert engine is not None and job.dst is not None
                try:
                    if job.is_image:
                        bars.start_file(job.src.name, None)
                        r = convert_image(
                            engine,
                            job.src,
                            job.dst,
                            image_config(cfg, args.bg is not None),
                            args.overwrite,
                        )
                        bars.step(1)
                    else:
                        r = convert_video(
                            engine,
                            job.src,
                            job.dst,
                            cfg,
                            overwrite=args.overwrite,
                            progress=bars.step,
                            on_start=partial(bars.start_file, job.src.name),
                        )
                except VidmatError as exc:
                    failed += 1
                    bars.end_file()
                    bars.write(f"vidmat: error: {exc}")
                    continue
                bars.end_file()
                results.append(r)
                for w in r.warnings:
                    bars.write(f"vidmat: warning: {r.input.name}: {w}")
                if r.incomplete:
                    damaged += 1
                    bars.write(
                        f"vidmat: error: {r.input} is truncated or damaged: {r.incomplete}; "
                        f"the {r.frames} frame{'s' if r.frames != 1 else ''} that decoded "
                        f"{'were' if r.frames != 1 else 'was'} converted to {r.output}."
                    )
                if not args.quiet:
                    audio = f", audio {r.audio}" if r.audio else ""
                    bars.write(
                        f"{r.input} -> {r.output} ({r.frames} frame{'s' if r.frames != 1 else ''}, "
                        f"{r.fps:.1f} fps{audio})"
                    )
            bars.finish()
        finally:
            bars.close()
    elapsed = time.perf_counter() - t0
    frames = sum(r.frames for r in results)
    if not args.quiet or failed or damaged:
        line = f"converted {len(results)} of {len(jobs)} input{'s' if len(jobs) != 1 else ''}"
        if results:
            fps = frames / elapsed if elapsed > 0 else 0.0
            line += (
                f": {frames} frame{'s' if frames != 1 else ''} in {elapsed:.1f} s ({fps:.1f} fps)"
            )
        if damaged:
            line += f"; {damaged} truncated or damaged"
        if failed:
            line += f"; {failed} failed"
        print(line, file=sys.stderr if args.quiet else sys.stdout)
    return 2 if failed or damaged else 0
