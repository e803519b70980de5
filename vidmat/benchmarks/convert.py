"""``vidmat bench convert``: conversion fps against a plain transcode of the same clip, same run.

The plain transcode (decode -> encode through the same reader, threads and writer) is
the ceiling a conversion can reach on a machine; the ratio convert/transcode says how
much the model and post-processing cost on top, and holds across machines better than
either fps alone (the GPU target is >= 0.8 at 1080p). Resident memory is sampled during
the conversion: with bounded queues it must stay flat however long the clip is.

The source is made first, from --input scaled to --height and looped to --frames, and
encoded as H.264, so every resolution is measured on the same content. Random u2netp
weights are used unless --weights is given: speed does not depend on the values.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidmat.benchmarks import checks
from vidmat.benchmarks.live import rss_mib
from vidmat.benchmarks.report import random_weights, report
from vidmat.core.settings import PostprocessConfig
from vidmat.errors import VidmatError

if TYPE_CHECKING:
    from vidmat.core.engine import Engine

#: The most frames a run converts: about an hour at 30 fps.
MAX_FRAMES = 100_000


def add_parser(sub: argparse._SubParsersAction) -> None:
    from vidmat.commands._options import add_engine_options
    from vidmat.io.formats import FORMATS

    p = sub.add_parser(
        "convert",
        help="conversion fps vs a plain decode+encode transcode of the same clip, and RSS",
        description=__doc__.split("\n\n")[1] + " " + __doc__.split("\n\n")[2],
    )
    p.add_argument(
        "--input",
        default=None,
        metavar="CLIP",
        help="source content (default: the demo clip assets/demo.mp4)",
    )
    p.add_argument(
        "--height", type=int, default=720, help="scale the source to this height (default 720)"
    )
    p.add_argument(
        "--frames", type=int, default=96, help="frames to convert (the source loops; default 96)"
    )
    p.add_argument("--format", choices=list(FORMATS), default="mp4", help="output format")
    p.add_argument("--bg", default=None, help="background (default: green for mp4)")
    p.add_argument(
        "--smoothing",
        type=float,
        default=PostprocessConfig().smoothing,
        help=f"as for convert (default {PostprocessConfig().smoothing})",
    )
    p.add_argument(
        "--lookahead",
        type=int,
        default=PostprocessConfig().lookahead,
        metavar="K",
        help=f"as for convert (default {PostprocessConfig().lookahead})",
    )
    p.add_argument("--batch", type=int, default=None, help="frames per model call")
    p.add_argument(
        "--rss-every", type=float, default=0.5, help="seconds between RSS samples (default 0.5)"
    )
    p.add_argument(
        "--keep",
        metavar="DIR",
        default=None,
        help="keep the clips made in DIR (clips there from an earlier run only with --overwrite)",
    )
    p.add_argument("--json", metavar="PATH", default=None, help="write the results as JSON")
    add_engine_options(p, random_weights=True, workers=True)
    p.set_defaults(func=run)


def make_source(src: Path, dst: Path, height: int, frames: int) -> dict[str, Any]:
    """``src`` scaled to ``height`` (even width, aspect kept) and looped to ``frames`` frames."""
    import cv2

    from vidmat.io.files import atomic_output
    from vidmat.io.video import EncodeConfig, VideoReader, VideoWriter

    if height < 16 or height > 4320:
        raise VidmatError(f"--height must be between 16 and 4320, got {height}.")
    if frames < 1:
        raise VidmatError(f"--frames must be at least 1, got {frames}.")
    with VideoReader(src) as r:
        info = r.info
        images = []
        for f in r.frames():
            images.append(f.image)
            if len(images) >= frames:
                break
    width = max(2, round(info.width * height / info.height / 2) * 2)
    rate = info.rate or Fraction(30)
    # A time base that makes every frame an integer number of ticks.
    tb = 1 / (rate * 100) if rate.denominator == 1 else 1 / rate
    step = round(1 / (rate * tb))
    interp = cv2.INTER_AREA if height < info.height else cv2.INTER_LINEAR
    scaled = [cv2.resize(im, (width, height), interpolation=interp) for im in images]
    enc = EncodeConfig(crf=18, preset="veryfast")
    # Under a temporary name: a --keep clip cut short by Ctrl-C was taken for a whole one
    # by the next run ("already exists; pass --overwrite").
    with (
        atomic_output(dst) as tmp,
        VideoWriter(tmp, "mp4", width, height, tb, rate, encode=enc) as w,
    ):
        for i in range(frames):
            # Ping-pong through the clip so a loop has no jump (no false scene cut).
            n = len(scaled)
            k = i % (2 * n - 2) if n > 1 else 0
            w.write(scaled[k if k < n else 2 * n - 2 - k], i * step, step)
    return {"width": width, "height": height, "frames": frames, "rate": str(rate)}


class RssSampler:
    """Resident memory every ``every`` seconds in a background thread: (t, MiB) pairs."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._t0 = 0.0

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append((round(time.perf_counter() - self._t0, 2), round(rss_mib(), 1)))

    def __enter__(self) -> RssSampler:
        self._t0 = time.perf_counter()
        self.samples.append((0.0, round(rss_mib(), 1)))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((round(time.perf_counter() - self._t0, 2), round(rss_mib(), 1)))

    def summary(self) -> dict[str, float]:
        """Start, peak, end, and growth from the first to the last quarter of the run."""
        import numpy as np

        values = [v for _, v in self.samples]
        q = max(1, len(values) // 4)
        return {
            "rss_start_mib": values[0],
            "rss_peak_mib": max(values),
            "rss_end_mib": values[-1],
            "rss_growth_mib": round(float(np.median(values[-q:]) - np.median(values[:q])), 1)
            if len(values) >= 4
            else 0.0,
        }


def _engine(args: argparse.Namespace) -> tuple[Engine, str]:
    """The engine convert would build, and the weights' name for the report."""
    from vidmat.commands._options import engine_config_from_args
    from vidmat.core.engine import Engine
    from vidmat.model.spec import DEFAULT_WEIGHTS, REGISTRY
    from vidmat.model.u2net import build_model
    from vidmat.pipelines.convert import engine_config_for_files

    if args.weights:
        return Engine.from_config(
            engine_config_for_files(engine_config_from_args(args))
        ), args.weights
    spec = replace(REGISTRY[DEFAULT_WEIGHTS], name=random_weights())
    cfg = replace(engine_config_for_files(engine_config_from_args(args)), weights="random")
    return Engine(build_model("u2netp"), spec, cfg), random_weights()


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad options before anything is printed, loaded or encoded.

    Why: the source is made and transcoded before the conversion is timed, so a bad
    count, background or --keep used to fail after that work, or after a line that
    announced it (``making a 720p source of -5 frames``).
    """
    from vidmat.io.images import load_background

    if args.height < 16 or args.height > 4320:
        raise VidmatError(f"--height must be between 16 and 4320, got {args.height}.")
    if args.height % 2:  # the clip came out padded to the next: the table named a size not run
        raise VidmatError(f"--height must be even (H.264 stores even sizes), got {args.height}.")
    checks.at_least("--frames", args.frames, 1)
    checks.at_most("--frames", args.frames, MAX_FRAMES, "its source clip is made in full first")
    checks.at_least("--batch", args.batch, 1)
    checks.above_zero("--rss-every", args.rss_every)
    checks.existing_file("--input", args.input)
    if args.bg is not None:
        load_background(args.bg)  # an unknown name or unreadable file: one sentence now
    checks.json_path(args)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from vidmat.commands.demo import DEMO_CLIP
    from vidmat.core.engine import precision_name
    from vidmat.pipelines.convert import ConvertConfig, convert_video, transcode

    check_args(args)
    src = Path(args.input).expanduser() if args.input else DEMO_CLIP
    cfg = ConvertConfig(
        fmt=args.format,
        background=args.bg,
        post=PostprocessConfig(
            smoothing=args.smoothing,
            lookahead=args.lookahead,
        ),
        batch=args.batch,
    ).validate()
    engine, weights_name = _engine(args)
    source_name = f"source_{args.height}p.mp4"
    out_name = "convert" + (".mp4" if args.format in ("mp4", "mask") else f".{args.format}")
    out_name = "convert_png/" if args.format == "png" else out_name
    if args.keep:
        clips = (source_name, "transcode.mp4", out_name)
        checks.keep_folder("--keep", args.keep, clips, args.overwrite, src)
    holder = (
        contextlib.nullcontext(str(Path(args.keep).expanduser()))
        if args.keep
        else tempfile.TemporaryDirectory(prefix="vidmat-bench-")
    )
    with holder as tmp:
        folder = Path(tmp)
        source = folder / source_name
        print(f"making a {args.height}p source of {args.frames} frames from {src} ...")
        clip = make_source(src, source, args.height, args.frames)
        # Warm-up outside the timing: first-call allocations, thread pools, CUDA graphs.
        warm = np.zeros((clip["height"], clip["width"], 3), np.uint8)
        for _ in range(2):
            engine.predict_lowres(np.stack([warm] * cfg.batch_for(engine)))

        plain = transcode(source, folder / "transcode.mp4", fmt=args.format, overwrite=True)
        out = folder / out_name.rstrip("/")
        with RssSampler(args.rss_every) as rss:
            conv = convert_video(engine, source, out, cfg, overwrite=True)
    ratio = conv.fps / plain.fps if plain.fps else 0.0
    rows = [
        {"run": "transcode", "frames": plain.frames, "seconds": plain.seconds, "fps": plain.fps},
        {"run": "convert", "frames": conv.frames, "seconds": conv.seconds, "fps": conv.fps},
    ]
    mem = rss.summary()
    extra = {
        "clip": clip,
        "format": args.format,
        "device": str(engine.device),
        "precision": precision_name(engine.dtype),  # as --precision and bench model say it
        "model_size": engine.size,
        "batch": cfg.batch_for(engine),
        "torch_threads": torch.get_num_threads(),
        "model_workers": engine.workers,
        "weights": weights_name,
        "ratio_convert_over_transcode": round(ratio, 4),
        **mem,
        "rss_samples": rss.samples,
    }
    print(
        f"{clip['width']}x{clip['height']} {args.format}, {engine.device} "
        f"{extra['precision']}, model input {engine.size}, batch {extra['batch']}, "
        f"{engine.workers} model call(s) side by side, {extra['torch_threads']} torch "
        "thread(s) each"
    )
    report("convert", rows, args.json, extra=extra)
    print(f"ratio convert/transcode: {ratio:.3f}")
    print(
        f"RSS during conversion: start {mem['rss_start_mib']:.0f} MiB, peak "
        f"{mem['rss_peak_mib']:.0f} MiB, end {mem['rss_end_mib']:.0f} MiB, growth first->last "
        f"quarter {mem['rss_growth_mib']:+.1f} MiB"
    )
    return 0
