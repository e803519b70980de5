"""``vidmat bench postprocess``: smoothing + refine + composite, ms per frame, per background.

Times exactly what the pipelines run per frame after the model: :meth:`PostProcessor.process`
on a uint8 frame already on the device and a model-resolution alpha (by default the
shipped weights' input size). The
model itself is ``vidmat bench model``. Frames and masks are synthetic (a moving
disc on a textured picture): the cost does not depend on the content.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from typing import TYPE_CHECKING

from vidmat.argtypes import float_list, size_list
from vidmat.benchmarks import checks
from vidmat.benchmarks.report import report
from vidmat.core.backgrounds import Background
from vidmat.core.settings import PostprocessConfig
from vidmat.errors import VidmatError
from vidmat.model.spec import DEFAULT_WEIGHTS, MAX_INPUT_SIZE, REGISTRY

if TYPE_CHECKING:
    import numpy as np
    import torch

KINDS = ("green", "image", "video", "blur", "transparent", "mask")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "postprocess",
        help="ms per frame of smoothing + edge refinement + compositing",
        description="Time PostProcessor.process (temporal smoothing, guided upsampling of a "
        "model-resolution mask to the frame, despill, compositing) per frame size, background kind, "
        "smoothing strength and device. Frames are synthetic; the cost does not depend on them.",
    )
    p.add_argument(
        "--devices",
        default="auto",
        help="cpu, cuda or both as cpu,cuda (auto: cuda if present, and cpu)",
    )
    p.add_argument(
        "--sizes",
        type=size_list,
        default=None,
        help="WIDTHxHEIGHT list (default 640x480,1920x1080)",
    )
    p.add_argument(
        "--backgrounds",
        default=",".join(KINDS),
        help=f"kinds or specs, comma-separated (default {','.join(KINDS)})",
    )
    p.add_argument(
        "--smoothing", type=float_list, default=[0.0, 0.5], help="strengths (default 0,0.5)"
    )
    native = REGISTRY[DEFAULT_WEIGHTS].input_size
    p.add_argument(
        "--lowres",
        type=int,
        default=native,
        help=f"model output side (default {native}, the shipped weights' input; official "
        "checkpoints run at 320)",
    )
    p.add_argument(
        "--no-refine", action="store_true", help="plain bilinear upsampling instead of guided"
    )
    p.add_argument("--no-despill", action="store_true", help="skip colour decontamination")
    p.add_argument(
        "--guide",
        choices=("auto", "rgb", "grey"),
        default="auto",
        help="guided-filter guide (auto: rgb on CUDA, grey on CPU)",
    )
    p.add_argument(
        "--frames", type=int, default=None, help="timed frames per row (default 40 CPU / 200 CUDA)"
    )
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch and OpenCV CPU threads (on a busy 2-core machine 1 is fastest)",
    )
    p.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON")
    p.set_defaults(func=run)


#: Kinds timed on random pictures made for the run rather than on a file or a named colour.
SYNTHETIC = ("image", "video")


def _background(kind: str, rng: np.random.Generator) -> Background:
    import numpy as np

    if kind == "image":
        return Background.from_image(rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8))
    if kind == "video":
        frames = [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(4)]
        return Background.from_video(frames=frames, fps=30.0)
    raise ValueError(f"{kind!r} is not a synthetic background kind")


def _load_backgrounds(text: str) -> dict[str, Background | None]:
    """Each --backgrounds entry opened once, before timing; None for the synthetic kinds.

    A name that is neither a known kind nor an existing file is refused in one sentence,
    and an image or video file is opened the way convert and live open it, so a file
    background is timed on its own pixels instead of failing in the compositor.
    """
    from vidmat.io.images import load_background

    kinds = [k.strip() for k in text.split(",") if k.strip()]
    if not kinds:
        raise VidmatError(
            f"--backgrounds names no background; use kinds from {','.join(KINDS)} or files."
        )
    return {k: None if k in SYNTHETIC else load_background(k) for k in kinds}


def check_args(args: argparse.Namespace) -> tuple[list[torch.device], dict[str, Background | None]]:
    """Refuse bad options before any frame is timed; return the devices and backgrounds.

    Why up front: the rows multiply (devices x sizes x backgrounds x strengths), so a bad
    last entry used to fail after minutes of timing, and --frames 0 meant the default.
    """
    checks.at_least("--frames", args.frames, 1)
    checks.at_least("--warmup", args.warmup, 0)
    if args.sizes is not None and not args.sizes:  # ',' fell back to the defaults, 1080p
        raise VidmatError("--sizes names no size; give at least one, e.g. --sizes 640x480.")
    checks.at_least("--lowres", args.lowres, 1)
    checks.at_most("--lowres", args.lowres, MAX_INPUT_SIZE, "the largest model input")
    checks.at_least("--threads", args.threads, 1)
    if not args.smoothing:
        raise VidmatError("--smoothing names no strength; give at least one, e.g. 0,0.5.")
    for s in args.smoothing:
        PostprocessConfig(smoothing=s).validate()
    devices = checks.devices(args.devices)
    backgrounds = _load_backgrounds(args.backgrounds)
    checks.json_path(args)
    return devices, backgrounds


def _clip(
    width: int, height: int, lowres: int, n: int, device: torch.device
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """n frames (uint8 on device) and low-res alphas of a disc moving across a picture."""
    import numpy as np
    import torch

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            128 + 60 * np.sin(xx / 23.0) * np.cos(yy / 31.0),
            128 + 60 * np.cos(xx / 17.0),
            128 + 60 * np.sin(yy / 13.0),
        ],
        -1,
    )
    frames, alphas = [], []
    ly, lx = np.mgrid[0:lowres, 0:lowres].astype(np.float32) / lowres
    for i in range(n):
        cx = 0.3 + 0.4 * (i % 10) / 10
        d = np.hypot(xx / width - cx, yy / height - 0.5)
        f = np.where((d < 0.25)[..., None], (200.0, 150.0, 120.0), base)
        frames.append(torch.from_numpy(np.clip(f, 0, 255).astype(np.uint8)).to(device))
        ld = np.hypot(lx - cx, ly - 0.5)
        a = np.clip((0.25 - ld) * 40 + 0.5, 0, 1).astype(np.float32)
        alphas.append(torch.from_numpy(a)[None, None].to(device))
    return frames, alphas


def _post_config(args: argparse.Namespace, smoothing: float) -> PostprocessConfig:
    """The post-processing a row times, from the command line."""
    return PostprocessConfig(
        smoothing=smoothing,
        refine=not args.no_refine,
        despill=not args.no_despill,
        guided_color=None if args.guide == "auto" else args.guide == "rgb",
    )


def time_rows(
    args: argparse.Namespace,
    devices: list[torch.device],
    backgrounds: dict[str, Background | None],
) -> list[dict]:
    import numpy as np
    import torch

    from vidmat.core.postprocess import PostProcessor, colour_guide

    rng = np.random.default_rng(0)
    sizes = args.sizes or [(640, 480), (1920, 1080)]
    kinds = list(backgrounds)
    rows = []
    for device in devices:
        n = args.frames if args.frames is not None else (200 if device.type == "cuda" else 40)
        # the guide the refinement used on this device (the settings keep what was asked)
        rgb = colour_guide(_post_config(args, 0.0), device.type)
        guide = None if args.no_refine else ("rgb" if rgb else "grey")
        for (w, h), kind, s in itertools.product(sizes, kinds, args.smoothing):
            frames, alphas = _clip(w, h, args.lowres, 10, device)
            cfg = _post_config(args, s)
            post = PostProcessor(cfg, backgrounds[kind] or _background(kind, rng))
            times, cpu = [], []
            for i in range(args.warmup + n):
                f, a = frames[i % 10], alphas[i % 10]
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0, c0 = time.perf_counter(), time.process_time()
                post.process(f, a, t=i / 30.0)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if i >= args.warmup:
                    times.append((time.perf_counter() - t0) * 1000.0)
                    cpu.append((time.process_time() - c0) * 1000.0)
            times.sort()
            med = statistics.median(times)
            rows.append(
                {
                    "device": device.type,
                    "size": f"{w}x{h}",
                    "background": kind,
                    "smoothing": s,
                    "guide": guide,
                    "ms_median": med,
                    "ms_min": times[0],
                    "ms_p90": times[min(len(times) - 1, int(0.9 * len(times)))],
                    # CPU time this process spent per frame: robust to other load on the machine
                    # (with several threads it sums them).
                    "cpu_ms": statistics.median(cpu),
                    "fps": 1000.0 / med,
                }
            )
            print(f"  {device.type} {w}x{h} {kind:>11} smoothing={s:g}: {med:.2f} ms", flush=True)
    return rows


def run(args: argparse.Namespace) -> int:
    import torch

    devices, backgrounds = check_args(args)
    if args.threads:
        import cv2

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    with torch.inference_mode():
        rows = time_rows(args, devices, backgrounds)
    report(
        "postprocess",
        rows,
        args.json,
        extra={
            "settings": {
                "lowres": args.lowres,
                "refine": not args.no_refine,
                "despill": not args.no_despill,
                "guide": args.guide,
                "threads": torch.get_num_threads(),
            }
        },
    )
    return 0
