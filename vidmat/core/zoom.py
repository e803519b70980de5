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

People far apart, whom one window would have to cover most of the frame to hold, get a
window each (at most ``max_windows``): on val/ccp people pasted two to a wide scene, one
on each side, IoU rose 0.600 -> 0.617 with one window and -> 0.687 with one each.

When any frame of a batch has a window, the second pass runs on N crops for N frames
(2N when some frame has two windows; spare places get a whole frame, weighted 0), so
that a CUDA graph captured for each of the two shapes serves every batch; a batch
without any window costs nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
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
    #: Most windows a frame gets: people apart from each other get one each (see
    #: :func:`person_windows`), the largest first.
    max_windows: int = 2
    #: A group of person cells under this share of the largest group's gets no window.
    min_group: float = 0.1
    #: Share of the second look in the window's alpha, the rest the first pass's. Their
    #: mean beat either alone: on DAVIS 0.771 (0.35: 0.751, 0.65: 0.769, the crop alone
    #: 0.755), and on the webcam hold-out the crop alone lost 0.822 -> 0.808 where, close
    #: up, a tree trunk beside a juggler looked like part of him; the mean keeps 0.821.
    mix: float = 0.5


def person_windows(low: Tensor, height: int, width: int, cfg: ZoomConfig) -> Tensor:
    """Windows (N, K, 4) as y0, y1, x0, x1 in frame pixels, K = ``cfg.max_windows``, the
    largest group first; a row of zeros where none is wanted.

    ``low`` is the first pass's alpha (N, 1, s, s) over the whole (squashed) frame. One
    window around all its person cells, as long as that covers at most ``max_area`` of
    the frame. When it would cover more, the cells are split into groups whose boxes,
    widened by the margin, do not touch, and each group gets a window of its own: two
    people far apart are then each seen larger, where one window around both is skipped;
    a group under ``min_group`` of the largest (a stray blob) gets none. Splitting every
    frame instead lost DAVIS rollerblade 0.578 -> 0.561: a skater the first pass cut in
    two got two windows, each seeing half of him.
    """
    n, _, gh, gw = low.shape
    k_max = max(1, cfg.max_windows)
    out = torch.zeros(n, k_max, 4, dtype=torch.float64)
    person = (low[:, 0] > cfg.threshold).cpu().numpy().astype(np.uint8)

    def window(box: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
        y0, y1, x0, x1 = box  # grid cells, end exclusive
        sy, sx = height / gh, width / gw
        return _window(y0 * sy, y1 * sy, x0 * sx, x1 * sx, height, width, cfg)

    for i in range(n):
        ys, xs = np.nonzero(person[i].any(1))[0], np.nonzero(person[i].any(0))[0]
        if ys.size == 0:
            continue
        whole = window((int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1))
        if whole is not None:
            out[i, 0] = torch.tensor(whole, dtype=torch.float64)
            continue
        groups = _person_groups(person[i], cfg.margin)
        k = 0
        for y0, y1, x0, x1, area in groups:
            if k == k_max or area < cfg.min_group * groups[0][4]:
                break
            own = window((y0, y1, x0, x1))
            if own is not None:
                out[i, k] = torch.tensor(own, dtype=torch.float64)
                k += 1
    return out


_MAX_COMPONENTS = 32


def _person_groups(person: np.ndarray, margin: float) -> list[tuple[int, int, int, int, int]]:
    """Boxes (y0, y1, x0, x1 in cells, end exclusive) and cell counts of the groups of
    connected person cells whose boxes, each widened by ``margin`` x its longer side,
    overlap; largest group first."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(person, connectivity=8)
    stats = stats[1:count]
    # Specks cannot make a window and would make the pairwise grouping below slow on a
    # noisy mask: only the largest components, each at least 2 % of the largest, count.
    stats = stats[np.argsort(-stats[:, cv2.CC_STAT_AREA], kind="stable")][:_MAX_COMPONENTS]
    if len(stats):
        stats = stats[stats[:, cv2.CC_STAT_AREA] >= 0.02 * stats[0, cv2.CC_STAT_AREA]]
    groups = [
        [
            int(st[cv2.CC_STAT_TOP]),
            int(st[cv2.CC_STAT_TOP] + st[cv2.CC_STAT_HEIGHT]),
            int(st[cv2.CC_STAT_LEFT]),
            int(st[cv2.CC_STAT_LEFT] + st[cv2.CC_STAT_WIDTH]),
            int(st[cv2.CC_STAT_AREA]),
        ]
        for st in stats
    ]

    def widened(g: list[int]) -> tuple[float, float, float, float]:
        m = margin * max(g[1] - g[0], g[3] - g[2])
        return g[0] - m, g[1] + m, g[2] - m, g[3] + m

    merged = True
    while merged and len(groups) > 1:
        merged = False
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                ay0, ay1, ax0, ax1 = widened(groups[a])
                by0, by1, bx0, bx1 = widened(groups[b])
                if ay0 < by1 and by0 < ay1 and ax0 < bx1 and bx0 < ax1:
                    ga, gb = groups[a], groups.pop(b)
                    groups[a] = [
                        min(ga[0], gb[0]), max(ga[1], gb[1]),
                        min(ga[2], gb[2]), max(ga[3], gb[3]), ga[4] + gb[4],
                    ]  # fmt: skip
                    merged = True
                    break
            if merged:
                break
    groups.sort(key=lambda g: -g[4])
    return [(g[0], g[1], g[2], g[3], g[4]) for g in groups]


def _window(
    y0: float, y1: float, x0: float, x1: float, height: int, width: int, cfg: ZoomConfig
) -> tuple[int, int, int, int] | None:
    """The window around a person box (frame pixels): margin, aspect, inside the frame;
    None when it would cover more than ``max_area`` of the frame."""
    m = cfg.margin * max(y1 - y0, x1 - x0)
    y0, y1, x0, x1 = y0 - m, y1 + m, x0 - m, x1 + m
    h, w = y1 - y0, x1 - x0
    if w < cfg.min_aspect * h:
        w = cfg.min_aspect * h
    elif w > cfg.max_aspect * h:
        h = w / cfg.max_aspect
    h, w = min(h, height), min(w, width)
    if h * w > cfg.max_area * height * width:
        return None
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    top = min(max(cy - h / 2, 0.0), height - h)
    left = min(max(cx - w / 2, 0.0), width - w)
    t, b = round(top), min(height, round(top + h))
    lft, r = round(left), min(width, round(left + w))
    if b - t < 2 or r - lft < 2:
        return None
    return t, b, lft, r


def crop_frames(frames: Tensor, windows: Tensor, size: int) -> Tensor:
    """The windows (N, K, 4) of uint8 frames (N, H, W, 3), each resized to (size, size).

    Frame by frame, then window by window, as :func:`merge_windows` reads them back: the
    crops of the windows that exist, padded with whole frames (weighted 0) to a multiple
    of N, so that a batch of N frames sends the model N or 2N crops, two shapes a CUDA
    graph each, and never fewer than N (as many as the first pass). Resized by the
    engine's own :func:`~vidmat.core.engine.to_input_size`.
    """
    n = frames.shape[0]
    crops = []
    for i, k in _present(windows):
        t, b, lft, r = (int(v) for v in windows[i, k].tolist())
        crops.append(_resized(frames[i : i + 1, t:b, lft:r], size))
    pad = -len(crops) % n if crops else n
    crops += [_resized(frames[j % n : j % n + 1], size) for j in range(pad)]
    return torch.cat(crops)


def _present(windows: Tensor) -> list[tuple[int, int]]:
    """(frame, slot) of each window that exists, frame by frame."""
    has = windows[..., 1] > windows[..., 0]
    return [(int(i), int(k)) for i, k in torch.nonzero(has).tolist()]


def _resized(x: Tensor, size: int) -> Tensor:
    x = to_input_size(x.permute(0, 3, 1, 2), size)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def merge_windows(
    low: Tensor, crop_low: Tensor, windows: Tensor, height: int, width: int, cfg: ZoomConfig
) -> Tensor:
    """The first pass's grid with each window's second-pass alpha mixed into its cells.

    ``crop_low`` holds the alpha of :func:`crop_frames`' crops, in its order. Each cell
    centre of the s x s grid is located in a window, the crop's alpha sampled there
    (bilinear) and mixed in with share ``mix`` inside, ramping to 0 over ``feather`` at a
    window edge that lies inside the frame (an edge on the frame's border needs no ramp).
    Where windows overlap, their looks are averaged by those ramps.
    """
    n, _, gh, gw = low.shape
    k_max = windows.shape[1]
    dev = low.device
    present = _present(windows)
    crops = torch.zeros(n * k_max, 1, *crop_low.shape[-2:], device=dev, dtype=torch.float32)
    if present:
        slots = torch.tensor([i * k_max + k for i, k in present], device=dev)
        crops[slots] = crop_low[: len(present)].float()
    win = windows.reshape(n * k_max, 4).to(dev, torch.float32)
    t, b, lft, r = (win[:, j].view(-1, 1, 1) for j in range(4))
    has = (b > t).float()
    ys = (torch.arange(gh, device=dev, dtype=torch.float32) + 0.5) * (height / gh)
    xs = (torch.arange(gw, device=dev, dtype=torch.float32) + 0.5) * (width / gw)
    span_y, span_x = (b - t).clamp_min(1.0), (r - lft).clamp_min(1.0)
    v = (ys.view(1, gh, 1) - t) / span_y  # 0..1 inside the window
    u = (xs.view(1, 1, gw) - lft) / span_x
    m = n * k_max
    grid = torch.stack([(u * 2 - 1).expand(m, gh, gw), (v * 2 - 1).expand(m, gh, gw)], -1)
    sampled = F.grid_sample(
        crops, grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    inf = torch.full_like(t, float("inf"))
    edge = torch.minimum(
        torch.minimum(torch.where(t > 0, v, inf), torch.where(b < height, 1 - v, inf)),
        torch.minimum(torch.where(lft > 0, u, inf), torch.where(r < width, 1 - u, inf)),
    )
    inside = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    ramp = ((edge / max(cfg.feather, 1e-6)).clamp(0.0, 1.0) * inside * has).view(n, k_max, gh, gw)
    sampled = sampled.view(n, k_max, gh, gw)
    total = ramp.sum(1, keepdim=True)
    look = (ramp * sampled).sum(1, keepdim=True) / total.clamp_min(1e-6)
    weight = ramp.amax(1, keepdim=True) * cfg.mix
    return (weight * look + (1 - weight) * low.float()).clamp_(0.0, 1.0)
