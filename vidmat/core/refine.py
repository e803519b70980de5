"""Edge refinement at the frame's resolution: fast guided upsampling, tone curve, morphology, despill.

A 320x320 model mask stretched to 1080p gives blocky haloes around hair and shoulders.
The fix is the *fast guided filter* (He & Sun 2015): fit the local linear model
``alpha ~ A * I + b`` between the mask and the frame at a low working resolution
(box filters, cheap), bilinearly upsample the coefficients ``A, b`` and apply them to the
full-resolution frame ``I``. Edges then follow the frame's edges, not the model's grid,
and the only full-resolution work is one upsample and one multiply-add.

All functions take torch tensors on any device. Conventions:

* ``frame``: uint8 RGB ``(H, W, 3)`` or ``(N, H, W, 3)`` (what ``Engine.to_device`` gives).
* ``alpha``: float ``(N, 1, h, w)`` in [0, 1].
* ``guide``: float ``(N, C, h, w)`` in [0, 1] (C = 3 colour or 1 grey).

Public functions:

* :func:`guided_upsample(lowres, frame, ...) <guided_upsample>` -> ``(N, 1, H, W)`` alpha
* :func:`tone` (threshold / contrast curve), :func:`erode_dilate`, :func:`feather`
* :func:`estimate_foreground` -> foreground colours without the old background's bleed
  (colour decontamination), used by compositing so greenscreen output has no grey fringe
* :func:`frame_to_nchw`, :func:`work_size`, :func:`resize`, :func:`box_filter`: building blocks
  shared with smoothing and compositing.
* :func:`refine_np`: numpy in/out wrapper for tests and scripts.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor

#: Working resolution (long side) of the guided filter when the caller gives none.
DEFAULT_WORK_SIDE = 320
#: Rec. 601 luma weights (what OpenCV's RGB2GRAY uses): the grey guide.
LUMA = (0.299, 0.587, 0.114)

# On CPU tensors the full-resolution steps (resizing, applying coefficients, blending) run
# through OpenCV on zero-copy numpy views: its SIMD kernels are 5-10x faster there than
# PyTorch's CPU resize and broadcasting ops. On CUDA everything is torch. Tests switch the
# fast path off with :func:`torch_only` to check both paths agree.
_CV2_ON_CPU = True


@contextlib.contextmanager
def torch_only() -> Iterator[None]:
    """Run the pure-torch path on CPU too (tests compare it with the OpenCV fast path)."""
    global _CV2_ON_CPU
    old, _CV2_ON_CPU = _CV2_ON_CPU, False
    try:
        yield
    finally:
        _CV2_ON_CPU = old


def fast_cpu(t: Tensor) -> bool:
    """True where the OpenCV path applies: a CPU tensor (single frame) and the switch on."""
    return _CV2_ON_CPU and t.device.type == "cpu"


def frame_to_nchw(frame: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 (H,W,3)/(N,H,W,3) -> float (N,3,H,W) in [0,1] (channels-last memory, no copy of layout)."""
    if frame.dim() == 3:
        frame = frame.unsqueeze(0)
    if frame.dim() != 4 or frame.shape[-1] not in (3, 4):
        raise ValueError(f"expected a frame (H,W,3) or (N,H,W,3), got {tuple(frame.shape)}")
    x = frame[..., :3].permute(0, 3, 1, 2)
    if frame.dtype == torch.uint8:
        return x.to(dtype).mul_(1.0 / 255.0)
    return x.to(dtype)


def as_alpha(alpha: Tensor) -> Tensor:
    """Accept (h,w), (1,h,w) or (N,1,h,w) and return float (N,1,h,w)."""
    if alpha.dim() == 2:
        alpha = alpha[None, None]
    elif alpha.dim() == 3:
        alpha = alpha.unsqueeze(1) if alpha.shape[0] != 1 else alpha.unsqueeze(0)
    if alpha.dim() != 4 or alpha.shape[1] != 1:
        raise ValueError(f"expected alpha (N,1,h,w), got {tuple(alpha.shape)}")
    if not alpha.is_floating_point():
        alpha = alpha.float() / 255.0 if alpha.dtype == torch.uint8 else alpha.float()
    return alpha


def work_size(height: int, width: int, side: int = DEFAULT_WORK_SIDE) -> tuple[int, int]:
    """Aspect-correct size whose long side is ``side`` (never larger than the frame)."""
    scale = min(1.0, side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(x: Tensor, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """Resize (N,C,h,w); shrinking uses area averaging so thin details are not aliased."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "bilinear" and size[0] < x.shape[-2] and size[1] < x.shape[-1]:
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


_COUNTS: dict[tuple, Tensor] = {}


def _inverse_counts(h: int, w: int, r: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """1 / (number of in-image pixels in each window): edge normalisation, cached per shape."""
    key = (h, w, r, device, dtype)
    inv = _COUNTS.get(key)
    if inv is None:

        def counts(n: int) -> Tensor:
            i = torch.arange(n, device=device, dtype=torch.float32)
            return (i + r).clamp(max=n - 1) - (i - r).clamp(min=0) + 1

        inv = (1.0 / (counts(h)[:, None] * counts(w)[None, :])).to(dtype)
        if len(_COUNTS) > 64:
            _COUNTS.clear()
        _COUNTS[key] = inv
    return inv


def box_filter(x: Tensor, r: int) -> Tensor:
    """Mean over a (2r+1)^2 window, edge-normalised (no dark borders), any device.

    Depthwise convolutions for small windows (PyTorch's
    ``avg_pool2d(count_include_pad=False)`` is 20x slower on CPU), a running sum for
    large ones, so the cost stays O(1)-ish in ``r``.
    """
    if r <= 0:
        return x
    n, c, h, w = x.shape
    if fast_cpu(x) and x.dtype == torch.float32:
        # OpenCV's running-sum box filter, zero border, then the same edge normalisation.
        k = 2 * r + 1
        x = x.detach().contiguous()
        y = torch.empty_like(x)
        xn, yn = x.numpy(), y.numpy()
        for i in range(n):
            for j in range(c):
                cv2.boxFilter(
                    xn[i, j],
                    -1,
                    (k, k),
                    dst=yn[i, j],
                    normalize=False,
                    borderType=cv2.BORDER_CONSTANT,
                )
    elif r <= 8:
        k = 2 * r + 1
        if r <= 3:
            kw = torch.ones(c, 1, k, k, device=x.device, dtype=x.dtype)
            y = F.conv2d(x, kw, padding=r, groups=c)
        else:
            kw = torch.ones(c, 1, 1, k, device=x.device, dtype=x.dtype)
            y = F.conv2d(x, kw, padding=(0, r), groups=c)
            y = F.conv2d(y, kw.view(c, 1, k, 1), padding=(r, 0), groups=c)
    else:
        # In float32 whatever the input: the cumulative sums grow to (2r+1) x the side, past
        # what fp16 counts exactly and, on 4K, past its largest number (inf - inf = NaN, a
        # black person on CUDA, where the post-processing runs in fp16).
        y = _running_sum(_running_sum(x.float(), r, 3), r, 2)
        return (y * _inverse_counts(h, w, r, x.device, torch.float32)).to(x.dtype)
    return y * _inverse_counts(h, w, r, x.device, x.dtype)


def _running_sum(x: Tensor, r: int, dim: int) -> Tensor:
    """Window sums of width 2r+1 along ``dim`` (zero outside) via a cumulative sum."""
    size = x.shape[dim]
    c = x.cumsum(dim)
    shape = list(x.shape)
    shape[dim] = r + 1
    last = c.narrow(dim, size - 1, 1)
    reps = [1] * x.dim()
    reps[dim] = r
    padded = torch.cat([x.new_zeros(shape), c, last.repeat(reps)], dim)
    return padded.narrow(dim, 2 * r + 1, size) - padded.narrow(dim, 0, size)


def grey(guide: Tensor) -> Tensor:
    """(N,3,h,w) -> (N,1,h,w) luma."""
    if guide.shape[1] == 1:
        return guide
    w = guide.new_tensor(LUMA).view(1, 3, 1, 1)
    return (guide[:, :3] * w).sum(1, keepdim=True)


def guided_coefficients(guide: Tensor, p: Tensor, r: int, eps: float) -> tuple[Tensor, Tensor]:
    """Local linear model p ~ A . I + b of the guided filter, already mean-filtered.

    ``guide`` (N,C,h,w) with C = 1 or 3, ``p`` (N,1,h,w). Returns A (N,C,h,w), b (N,1,h,w).
    Runs in float32: the variance E[I^2] - E[I]^2 cancels catastrophically in fp16.
    """
    guide = guide.float()
    p = p.float()
    mean_i = box_filter(guide, r)
    mean_p = box_filter(p, r)
    cov_ip = box_filter(guide * p, r) - mean_i * mean_p
    if guide.shape[1] == 1:
        var_i = box_filter(guide * guide, r) - mean_i * mean_i
        a = cov_ip / (var_i + eps)
    else:
        # Colour guide: per pixel solve (Sigma + eps I) a = cov with a 3x3 system.
        ii = torch.stack([guide[:, i] * guide[:, j] for i in range(3) for j in range(i, 3)], 1)
        ii = box_filter(ii, r)
        mi = mean_i
        s = [ii[:, 0] - mi[:, 0] * mi[:, 0] + eps, ii[:, 1] - mi[:, 0] * mi[:, 1],
             ii[:, 2] - mi[:, 0] * mi[:, 2], ii[:, 3] - mi[:, 1] * mi[:, 1] + eps,
             ii[:, 4] - mi[:, 1] * mi[:, 2], ii[:, 5] - mi[:, 2] * mi[:, 2] + eps]  # fmt: skip
        rr, rg, rb, gg, gb, bb = s
        # Inverse of a symmetric 3x3 via cofactors (batched, no linalg call: fast on CPU).
        c00 = gg * bb - gb * gb
        c01 = rb * gb - rg * bb
        c02 = rg * gb - rb * gg
        c11 = rr * bb - rb * rb
        c12 = rg * rb - rr * gb
        c22 = rr * gg - rg * rg
        det = rr * c00 + rg * c01 + rb * c02
        inv_det = 1.0 / det
        cr, cg, cb = cov_ip[:, 0], cov_ip[:, 1], cov_ip[:, 2]
        a = torch.stack(
            [
                (c00 * cr + c01 * cg + c02 * cb) * inv_det,
                (c01 * cr + c11 * cg + c12 * cb) * inv_det,
                (c02 * cr + c12 * cg + c22 * cb) * inv_det,
            ],
            1,
        )
    b = mean_p - (a * mean_i).sum(1, keepdim=True)
    return box_filter(a, r), box_filter(b, r)


def _np(x: Tensor) -> np.ndarray:
    """Zero-copy numpy view of a CPU tensor, made contiguous if it is not (OpenCV needs that)."""
    return np.ascontiguousarray(x.detach().numpy())


def _np_hwc(x: Tensor) -> np.ndarray:
    """(1,C,h,w) CPU tensor -> contiguous float32 (h,w,C) or (h,w) numpy array."""
    x = x[0].float()
    return _np(x[0] if x.shape[0] == 1 else x.permute(1, 2, 0))


def downscale_frame(frame: Tensor, size: tuple[int, int], frame_f: Tensor | None = None) -> Tensor:
    """The frame at working resolution, float (N,3,h,w) in [0,1] (area averaged)."""
    if frame_f is None and fast_cpu(frame) and frame.dtype == torch.uint8:
        f = frame if frame.dim() == 3 else frame[0] if frame.shape[0] == 1 else None
        if f is not None:
            small = cv2.resize(_np(f), (size[1], size[0]), interpolation=cv2.INTER_AREA)
            # contiguous NCHW: depthwise convolutions on channels-last views are 10x slower on CPU
            return (
                torch.from_numpy(small)
                .permute(2, 0, 1)[None]
                .contiguous()
                .float()
                .mul_(1.0 / 255.0)
            )
    if frame_f is None:
        frame_f = frame_to_nchw(frame)
    return resize(frame_f.float(), size)


def apply_coefficients(
    a: Tensor,
    b: Tensor,
    frame: Tensor,
    *,
    frame_f: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Upsample the guided filter's A (N,C,h,w), b (N,1,h,w) and apply them: (N,1,H,W) alpha.

    This is the only full-resolution step of the fast guided filter: two bilinear
    upsamplings and ``sum_c A_c * I_c + b`` (C = 3 colour, 1 grey guide).
    """
    color = a.shape[1] == 3
    if fast_cpu(frame) and frame.dtype == torch.uint8 and a.shape[0] == 1 and frame_f is None:
        f = _np(frame if frame.dim() == 3 else frame[0])
        height, width = f.shape[:2]
        big_a = cv2.resize(
            _np_hwc(a * (1.0 / 255.0)), (width, height), interpolation=cv2.INTER_LINEAR
        )
        big_b = cv2.resize(_np_hwc(b), (width, height), interpolation=cv2.INTER_LINEAR)
        if color:
            prod = cv2.multiply(big_a, f, dtype=cv2.CV_32F)
            out = cv2.transform(prod, np.ones((1, 3), np.float32))
        else:
            out = cv2.multiply(big_a, cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), dtype=cv2.CV_32F)
        out = cv2.add(out, big_b)
        np.clip(out, 0.0, 1.0, out=out)
        return torch.from_numpy(out)[None, None]
    if frame_f is None:
        frame_f = frame_to_nchw(frame, dtype)
    height, width = frame_f.shape[-2:]
    ab = torch.cat([a, b], 1).to(dtype)
    ab = F.interpolate(ab, size=(height, width), mode="bilinear", align_corners=False)
    if color:
        matte = (ab[:, :3] * frame_f.to(dtype)).sum(1, keepdim=True).add_(ab[:, 3:])
    else:
        matte = torch.addcmul(ab[:, 1:], ab[:, :1], grey(frame_f.to(dtype)))
    return matte.clamp_(0.0, 1.0)


def guided_upsample(
    lowres: Tensor,
    frame: Tensor,
    *,
    radius: int = 1,
    eps: float = 1e-4,
    color: bool = True,
    side: int | None = None,
    frame_f: Tensor | None = None,
    small: Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Full-resolution alpha (N,1,H,W) from a low-resolution mask and the frame as guide.

    ``radius`` is in working-resolution pixels (long side ``side``, default the mask's
    long side); ``eps`` trades edge snapping (small) for smoothness (large); ``color``
    uses the RGB guide (snaps edges between colours of equal brightness). ``frame_f``
    (float (N,3,H,W)) and ``small`` (the frame at working size) let a caller reuse what it
    already computed. ``dtype`` of the full-resolution work (fp16 is fine on CUDA).
    """
    lowres = as_alpha(lowres)
    dtype = dtype or torch.float32
    if frame.dim() == 3:
        frame = frame[None]
    n, height, width = frame.shape[0], frame.shape[1], frame.shape[2]
    side = side or max(lowres.shape[-2:])
    size = work_size(height, width, side) if small is None else (small.shape[-2], small.shape[-1])
    if small is None:
        small = downscale_frame(frame, size, frame_f)
    guide_small = small if color else grey(small)
    p = resize(lowres.float(), size)
    if p.shape[0] != n:
        p = p.expand(n, -1, -1, -1)
    a, b = guided_coefficients(guide_small, p, radius, eps)
    if size == (height, width):
        out = (a * guide_small).sum(1, keepdim=True) + b
        return out.clamp_(0.0, 1.0).to(dtype)
    return apply_coefficients(a, b, frame, frame_f=frame_f, dtype=dtype)


def tone(alpha: Tensor, threshold: float = 0.5, contrast: float = 1.0, snap: float = 0.0) -> Tensor:
    """Move the matte's midpoint to ``threshold``, then steepen it by ``contrast`` around
    there (1 = unchanged, inf = hard threshold).

    The move is piecewise linear through 0 -> 0, ``threshold`` -> 0.5 and 1 -> 1: a
    shift alone (``alpha - threshold + 0.5``) took a solid person down to 0.9 at
    threshold 0.6, see-through everywhere, and lifted all background to 0.2 at 0.3.
    ``snap`` maps alpha below ``snap`` to exactly 0 and above ``1 - snap`` to exactly 1, so
    solid regions are solid (a keyer downstream sees pure greenscreen, not 1 % haze).
    """
    if math.isinf(contrast):  # at 0, what is any person at all (>= 0 took every pixel)
        return (alpha > 0 if threshold <= 0 else alpha >= threshold).to(alpha.dtype)
    gain = contrast / (1.0 - 2.0 * snap) if snap > 0 else contrast
    if threshold != 0.5:
        # kept off the ends, where one side of the curve has no width: at 0 all background
        # became 0.5 and at 1 a solid person 0.5; just inside them 0 and 1 stay put
        t = min(max(threshold, 1e-3), 1.0 - 1e-3)
        below = alpha * (0.5 / t)
        above = 1.0 - (1.0 - alpha) * (0.5 / (1.0 - t))  # exactly 1 at 1, as below is 0 at 0
        alpha = torch.where(alpha < t, below, above)
    elif gain == 1.0:
        return alpha
    return ((alpha - 0.5) * gain + 0.5).clamp_(0.0, 1.0)


def dilate(x: Tensor, r: int) -> Tensor:
    """Max over a (2r+1)^2 window (OpenCV on CPU, max-pooling elsewhere)."""
    if r <= 0:
        return x
    k = 2 * r + 1
    if fast_cpu(x) and x.dtype == torch.float32:
        x = x.detach().contiguous()
        y = torch.empty_like(x)
        kernel = np.ones((k, k), np.uint8)
        xn, yn = x.numpy(), y.numpy()
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                cv2.dilate(xn[i, j], kernel, dst=yn[i, j], borderType=cv2.BORDER_REPLICATE)
        return y
    x = F.max_pool2d(x, (1, k), stride=1, padding=(0, r))
    return F.max_pool2d(x, (k, 1), stride=1, padding=(r, 0))


def erode_dilate(alpha: Tensor, px: int) -> Tensor:
    """Grow (px > 0) or shrink (px < 0) the matte by ``|px|`` pixels (square max/min filter)."""
    if px == 0:
        return alpha
    return dilate(alpha, px) if px > 0 else -dilate(-alpha, -px)


def feather(alpha: Tensor, px: float) -> Tensor:
    """Soften the edge over about ``px`` pixels (two box passes ~ a Gaussian)."""
    if px <= 0:
        return alpha
    r = max(1, round(px / 2))
    return box_filter(box_filter(alpha, r), r).clamp_(0.0, 1.0)


def foreground_small(small: Tensor, alpha_small: Tensor, radius: int = 3) -> Tensor:
    """Foreground colour (N,3,h,w) at working size: nearby confident foreground, blurred.

    In the transition band a pixel is ``a * F + (1 - a) * B_old``; composited onto a new
    background it keeps a fringe of ``B_old`` (the grey/green halo). ``F`` is estimated as
    ``box(I * w) / box(w)`` with ``w = a^4`` (two box passes): the colour of the confident
    foreground around the pixel. Far from any foreground the pixel keeps its own colour.
    """
    w = alpha_small.float().clamp(0.0, 1.0).square().square_()
    stacked = box_filter(box_filter(torch.cat([small.float() * w, w], 1), radius), radius)
    den = stacked[:, 3:]
    fg = stacked[:, :3] / den.clamp_min(1e-4)
    return torch.where(den > 1e-4, fg, small.float()).clamp_(0.0, 1.0)


def decontaminate(
    frame: Tensor, alpha: Tensor, fg_small: Tensor, frame_f: Tensor | None = None
) -> Tensor:
    """Despilled foreground at full resolution: ``lerp(F, I, a^2)``.

    Solid foreground (a = 1) keeps the frame's own pixels; edge pixels take the colour
    of the nearby foreground instead of the old background's mix. Returns uint8
    (H,W,3) on the OpenCV path, float (N,H,W,3) on the 0..255 scale otherwise.
    ``frame_f``: the float (N,3,H,W) frame in [0,1] if the caller has it (saves a pass).
    """
    if fast_cpu(frame) and frame.dtype == torch.uint8 and alpha.shape[0] == 1 and frame_f is None:
        f = _np(frame if frame.dim() == 3 else frame[0])
        height, width = f.shape[:2]
        small_u8 = _np_hwc(fg_small * 255.0).round().astype(np.uint8)
        big = cv2.resize(small_u8, (width, height), interpolation=cv2.INTER_LINEAR)
        a = _np(alpha[0, 0].float())
        keep = cv2.multiply(a, a)
        out = cv2.blendLinear(f, big, keep, 1.0 - keep)
        return torch.from_numpy(out)
    if frame_f is None:
        frame_f = frame_to_nchw(frame)
    height, width = frame_f.shape[-2:]
    fg_big = resize(fg_small.float(), (height, width)).to(frame_f.dtype)
    kept = alpha.to(frame_f.dtype).square()
    mixed = torch.lerp(fg_big, frame_f, kept).mul_(255.0).permute(0, 2, 3, 1)
    return mixed[0] if frame.dim() == 3 else mixed


def estimate_foreground(
    frame_f: Tensor, alpha: Tensor, *, side: int = DEFAULT_WORK_SIDE, radius: int = 3
) -> Tensor:
    """Foreground colours (N,3,H,W) in [0,1] with the old background's bleed removed (torch)."""
    height, width = frame_f.shape[-2:]
    size = work_size(height, width, side)
    fg_small = foreground_small(resize(frame_f.float(), size), resize(alpha.float(), size), radius)
    fg = resize(fg_small.to(frame_f.dtype), (height, width))
    return torch.lerp(fg, frame_f, alpha.to(frame_f.dtype).square())


def refine_np(
    lowres: np.ndarray,
    frame: np.ndarray,
    *,
    radius: int = 1,
    eps: float = 1e-4,
    color: bool = True,
    threshold: float = 0.5,
    contrast: float = 1.0,
    snap: float = 0.0,
    erode_dilate_px: int = 0,
    feather_px: float = 0.0,
) -> np.ndarray:
    """numpy wrapper: lowres (h,w) float, frame (H,W,3) uint8 -> alpha (H,W) float32."""
    a = guided_upsample(
        torch.from_numpy(np.ascontiguousarray(lowres, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(frame)),
        radius=radius,
        eps=eps,
        color=color,
    )
    a = feather(erode_dilate(tone(a, threshold, contrast, snap), erode_dilate_px), feather_px)
    return a[0, 0].cpu().numpy()
