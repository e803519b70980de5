"""``vidmat demo``: convert the clip shipped in assets/ with the shipped weights.

The one command a new user runs to see the main job work end to end, with no file of
their own: it says where the result is and how long it took.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from vidmat.commands._options import add_engine_options, engine_config_from_args
from vidmat.core.settings import PostprocessConfig
from vidmat.errors import VidmatError, warn
from vidmat.io.formats import FORMATS, IMAGE_SUFFIXES, VIDEO_SUFFIXES
from vidmat.resources import assets_dir
from vidmat.signals import interrupt_once

#: The demo clip made by assets/make_demo.py (see assets/README.md).
DEMO_CLIP = assets_dir() / "demo.mp4"
DEFAULT_DIR = Path("vidmat-demo-output")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="convert the shipped demo clip to greenscreen and say where the result is",
        description="Convert assets/demo.mp4 (4 s, 23.976 fps, with audio) with the shipped "
        "weights. The result goes to ./vidmat-demo-output/ unless -o names another folder. "
        "On a 2-core CPU this takes under 20 seconds.",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        default=str(DEFAULT_DIR),
        help=f"folder for the result (created if missing; default ./{DEFAULT_DIR}/)",
    )
    p.add_argument("--bg", default=None, help="background, as for convert (default green)")
    p.add_argument(
        "--format", choices=list(FORMATS), default="mp4", help="as for convert (default mp4)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a previous demo result")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_engine_options(p, workers=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not DEMO_CLIP.is_file():
        raise VidmatError(
            f"the demo clip {DEMO_CLIP} is missing; run 'python assets/make_demo.py' in a "
            "source checkout to make it."
        )
    folder = Path(args.output).expanduser()
    if folder.exists() and not folder.is_dir():
        raise VidmatError(f"{folder} exists and is not a folder; give -o a folder.")
    if not folder.exists() and folder.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES:
        raise VidmatError(
            f"-o is the folder the demo writes into (it names the file itself); "
            f"{folder.name} looks like a file name."
        )
    # PyAV, torch and OpenCV only from here: `vidmat demo --help` loads none of them.
    from vidmat.io.video import probe
    from vidmat.pipelines.convert import (
        ConvertConfig,
        convert_video,
        default_output,
        engine_config_for_files,
    )

    cfg = ConvertConfig(fmt=args.format, background=args.bg, post=PostprocessConfig()).validate()
    if args.bg is not None:
        from vidmat.io.images import load_background

        load_background(args.bg)  # a bad --bg fails here, before any bar or folder
    dst = default_output(DEMO_CLIP, cfg, folder)
    if dst.exists() and not args.overwrite:
        raise VidmatError(f"{dst} already exists; pass --overwrite to make it again.")
    from vidmat.core.engine import Engine

    # The engine first: a wrong --weights or --device must not leave an empty folder behind.
    engine = Engine.from_config(engine_config_for_files(engine_config_from_args(args)))
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VidmatError(f"cannot create the folder {folder} ({exc.strerror}).") from None
    bar = None
    if not args.quiet:
        from vidmat.progress import progress_bar

        # The total comes from the header first, so the bar never draws without one.
        bar = progress_bar(total=probe(DEMO_CLIP).frames, unit="frame", desc="demo")

    try:
        with interrupt_once():
            result = convert_video(
                engine,
                DEMO_CLIP,
                dst,
                cfg,
                overwrite=args.overwrite,
                progress=bar.update if bar is not None else None,
            )
    except BaseException:
        # A bad --bg or Ctrl-C: leave no empty folder behind that this run made.
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    finally:
        if bar is not None:
            bar.close()
    for w in [*result.warnings, *([result.incomplete] if result.incomplete else [])]:
        warn(w)
    audio = f", audio {result.audio}" if result.audio else ""
    print(
        f"demo: {result.frames} frames in {result.seconds:.1f} s ({result.fps:.1f} fps) on "
        f"{engine.device.type} in {str(engine.dtype).replace('torch.', '')}{audio}"
    )
    print(f"result: {dst.resolve()}")
    return 0
