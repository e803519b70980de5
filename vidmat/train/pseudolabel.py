"""Pseudo-labels from a teacher for domains the labelled data does not cover.

The labelled sets are street photos (CCP) and studio shots (VITON); nothing looks
like an indoor webcam or a phone video. MediaPipe's selfie segmentation (shipped
inside the ``mediapipe==0.10.14`` wheel: ``pip install .[teacher]``, a
training-only extra, never a runtime dependency) labels frames of unlabelled
clips; its thresholded masks become one more ``--data`` root for ``vidmat train``.

    python -m vidmat.train.pseudolabel CLIP.mp4 [CLIP ...] --out DIR --every 5

writes ``DIR/images/<clip>_<frame>.jpg`` and ``DIR/masks/<clip>_<frame>.png``
(0 / 255). ``--until`` / ``--from`` keep a part of each clip out for a held-out
check of agreement with the teacher. The folder appears only when every pair is
written (an existing one needs ``--overwrite``). The output is derived from the clips: keep
it outside the repository, like the data it came from.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from vidmat.errors import VidmatError
from vidmat.io.files import (
    FolderKind,
    atomic_folder,
    check_out_apart,
    check_output_path,
    json_record,
    require_file,
    same_file,
)
from vidmat.progress import progress_bar
from vidmat.train.data import write_pair
from vidmat.train.tools import note_leftover_folders, run_tool

#: A teacher maps an RGB uint8 (H,W,3) frame to a float person probability (H,W).
Teacher = Callable[[np.ndarray], np.ndarray]


def mediapipe_teacher(model_selection: int = 0) -> Teacher:
    """MediaPipe selfie segmentation (0 = the general 256x256 model, as in ../shared's scores)."""
    try:
        import mediapipe as mp
    except ImportError as exc:
        raise VidmatError(
            "pseudo-labels need MediaPipe: pip install 'mediapipe==0.10.14' (training only)."
        ) from exc
    seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=model_selection)

    def run(rgb: np.ndarray) -> np.ndarray:
        return np.asarray(seg.process(rgb).segmentation_mask, np.float32)

    return run


def sample_frames(
    path: Path,
    every: int,
    start: float = 0.0,
    stop: float = 1.0,
    warn: Callable[[str], None] | None = None,
    progress: bool = False,
) -> Iterator[tuple[int, np.ndarray]]:
    """(index, RGB frame) for every ``every``-th frame in the [start, stop) fraction of a clip
    (with a bar of those frames when ``progress``).

    What the reader found wrong (a file cut short, damaged frames) goes to ``warn`` once the
    clip is read: the labels are still made from what decodes, but a clip that stops early
    or fills in broken pictures is worth knowing about before it becomes training data.
    """
    from vidmat.io.video import VideoReader

    with VideoReader(path) as reader:
        total = reader.info.frames or 0
        lo, hi = int(start * total), (int(stop * total) if total else None)
        with progress_bar(
            total=None if hi is None else len(range(lo, hi, every)),
            desc=f"label {path.name}",
            unit="frame",
            disable=not progress,
        ) as bar:
            for frame in reader.frames():
                i = frame.index
                if hi is not None and i >= hi:
                    break
                if i >= lo and (i - lo) % every == 0:
                    bar.update(1)
                    yield i, frame.image
        problems = [*reader.warnings, *([reader.incomplete] if reader.incomplete else [])]
        if warn is not None and problems:
            warn(f"{path}: {'; '.join(problems)}; labelled the frames that decode.")
        for note in reader.notes:
            if warn is not None:
                warn(f"{path}: {note}.")  # interlaced frames become combed training images


#: The file that says a folder of pairs is this tool's (what made them, from what):
#: a hand-labelled root has the same images/ and masks/, and --overwrite replaced it.
LABELS = "PSEUDOLABELS.json"
_TOOL = "vidmat pseudolabel"


def _version(package: str) -> str:
    """An installed package's version, for the record ("?" when not installed: a teacher
    given in Python, as the tests do)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def _is_label_folder(path: Path) -> bool:
    """An earlier output of this tool: its record, its images/ and masks/, nothing else."""
    said = json_record(path / LABELS)
    return (
        said is not None
        and said.get("tool") == _TOOL
        and all(
            e.name == LABELS or (e.is_dir() and e.name in ("images", "masks"))
            for e in path.iterdir()
        )
    )


#: What --overwrite replaces.
LABEL_FOLDER = FolderKind("a folder of pseudo-labels this tool wrote", _is_label_folder)


def _check_out_apart(out: Path, clips: Sequence[Path]) -> None:
    """The labels replace --out as a whole once written: an --out that is a clip or a
    folder holding one would delete the clips just read."""
    check_out_apart(
        out,
        [("clip", c) for c in clips],
        "which replacing it would delete; choose an --out outside the clips' folders.",
    )


def check_clip_names(clips: Sequence[Path]) -> None:
    """Refuse clips whose pairs would be written under the same names.

    A pair is named ``<clip stem>_<frame>``, so two clips of one name in different folders
    (or one clip given twice) wrote over each other's pairs while the count added both:
    "4 pairs written" with 2 on disk, and half a clip's frames silently gone.
    """
    seen: dict[str, Path] = {}
    for clip in clips:
        earlier = seen.get(clip.stem)
        if earlier is None:
            seen[clip.stem] = clip
            continue
        if same_file(earlier, clip):
            raise VidmatError(
                f"clip {clip} is given twice ({earlier} and {clip}); name each clip once."
            )
        raise VidmatError(
            f"clips {earlier} and {clip} would both write pairs named {clip.stem}_<frame>; "
            "rename one, or label them in separate runs."
        )


def label_clips(
    clips: Sequence[Path],
    out: Path,
    teacher: Teacher,
    every: int = 5,
    start: float = 0.0,
    stop: float = 1.0,
    long_side: int = 640,
    min_person: float = 0.01,
    overwrite: bool = False,
    warn: Callable[[str], None] | None = None,
) -> int:
    """Write image/mask pairs for sampled frames and return how many; frames with (almost)
    no person are skipped when ``min_person`` > 0, so a clip of hands or an empty room does
    not flood the set."""
    check_clip_names(clips)
    _check_out_apart(out, clips)
    n = 0
    with atomic_folder(out, overwrite=overwrite, kind=LABEL_FOLDER) as tmp:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        for clip in clips:
            for i, rgb in sample_frames(clip, every, start, stop, warn, progress=True):
                h, w = rgb.shape[:2]
                scale = min(1.0, long_side / max(h, w))
                if scale < 1.0:
                    rgb = cv2.resize(
                        rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA
                    )
                mask = (teacher(rgb) >= 0.5).astype(np.uint8) * 255
                if mask.mean() < 255 * min_person:
                    continue
                stem = f"{clip.stem}_{i:05d}"
                if not write_pair(tmp, stem, rgb, mask, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 92):
                    raise VidmatError(f"could not write {stem} to {out} (disk full?).")
                n += 1
        record = {
            "tool": _TOOL,
            "teacher": f"MediaPipe selfie segmentation (mediapipe {_version('mediapipe')})",
            "clips": [str(c) for c in clips],
            "every": every,
            "from": start,
            "until": stop,
            "pairs": n,
        }
        (tmp / LABELS).write_text(json.dumps(record, indent=2) + "\n")
    return n


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vidmat.train.pseudolabel",
        description="Label frames of unlabelled clips with MediaPipe selfie segmentation.",
    )
    p.add_argument("clips", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True, help="folder for images/ and masks/")
    p.add_argument("--every", type=int, default=5, help="keep every N-th frame (default 5)")
    p.add_argument("--from", dest="start", type=float, default=0.0, help="start fraction")
    p.add_argument("--until", dest="stop", type=float, default=1.0, help="stop fraction")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    args = p.parse_args(argv)
    if args.every < 1:
        p.error("--every must be 1 or more.")
    if not 0.0 <= args.start < args.stop <= 1.0:
        p.error("--from and --until are fractions of each clip with 0 <= from < until <= 1.")
    return run_tool("pseudolabel", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    for c in args.clips:
        require_file(c, "clip")
    check_clip_names(args.clips)
    _check_out_apart(args.out, args.clips)
    # as every other tool: a missing parent folder is refused, not made (a typo in the
    # path made a tree of folders somewhere unexpected)
    check_output_path(args.out, args.overwrite, folder=True, kind=LABEL_FOLDER)
    note_leftover_folders("pseudolabel", args.out)
    teacher = mediapipe_teacher()
    n = label_clips(
        args.clips,
        args.out,
        teacher,
        args.every,
        args.start,
        args.stop,
        overwrite=args.overwrite,
        warn=lambda message: print(f"warning: {message}", file=sys.stderr),
    )
    print(f"{n} pairs written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
