"""The second look (vidmat.core.zoom): where its window goes, what it crops, how it merges."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidmat.core.engine import Engine, upsample_alpha
from vidmat.core.settings import EngineConfig
from vidmat.core.zoom import ZoomConfig, crop_frames, merge_windows, person_windows
from vidmat.model.spec import WeightsSpec


def _grid(n: int, s: int, box: tuple[int, int, int, int] | None) -> torch.Tensor:
    low = torch.zeros(n, 1, s, s)
    if box is not None:
        y0, y1, x0, x1 = box
        low[:, :, y0:y1, x0:x1] = 1.0
    return low


def test_window_holds_the_person_with_its_margin_inside_the_frame() -> None:
    cfg = ZoomConfig()
    # a person in grid cells rows 10..19, cols 30..33 of a 40x40 grid over a 400x800 frame:
    # frame box y 100..200, x 600..680; margin 0.2 x 100 = 20 px on each side
    w = person_windows(_grid(1, 40, (10, 20, 30, 34)), 400, 800, cfg)[0, 0].tolist()
    y0, y1, x0, x1 = w
    assert y0 <= 80 and y1 >= 220 and x0 <= 580 and x1 >= 700
    assert 0 <= y0 < y1 <= 400 and 0 <= x0 < x1 <= 800
    aspect = (x1 - x0) / (y1 - y0)
    assert cfg.min_aspect - 0.02 <= aspect <= cfg.max_aspect + 0.02
    # near the frame's edge the window slides inside rather than being cut
    y0, y1, x0, x1 = person_windows(_grid(1, 40, (0, 6, 36, 40)), 400, 800, cfg)[0, 0].tolist()
    assert y0 == 0 and x1 == 800 and (x1 - x0) / (y1 - y0) >= cfg.min_aspect - 0.02


def test_no_window_without_a_person_or_when_the_person_fills_the_frame() -> None:
    cfg = ZoomConfig()
    low = torch.cat(
        [_grid(1, 32, None), _grid(1, 32, (2, 30, 4, 28)), _grid(1, 32, (8, 14, 8, 12))]
    )
    w = person_windows(low, 240, 320, cfg)
    assert w[0].abs().sum() == 0 and w[1].abs().sum() == 0
    assert w[2, 0, 1] > w[2, 0, 0] and w[2, 0, 3] > w[2, 0, 2]
    assert w[2, 1:].abs().sum() == 0  # one person, one window


def test_crop_is_the_window_resized_like_the_engine_resizes() -> None:
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.integers(0, 255, (2, 60, 90, 3), dtype=np.uint8))
    windows = torch.tensor([[[10, 50, 20, 80]], [[0, 0, 0, 0]]], dtype=torch.float64)
    crops = crop_frames(frames, windows, 32)
    assert crops.shape == (2, 32, 32, 3) and crops.dtype == torch.uint8

    def ref(x: torch.Tensor, size: int = 32) -> torch.Tensor:
        # as the engine resizes a uint8 frame on the CPU: in uint8
        x = x.permute(0, 3, 1, 2)
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        return x.permute(0, 2, 3, 1)

    assert torch.equal(crops[:1], ref(frames[:1, 10:50, 20:80]))
    # padded with a whole frame to as many crops as frames (its alpha is weighted 0)
    assert torch.equal(crops[1:], ref(frames[:1]))
    # three windows over two frames: frame by frame, window by window, padded to 2N
    windows = torch.tensor(
        [[[0, 30, 0, 45], [30, 60, 45, 90]], [[5, 25, 5, 25], [0, 0, 0, 0]]], dtype=torch.float64
    )
    crops = crop_frames(frames, windows, 16)
    assert crops.shape == (4, 16, 16, 3)
    ref16 = [frames[:1, 0:30, 0:45], frames[:1, 30:60, 45:90], frames[1:, 5:25, 5:25]]
    for got, want in zip(crops[:3], ref16, strict=True):
        assert torch.equal(got, ref(want, 16)[0])


def test_merge_puts_the_crop_inside_its_window_and_blends_only_inner_edges() -> None:
    cfg = ZoomConfig(feather=0.1, mix=1.0)  # the crop alone, to see where it lands
    s, h, w = 40, 400, 400
    low = torch.zeros(2, 1, s, s)
    crop_low = torch.ones(2, 1, s, s)
    windows = torch.tensor([[[100, 300, 100, 300]], [[0, 0, 0, 0]]], dtype=torch.float64)
    out = merge_windows(low, crop_low, windows, h, w, cfg)
    assert out.shape == low.shape
    # cells 10..29 lie in the window; well inside they take the crop, outside the first pass
    assert out[0, 0, 14:26, 14:26].min() == pytest.approx(1.0)
    assert out[0, 0, :9].max() == 0.0 and out[0, 0, :, 31:].max() == 0.0
    # the cell just inside the window's edge is blended, not switched
    assert 0.0 < out[0, 0, 10, 20] < 1.0
    assert torch.equal(out[1], low[1])  # no window: the first pass unchanged

    # a window on the frame's border: no blend along that border
    edge = torch.tensor([[[0, 200, 0, 200]]], dtype=torch.float64)
    out = merge_windows(low[:1], crop_low[:1], edge, h, w, cfg)
    assert out[0, 0, 0, 5] == pytest.approx(1.0) and out[0, 0, 5, 0] == pytest.approx(1.0)
    assert 0.0 < out[0, 0, 19, 5] < 1.0

    # what the crop shows lands where it is in the frame: its top half -> the window's top
    half = torch.zeros(1, 1, s, s)
    half[..., : s // 2, :] = 1.0
    out = merge_windows(low[:1], half, windows[:1], h, w, cfg)
    assert out[0, 0, 13, 20] > 0.99 and out[0, 0, 26, 20] < 0.01

    # by default the window holds the mean of the two looks
    mixed = merge_windows(low + 0.2, crop_low, windows, h, w, ZoomConfig())
    assert mixed[0, 0, 20, 20] == pytest.approx(0.6) and mixed[0, 0, 2, 2] == pytest.approx(0.2)


def test_people_apart_get_a_window_each_and_a_stray_blob_none() -> None:
    cfg = ZoomConfig()
    low = _grid(1, 64, (20, 50, 4, 12))  # a person near the left edge
    low[..., 24:54, 50:58] = 1.0  # another near the right edge
    low[..., 2:4, 30:32] = 1.0  # a 4-cell blob at the top, far from both
    w = person_windows(low, 480, 854, cfg)[0]
    assert w.shape == (cfg.max_windows, 4)
    boxes = sorted(w.tolist(), key=lambda b: b[2])
    (ly0, _, _, lx1), (ry0, _, rx0, _) = boxes
    # each window holds its own person and not the other one, nor the blob's cells
    assert lx1 < 50 * 854 / 64 and rx0 > 12 * 854 / 64
    assert ly0 > 4 * 480 / 64 and ry0 > 4 * 480 / 64
    # one window around both would have covered too much of the frame
    together = torch.zeros(1, 1, 64, 64)
    together[..., 20:54, 4:58] = 1.0
    assert person_windows(together, 480, 854, cfg).abs().sum() == 0
    # a frame allowed only one window takes the larger person (the right one, 30x8 cells,
    # against 30x8: equal, so the first found; make the left one larger)
    low[..., 18:52, 4:12] = 1.0
    one = person_windows(low, 480, 854, ZoomConfig(max_windows=1))[0]
    assert one.shape == (1, 4) and one[0, 3] < 50 * 854 / 64


def test_one_window_while_it_fits_and_parts_of_a_person_stay_together_when_split() -> None:
    cfg = ZoomConfig()
    low = _grid(1, 64, (30, 50, 10, 16))  # a body
    low[..., 24:28, 11:15] = 1.0  # its head, two cells above (not connected)
    low[..., 30:50, 40:44] = 1.0  # a second person: one window around all still fits
    w = person_windows(low, 480, 480, cfg)[0]
    assert w[1].abs().sum() == 0 and w[0, 2] < 10 * 480 / 64 and w[0, 3] > 44 * 480 / 64
    low[..., 30:50, 40:44] = 0.0
    low[..., 30:50, 58:62] = 1.0  # moved further: all three would be too much of the frame
    w = person_windows(low, 480, 480, cfg)[0]
    left = w[int(w[:, 2].argmin())]
    assert w[1, 1] > w[1, 0]  # two windows
    assert left[0] < 24 * 480 / 64 and left[1] > 50 * 480 / 64  # head and body in one
    assert left[3] < 58 * 480 / 64


def test_overlapping_windows_average_their_looks() -> None:
    cfg = ZoomConfig(feather=0.01, mix=1.0)
    low = torch.zeros(1, 1, 40, 40)
    windows = torch.tensor([[[0, 200, 0, 300], [0, 200, 100, 400]]], dtype=torch.float64)
    crop_low = torch.stack([torch.full((1, 40, 40), 1.0), torch.full((1, 40, 40), 0.5)])
    out = merge_windows(low, crop_low, windows, 400, 400, cfg)
    assert out[0, 0, 5, 2] == pytest.approx(1.0)  # the first window only
    assert out[0, 0, 5, 37] == pytest.approx(0.5)  # the second only
    assert out[0, 0, 5, 20] == pytest.approx(0.75)  # both: their mean
    assert out[0, 0, 30, 20] == 0.0  # neither


class _Opening(torch.nn.Module):
    """A stand-in model that finds bright things at least ``k`` input pixels thick."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = (x.float().mean(1, keepdim=True) > 0).float()
        eroded = -F.max_pool2d(-m, self.k, 1, self.k // 2)
        return F.max_pool2d(eroded, self.k, 1, self.k // 2).to(x.dtype)


def test_engine_zoom_finds_a_limb_too_thin_for_the_first_pass() -> None:
    spec = WeightsSpec(name="t", arch="u2netp", input_size=32, scale="255")
    frame = np.zeros((96, 160, 3), np.uint8)
    frame[40:90, 60:100] = 255  # body
    frame[31:40, 76:82] = 255  # a raised arm: 1.2 px wide at the model's 32 px
    truth = frame[..., 0] > 0
    plain = Engine(_Opening(3), spec, EngineConfig(device="cpu")).predict(frame)
    zoom_engine = Engine(_Opening(3), spec, EngineConfig(device="cpu", zoom=True))
    zoomed = zoom_engine.predict(frame)
    arm = (slice(31, 40), slice(76, 82))
    # the first pass barely sees the arm; the second sees it, and the mean of the two
    # looks (ZoomConfig.mix) carries it part of the way (0.11 -> 0.36 here)
    assert plain[arm].mean() < 0.15 and zoomed[arm].mean() > 0.3
    assert (zoomed[40:90, 60:100] > 0.5).mean() > 0.95
    assert (zoomed[~truth] > 0.5).sum() <= (plain[~truth] > 0.5).sum()
    # predict_lowres is the same merged grid that predict upsamples
    low = zoom_engine.predict_lowres(frame)
    assert low.shape == (1, 1, 32, 32)
    np.testing.assert_allclose(zoomed, upsample_alpha(low, 96, 160)[0, 0].numpy(), atol=1e-6)


def test_engine_zoom_looks_at_two_people_apart_one_by_one() -> None:
    spec = WeightsSpec(name="t", arch="u2netp", input_size=32, scale="255")
    frame = np.zeros((120, 320, 3), np.uint8)
    arms = []
    for x in (20, 260):
        frame[60:115, x : x + 40] = 255  # a body
        frame[46:60, x + 14 : x + 26] = 255  # a raised arm, 1.2 px wide at 32 px
        arms.append((slice(46, 60), slice(x + 14, x + 26)))
    plain = Engine(_Opening(3), spec, EngineConfig(device="cpu")).predict(frame)
    zoomed = Engine(_Opening(3), spec, EngineConfig(device="cpu", zoom=True)).predict(frame)
    for arm in arms:
        assert plain[arm].mean() < 0.1 and zoomed[arm].mean() > 0.25


def test_engine_zoom_leaves_a_frame_filling_person_to_the_first_pass() -> None:
    spec = WeightsSpec(name="t", arch="u2netp", input_size=32, scale="255")
    frame = np.zeros((60, 80, 3), np.uint8)
    frame[5:58, 8:72] = 255
    plain = Engine(_Opening(3), spec, EngineConfig(device="cpu")).predict(frame)
    zoomed = Engine(_Opening(3), spec, EngineConfig(device="cpu", zoom=True)).predict(frame)
    np.testing.assert_array_equal(plain, zoomed)


@pytest.mark.cuda
def test_zoom_on_cuda_with_graphs_matches_the_cpu() -> None:
    spec = WeightsSpec(name="t", arch="u2netp", input_size=32, scale="255")
    frames = np.zeros((3, 96, 160, 3), np.uint8)
    frames[0, 40:90, 60:100] = 255  # a small person with a thin arm: a window
    frames[0, 31:40, 76:82] = 255
    frames[1, 40:90, 5:35] = 255  # two people apart: a window each
    frames[1, 40:90, 125:155] = 255
    frames[2, 4:94, 10:150] = 255  # one that fills the frame: none
    cpu = Engine(_Opening(3), spec, EngineConfig(device="cpu", zoom=True)).predict(frames)
    cfg = EngineConfig(device="cuda", precision="fp32", cuda_graph=True, zoom=True)
    gpu = Engine(_Opening(3), spec, cfg)
    first, second = gpu.predict(frames), gpu.predict(frames)  # captured, then replayed
    assert len(gpu._graphs) == 2  # the frames' shape and the crops' (3 crops, padded to 6)
    np.testing.assert_allclose(first, second, atol=1e-6)
    np.testing.assert_allclose(first, cpu, atol=1e-4)
