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

import math

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor

#: Working resolution (long side) of the guided filter when the caller gives none.
DEFAULT_WORK_SIDE = 320
#: Rec. 601 luma weights: a grey guide for smoothing's frame difference.
LUMA = (0.299, 0.587, 0.114)


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


def box_filter(x: Tensor, r: int) -> Tensor:
    """Mean over a (2r+1)^2 window, separable, edge-normalised (no dark borders)."""
    if r <= 0:
        return x
    k = 2 * r + 1
    x = F.avg_pool2d(x, (1, k), stride=1, padding=(0, r), count_include_pad=False)
    return F.avg_pool2d(x, (k, 1), stride=1, padding=(r, 0), count_include_pad=False)


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


def guided_upsample(
    lowres: Tensor,
    frame: Tensor,
    *,
    radius: int = 2,
    eps: float = 1e-3,
    color: bool = True,
    side: int | None = None,
    frame_f: Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Full-resolution alpha (N,1,H,W) from a low-resolution mask and the frame as guide.

    ``radius`` is in working-resolution pixels (long side ``side``, default the mask's
    long side); ``eps`` trades edge snapping (small) for smoothness (large); ``color``
    uses the RGB guide (snaps edges between colours of equal brightness, costs two more
    full-resolution maps). ``frame_f`` lets a caller pass the float (N,3,H,W) frame it
    already has. ``dtype`` of the full-resolution work (fp16 is fine on CUDA).
    """
    lowres = as_alpha(lowres)
    dtype = dtype or torch.float32
    if frame_f is None:
        frame_f = frame_to_nchw(frame, dtype)
    n, _, height, width = frame_f.shape
    side = side or max(lowres.shape[-2:])
    size = work_size(height, width, side)
    guide_small = resize(frame_f.float(), size)
    if not color:
        guide_small = grey(guide_small)
    p = resize(lowres.float(), size)
    if p.shape[0] != n:
        p = p.expand(n, -1, -1, -1)
    a, b = guided_coefficients(guide_small, p, radius, eps)
    if size == (height, width):
        out = (a * guide_small).sum(1, keepdim=True) + b
        return out.clamp_(0.0, 1.0).to(dtype)
    ab = torch.cat([a, b], 1).to(dtype)
    ab = F.interpolate(ab, size=(height, width), mode="bilinear", align_corners=False)
    if color:
        out = (ab[:, :3] * frame_f).sum(1, keepdim=True).add_(ab[:, 3:])
    else:
        out = torch.addcmul(ab[:, 1:], ab[:, :1], grey(frame_f))
    return out.clamp_(0.0, 1.0)


def tone(alpha: Tensor, threshold: float = 0.5, contrast: float = 1.0, snap: float = 0.0) -> Tensor:
    """Linear contrast around ``threshold`` (1 = unchanged at 0.5, inf = hard threshold).

    ``snap`` maps alpha below ``snap`` to exactly 0 and above ``1 - snap`` to exactly 1, so
    solid regions are solid (a keyer downstream sees pure greenscreen, not 1 % haze).
    """
    if math.isinf(contrast):
        return (alpha >= threshold).to(alpha.dtype)
    gain = contrast / (1.0 - 2.0 * snap) if snap > 0 else contrast
    if gain == 1.0 and threshold == 0.5:
        return alpha
    return ((alpha - threshold) * gain + 0.5).clamp_(0.0, 1.0)


def erode_dilate(alpha: Tensor, px: int) -> Tensor:
    """Grow (px > 0) or shrink (px < 0) the matte by ``|px|`` pixels (square max/min filter)."""
    if px == 0:
        return alpha
    k = 2 * abs(px) + 1
    x = alpha if px > 0 else -alpha
    x = F.max_pool2d(x, (1, k), stride=1, padding=(0, abs(px)))
    x = F.max_pool2d(x, (k, 1), stride=1, padding=(abs(px), 0))
    return x if px > 0 else -x


def feather(alpha: Tensor, px: float) -> Tensor:
    """Soften the edge over about ``px`` pixels (two box passes ~ a Gaussian)."""
    if px <= 0:
        return alpha
    r = max(1, round(px / 2))
    return box_filter(box_filter(alpha, r), r)


def estimate_foreground(
    frame_f: Tensor, alpha: Tensor, *, side: int = DEFAULT_WORK_SIDE, radius: int = 3
) -> Tensor:
    """Foreground colours (N,3,H,W) in [0,1] with the old background's bleed removed.

    In the transition band a pixel is ``a * F + (1 - a) * B_old``; compositing it onto a
    new background keeps a fringe of ``B_old`` (the grey/green halo). We replace it by the
    colour of nearby confident foreground: ``F = box(I * w) / box(w)`` with ``w = a^4``
    at a low working resolution, then blend back to the original pixel as ``a -> 1``,
    so solid foreground is untouched and edges carry no old background.
    """
    height, width = frame_f.shape[-2:]
    size = work_size(height, width, side)
    small_i = resize(frame_f.float(), size)
    small_a = resize(alpha.float(), size)
    w = small_a.square().square_()
    num = box_filter(torch.cat([small_i * w, w], 1), radius)
    num = box_filter(num, radius)
    fg_small = num[:, :3] / num[:, 3:].clamp_min(1e-4)
    # Far from any confident foreground keep the pixel itself (its alpha is ~0 anyway).
    fg_small = torch.where(num[:, 3:] > 1e-4, fg_small, small_i)
    fg = resize(fg_small.to(frame_f.dtype), (height, width))
    keep = alpha.to(frame_f.dtype).square()
    return torch.lerp(fg, frame_f, keep)


def refine_np(
    lowres: np.ndarray,
    frame: np.ndarray,
    *,
    radius: int = 2,
    eps: float = 1e-3,
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
