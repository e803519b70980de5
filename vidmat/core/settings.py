"""The settings a user chooses, as typed dataclasses with their limits.

Why apart from the code that uses them: the command line shows their defaults and
limits in ``--help`` and builds them from its options, and should not have to import
torch for that (a second or more, several hundred MB with a CUDA build). Nothing here
imports torch, numpy or OpenCV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from vidmat.core.backgrounds import Background
from vidmat.errors import VidmatError

#: bf16 on a CPU: one with AVX512-BF16 or AMX runs u2netp in it 1.5-2x faster than fp32
#: (2-core EPYC: 72 -> 37 ms at 192 px, 164 -> 109 ms at 320) with the same eval scores
#: (val/ccp IoU 0.9135 in both), so ``auto`` picks it there for the applications
#: (:func:`vidmat.core.engine.app_precision`); a CPU without emulates it, slower.
PRECISIONS = ("auto", "fp16", "bf16", "fp32")
#: Frames per model call at most; a larger batch runs in chunks of this many. On the H200
#: (torch 2.11, CUDA 13) a batch of 128 frames at 256 px ended the process with "illegal
#: memory access" in fp16, bf16 and fp32 alike, while 32 ran; the cause is not found yet.
MAX_BATCH = 32


@dataclass(frozen=True)
class EngineConfig:
    """How to run the model. ``None``/"auto" fields pick what suits the device."""

    weights: str = "default"
    device: str = "auto"
    precision: str = "auto"
    #: Model input side in pixels; None = the weights' native size (320 for U-2-Net).
    size: int | None = None
    cuda_graph: bool = True
    #: CPU threads for torch; None keeps torch's default (one per physical core). With
    #: ``workers`` above 1 this is each model call's share, not the total.
    threads: int | None = None
    #: CPU only: model calls run side by side on this many threads, a batch split between
    #: them. Why not one call on every core: u2netp's layers are too small to keep several
    #: OpenMP threads busy, and those threads wait for each other at every layer, spinning,
    #: so when anything else wants a core (the decoder, the encoder, another program) the
    #: whole call stalls. Two calls with one thread each share nothing. On a 2-core CPU at
    #: 256 px: 293 ms a frame with one thread, 174 with two threads on one call, 133 with two
    #: calls of one thread; with another busy process on the machine 300, 866 and 214.
    #: None = 1 (convert, demo and eval choose their own: :func:`vidmat.core.engine.side_by_side`).
    workers: int | None = None
    #: channels_last (NHWC) memory format. On by default: the frames arrive NHWC, cuDNN's
    #: fp16 convolutions want it, and on a 2-core CPU it ran u2netp 20-27 % faster than
    #: NCHW (`vidmat bench model --threads 1 --channels-last on,off`: 216 vs 260 ms at
    #: 192 px, 598 vs 819 ms at 320 px).
    channels_last: bool = True
    #: Test-time augmentation: run the model on the frame and on its mirror image in one
    #: batch and average the two mattes. The model is not exactly symmetric, and where it is
    #: unsure the two guesses disagree, so the mean can be right more often on photos (val/ccp
    #: IoU 0.9308 -> 0.9311 at 256 px with the session-43 weights; 0.9343 -> 0.9341 with the
    #: session-52 ones) for twice the model's work. Off by default: live wants the frame rate,
    #: and on video the temporal smoothing already averages such noise away (DAVIS through
    #: convert's path 0.770 -> 0.743).
    tta: bool = False
    #: A second pass on a window around the person the first pass found
    #: (:mod:`vidmat.core.zoom`): people small in the frame are seen two to four times
    #: larger (DAVIS IoU 0.751 -> 0.788 at 256 px) for up to twice the model's work.
    #: Skipped on frames where the person already fills most of the picture.
    zoom: bool = False


#: Limits :meth:`PostprocessConfig.validate` enforces, named once so that the commands'
#: ``--help`` states the numbers the check uses: look-ahead frames each way, and how far
#: the matte may grow or shrink, in frame pixels.
MAX_LOOKAHEAD = 30
MAX_GROW_PX = 100
#: Model input side for live use on a CPU (weights trained smaller keep their own size).
CPU_LIVE_SIZE = 192
#: The widest feather, in frame pixels: wider is a blur of the whole person, and a huge
#: value (1e10) overflowed OpenCV's box filter with a traceback.
MAX_FEATHER_PX = 100


@dataclass(frozen=True)
class PostprocessConfig:
    """How the matte is cleaned up; defaults suit both live and file conversion."""

    # Temporal smoothing strength 0 (off) .. 1. 0.7 suits files (convert, demo): in the
    # look-ahead filter strength only sets how far the centre frame is outweighed by the
    # neighbours that agree with it; the gates, not strength, keep it from lagging or
    # leaving ghosts. On DAVIS (look-ahead 8, session-9 weights) 0.5 left 56 % of the raw
    # flicker, 0.7 54 %, IoU +0.004 / +0.003 over raw (session-8 weights: 52 / 51 %,
    # +0.009 / +0.008; session-12 weights at 0.7: 55 %, +0.010).
    # Live sets its own (LiveSettings, 0.5).
    smoothing: float = 0.7
    # Frames the file path looks ahead and back (push/flush); live ignores it. On DAVIS 8
    # beat 2, 4 and 6 on both flicker and IoU; 10 and 12 added nothing (see
    # vidmat.core.smoothing).
    lookahead: int = 8
    refine: bool = True  # guided upsampling; off = plain bilinear upsampling
    guided_radius: int = 1  # in working-grid pixels (long side = mask side, ~320); tuned on DAVIS
    guided_eps: float = 1e-4  # smaller snaps harder to frame edges
    # RGB guide snaps edges between colours of equal brightness; the grey guide costs a third
    # on the CPU for ~0.3 IoU points on DAVIS. None = RGB on CUDA, grey on CPU.
    guided_color: bool | None = None
    work_side: int | None = None  # long side of the working grid (None: the mask's, ~320)
    threshold: float = 0.5  # centre of the contrast curve
    contrast: float = 1.0  # 1 = unchanged, >1 harder edges, inf = binary
    snap: float = 0.02  # alpha within this of 0 or 1 becomes exactly 0 or 1 (solid stays solid)
    feather_px: float = 0.0  # soften the edge over this many frame pixels
    erode_dilate_px: int = 0  # >0 grow, <0 shrink the matte (frame pixels)
    despill: bool = True  # remove the old background's colour from edge pixels
    precision: str = "auto"  # auto (fp16 on CUDA, fp32 on CPU) | fp16 | fp32

    def validate(self) -> PostprocessConfig:
        if not 0.0 <= self.smoothing <= 1.0:
            raise VidmatError(f"smoothing must be between 0 and 1, got {self.smoothing}.")
        if self.lookahead < 0 or self.lookahead > MAX_LOOKAHEAD:
            raise VidmatError(
                f"lookahead must be between 0 and {MAX_LOOKAHEAD} frames, got {self.lookahead}."
            )
        if not self.contrast > 0:  # also refuses NaN; inf is a hard cut-out
            raise VidmatError(f"contrast must be > 0, got {self.contrast}.")
        if not 0.0 <= self.threshold <= 1.0:
            raise VidmatError(f"threshold must be between 0 and 1, got {self.threshold}.")
        if not 0.0 <= self.snap < 0.5:
            raise VidmatError(f"snap must be in 0..0.5, got {self.snap}.")
        if not 0 <= self.feather_px <= MAX_FEATHER_PX:
            raise VidmatError(
                f"feather must be between 0 and {MAX_FEATHER_PX} pixels, got {self.feather_px:g}."
            )
        if abs(self.erode_dilate_px) > MAX_GROW_PX:
            raise VidmatError(
                f"the matte can grow or shrink by at most {MAX_GROW_PX} pixels, "
                f"got {self.erode_dilate_px}."
            )
        if self.precision not in ("auto", "fp16", "fp32"):
            raise VidmatError(f"precision must be auto, fp16 or fp32, got {self.precision!r}.")
        if self.work_side is not None and not 16 <= self.work_side <= 4096:
            raise VidmatError(f"work side must be 16..4096 pixels, got {self.work_side}.")
        if self.guided_radius < 1 or self.guided_eps <= 0:
            raise VidmatError("guided filter radius must be >= 1 and eps > 0.")
        return self


@dataclass(frozen=True)
class LiveSettings:
    """What the user can change while the pipeline runs (sliders, picker, mirror)."""

    background: Background = field(default_factory=Background.blurred)
    smoothing: float = 0.5  # temporal smoothing strength 0..1
    threshold: float = 0.5  # centre of the matte's contrast curve 0..1
    contrast: float = 1.0  # 1 = soft model edges; >1 harder
    feather: float = 0.0  # soften the edge over this many frame pixels
    mirror: bool = False  # flip left-right, as a selfie preview
    grow: int = 0  # grow (>0) or shrink (<0) the matte by this many frame pixels

    def validated(self) -> LiveSettings:
        # The post-processor's own checks, so live and convert refuse the same values alike.
        PostprocessConfig(
            smoothing=self.smoothing,
            threshold=self.threshold,
            contrast=self.contrast,
            erode_dilate_px=self.grow,
            feather_px=self.feather,
        ).validate()
        if self.background.kind == "file":
            raise VidmatError("a background file must be opened before it reaches the pipeline.")
        return self


def check_duration(duration: float | None) -> None:
    """Refuse a --duration the worker could never reach.

    The worker stops once ``elapsed >= duration``: NaN compares false forever and inf
    is never reached, so both would run on silently (a file source loops when a
    duration is given). Running until stopped is what leaving --duration out means.
    """
    if duration is None:
        return
    if duration == math.inf:
        raise VidmatError(
            "--duration inf would never stop; leave --duration out to run until stopped "
            "(with --loop for a file played as a camera)."
        )
    if not duration > 0:  # NaN too
        raise VidmatError(f"--duration must be > 0 seconds, got {duration}.")
