"""The one object the convert and live pipelines call per frame: smooth, refine, composite.

::

    from vidmat.core.postprocess import PostProcessor, PostprocessConfig

    post = PostProcessor(PostprocessConfig(smoothing=0.5), background="green")

    # live (causal, one frame in -> one frame out)
    frames = engine.to_device(rgb)                     # uint8 (1,H,W,3) on the device
    lowres = engine.predict_lowres(frames)             # float (1,1,s,s)
    out = post.process(frames[0], lowres, t=seconds)   # Output(alpha, image, frame, t)
    show(out.image)                                    # uint8 (H,W,3), or (H,W,4) if transparent

    # files (bidirectional smoothing, outputs `config.lookahead` frames late, in order)
    for out in post.push(frames, lowres, t=times):     # one frame or a batch (N,H,W,3)/(N,1,s,s)
        write(out.image, out.t)
    for out in post.flush():                           # at end of file
        write(out.image, out.t)

    post.reset()                       # new stream (seek, new camera, new file)
    post.set_background("blur:25")     # switch background at run time (UI)

One PostProcessor per stream: it holds the smoothing state. Steps, all on the frame's
device: the frame is reduced once to a working grid (long side = the mask's, ~320) ->
temporal smoothing there (:mod:`vidmat.core.smoothing`) -> fast guided filter fitted
there and applied to the full-resolution frame -> tone curve / snap -> erode/dilate ->
feather (:mod:`vidmat.core.refine`) -> despill -> composite (:mod:`vidmat.core.composite`).
On CPU tensors the full-resolution steps run through OpenCV on zero-copy views (5-10x
faster than torch there); on CUDA everything is torch (fp16 by default). ``finish``
refines + composites a mask that is already smoothed (the live pipeline smooths at model
rate itself); ``refine`` returns only the full-resolution alpha.
Numpy frames/alphas are accepted too.

Cost (``vidmat bench postprocess --threads 1``, 2-core CPU beside a training job):
640x480 greenscreen with despill and smoothing ~12-14 ms of CPU time per frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from vidmat.core.backgrounds import Background
from vidmat.core.composite import Compositor
from vidmat.core.refine import (
    apply_coefficients,
    as_alpha,
    decontaminate,
    downscale_frame,
    erode_dilate,
    fast_cpu,
    feather,
    foreground_small,
    frame_to_nchw,
    grey,
    guided_coefficients,
    resize,
    tone,
    work_size,
)
from vidmat.core.settings import PostprocessConfig
from vidmat.core.smoothing import BidirectionalSmoother, SmoothingState, TemporalSmoother

Tensor = torch.Tensor


class Output(NamedTuple):
    """A finished frame: full-res alpha (1,1,H,W) float, composite uint8 (H,W,3|4)."""

    alpha: Tensor
    image: Tensor
    frame: Tensor
    t: float | None


def _tensor(x: Any, device: torch.device | None = None) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if device is not None and x.device != device:
        x = x.to(device)
    return x


def _forced_dtype(precision: str) -> torch.dtype | None:
    """The dtype a precision setting forces (None for "auto": the device decides)."""
    return {"fp16": torch.float16, "fp32": torch.float32}.get(precision)


def colour_guide(cfg: PostprocessConfig, device_type: str) -> bool:
    """Whether the guided upsampling is guided by colour (else grey): by the config, or
    by the device when it leaves it open (colour on a GPU, where it costs nothing)."""
    return cfg.guided_color if cfg.guided_color is not None else device_type != "cpu"


class PostProcessor:
    """Per-stream post-processing: ``process`` for live, ``push``/``flush`` for files."""

    def __init__(
        self,
        config: PostprocessConfig | None = None,
        background: Background | str | None = None,
        pixel_aspect: float = 1.0,
    ) -> None:
        """``pixel_aspect``: the stream's pixel width over height as shown (a PAL widescreen
        file's 64:45), so that a picture behind the person is not shown stretched."""
        self.config = (config or PostprocessConfig()).validate()
        self.pixel_aspect = pixel_aspect
        self.compositor = Compositor(
            background, _forced_dtype(self.config.precision), self.pixel_aspect
        )
        self._smoother = TemporalSmoother(self.config.smoothing)
        self._bi = BidirectionalSmoother(self.config.smoothing, self.config.lookahead)
        self._state: SmoothingState | None = None

    # -- configuration ---------------------------------------------------------------
    @property
    def background(self) -> Background:
        return self.compositor.background

    def set_background(self, background: Background | str | None) -> None:
        """Switch the background (buffers are rebuilt lazily on the next frame)."""
        self.compositor = Compositor(
            background, _forced_dtype(self.config.precision), self.pixel_aspect
        )

    def set_config(self, **changes: Any) -> None:
        """Change settings at run time (e.g. a UI slider); smoothing state is kept if possible.

        Smoothing or look-ahead cannot change while push() holds frames for its look-ahead:
        a new smoother would have dropped them (flush() first)."""
        cfg = replace(self.config, **changes).validate()
        smoothing = (cfg.smoothing, cfg.lookahead) != (self.config.smoothing, self.config.lookahead)
        if smoothing and self._bi.pending:
            raise ValueError(
                f"{self._bi.pending} frames are held for look-ahead; flush() them before "
                "changing smoothing or lookahead."
            )
        if cfg.precision != self.config.precision:
            self.compositor.dtype = _forced_dtype(cfg.precision)
        if cfg.smoothing != self.config.smoothing:
            self._smoother = TemporalSmoother(cfg.smoothing)
        if smoothing:
            self._bi = BidirectionalSmoother(cfg.smoothing, cfg.lookahead)
        self.config = cfg

    def reset(self) -> None:
        """Forget the temporal state (new stream, seek, camera switch). Pending push() frames are dropped."""
        self._state = None
        self._bi.reset()

    def _dtype(self, device: torch.device) -> torch.dtype:
        p = self.config.precision
        if p == "fp16" or (p == "auto" and device.type == "cuda"):
            return torch.float16
        return torch.float32

    # -- steps -------------------------------------------------------------------------
    def _work(self, frame: Tensor, lowres: Tensor) -> tuple[Tensor, Tensor]:
        """The frame and the mask on the working grid: (1,3,h,w) float and (1,1,h,w)."""
        side = self.config.work_side or max(lowres.shape[-2:])
        size = work_size(frame.shape[-3], frame.shape[-2], side)
        small = downscale_frame(frame, size)
        # Not in place: at the mask's own size resize() hands back the caller's tensor, an
        # inference tensor outside inference mode in eval (--refine on 256 px photos).
        return small, resize(lowres.float(), size).clamp(0.0, 1.0)

    def _frame_f(self, frame: Tensor) -> Tensor | None:
        """The float frame for the torch path (None on the OpenCV CPU path, which needs none)."""
        if fast_cpu(frame) and frame.dtype == torch.uint8:
            return None
        return frame_to_nchw(frame, self._dtype(frame.device))

    def _alpha(
        self, frame: Tensor, small: Tensor, p: Tensor, frame_f: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Full-resolution alpha (1,1,H,W) and its working-grid twin (for despill)."""
        c = self.config
        dtype = self._dtype(frame.device)
        if c.refine:
            guide = small if colour_guide(c, frame.device.type) else grey(small)
            a, b = guided_coefficients(guide, p, c.guided_radius, c.guided_eps)
            alpha = apply_coefficients(a, b, frame, frame_f=frame_f, dtype=dtype)
            alpha_small = (a * guide).sum(1, keepdim=True).add_(b).clamp_(0.0, 1.0)
        else:
            alpha = resize(p, (frame.shape[-3], frame.shape[-2])).clamp_(0.0, 1.0).to(dtype)
            alpha_small = p
        alpha = tone(alpha, c.threshold, c.contrast, c.snap)
        alpha = erode_dilate(alpha, c.erode_dilate_px)
        alpha = feather(alpha, c.feather_px)
        return alpha, tone(alpha_small, c.threshold, c.contrast, c.snap)

    def _finish(self, frame: Tensor, small: Tensor, p: Tensor, t: float | None) -> Output:
        """Refine the (smoothed) working-grid mask ``p`` to the frame and composite."""
        frame_f = self._frame_f(frame)
        alpha, alpha_small = self._alpha(frame, small, p, frame_f)
        fg = None
        if self.config.despill and self.background.kind != "mask":
            # The colour estimate is smooth by construction: half the working grid is plenty
            # (the whole grid where it is a single pixel high or wide, which cannot be halved).
            k = 2 if min(small.shape[-2:]) >= 2 else 1
            fg_small = foreground_small(F.avg_pool2d(small, k), F.avg_pool2d(alpha_small, k), 2)
            fg = decontaminate(frame, alpha, fg_small, frame_f)
        image = self.compositor(frame, alpha, t=t, fg=fg)
        return Output(alpha, image, frame, t)

    def refine(self, frame: Any, lowres: Any) -> Tensor:
        """Full-resolution alpha (1,1,H,W) of one frame: no smoothing, no compositing."""
        frame = _tensor(frame)
        frame = frame[0] if frame.dim() == 4 else frame
        small, p = self._work(frame, as_alpha(_tensor(lowres, frame.device))[:1])
        return self._alpha(frame, small, p)[0]

    def finish(self, frame: Any, lowres: Any, t: float | None = None) -> Output:
        """Refine + composite one frame whose low-res alpha is already smoothed (no state)."""
        frame = _tensor(frame)
        if frame.dim() == 4:
            if frame.shape[0] != 1:
                raise ValueError("finish() takes one frame; loop over a batch")
            frame = frame[0]
        lowres = as_alpha(_tensor(lowres, frame.device))[:1]
        small, p = self._work(frame, lowres)
        return self._finish(frame, small, p, t)

    # -- live ------------------------------------------------------------------------------
    def process(self, frame: Any, lowres: Any, t: float | None = None) -> Output:
        """Causal: smooth with the state of this stream, refine, composite (one frame)."""
        frame = _tensor(frame)
        if frame.dim() == 4:
            frame = frame[0]
        lowres = as_alpha(_tensor(lowres, frame.device))[:1]
        small, p = self._work(frame, lowres)
        p, self._state = self._smoother(p, grey(small), self._state)
        return self._finish(frame, small, p, t)

    # -- files -----------------------------------------------------------------------------
    def push(
        self, frames: Any, lowres: Any, t: float | Sequence[float] | None = None
    ) -> list[Output]:
        """Add one frame (H,W,3) or a batch (N,H,W,3) with its (N,1,s,s) alpha; return ready outputs.

        Outputs come in order, ``delay`` frames late; with ``config.lookahead == 0`` (or
        smoothing 0) every frame is ready at once. Call :meth:`flush` at the end.
        """
        frames = _tensor(frames)
        if frames.dim() == 3:
            frames = frames[None]
        lowres = as_alpha(_tensor(lowres, frames.device))
        n = frames.shape[0]
        if lowres.shape[0] != n:
            raise ValueError(f"{n} frames but {lowres.shape[0]} alphas")
        times: list[float | None]
        if t is None or isinstance(t, (int, float)):
            if t is not None and n > 1:  # it was dropped: a video background stood still
                raise ValueError(f"{n} frames but one time; give one time per frame")
            times = [t] * n
        else:
            times = list(t)
            if len(times) != n:
                raise ValueError(f"{n} frames but {len(times)} times")
        out: list[Output] = []
        for i in range(n):
            frame = frames[i]
            small, p = self._work(frame, lowres[i : i + 1])
            if self.delay == 0:
                p, self._state = self._smoother(p, grey(small), self._state)
                out.append(self._finish(frame, small, p, times[i]))
                continue
            # The colour guide, as the filter was tuned (smooth_sequence): a person moving
            # over a wall of another colour but equal brightness is motion, not stillness.
            for s in self._bi.push(p, frame, meta=(times[i], small), guide=small):
                out.append(self._finish(s.frame, s.meta[1], s.alpha, s.meta[0]))
        return out

    def flush(self) -> list[Output]:
        """Emit the frames still held for look-ahead (end of file); the stream then starts fresh."""
        out = [self._finish(s.frame, s.meta[1], s.alpha, s.meta[0]) for s in self._bi.flush()]
        self.reset()
        return out

    @property
    def delay(self) -> int:
        """Frames push() holds back before returning them."""
        if self.config.lookahead == 0 or self.config.smoothing == 0.0:
            return 0
        return self.config.lookahead


__all__ = ["Output", "PostProcessor", "PostprocessConfig"]
