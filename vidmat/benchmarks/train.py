"""``vidmat bench train``: where a training step's time goes, batches against the model.

Why: a GPU lease is counted in minutes, and session 29's run on an H200 took 94 ms a step
of 32 at 256 px and the same at 192 px, which no one could split between the worker
processes that augment the samples and the model's forward, backward and optimiser
step. This benchmark times, side by side in one run, (1) building a batch in one process,
(2) the DataLoader with ``--workers`` processes alone, (3) the training step on a batch
already built, and (4) the two together as ``vidmat train`` runs them, so the slower side
is named before a run's ``--steps``, ``--batch`` and ``--workers`` are chosen.

It trains the random-initialised model on generated scenes unless ``--data`` names real
roots: speed does not depend on the values (real roots cost the same per sample, as their
cache has the same size).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidmat.argtypes import int_list, on_off_list
from vidmat.benchmarks import checks
from vidmat.benchmarks.report import report
from vidmat.errors import VidmatError
from vidmat.io.files import check_out_apart
from vidmat.train import AMP_MODES

if TYPE_CHECKING:
    import numpy as np

    from vidmat.train.data import CachedSource

COLUMNS = (
    "device",
    "size",
    "batch",
    "amp",
    "nhwc",
    "cudnn_bench",
    "workers",
    "batch_ms",
    "loader_ms",
    "step_ms",
    "run_ms",
    "run_img_s",
    "bound",
)


#: The largest training batch timed (the model's activations grow with it).
MAX_TRAIN_BATCH = 1024


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="ms per training step: building batches against the model's step",
        description="Time one training step's parts side by side: a batch built in one "
        "process (batch_ms), batches delivered by --workers processes alone (loader_ms), "
        "the model's forward + backward + AdamW + EMA on a batch already built (step_ms), "
        "and both together as `vidmat train` runs them (run_ms). 'bound' names the slower "
        "side. Random weights and generated scenes unless --data is given. On a CPU each row "
        "is several whole training steps of seconds each: a run takes minutes.",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--sizes", type=int_list, default=[256], help="input sides (default 256)")
    p.add_argument(
        "--batches",
        type=int_list,
        default=None,
        help="batch sizes (default: 32,64 on CUDA; 8 on CPU)",
    )
    p.add_argument(
        "--amp",
        default="auto",
        help=f"forward precisions, comma-separated from {', '.join(AMP_MODES)} "
        "(default auto: bf16 on CUDA, fp32 on CPU)",
    )
    p.add_argument(
        "--channels-last",
        type=on_off_list,
        default=[True],
        help="on,off: NHWC activations (default on, as vidmat train)",
    )
    p.add_argument(
        "--cudnn-benchmark",
        type=on_off_list,
        default=None,
        help="on,off: let cuDNN time its convolution algorithms per shape (CUDA only; "
        "default both)",
    )
    p.add_argument(
        "--workers",
        type=int_list,
        default=None,
        help="batch-building processes, a list to compare (default: the CPU count less two "
        "on CUDA, 0 on CPU: in the training process)",
    )
    p.add_argument(
        "--data",
        action="append",
        default=None,
        metavar="ROOT[:WEIGHT[:COMPOSITE]]",
        help="real training roots (default: generated scenes)",
    )
    p.add_argument("--backgrounds", type=Path, metavar="DIR", help="person-free images")
    p.add_argument(
        "--cache", type=Path, metavar="DIR", help="training cache of --data (default: temporary)"
    )
    p.add_argument(
        "--iters", type=int, default=None, help="timed steps per row (default: 20 CUDA, 3 CPU)"
    )
    p.add_argument(
        "--warmup", type=int, default=None, help="untimed steps first (default: 5 CUDA, 1 CPU)"
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.set_defaults(func=run)


def generated_sources(n: int = 24, seed: int = 0) -> tuple[list[CachedSource], np.ndarray]:
    """Scenes with a person-like figure (head and body ellipses) at the cache's 320-px size,
    and a bank of backgrounds at BACKGROUND_SIZE: what a real cache holds, in shape."""
    import cv2
    import numpy as np

    from vidmat.train.data import BACKGROUND_SIZE, CachedSource, SourceSpec

    rng = np.random.default_rng(seed)
    h, w = 320, 213  # a portrait photo's cache, as CCP's
    images = np.zeros((n, h, w, 3), np.uint8)
    masks = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        coarse = rng.integers(0, 256, (6, 4, 3), dtype=np.uint8)
        images[i] = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        cx, top = int(rng.integers(60, w - 60)), int(rng.integers(10, 80))
        m = masks[i]
        cv2.ellipse(m, (cx, top + 25), (18, 24), 0, 0, 360, 255, -1)
        cv2.ellipse(m, (cx, top + 150), (45, 110), 0, 0, 360, 255, -1)
        images[i][m > 0] = rng.integers(0, 256, 3, dtype=np.uint8)
    sources = [CachedSource(SourceSpec(Path("generated"), 1.0, 0.5), images, masks)]
    bh, bw = BACKGROUND_SIZE
    bank = np.stack(
        [
            cv2.resize(
                rng.integers(0, 256, (4, 6, 3), dtype=np.uint8),
                (bw, bh),
                interpolation=cv2.INTER_CUBIC,
            )
            for _ in range(8)
        ]
    )
    return sources, bank


def _median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000.0


def _timed(fn: Callable[[], object], iters: int, warmup: int, sync: Callable[[], None]) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return _median_ms(times)


def _drain(it: Iterator, iters: int, warmup: int, each: Callable[[Any], object]) -> float:
    """Median ms between consecutive items of ``it`` after ``warmup``, ``each`` run on every
    item (the training step, or nothing for the loader alone); closes ``it``, which shuts
    a DataLoader's workers down."""
    try:
        for _ in range(warmup):
            each(next(it))
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            each(next(it))
            times.append(time.perf_counter() - t0)
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
    return _median_ms(times)


def check_args(args: argparse.Namespace) -> list[str]:
    """Refuse bad options before data loads or a step is timed; return the --amp modes.

    Why: a size the U-Net cannot halve five times (33) trained on regardless, and
    --iters 0 quietly meant the default.
    """
    amps = [a.strip() for a in args.amp.split(",") if a.strip()]
    if not amps:
        raise VidmatError(f"--amp names no precision; choose from {', '.join(AMP_MODES)}.")
    for a in amps:
        if a not in AMP_MODES:
            raise VidmatError(f"unknown --amp {a!r}; choose from {', '.join(AMP_MODES)}.")
    checks.model_sizes("--sizes", args.sizes)
    checks.each_at_least("--batches", args.batches, 1)
    if args.batches:
        checks.at_most("--batches", max(args.batches), MAX_TRAIN_BATCH, "a batch that fits memory")
    checks.each_at_least("--workers", args.workers, 0)
    checks.at_least("--iters", args.iters, 1)
    checks.at_least("--warmup", args.warmup, 0)
    checks.at_least("--threads", args.threads, 1)
    checks.json_path(args)
    if args.backgrounds is not None and not args.data:
        # the generated scenes have their own: a missing folder was timed on them, exit 0
        raise VidmatError("--backgrounds goes with --data; the generated scenes have their own.")
    if args.cache is not None:  # nothing written into the data, as vidmat train keeps it
        why = "which the benchmark reads; name a folder outside it."
        check_out_apart(args.cache, checks.data_folders(args), why, "--cache", holding=False)
    if args.cache is not None:  # a file there was a FileExistsError traceback
        from vidmat.io.files import check_output_folder

        check_output_folder(args.cache, f"--cache {args.cache}")
    return amps


def run(args: argparse.Namespace) -> int:
    import torch

    from vidmat.core.engine import select_device
    from vidmat.train.augment import AugmentConfig
    from vidmat.train.data import load_backgrounds, load_source, parse_data_source
    from vidmat.train.loop import TrainConfig, Trainer, make_batch

    device = select_device(args.device)
    cuda = device.type == "cuda"
    amps = check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = args.batches or ([32, 64] if cuda else [8])
    worker_counts = (
        args.workers
        if args.workers is not None
        else [max(1, (os.cpu_count() or 2) - 2) if cuda else 0]
    )
    cudnn_settings = (args.cudnn_benchmark or [False, True]) if cuda else [False]
    iters = args.iters if args.iters is not None else (20 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)

    with tempfile.TemporaryDirectory(prefix="vidmat-bench-train-") as tmp:
        cache = args.cache or Path(tmp) / "cache"
        if args.data:
            specs = [parse_data_source(t) for t in args.data]  # as vidmat train reads it
            sources = [load_source(s, cache, progress=False) for s in specs]
            bank = load_backgrounds(args.backgrounds, cache) if args.backgrounds else None
            data_name = ",".join(str(s.path) for s in specs)
        else:
            sources, bank = generated_sources()
            data_name = "generated"
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        rows = []
        for size, batch in itertools.product(args.sizes, batches):
            cfg = TrainConfig(
                sources=[],
                run_dir=Path(tmp) / "run",
                size=size,
                batch=batch,
                steps=warmup + iters + 1,
                warmup=1,
                device=str(device),
                threads=None,
                progress=False,
                # session 29's recipe: the same share of shadows and camouflaged scenes
                aug=AugmentConfig(shadow=0.5, camouflage=0.4),
            )
            batch_ms = _timed(
                partial(make_batch, cfg.seed, 0, cfg.batch, cfg.size, sources, bank, cfg.aug),
                iters,
                min(warmup, 1),
                lambda: None,
            )
            # The loader alone per worker count; the step does not depend on it.
            loader_ms: dict[int, float | None] = {}
            for workers in worker_counts:
                loader_ms[workers] = None
                if workers > 0:
                    trainer = Trainer(replace(cfg, workers=workers), sources, bank, [])
                    loader_ms[workers] = _drain(trainer.batches(), iters, warmup, lambda b: None)
                    del trainer
            for amp, nhwc, bench in itertools.product(amps, args.channels_last, cudnn_settings):
                rcfg = replace(cfg, amp=amp, channels_last=nhwc, cudnn_benchmark=bench)
                trainer = Trainer(rcfg, sources, bank, [])
                fixed = make_batch(rcfg.seed, 0, batch, size, sources, bank, rcfg.aug)
                step_ms = _timed(partial(trainer.train_step, fixed), iters, warmup, sync)
                del trainer
                precision = amp if amp != "auto" else ("bf16" if cuda else "fp32")
                for workers in worker_counts:
                    trainer = Trainer(replace(rcfg, workers=workers), sources, bank, [])
                    run_ms = _drain(trainer.batches(), iters, warmup, trainer.train_step)
                    del trainer
                    loaded = loader_ms[workers]
                    data_ms = loaded if loaded is not None else batch_ms
                    rows.append(
                        {
                            "device": device.type,
                            "size": size,
                            "batch": batch,
                            "amp": precision,
                            "nhwc": "on" if nhwc else "off",
                            "cudnn_bench": ("on" if bench else "off") if cuda else "-",
                            "workers": workers,
                            "batch_ms": batch_ms,
                            "loader_ms": loaded,
                            "step_ms": step_ms,
                            "run_ms": run_ms,
                            "run_img_s": batch * 1000.0 / run_ms,
                            "bound": "data" if data_ms > step_ms else "model",
                            "batch_img_s_one_process": batch * 1000.0 / batch_ms,
                            "step_img_s": batch * 1000.0 / step_ms,
                        }
                    )
                    print(
                        f"  {size}px batch {batch} {precision} nhwc {'on' if nhwc else 'off'} "
                        f"workers {workers}: batch {batch_ms:.1f} ms, step {step_ms:.1f} ms, "
                        f"run {run_ms:.1f} ms",
                        flush=True,
                    )
                if cuda:
                    torch.cuda.empty_cache()
    report(
        "train",
        rows,
        args.json,
        columns=COLUMNS,
        extra={"data": data_name, "iters": iters, "warmup": warmup},
    )
    return 0
