"""Options shared by every command that runs the model, so they read the same everywhere."""

from __future__ import annotations

import argparse

from vidmat.argtypes import model_size, positive_int, weights_name
from vidmat.core.settings import (
    MAX_FEATHER_PX,
    MAX_GROW_PX,
    PRECISIONS,
    EngineConfig,
    PostprocessConfig,
)
from vidmat.model.spec import DEFAULT_WEIGHTS, MAX_INPUT_SIZE, MIN_INPUT_SIZE, REGISTRY

#: --contrast in convert and live: the same curve, the same words.
CONTRAST_HELP = (
    "steepness of that curve: 1 = the model's own soft edges "
    f"(default {PostprocessConfig().contrast:g}), 2 twice as hard, inf a hard cut-out"
)
#: --infer-every in live and bench live: one value, applied in both modes, the same words.
INFER_EVERY_HELP = (
    "run the model on every N-th frame at most; smoothing carries the mask between "
    "(async mode also skips the frames that come while the model is busy; default 1)"
)
GROW_HELP = (
    "grow the matte by PX frame pixels, or shrink it with a negative PX to take a halo of "
    f"the old background off the edge; -{MAX_GROW_PX}..{MAX_GROW_PX} "
    f"(default {PostprocessConfig().erode_dilate_px})"
)

FEATHER_HELP = (
    f"soften the edge over PX frame pixels, 0..{MAX_FEATHER_PX} "
    f"(default {PostprocessConfig().feather_px:g})"
)


def add_engine_options(
    parser: argparse.ArgumentParser,
    default_size: int | None = None,
    random_weights: bool = False,
    workers: bool = False,
    cpu_size: int | None = None,
) -> None:
    """``random_weights``: without --weights the command times random u2netp weights
    (the benchmarks: speed does not depend on the values). ``workers``: the command has
    several frames or images at hand at once, so model calls can run side by side
    (--workers). ``cpu_size``: the command's own default --size on a CPU (live's)."""
    g = parser.add_argument_group("model")
    g.add_argument(
        "--weights",
        type=weights_name,
        default=None if random_weights else "default",
        metavar="NAME|PATH",
        help=f"registered weights ({', '.join(REGISTRY)}"
        + ("; default: random u2netp ones" if random_weights else f"; default {DEFAULT_WEIGHTS}")
        + ") or a path to an official U-2-Net checkpoint you downloaded (u2netp.pth, "
        "u2net.pth, u2net_human_seg.pth), a vidmat .safetensors file or a vidmat train "
        "checkpoint (RUN/last.pt: its EMA, at the run's size)",
    )
    g.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N (default: auto)",
    )
    g.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto: fp16 on CUDA; on a CPU with AVX512-BF16 or AMX (recent Xeon, EPYC Zen 4; "
        "'vidmat info' says) bf16 for convert, demo and live, where it runs the model about "
        "twice as fast as fp32 for a matte a fraction of a level apart, and fp32 for eval; "
        "fp32 on other CPUs, where bf16 is emulated and slower",
    )
    g.add_argument(
        "--size",
        type=model_size,
        default=default_size,
        metavar="PX",
        help=f"model input side in pixels, a multiple of 32 from {MIN_INPUT_SIZE} to "
        f"{MAX_INPUT_SIZE} (default: the weights' own: "
        f"{REGISTRY[DEFAULT_WEIGHTS].input_size} for {DEFAULT_WEIGHTS}, 320 for official "
        "checkpoints"
        + (f"; on a CPU {cpu_size}, or the weights' own if smaller" if cpu_size else "")
        + "); larger sees small, distant people better, smaller runs faster on a CPU "
        "(the cost grows with the square of the side)",
    )
    g.add_argument(
        "--no-cuda-graph",
        dest="cuda_graph",
        action="store_false",
        help="run CUDA eagerly instead of replaying captured CUDA graphs",
    )
    g.add_argument(
        "--tta",
        action="store_true",
        help="also run the model on the mirrored frame and average the two mattes, for twice "
        "the model's work: with the shipped weights about level on still photos (val/ccp IoU "
        "0.9343 -> 0.9341), worse on smoothed video (DAVIS through convert's path 0.770 -> 0.743)",
    )
    g.add_argument(
        "--zoom",
        action="store_true",
        help="look again at a window around the person the first pass found and average "
        "the two looks, for up to twice the model's work: people small in the frame are seen "
        "larger (DAVIS IoU 0.751 -> 0.788 at 256 px); frames the person already fills are "
        "left to the first pass",
    )
    g.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help=(
            "CPU threads for each model call (default: see --workers; given alone, one "
            "call with that many)"
            if workers
            else "CPU threads for torch (default on a CPU: 1, leaving the other cores to "
            "capture, compositing and display)"
        ),
    )
    if workers:
        g.add_argument(
            "--workers",
            type=positive_int,
            default=None,
            help="CPU: model calls run side by side, each on its own frames or images "
            "(default 2, with the cores split between them: (cores - 1) // 2 threads each in "
            "convert and demo, which decode and encode beside the model, cores // 2 in eval; "
            "at least 1). On a 2-core CPU two calls of one thread converted 1.6x faster "
            "than one call of one, and 6x faster than one call of two while another program "
            "was busy",
        )


def engine_config_from_args(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(
        weights=args.weights,
        device=args.device,
        precision=args.precision,
        size=args.size,
        cuda_graph=args.cuda_graph,
        threads=args.threads,
        workers=getattr(args, "workers", None),
        tta=args.tta,
        zoom=args.zoom,
    )
