"""Temporal smoothing on synthetic clips with known motion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from core_fixtures import background, flicker, flickery, iou, scene, t_alpha, t_frame

from vidmat.core.smoothing import (
    BidirectionalSmoother,
    SmoothingParams,
    TemporalSmoother,
    smooth_sequence,
    smooth_sequence_np,
    warp_along_flow,
)


def run_causal(frames, raws, strength=0.5):
    sm = TemporalSmoother(strength)
    state, out = None, []
    for f, r in zip(frames, raws, strict=True):
        a, state = sm(t_alpha(r), t_frame(f), state)
        out.append(a[0, 0].numpy())
    return out


def still_clip(n=16):
    frames, raws = [], []
    for i in range(n):
        f, gt = scene(20, seed=i)
        frames.append(f)
        raws.append(flickery(gt, seed=100 + i))
    return frames, raws, gt


def test_strength_zero_is_exact_passthrough():
    frames, raws, _ = still_clip(4)
    sm = TemporalSmoother(0.0)
    state = None
    for f, r in zip(frames, raws, strict=True):
        raw = t_alpha(r)
        a, state = sm(raw, t_frame(f), state)
        assert a is raw


def test_still_scene_settles():
    frames, raws, gt = still_clip(20)
    out = run_causal(frames, raws, 0.5)
    assert flicker(out[5:]) <= 0.5 * flicker(raws[5:])
    assert iou(out[-1], gt) >= iou(raws[-1], gt) - 0.01
    strong = run_causal(frames, raws, 1.0)
    assert flicker(strong[5:]) < flicker(out[5:])


@pytest.mark.parametrize("lowcontrast", [False, True])
def test_sudden_move_followed_within_one_frame_and_no_ghost(lowcontrast):
    bg = background()
    colour = (230, 60, 40)
    if lowcontrast:  # the person has the background's texture: only the mask tells
        bg = np.full_like(bg, 120)
        colour = (120, 120, 120)
    frames, raws, gts = [], [], []
    for i in range(14):
        x = 8 if i < 8 else 34
        f, gt = scene(x, bg=bg, colour=colour, seed=i)
        frames.append(f)
        gts.append(gt)
        raw = np.clip(gt * 0.96 + 0.02, 0, 1)  # confident, stable prediction
        raws.append(raw)
    out = run_causal(frames, raws, 0.8)
    # Frame 8 is the first with the person moved: followed in that very frame.
    assert iou(out[8], gts[8]) > 0.95
    ghost = (gts[7] > 0) & (gts[8] == 0)
    assert out[8][ghost].max() < 0.5
    # A few frames later nothing of the old position remains.
    assert out[11][ghost].max() < 0.05


def test_scene_cut_resets_to_raw():
    frames, raws, _ = still_clip(8)
    f2, gt2 = scene(30, bg=background(seed=7)[::-1].copy(), colour=(20, 200, 240), seed=99)
    f2 = (255 - f2).astype(np.uint8)
    raw2 = flickery(gt2, seed=5)
    sm = TemporalSmoother(1.0)
    state = None
    for f, r in zip(frames, raws, strict=True):
        _, state = sm(t_alpha(r), t_frame(f), state)
    a, state = sm(t_alpha(raw2), t_frame(f2), state)
    np.testing.assert_array_equal(a[0, 0].numpy(), raw2)
    assert state.frames == 1


def test_state_shape_change_resets():
    sm = TemporalSmoother(0.5)
    f, gt = scene(10)
    _, state = sm(t_alpha(gt), t_frame(f), None)
    small = np.zeros((24, 32), np.float32)
    a, state = sm(t_alpha(small), t_frame(f), state)
    assert a.shape == (1, 1, 24, 32)
    np.testing.assert_array_equal(a[0, 0].numpy(), small)


def test_bidirectional_delay_order_and_flush():
    frames, raws, _ = still_clip(7)
    bi = BidirectionalSmoother(0.5, lookahead=2)
    got = []
    for i, (f, r) in enumerate(zip(frames, raws, strict=True)):
        ready = bi.push(t_alpha(r), t_frame(f), meta=i)
        assert len(ready) == (0 if i < 2 else 1)
        got += [s.meta for s in ready]
        for s in ready:
            assert s.frame is not None and s.alpha.shape == (1, 1, 48, 64)
    got += [s.meta for s in bi.flush()]
    assert got == list(range(7))
    assert bi.pending == 0


def test_bidirectional_settles_and_has_no_lag():
    frames, raws, gts = [], [], []
    for i in range(16):
        x = 8 if i < 8 else 34
        f, gt = scene(x, seed=i)
        frames.append(f)
        gts.append(gt)
        raws.append(flickery(gt, seed=200 + i))
    out = list(smooth_sequence_np(np.stack(raws), np.stack(frames), 0.7, lookahead=3))
    assert len(out) == 16
    assert flicker(out[1:7]) <= 0.5 * flicker(raws[1:7])
    # The frames either side of the move are as good as the per-frame masks (no lag).
    for i in (7, 8):
        assert iou(out[i], gts[i]) >= min(0.95, iou(raws[i], gts[i]) - 0.01)
    ghost = (gts[7] > 0) & (gts[8] == 0)
    assert out[9][ghost].mean() < 0.1


def test_bidirectional_removes_transient_blob():
    frames, raws, gt = still_clip(9)
    raws = [np.clip(gt * 0.96 + 0.02, 0, 1) for _ in raws]
    blob = raws[4].copy()
    blob[30:40, 45:60] = 0.95  # a one-frame false positive on a still background
    raws[4] = blob
    out = smooth_sequence_np(np.stack(raws), np.stack(frames), 0.5, lookahead=2)
    assert out[4][30:40, 45:60].max() < 0.2


def test_bidirectional_leaves_no_ghost_where_the_mover_matches_the_background():
    # A square whose inside has the background's colour (dark trousers over shaded grass)
    # runs 5 px a frame; only its bright rim shows in the image. Where it was, the image
    # agrees with the centre frame again, but the confident mask step there is a real
    # change, not flicker: averaging it in would leave a trail of the square behind it.
    frames, raws, gts = [], [], []
    for i in range(13):
        f = np.full((48, 96, 3), 60, np.uint8)
        x = 8 + 5 * i
        f[14:34, x : x + 20] = 200
        f[16:32, x + 2 : x + 18] = 60
        gt = np.zeros((48, 96), np.float32)
        gt[14:34, x : x + 20] = 1.0
        frames.append(f)
        gts.append(gt)
        raws.append(np.clip(gt * 0.96 + 0.02, 0, 1))
    out = smooth_sequence_np(np.stack(raws), np.stack(frames), 0.5, lookahead=4)
    t = 6
    trail = (gts[t] == 0) & ((gts[t - 2] > 0) | (gts[t + 2] > 0))
    assert out[t][trail].max() < 0.1
    assert iou(out[t], gts[t]) > 0.95


def test_bidirectional_minority_of_soft_masks_leaves_little_haze():
    # The image never changes; in 4 of 17 frames the model's soft halo (0.6) covers a patch
    # the other frames call background. A plain gated average leaks that minority into
    # every output near it; the robust re-weighting keeps the majority's answer.
    frames, raws, gt = still_clip(17)
    raws = [np.clip(gt * 0.96 + 0.02, 0, 1) for _ in raws]
    patch = np.s_[2:12, 2:20]
    assert gt[patch].max() == 0
    for i in range(4):
        raws[i][patch] = 0.6

    def centre(robust: float) -> float:
        out = smooth_sequence_np(
            np.stack(raws),
            np.stack(frames),
            0.5,
            lookahead=8,
            params=SmoothingParams(robust=robust),
        )
        return float(out[8][patch].mean())

    plain, robust = centre(0.0), centre(SmoothingParams().robust)
    assert plain > 0.12  # the leak this guards against
    assert robust < 0.6 * plain


def test_bidirectional_does_not_cross_a_scene_cut():
    frames, raws, _ = still_clip(5)
    f2, gt2 = scene(30, bg=background(seed=7), colour=(20, 200, 240), seed=99)
    f2 = (255 - f2).astype(np.uint8)
    frames += [f2] * 4
    raws += [np.clip(gt2 * 0.96 + 0.02, 0, 1)] * 4
    out = smooth_sequence_np(np.stack(raws), np.stack(frames), 1.0, lookahead=3)
    np.testing.assert_allclose(out[5], raws[5], atol=1e-5)


def test_smooth_sequence_causal_matches_loop():
    frames, raws, _ = still_clip(6)
    seq = smooth_sequence(
        torch.from_numpy(np.stack(raws))[:, None], torch.from_numpy(np.stack(frames)), 0.5
    )
    loop = run_causal(frames, raws, 0.5)
    np.testing.assert_allclose(seq[:, 0].numpy(), np.stack(loop), atol=1e-6)


def test_lowres_mask_with_fullres_frame():
    f, gt = scene(10)
    sm = TemporalSmoother(0.5)
    raw = t_alpha(gt[::2, ::2])
    a, state = sm(raw, t_frame(f), None)
    a, state = sm(raw, t_frame(f), state)
    assert a.shape == (1, 1, 24, 32)
    assert state.guide.shape == (1, 1, 24, 32)


def test_rejects_bad_strength():
    with pytest.raises(ValueError):
        TemporalSmoother(1.5)
    with pytest.raises(ValueError):
        BidirectionalSmoother(0.5, lookahead=-1)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    frames, raws, _ = still_clip(6)
    r = torch.from_numpy(np.stack(raws))[:, None]
    f = torch.from_numpy(np.stack(frames))
    for k in (0, 2):
        cpu = smooth_sequence(r, f, 0.6, lookahead=k)
        gpu = smooth_sequence(r.cuda(), f.cuda(), 0.6, lookahead=k)
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)


def test_motion_compensation_smooths_a_panning_shot_without_lag():
    # The whole picture (textured background and person) pans 2 px per frame: every pixel
    # changes, so without motion compensation nothing could be smoothed.
    big_bg = background(seed=3, h=48, w=160)
    frames, raws, gts = [], [], []
    for i in range(14):
        f, gt = scene(60, bg=big_bg, seed=i)
        x0 = 2 * i
        frames.append(np.ascontiguousarray(f[:, x0 : x0 + 64]))
        gts.append(gt[:, x0 : x0 + 64])
        raws.append(flickery(gts[-1], seed=300 + i, amount=0.2))
    # follow=0, loose_motion=0: only the image gate decides, so the comparison isolates
    # motion compensation
    only_image = {"follow": 0.0, "loose_motion": 0.0}
    plain = smooth_sequence_np(
        np.stack(raws), np.stack(frames), 0.5, params=SmoothingParams(flow=False, **only_image)
    )
    flow = smooth_sequence_np(
        np.stack(raws), np.stack(frames), 0.5, params=SmoothingParams(**only_image)
    )
    assert flicker(list(flow[4:])) < 0.9 * flicker(list(plain[4:]))
    for i in range(4, 14):  # follows the pan: no lag, no ghost
        assert iou(flow[i], gts[i]) >= iou(raws[i], gts[i]) - 0.02


def test_bidirectional_with_flow_runs():
    frames, raws, _ = still_clip(5)
    out = smooth_sequence_np(
        np.stack(raws),
        np.stack(frames),
        0.5,
        lookahead=2,
        params=SmoothingParams(flow_lookahead=True),
    )
    assert out.shape == (5, 48, 64)
    assert flicker(list(out)) < flicker(raws)


def test_small_wobbles_of_a_moving_shot_are_smoothed_large_changes_followed():
    # The left half of the picture changes every frame (leaves in the wind), so the image
    # gate is open there; the mask only wobbles by a few percent. `follow` smooths those
    # wobbles and still lets the real change (the person appearing) through at once.
    rng = np.random.default_rng(7)
    still = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    frames = []
    for _ in range(12):
        f = still.copy()
        f[:, :32] = rng.integers(0, 256, (48, 32, 3), dtype=np.uint8)
        frames.append(f)
    gt = np.zeros((48, 64), np.float32)
    gt[10:40, 20:44] = 1.0
    raws = []
    for i in range(12):
        base = gt if i >= 8 else np.zeros_like(gt)
        wobble = rng.uniform(-0.03, 0.03, gt.shape).astype(np.float32)
        raws.append(np.clip(base * 0.9 + 0.05 + wobble, 0, 1))

    def run(follow: float):
        return smooth_sequence_np(
            np.stack(raws), np.stack(frames), 0.5, params=SmoothingParams(follow=follow)
        )

    plain, gated = run(0.0), run(0.05)
    left = np.s_[:, :, :32]
    assert flicker(list(gated[1:8][left])) < 0.6 * flicker(list(plain[1:8][left]))
    assert iou(gated[8], gt) > 0.95  # the person appears at once, no lag


def test_live_filter_smooths_a_moving_shots_wobble_and_follows_a_real_step():
    # The left half's image changes by ~0.15 a frame (a camera shaking over texture): the
    # motion gate is open there. The mask wobbles by up to 0.3; the loose test (a moderate
    # image change with a mask change below a confident step) still smooths it, and the
    # person appearing (a confident step) is followed in the same frame.
    rng = np.random.default_rng(11)
    base = rng.integers(60, 196, (48, 64, 1)).astype(np.int16).repeat(3, 2)
    frames = []
    for _ in range(12):
        f = base.copy()
        f[:, :32] += rng.integers(-60, 61, (48, 32, 1)).astype(np.int16)
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    gt = np.zeros((48, 64), np.float32)
    gt[10:40, 20:44] = 1.0
    raws = []
    for i in range(12):
        wobble = rng.uniform(-0.15, 0.15, gt.shape).astype(np.float32)
        raws.append(np.clip((gt * 0.9 if i >= 8 else 0.0) + 0.2 + wobble, 0, 1))

    def run(loose_motion: float):
        params = SmoothingParams(loose_motion=loose_motion, flow=False)
        return smooth_sequence_np(np.stack(raws), np.stack(frames), 0.5, params=params)

    plain, loose = run(0.0), run(SmoothingParams().loose_motion)
    left = np.s_[:, :, :32]
    assert flicker(list(loose[1:8][left])) < 0.8 * flicker(list(plain[1:8][left]))
    assert iou(loose[8], gt) > 0.95  # no lag on the real change


def test_bidirectional_follows_a_change_of_colour_at_equal_brightness():
    # A red shirt leaves and the grey-green wall behind it has the same brightness: only
    # colour says the image changed, so the neighbours must not drag the old mask along.
    red, green = (200, 60, 60), (60, 131, 60)  # luma 101.8 and 101.9
    frames, raws = [], []
    for i in range(10):
        f = np.full((48, 64, 3), 120, np.uint8)
        f[:, :32] = red if i < 5 else green
        frames.append(f)
        r = np.full((48, 64), 0.02, np.float32)
        r[:, :32] = 0.98 if i < 5 else 0.02
        raws.append(r)
    out = smooth_sequence_np(np.stack(raws), np.stack(frames), 1.0, lookahead=4)
    for i in range(10):
        np.testing.assert_allclose(out[i], raws[i], atol=0.02)


def test_pictures_too_small_or_too_flat_for_flow_are_taken_as_still():
    # OpenCV's DIS flow raises under 12 px (a traceback in `vidmat bench postprocess
    # --sizes 10x10`) and segfaults on an 11x160 grid (a video wider than about 5:1).
    rng = np.random.default_rng(0)
    for h, w in ((10, 10), (11, 160), (31, 64)):
        g8 = [rng.integers(0, 256, (h, w), dtype=np.uint8) for _ in range(2)]
        alpha, guide = torch.rand(1, 1, h, w), torch.rand(1, 1, h, w)
        a, g, _ = warp_along_flow(None, g8[0], g8[1], alpha, guide)
        assert a is alpha and g is guide
    big = [rng.integers(0, 256, (32, 160), dtype=np.uint8) for _ in range(2)]
    alpha = torch.rand(1, 1, 32, 160)
    a, _, estimator = warp_along_flow(None, big[0], big[1], alpha, torch.rand(1, 1, 32, 160))
    assert a is not alpha and a.shape == (1, 1, 32, 160) and estimator is not None
