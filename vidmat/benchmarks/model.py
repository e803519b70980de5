"""``vidmat bench model``: the model alone against the whole engine, side by side.

Both are timed in the same run on the same weights, so the engine's overhead
(upload, resize, normalise, resize back, download) is a ratio that holds on any
machine, while the absolute milliseconds only describe this one.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from vidmat.argtypes import int_list, on_off_list, size_wxh, weights_name
from vidmat.benchmarks import checks
from vidmat.benchmarks.report import random_weights, report
from vidmat.core.settings import MAX_BATCH, EngineConfig
from vidmat.errors import VidmatError
from vidmat.model.spec import WeightsSpec

if TYPE_CHECKING:
    import numpy as np
    import torch

    from vidmat.core.engine import Engine


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "model",
        help="ms per batch and images/s of the bare model and of the engine",
        description="Time the bare model (normalised input already on the device) and the full "
        "engine (uint8 frames in host memory -> alpha at frame resolution in host memory) per "
        "input size, batch size, precision and CUDA-graph setting. Uses random u2netp weights "
        "unless --weights is given: speed does not depend on the values.",
    )
    p.add_argument(
        "--arch",
        default=None,
        choices=("u2netp", "u2net"),
        help="random weights of this architecture (default u2netp); --weights names its own",
    )
    p.add_argument(
        "--weights",
        type=weights_name,
        default=None,
        metavar="NAME|PATH",
        help="time these weights instead",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--sizes",
        type=int_list,
        default=None,
        help="model input sizes (default: 320 on CUDA; 192,256,320 on CPU)",
    )
    p.add_argument(
        "--batches",
        type=int_list,
        default=None,
        help=f"batch sizes, at most {MAX_BATCH}, the engine's largest model call (default: "
        f"1,8,{MAX_BATCH} on CUDA; 1 on CPU)",
    )
    p.add_argument(
        "--precisions",
        default=None,
        help="fp16,bf16,fp32, or auto: what convert, demo and live run on this device, "
        "timed and named as that (default: auto,fp32, i.e. fp16,fp32 on CUDA, bf16,fp32 on "
        "a CPU with bf16 in hardware, fp32 on other CPUs)",
    )
    p.add_argument(
        "--graph",
        type=on_off_list,
        default=None,
        help="on,off: CUDA-graph settings to time (CUDA only; default both)",
    )
    p.add_argument(
        "--channels-last",
        type=on_off_list,
        default=None,
        help="on,off: channels-last (NHWC) settings to time (default: on, the engine's default)",
    )
    p.add_argument(
        "--tta",
        type=on_off_list,
        default=None,
        help="on,off: mirror test-time augmentation settings to time (the engine runs the "
        "model on the frame and its mirror; 'model' stays one plain pass; default: off)",
    )
    p.add_argument(
        "--frame",
        type=size_wxh,
        default=(640, 480),
        metavar="WxH",
        help="frame size fed to the engine (default 640x480)",
    )
    p.add_argument(
        "--iters", type=int, default=None, help="timed iterations per row (default: 50 CUDA, 5 CPU)"
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed iterations first (default: 10 CUDA, 1 CPU)",
    )
    p.add_argument(
        "--threads",
        type=int_list,
        default=None,
        help="CPU threads of each model call, as a list to compare (default: torch's)",
    )
    p.add_argument(
        "--workers",
        type=int_list,
        default=None,
        help="CPU: model calls side by side, each on its share of the batch, as a list to "
        "compare (e.g. --batches 2 --threads 1,2 --workers 1,2; default 1; 'model' stays "
        "one call on the whole batch)",
    )
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.set_defaults(func=run)


def _timeit_pair(
    fa: Callable[[], object], fb: Callable[[], object], iters: int, warmup: int, cuda: bool
) -> tuple[float, float]:
    """Median milliseconds of ``fa`` and ``fb``, run alternately.

    Interleaving makes both see the same machine state (thermal, other load,
    allocator), so their ratio is trustworthy even on a busy 2-core CPU.
    """
    import torch

    for _ in range(warmup):
        fa()
        fb()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(iters):
        for fn, out in ((fa, times[0]), (fb, times[1])):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            out.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times[0]), statistics.median(times[1])


def _bare_model(engine: Engine, frames: np.ndarray, use_graph: bool) -> Callable[[], object]:
    """The model alone on the engine's own preprocessed batch, already on the device.

    The same input values matter: on a CPU the model's speed depends on them
    (random normal input ran measurably slower than real preprocessed frames).
    """
    import torch

    with torch.inference_mode():
        x = engine.preprocess(engine.to_device(frames)).clone()
    model = engine.model

    def eager() -> object:
        with torch.inference_mode():
            return model(x)

    if not use_graph:
        return eager
    with torch.inference_mode():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                model(x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            model(x)
    return graph.replay


def _check(args: argparse.Namespace, device: torch.device) -> list[str]:
    """Refuse bad options before weights load or timing starts; return the precisions.

    A zero batch divided the timings by zero after the run, and an unusable precision
    (fp16 on a CPU) failed only when its rows came up, after the others were timed.
    """
    from vidmat.core.engine import app_precision, precision_name, select_dtype

    checks.model_sizes("--sizes", args.sizes)
    checks.each_at_least("--batches", args.batches, 1)
    if args.batches and max(args.batches) > MAX_BATCH:
        raise VidmatError(
            f"--batches {max(args.batches)} is above {MAX_BATCH}: the engine runs larger "
            f"batches as chunks of {MAX_BATCH}, so time {MAX_BATCH} instead."
        )
    checks.at_least("--iters", args.iters, 1)
    checks.at_least("--warmup", args.warmup, 0)
    checks.each_at_least("--threads", args.threads, 1)
    checks.each_at_least("--workers", args.workers, 1)
    cuda = device.type == "cuda"
    if args.workers and max(args.workers) > 1 and cuda:
        raise VidmatError("--workers above 1 is for the CPU; a GPU runs one call at a time.")
    # By default what the applications run here beside fp32: a CPU with bf16 in hardware
    # timed fp32 alone, which convert, demo and live do not run there.
    text = args.precisions if args.precisions is not None else "auto,fp32"
    precisions = [p.strip() for p in text.split(",") if p.strip()]
    if not precisions:
        raise VidmatError("--precisions names no precision; use fp16, bf16 or fp32.")
    for precision in precisions:
        select_dtype(precision, device)  # unknown, or fp16 off CUDA: one sentence
    # "auto" is timed as what convert, demo and live run here, and named so: it timed
    # eval's fp32 under the name "auto" on a CPU where the applications run bf16
    applications = app_precision(EngineConfig(device=str(device), precision="auto"))
    auto = precision_name(select_dtype(applications.precision, device))
    precisions = list(dict.fromkeys(auto if p == "auto" else p for p in precisions))
    if args.graph and True in args.graph and device.type != "cuda":
        raise VidmatError(
            f"--graph on needs CUDA; {device} runs without graphs (give --graph off)."
        )
    checks.json_path(args)
    return precisions


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from vidmat.core.engine import Engine, select_device
    from vidmat.model.u2net import build_model
    from vidmat.model.weights import load_weights

    device = select_device(args.device)
    cuda = device.type == "cuda"
    precisions = _check(args, device)
    thread_counts: list[int | None] = list(args.threads) if args.threads else [None]
    worker_counts = args.workers or [1]
    sizes = args.sizes or ([320] if cuda else [192, 256, 320])
    batches = args.batches or ([1, 8, MAX_BATCH] if cuda else [1])
    graphs = (args.graph or [True, False]) if cuda else [False]
    layouts = args.channels_last or [True]
    ttas = args.tta or [False]
    iters = args.iters if args.iters is not None else (50 if cuda else 5)
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 1)

    if args.weights:
        model, spec = load_weights(args.weights)
        if args.arch is not None and args.arch != spec.arch:  # it was ignored without a word
            raise VidmatError(
                f"--weights {args.weights} holds {spec.arch} weights, not {args.arch}; "
                "leave --arch out with --weights."
            )
    else:
        arch = args.arch or "u2netp"
        torch.manual_seed(0)
        model = build_model(arch)
        spec = WeightsSpec(name=random_weights(arch), arch=arch, scale="255")
    w, h = args.frame
    rng = np.random.default_rng(0)
    rows = []
    for precision in precisions:
        for size in sizes:
            for use_graph, layout, tta, threads, workers in itertools.product(
                graphs, layouts, ttas, thread_counts, worker_counts
            ):
                cfg = EngineConfig(
                    device=str(device),
                    precision=precision,
                    size=size,
                    cuda_graph=use_graph,
                    channels_last=layout,
                    tta=tta,
                    threads=threads,
                    workers=workers,
                )
                engine = Engine(model, spec, cfg)
                for batch in batches:
                    frames = rng.integers(0, 256, size=(batch, h, w, 3), dtype=np.uint8)
                    bare_ms, engine_ms = _timeit_pair(
                        _bare_model(engine, frames, use_graph),
                        partial(engine.predict, frames),
                        iters,
                        warmup,
                        cuda,
                    )
                    rows.append(
                        {
                            "device": device.type,
                            "precision": precision,
                            "size": size,
                            "batch": batch,
                            "graph": "on" if use_graph else "off",
                            "nhwc": "on" if engine.channels_last else "off",
                            "tta": "on" if tta else "off",
                            "threads": torch.get_num_threads() if not cuda else None,
                            "workers": engine.workers,
                            "model_ms": bare_ms,
                            "engine_ms": engine_ms,
                            "engine_ms_per_img": engine_ms / batch,
                            "model_img_s": batch * 1000.0 / bare_ms,
                            "engine_img_s": batch * 1000.0 / engine_ms,
                            "engine_vs_model": engine_ms / bare_ms,
                        }
                    )
                    print(
                        f"  {precision} {size}px batch {batch} graph {'on' if use_graph else 'off'}"
                        f"{' tta' if tta else ''}"
                        + ("" if cuda else f" {engine.workers}x{torch.get_num_threads()} threads")
                        + f": model {bare_ms:.2f} ms, engine {engine_ms:.2f} ms",
                        flush=True,
                    )
                engine.close()
                del engine
                if cuda:
                    torch.cuda.empty_cache()
    report(
        "model",
        rows,
        args.json,
        extra={"arch": spec.arch, "weights": spec.name, "frame": f"{w}x{h}", "iters": iters},
    )
    return 0
