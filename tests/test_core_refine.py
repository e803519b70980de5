"""Guided upsampling keeps sharp edges sharp; tone, morphology, feather and despill behave."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidmat.core.refine import (
    box_filter,
    decontaminate,
    erode_dilate,
    estimate_foreground,
    feather,
    foreground_small,
    frame_to_nchw,
    guided_upsample,
    refine_np,
    tone,
    torch_only,
)

H, W, EDGE = 96, 128, 53  # the true edge sits between pixel columns 52 and 53


def step_scene(lowres_side=16):
    frame = np.zeros((H, W, 3), np.uint8)
    frame[:, :EDGE] = (200, 180, 160)  # person (left)
    frame[:, EDGE:] = (40, 60, 90)  # background (right)
    gt = np.zeros((H, W), np.float32)
    gt[:, :EDGE] = 1.0
    # The model's view: a blurry low-resolution mask (as a 320 mask of a 1080p frame).
    low = F.interpolate(torch.from_numpy(gt)[None, None], (lowres_side, lowres_side), mode="area")
    return frame, gt, low[0, 0].numpy()


@pytest.mark.parametrize("color", [True, False])
def test_guided_upsampling_keeps_step_edge_sharp(color):
    frame, gt, low = step_scene()
    alpha = refine_np(low, frame, color=color)
    plain = F.interpolate(torch.from_numpy(low)[None, None], (H, W), mode="bilinear")[0, 0].numpy()
    row = alpha[H // 2]
    # Transition (0.05 < a < 0.95) at most 2 pixels wide, centred on the true edge.
    soft = np.nonzero((row > 0.05) & (row < 0.95))[0]
    assert len(soft) <= 2, row[EDGE - 6 : EDGE + 6]
    assert row[: EDGE - 2].min() > 0.95 and row[EDGE + 2 :].max() < 0.05
    # and much closer to the truth than the plain bilinear upsampling
    assert np.abs(alpha - gt).mean() < 0.25 * np.abs(plain - gt).mean()


def test_guided_upsampling_follows_colour_edge_of_equal_brightness():
    frame, _gt, low = step_scene()
    frame[:, :EDGE] = (180, 60, 60)
    frame[:, EDGE:] = (60, 100, 47)  # nearly the same luma as the red
    alpha = refine_np(low, frame, color=True)
    row = alpha[H // 2]
    assert row[: EDGE - 2].min() > 0.9 and row[EDGE + 2 :].max() < 0.1


def test_guided_upsampling_shape_device_dtype_and_batch():
    frame, _, low = step_scene()
    frames = torch.from_numpy(np.stack([frame, frame]))
    lows = torch.from_numpy(np.stack([low, low]))[:, None]
    out = guided_upsample(lows, frames)
    assert out.shape == (2, 1, H, W) and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    torch.testing.assert_close(out[0], out[1])


def test_flat_frame_gives_smooth_upsampled_mask():
    frame = np.full((H, W, 3), 128, np.uint8)
    _, gt, low = step_scene()
    alpha = refine_np(low, frame)
    assert np.isfinite(alpha).all()
    assert np.abs(alpha - gt).mean() < 0.2  # no guide edge: it stays the blurry upsampling


def test_tone_curve():
    a = torch.linspace(0, 1, 11)[None, None, None]
    assert tone(a) is a
    hard = tone(a, 0.3, math.inf)
    assert hard.flatten().tolist() == [0.0] * 3 + [1.0] * 8
    assert tone(a, 0.0, math.inf).flatten().tolist() == [0.0] + [1.0] * 10  # not every pixel
    steep = tone(a, 0.5, 2.0).flatten()
    assert steep[5] == pytest.approx(0.5) and steep[2] == 0.0 and steep[8] == 1.0
    snapped = tone(torch.tensor([0.0, 0.01, 0.5, 0.99, 1.0]), snap=0.02)
    assert snapped.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    # A threshold alone moves the midpoint: solid person and background stay solid (a
    # shift left a person 0.9 opaque at 0.6, and background 0.2 at 0.3).
    for t in (0.05, 0.3, 0.6, 0.8, 0.95):
        moved = tone(a, t).flatten()
        assert moved[0] == 0.0 and moved[-1] == 1.0, t
        assert bool((moved[1:] >= moved[:-1]).all())
        assert float(tone(torch.tensor([t]), t)) == pytest.approx(0.5)
    for t in (0.0, 1.0):  # the ends: 0 and 1 still stay put (they went to 0.5)
        ends = tone(a, t).flatten()
        assert ends[0] == 0.0 and ends[-1] == 1.0 and bool(ends.isfinite().all())
    ghost = tone(torch.tensor([0.3, 0.9, 1.0]), 0.6, 2.0)  # the README's example
    assert ghost.tolist() == [0.0, 1.0, 1.0]


def test_erode_dilate_by_pixels():
    a = torch.zeros(1, 1, 20, 20)
    a[:, :, 5:15, 5:15] = 1
    assert int(erode_dilate(a, 2).sum()) == 14 * 14
    assert int(erode_dilate(a, -2).sum()) == 6 * 6
    assert erode_dilate(a, 0) is a


def test_feather_softens_edge_only():
    a = torch.zeros(1, 1, 20, 40)
    a[..., :20] = 1
    f = feather(a, 4)
    row = f[0, 0, 10]
    assert 0.3 < float(row[19]) < 0.7 and 0.3 < float(row[20]) < 0.7
    assert float(row[:10].min()) == 1.0 and float(row[30:].max()) == 0.0
    assert float(f.sum()) == pytest.approx(float(a.sum()), rel=1e-4)


def test_box_filter_is_an_edge_normalised_mean():
    x = torch.ones(1, 1, 7, 9)
    torch.testing.assert_close(box_filter(x, 2), x)
    y = torch.arange(9.0).view(1, 1, 1, 9)
    assert float(box_filter(y, 1)[0, 0, 0, 4]) == pytest.approx(4.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_wide_feathers_in_half_precision_stay_means(dtype: torch.dtype) -> None:
    """CUDA post-processes in fp16: the running sums of a wide window overflowed (alpha
    above 1, then inf - inf = NaN, and a person composited black at --feather 120)."""
    a = torch.zeros(1, 1, 600, 200)
    a[..., 150:, 50:150] = 1.0
    for px in (20, 120):
        want = feather(a, px)
        got = feather(a.to(dtype), px)
        assert got.dtype == dtype and bool(got.isfinite().all())
        assert float(got.max()) <= 1.0
        torch.testing.assert_close(got.float(), want, atol=1e-2, rtol=0)


def test_despill_removes_old_background_from_edge_pixels():
    # Person red, old background green, a 50 % edge column mixes them.
    frame = np.zeros((32, 32, 3), np.uint8)
    frame[:, :16] = (220, 40, 40)
    frame[:, 16:] = (0, 200, 0)
    frame[:, 16] = (110, 120, 20)  # the grey/green fringe
    alpha = np.zeros((32, 32), np.float32)
    alpha[:, :16] = 1.0
    alpha[:, 16] = 0.5
    ff = frame_to_nchw(torch.from_numpy(frame))
    fg = estimate_foreground(ff, torch.from_numpy(alpha)[None, None])[0].permute(1, 2, 0) * 255
    edge = fg[:, 16].numpy()
    assert (edge[:, 1] < 90).all(), edge[0]  # far less green than the fringe's 120
    assert (edge[:, 0] > 150).all()  # and close to the person's red
    np.testing.assert_allclose(fg[:, :15].numpy(), frame[:, :15], atol=0.5)  # solid fg untouched


@pytest.mark.cuda
def test_cuda_matches_cpu():
    frame, _, low = step_scene()
    f, lw = torch.from_numpy(frame), torch.from_numpy(low)
    with torch_only():  # CUDA runs the torch path; the CPU's OpenCV path differs by design
        cpu = guided_upsample(lw, f)
    gpu = guided_upsample(lw.cuda(), f.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-3, rtol=0)
    half = guided_upsample(lw.cuda(), f.cuda(), dtype=torch.float16)
    assert (half.float().cpu() - cpu).abs().max() < 1e-2


@pytest.mark.parametrize("color", [True, False])
def test_opencv_and_torch_paths_agree(color):
    rng = np.random.default_rng(3)
    # A natural-ish picture: smooth colour blobs plus mild noise.
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    frame = cv2.resize(coarse, (80, 60), interpolation=cv2.INTER_CUBIC)
    frame = np.clip(frame + rng.normal(0, 2, frame.shape), 0, 255).astype(np.uint8)
    low = torch.from_numpy(rng.random((20, 20), dtype=np.float32))
    fast = guided_upsample(low, torch.from_numpy(frame), color=color)
    with torch_only():
        slow = guided_upsample(low, torch.from_numpy(frame), color=color)
    # The OpenCV path works from an 8-bit reduced frame; the difference stays small.
    assert (fast - slow).abs().mean() < 5e-3 and (fast - slow).abs().max() < 0.1
    alpha = slow
    fs = foreground_small(
        frame_to_nchw(torch.from_numpy(frame))[:, :, ::3, ::4].contiguous(),
        alpha[:, :, ::3, ::4].contiguous(),
    )
    fast_fg = decontaminate(torch.from_numpy(frame), alpha, fs).int()
    with torch_only():
        slow_fg = decontaminate(torch.from_numpy(frame), alpha, fs).round().int()
    assert (fast_fg - slow_fg).abs().max() <= 2
