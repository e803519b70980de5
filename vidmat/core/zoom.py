"""A second look at a small person: the model again on a crop around the first pass's mask.

Why: the model sees the whole frame squashed to its input square (256 px), so a person
who fills a fifth of a 16:9 frame's width is about 50 px wide when the model looks at
them; limbs, a raised arm or a rollerblader in the air fall below what it resolves. A
second pass on a window around the person found by the first one shows them two to four
times larger. On DAVIS (people small in 854x480 frames) IoU rose 0.728 -> 0.769 at 256 px,
while on the photo sets, where the person already fills the frame, the window covers too
much of it and the second pass is skipped.

Everything stays on the model's s x s grid of the whole frame: the crop's alpha is
sampled back onto the cells its window covers, averaged there with the first pass's
(two views of one person, as multi-scale testing does) and blended in with feathered
edges, so the result is a drop-in for the first pass's low-resolution alpha (smoothing,
refinement and compositing do not change). Sampling the merged alpha on a grid twice as fine scored the
same (0.7545 against 0.7539): the gain is what the model finds, not the grid.

When any frame of a batch has a window, the second pass runs on the whole batch (frames
without one get their whole frame, weighted 0), so that each batch shape is captured once
as a CUDA graph; a batch without any window costs nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vidmat.core.engine import to_input_size

Tensor = torch.Tensor


@dataclass(frozen=True)
class ZoomConfig:
    """Where the second look goes. Defaults measured on DAVIS at 256 px (see module doc)."""

    #: Border added around the first pass's person box, as a fraction of its longer side:
    #: room for limbs the first pass missed (the crop alone: DAVIS IoU 0.738 at 0.1, 0.755
    #: at 0.2, 0.752 at 0.3).
    margin: float = 0.2
    #: Skip the second pass when the window would cover more than this part of the frame:
    #: the person is already large enough (the crop alone: 0.750 at 0.4, 0.754 at 0.6 and
    #: 0.8).
    max_area: float = 0.6
    #: Window aspect (w/h) kept within the range the model was trained on (9:16 .. 16:9).
    min_aspect: float = 9 / 16
    max_aspect: float = 16 / 9
    #: Width of the blend at the window's inner edges, as a fraction of the window.
    feather: float = 0.04
    #: Alpha above which a first-pass cell counts as person.
    threshold: float = 0.5
    #: Share of the second look in the window's alpha, the rest the first pass's. Their
    #: mean beat either alone: on DAVIS 0.771 (0.35: 0.751, 0.65: 0.769, the crop alone
    #: 0.755), and on the webcam hold-out the crop alone lost 0.822 -> 0.808 where, close
    #: up, a tree trunk beside a juggler looked like part of him; the mean keeps 0.821.
    mix: float = 0.5


def person_windows(low: Tensor, height: int, width: int, cfg: ZoomConfig) -> Tensor:
    """Windows (N, 4) as y0, y1, x0, x1 in frame pixels; a row of zeros where none is wanted.

    ``low`` is the first pass's alpha (N, 1, s, s) over the whole (squashed) frame.
    """
    n, _, gh, gw = low.shape
    out = torch.zeros(n, 4, dtype=torch.float64)
    person = (low[:, 0] > cfg.threshold).cpu()
    rows, cols = person.any(2), person.any(1)
    for i in range(n):
        ys, xs = torch.nonzero(rows[i]).flatten(), torch.nonzero(cols[i]).flatten()
        if ys.numel() == 0:
            continue
        # cell edges in frame pixels
        y0, y1 = ys[0].item() * height / gh, (ys[-1].item() + 1) * height / gh
        x0, x1 = xs[0].item() * width / gw, (xs[-1].item() + 1) * width / gw
        m = cfg.margin * max(y1 - y0, x1 - x0)
        y0, y1, x0, x1 = y0 - m, y1 + m, x0 - m, x1 + m
        h, w = y1 - y0, x1 - x0
        if w < cfg.min_aspect * h:
            w = cfg.min_aspect * h
        elif w > cfg.max_aspect * h:
            h = w / cfg.max_aspect
        h, w = min(h, height), min(w, width)
        if h * w > cfg.max_area * height * width:
            continue
        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
        top = min(max(cy - h / 2, 0.0), height - h)
        left = min(max(cx - w / 2, 0.0), width - w)
        t, b = round(top), min(height, round(top + h))
        lft, r = round(left), min(width, round(left + w))
        if b - t >= 2 and r - lft >= 2:
            out[i] = torch.tensor([t, b, lft, r], dtype=torch.float64)
    return out


def crop_frames(frames: Tensor, windows: Tensor, size: int) -> Tensor:
    """The windows of uint8 frames (N, H, W, 3), each resized to (size, size): (N, s, s, 3).

    A frame without a window gives its whole self (its result is weighted 0). Resized by
    the engine's own :func:`~vidmat.core.engine.to_input_size`.
    """
    n, height, width, _ = frames.shape
    crops = []
    for i in range(n):
        t, b, lft, r = (int(v) for v in windows[i].tolist())
        if b <= t:
            t, b, lft, r = 0, height, 0, width
        x = to_input_size(frames[i : i + 1, t:b, lft:r].permute(0, 3, 1, 2).float(), size)
        crops.append(x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1))
    return torch.cat(crops)


def merge_windows(
    low: Tensor, crop_low: Tensor, windows: Tensor, height: int, width: int, cfg: ZoomConfig
) -> Tensor:
    """The first pass's grid with each window's second-pass alpha mixed into its cells.

    Each cell centre of the s x s grid is located in its window, the crop's alpha sampled
    there (bilinear) and mixed in with share ``mix`` inside, ramping to 0 over ``feather``
    at a window edge that lies inside the frame (an edge on the frame's border needs no
    ramp).
    """
    n, _, gh, gw = low.shape
    dev = low.device
    win = windows.to(dev, torch.float32)
    t, b, lft, r = (win[:, k].view(n, 1, 1) for k in range(4))
    has = (b > t).float()
    ys = (torch.arange(gh, device=dev, dtype=torch.float32) + 0.5) * (height / gh)
    xs = (torch.arange(gw, device=dev, dtype=torch.float32) + 0.5) * (width / gw)
    span_y, span_x = (b - t).clamp_min(1.0), (r - lft).clamp_min(1.0)
    v = (ys.view(1, gh, 1) - t) / span_y  # 0..1 inside the window
    u = (xs.view(1, 1, gw) - lft) / span_x
    grid = torch.stack([(u * 2 - 1).expand(n, gh, gw), (v * 2 - 1).expand(n, gh, gw)], -1)
    sampled = F.grid_sample(
        crop_low.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    inf = torch.full_like(t, float("inf"))
    edge = torch.minimum(
        torch.minimum(torch.where(t > 0, v, inf), torch.where(b < height, 1 - v, inf)),
        torch.minimum(torch.where(lft > 0, u, inf), torch.where(r < width, 1 - u, inf)),
    )
    inside = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    weight = (edge / max(cfg.feather, 1e-6)).clamp(0.0, 1.0) * inside * has * cfg.mix
    weight = weight.unsqueeze(1)
    return (weight * sampled + (1 - weight) * low.float()).clamp_(0.0, 1.0)
