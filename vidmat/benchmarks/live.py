"""vidmat bench live: the live pipeline fed by a file played as a camera in real time.

What a user feels is measured, per frame: how long a captured frame waited for
the worker (capture), the model, refine + composite (post), handing the frame
to the display (display), and capture-to-display latency; plus displayed fps,
frames dropped by the latest-frame queue and those the source's reader was
too late for (source_skipped: decoding the file fell behind the clock, as a
slow camera loses frames; lost_pct counts both), the queue's deepest fill,
resident memory sampled over the run (a leak shows as growth) and, on CUDA,
peak GPU memory.

The source plays at its own frame rate against the wall clock, exactly as a
camera delivers, so fps can never exceed the source's and dropped frames are
real. Random u2netp weights are used unless --weights is given: speed does not
depend on the values.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from vidmat.argtypes import size_wxh, weights_name
from vidmat.benchmarks import checks
from vidmat.benchmarks.report import random_weights, report
from vidmat.errors import VidmatError


def add_parser(sub: argparse._SubParsersAction) -> None:
    from vidmat.commands._options import INFER_EVERY_HELP
    from vidmat.core.settings import PRECISIONS

    p = sub.add_parser(
        "live",
        help="live pipeline: per-stage latency p50/p99, displayed fps, drops, memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--camera",
        default=None,
        metavar="FILE",
        help="video file played as a camera (default: a synthetic 30 fps clip made for the run)",
    )
    p.add_argument(
        "--resolution",
        type=size_wxh,
        default=(640, 480),
        metavar="WxH",
        help="frame size delivered by the source (default 640x480)",
    )
    p.add_argument(
        "--fps",
        type=float,
        default=None,
        help="synthetic source frame rate (default 30); a --camera file plays at its own",
    )
    p.add_argument("--seconds", type=float, default=20.0, help="measured duration (default 20)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds discarded first (default 3)")
    p.add_argument("--bg", default="blur", help="background spec (default blur)")
    p.add_argument(
        "--mode",
        choices=("auto", "sync", "async"),
        default="auto",
        help="as for vidmat live: async on a CPU, sync on CUDA by default",
    )
    p.add_argument(
        "--infer-every",
        type=int,
        default=1,
        metavar="N",
        help=INFER_EVERY_HELP,
    )
    p.add_argument(
        "--model-nice",
        type=int,
        default=2,
        help="niceness added to the async model thread's, 0 to 19 (default 2)",
    )
    p.add_argument(
        "--rss-every", type=float, default=1.0, help="seconds between RSS samples (default 1)"
    )
    p.add_argument(
        "--weights",
        type=weights_name,
        default=None,
        metavar="NAME|PATH",
        help="default: random u2netp",
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto (default): fp16 on CUDA; on a CPU bf16 where it has it in hardware, else fp32",
    )
    p.add_argument("--size", type=int, default=None, help="model input (CPU default 192)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (CPU default 1)")
    p.add_argument(
        "--no-cuda-graph",
        dest="cuda_graph",
        action="store_false",
        help="run CUDA eagerly instead of replaying captured CUDA graphs",
    )
    p.add_argument("--json", default=None, metavar="PATH", help="write results as JSON")
    p.set_defaults(func=run)


def rss_mib() -> float:
    """Resident set size of this process (Linux /proc; elsewhere via resource's peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def synthetic_clip(path: Path, width: int, height: int, fps: float, seconds: float = 8.0) -> Path:
    """A textured background with a 'person' (head + shoulders) swaying across it."""
    import av
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    bg = cv2.resize(
        rng.integers(0, 255, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8),
        (width, height),
        interpolation=cv2.INTER_CUBIC,
    )
    n = max(2, round(seconds * fps))
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=round(fps))
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "23"}
        for i in range(n):
            img = bg.copy()
            cx = int(width / 2 + width / 4 * np.sin(2 * np.pi * i / n))
            cv2.ellipse(
                img, (cx, height), (width // 5, height // 3), 0, 180, 360, (40, 60, 160), -1
            )
            cv2.circle(img, (cx, int(height * 0.45)), height // 7, (190, 150, 120), -1)
            frame = av.VideoFrame.from_ndarray(img.astype(np.uint8, copy=False), format="rgb24")
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def _engine(args: argparse.Namespace) -> Any:
    from vidmat.core.settings import EngineConfig
    from vidmat.model.spec import WeightsSpec
    from vidmat.model.u2net import build_model
    from vidmat.pipelines.live import build_live_engine

    cfg = EngineConfig(
        weights=args.weights or "default",
        device=args.device,
        precision=args.precision,
        size=args.size,
        cuda_graph=args.cuda_graph,
        threads=args.threads,
    )
    if args.weights:
        return build_live_engine(cfg)
    spec = WeightsSpec(name=random_weights(), arch="u2netp")
    return build_live_engine(cfg, build_model("u2netp"), spec)


def check_args(args: argparse.Namespace) -> Any:
    """Refuse bad options before the engine loads or the clip is made; return the background.

    Why: --rss-every 0 (or NaN seconds) spun the sampling loop, a missing --camera or a bad
    --bg failed only after the synthetic clip and the engine were ready, and --fps below 1
    made a clip of zero frames a second.
    """
    from vidmat.io.images import load_background

    checks.above_zero("--seconds", args.seconds)
    checks.at_least("--warmup", args.warmup, 0)
    checks.above_zero("--rss-every", args.rss_every)
    checks.at_least("--infer-every", args.infer_every, 1)
    if not 0 <= args.model_nice <= 19:  # Linux's nicenesses; a negative one needs root
        raise VidmatError(f"--model-nice must be from 0 to 19, got {args.model_nice}.")
    checks.at_least("--threads", args.threads, 1)
    if args.size is not None:
        checks.model_sizes("--size", [args.size])
    if args.camera:
        checks.existing_file("--camera", args.camera)
        if args.fps is not None:  # it was timed at the file's own rate without a word
            raise VidmatError(
                "--fps sets the synthetic clip's rate; a --camera file plays at its own."
            )
    elif args.fps is None:
        args.fps = 30.0
    elif not 1 <= args.fps <= 240:
        raise VidmatError(f"--fps must be between 1 and 240, got {args.fps:g}.")
    checks.json_path(args)
    return load_background(args.bg)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from vidmat.core.engine import precision_name
    from vidmat.core.settings import LiveSettings
    from vidmat.io.camera import CameraConfig
    from vidmat.pipelines.live import LiveConfig, LivePipeline, LiveStats

    background = check_args(args)
    width, height = args.resolution
    engine = _engine(args)
    with tempfile.TemporaryDirectory(prefix="vidmat-bench-live-") as tmp:
        if args.camera:
            source = Path(args.camera)
        else:
            print(f"making a {width}x{height} @ {args.fps:g} fps synthetic clip…")
            source = synthetic_clip(Path(tmp) / "source.mp4", width, height, args.fps)
        camera = CameraConfig(source=str(source), width=width, height=height, loop=True)
        errors: list[str] = []
        pipe: LivePipeline

        def on_frame(frame: Any) -> None:
            # What the window's display does with a frame: one copy into its own buffer.
            np.ascontiguousarray(frame.image).copy()
            pipe.frame_displayed(frame)

        pipe = LivePipeline(
            engine,
            LiveConfig(
                camera=camera,
                mode=args.mode,
                infer_every=args.infer_every,
                display_reports=True,
                keep_history=True,
                model_nice=args.model_nice,
            ),
            LiveSettings(background=background),
            on_frame=on_frame,
            on_error=errors.append,
        )
        if engine.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(engine.device)
        pipe.start()
        try:
            time.sleep(args.warmup)
            while pipe.outputs == 0 and not pipe.wait(0.1):
                pass  # the first mask can take a while on a CPU
            pipe.stats = LiveStats(keep_history=True)
            dropped0, outputs0 = pipe.dropped, pipe.outputs
            captured0 = pipe.capture.frames if pipe.capture else 0
            skipped0 = pipe.capture.skipped if pipe.capture else 0
            t0 = time.perf_counter()
            rss: list[tuple[float, float]] = [(0.0, rss_mib())]
            next_sample = args.rss_every
            while (elapsed := time.perf_counter() - t0) < args.seconds:
                if pipe.wait(min(0.1, max(0.0, next_sample - elapsed))):
                    break
                if time.perf_counter() - t0 >= next_sample:
                    rss.append((round(time.perf_counter() - t0, 2), rss_mib()))
                    next_sample += args.rss_every
            elapsed = time.perf_counter() - t0
            outputs = pipe.outputs - outputs0
            dropped = pipe.dropped - dropped0
            captured = (pipe.capture.frames if pipe.capture else 0) - captured0
            # File frames the reader was too late for never reach the queue: lost as well.
            skipped = (pipe.capture.skipped if pipe.capture else 0) - skipped0
            inferences = pipe.stats.inferences
            rss.append((round(elapsed, 2), rss_mib()))
        finally:
            pipe.stop()
    if errors:
        raise VidmatError(f"the live pipeline failed: {errors[0]}")

    hist = pipe.stats.history
    labels = {
        "capture": "capture wait (capture -> worker)",
        "model": "model (inference)",
        "post": "refine + composite",
        "display": "display hand-off",
        "latency": "end-to-end (capture -> display)",
        "mask_age": "mask age (frame vs. its mask)",
    }
    rows = []
    for key, label in labels.items():
        vals = np.asarray(hist[key], dtype=np.float64)
        if vals.size == 0:
            continue
        rows.append(
            {
                "stage": label,
                "p50_ms": float(np.percentile(vals, 50)),
                "p99_ms": float(np.percentile(vals, 99)),
                "mean_ms": float(vals.mean()),
                "n": int(vals.size),
            }
        )
    rss_vals = [r for _, r in rss]
    # Growth between the first and last quarter of the run: start-up allocations excluded.
    q = max(1, len(rss_vals) // 4)
    growth = (np.mean(rss_vals[-q:]) - np.mean(rss_vals[:q])) / np.mean(rss_vals[:q]) * 100.0
    summary: dict[str, Any] = {
        "source": str(args.camera or f"synthetic {width}x{height}@{args.fps:g}"),
        "resolution": f"{width}x{height}",
        "device": str(engine.device),
        "weights": engine.spec.name,
        "precision": precision_name(engine.dtype),
        "model_size": engine.size,
        "mode": pipe.mode,
        "background": args.bg,
        "model_nice": args.model_nice,
        "seconds": round(elapsed, 2),
        "captured_fps": captured / elapsed,
        "displayed_fps": outputs / elapsed,
        "model_fps": inferences / elapsed,
        "dropped": dropped,
        "dropped_pct": 100.0 * dropped / max(1, captured),
        "source_skipped": skipped,
        "lost_pct": 100.0 * (dropped + skipped) / max(1, captured + skipped),
        "queue_max_depth": pipe.frames_q.max_depth,
        "rss_mib_start": rss_vals[0],
        "rss_mib_end": rss_vals[-1],
        "rss_mib_max": max(rss_vals),
        "rss_growth_pct": float(growth),
        "torch_threads": torch.get_num_threads(),
    }
    if engine.device.type == "cuda":
        summary["gpu_peak_mib"] = torch.cuda.max_memory_allocated(engine.device) / 2**20
    report("live", rows, args.json, extra={"summary": summary, "rss_mib": rss})
    print()
    for k, v in summary.items():
        print(f"{k:>18}: {v:.2f}" if isinstance(v, float) else f"{k:>18}: {v}")
    return 0


__all__ = ["add_parser", "rss_mib", "run", "synthetic_clip"]
