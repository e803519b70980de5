"""The per-stream PostProcessor the pipelines call: shapes, ordering, reset, config, file backgrounds."""

from __future__ import annotations

import contextlib
import math
from fractions import Fraction

import cv2
import numpy as np
import pytest
import torch
from convert_fixtures import colour_clip, truncated_clip
from core_fixtures import flicker, flickery, scene

from vidmat.core.backgrounds import Background
from vidmat.core.postprocess import PostProcessor
from vidmat.core.refine import torch_only
from vidmat.core.settings import PostprocessConfig
from vidmat.errors import VidmatError
from vidmat.io.images import LoopingVideo, load_background


def clip(n=6):
    frames, lows = [], []
    for i in range(n):
        f, gt = scene(10 + (i // 3) * 20, seed=i)
        frames.append(f)
        lows.append(flickery(gt[::2, ::2], seed=i))  # low-res, like the model's output
    return frames, lows


@pytest.mark.parametrize("bg", ["green", "blur:10", "transparent", "mask", "#123456"])
def test_process_shapes(bg):
    frames, lows = clip(2)
    post = PostProcessor(PostprocessConfig(), bg)
    for f, lw in zip(frames, lows, strict=True):
        out = post.process(torch.from_numpy(f), torch.from_numpy(lw)[None, None], t=0.0)
        assert out.alpha.shape == (1, 1, 48, 64)
        assert out.image.dtype == torch.uint8
        assert out.image.shape == (48, 64, 4 if bg == "transparent" else 3)


@pytest.mark.parametrize("shape", [(1, 1), (10, 4000), (3000, 10), (1, 7), (5, 3)])
@pytest.mark.parametrize("bg", ["green", "blur:10", "transparent", "mask"])
def test_process_frames_a_pixel_or_a_few_thick(shape, bg):
    """A frame 1 px high or wide has a working grid that cannot be halved (it crashed)."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    low = rng.random((1, 1, 8, 8), dtype=np.float32)
    post = PostProcessor(PostprocessConfig(), bg)
    out = post.process(frame, low, t=0.0)
    assert out.alpha.shape == (1, 1, *shape)
    assert out.image.shape == (*shape, 4 if bg == "transparent" else 3)
    assert 0.0 <= float(out.alpha.min()) <= float(out.alpha.max()) <= 1.0


def test_process_accepts_numpy_and_batched_engine_layout():
    frames, lows = clip(1)
    post = PostProcessor()
    out = post.process(frames[0][None], lows[0][None, None])
    assert out.image.shape == (48, 64, 3)


def test_opaque_person_is_kept_and_background_replaced():
    f, gt = scene(10, seed=0)
    post = PostProcessor(PostprocessConfig(smoothing=0.0), "white")
    out = post.process(f, np.clip(gt[::2, ::2], 0, 1)[None, None]).image.numpy()
    inner = np.zeros_like(gt, bool)
    inner[16:29, 16:21] = True  # 6 px inside the person: beyond the guided filter window
    np.testing.assert_array_equal(out[inner], f[inner])
    outer = np.zeros_like(gt, bool)
    outer[40:, 40:] = True
    assert (out[outer] == 255).all()


def test_push_flush_order_and_delay():
    frames, lows = clip(6)
    post = PostProcessor(PostprocessConfig(smoothing=0.5, lookahead=2), "green")
    assert post.delay == 2
    got = []
    for i, (f, lw) in enumerate(zip(frames, lows, strict=True)):
        ready = post.push(f, lw[None, None], t=i / 30)
        assert len(ready) == (0 if i < 2 else 1)
        got += ready
    got += post.flush()
    assert [o.t for o in got] == [i / 30 for i in range(6)]
    for o, f in zip(got, frames, strict=True):
        np.testing.assert_array_equal(o.frame.numpy(), f)


def test_smoothing_cannot_change_under_frames_held_for_look_ahead():
    """A new smoother dropped the frames the old one held: 6 pushed, none ever came out."""
    frames, lows = clip(4)
    post = PostProcessor(PostprocessConfig(smoothing=0.5, lookahead=3), "green")
    for i, (f, lw) in enumerate(zip(frames, lows, strict=True)):
        post.push(f, lw[None, None], t=i / 30)
    with pytest.raises(ValueError, match="3 frames are held for look-ahead; flush"):
        post.set_config(lookahead=1)
    post.set_config(threshold=0.4)  # what look-ahead does not hold may change
    assert [o.t for o in post.flush()] == [i / 30 for i in range(1, 4)]
    post.set_config(smoothing=0.2, lookahead=1)
    assert post.delay == 1


def test_push_batch_with_times():
    frames, lows = clip(4)
    post = PostProcessor(PostprocessConfig(lookahead=0))
    out = post.push(np.stack(frames), np.stack(lows)[:, None], t=[0.0, 0.1, 0.2, 0.3])
    assert [o.t for o in out] == [0.0, 0.1, 0.2, 0.3]
    # one time for a batch, or too few, was every frame's time dropped (a still background)
    for t in (0.5, [0.0, 0.1]):
        with pytest.raises(ValueError, match="4 frames but"):
            post.push(np.stack(frames), np.stack(lows)[:, None], t=t)


def test_smoothing_reduces_flicker_and_reset_forgets():
    frames, lows = [], []
    for i in range(10):
        f, gt = scene(20, seed=i)
        frames.append(f)
        lows.append(flickery(gt, seed=50 + i))
    raw_post = PostProcessor(PostprocessConfig(smoothing=0.0, refine=False), "mask")
    sm_post = PostProcessor(PostprocessConfig(smoothing=0.6, refine=False), "mask")
    raw = [
        raw_post.process(f, lw[None, None]).alpha[0, 0].numpy()
        for f, lw in zip(frames, lows, strict=True)
    ]
    sm = [
        sm_post.process(f, lw[None, None]).alpha[0, 0].numpy()
        for f, lw in zip(frames, lows, strict=True)
    ]
    assert flicker(sm[3:]) < 0.5 * flicker(raw[3:])
    sm_post.reset()
    again = sm_post.process(frames[-1], lows[-1][None, None]).alpha[0, 0].numpy()
    np.testing.assert_allclose(again, raw[-1], atol=1e-6)


def test_set_background_and_config_at_run_time():
    frames, lows = clip(2)
    post = PostProcessor()
    post.process(frames[0], lows[0][None, None])
    post.set_background("transparent")
    assert post.process(frames[1], lows[1][None, None]).image.shape[-1] == 4
    post.set_config(smoothing=0.0, erode_dilate_px=-1, contrast=math.inf)
    out = post.process(frames[1], lows[1][None, None])
    assert set(np.unique(out.alpha.numpy())) <= {0.0, 1.0}


@pytest.mark.parametrize(
    "changes",
    [
        {"smoothing": 2.0},
        {"lookahead": -1},
        {"contrast": 0.0},
        {"feather_px": -1.0},
        {"precision": "int8"},
    ],
)
def test_bad_config_is_a_user_error(changes):
    with pytest.raises(VidmatError):
        PostprocessConfig(**changes).validate()


def test_load_background_files(tmp_path):
    img = np.zeros((10, 20, 3), np.uint8)
    img[..., 0] = 255  # red in RGB
    path = tmp_path / "bg.png"
    cv2.imwrite(str(path), img[:, :, ::-1])
    bg = load_background(str(path))
    assert bg.kind == "image" and bg.image.shape == (10, 20, 3) and bg.image[0, 0, 0] == 255
    assert load_background("blur:5").kind == "blur"
    with pytest.raises(VidmatError):
        load_background(str(tmp_path / "missing.png"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(VidmatError):
        load_background(str(bad))


def test_a_video_named_as_a_picture_plays_and_a_broken_picture_is_still_refused(tmp_path):
    """An MP4 saved as .png was "not an image OpenCV can read"; it is the video it is."""
    from vidmat.resources import assets_dir

    disguised = tmp_path / "waves.png"
    disguised.write_bytes((assets_dir() / "demo.mp4").read_bytes())
    bg = load_background(str(disguised))
    assert bg.kind == "video" and bg.fps == pytest.approx(24.0, abs=1.0)
    cut = tmp_path / "cut.png"
    png = cv2.imencode(".png", np.full((64, 64, 3), 90, np.uint8))[1].tobytes()
    cut.write_bytes(png[: len(png) // 2])
    with pytest.raises(VidmatError, match=r"cut\.png is not an image OpenCV can read"):
        load_background(str(cut))


def test_a_picture_over_opencvs_size_limits_is_one_sentence(tmp_path):
    """A side over 2^20 is refused as the pixel count is: a cv2.error, not None."""
    from core_fixtures import huge_png_header, long_bmp_header

    from vidmat.io.images import read_image

    for path in (long_bmp_header(tmp_path / "long.bmp"), huge_png_header(tmp_path / "big.png")):
        with pytest.raises(VidmatError, match=f"{path.name} is larger than OpenCV reads"):
            read_image(path)


def test_looping_video_background(tmp_path):
    path = tmp_path / "bg.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    if not writer.isOpened():
        pytest.skip("OpenCV cannot write MJPG here")
    for v in (0, 100, 200):
        writer.write(np.full((24, 32, 3), v, np.uint8))
    writer.release()
    video = LoopingVideo(path)
    levels = [int(video(t).mean()) for t in (0.0, 0.1, 0.2, 0.3, 0.1, 0.25, 0.95)]
    assert [round(v / 100) for v in levels] == [0, 1, 2, 0, 1, 2, 0]
    # Chosen 600 s into a live session: it plays from its beginning from then on.
    late = LoopingVideo(path)
    assert [round(late(t).mean() / 100) for t in (600.0, 600.1, 600.2, 600.3)] == [0, 1, 2, 0]
    bg = load_background(str(path))
    assert bg.kind == "video"
    post = PostProcessor(PostprocessConfig(smoothing=0.0), bg)
    f, _gt = scene(10)
    for t, level in ((0.0, 0), (0.2, 200)):
        out = post.process(f, np.zeros((1, 1, 24, 32), np.float32), t=t).image.numpy()
        assert abs(int(out.mean()) - level) <= 3


def _numbered_clip(path, frames=250, fps=25, gop=None, pts=None, sar=None, fmt=None, bframes=False):
    """64x48 H.264 whose frame i is grey level 10 i (mod 256), a keyframe every ``gop``
    frames (default: every second); ``pts`` in ms (variable rate), ``sar`` its pixels'
    aspect, ``fmt`` the container (default from the name)."""
    import av

    with av.open(str(path), "w", format=fmt) as c:
        options = {"g": str(gop or fps), "preset": "ultrafast"}
        if bframes:
            options.update(preset="veryfast", bf="2")
        s = c.add_stream("libx264", rate=None if pts else fps, options=options)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        if pts:
            s.time_base = Fraction(1, 1000)
        if sar:
            s.codec_context.sample_aspect_ratio = sar
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 10 * i % 256, np.uint8), "rgb24")
            f.pts = pts[i] if pts else i
            if pts:
                f.time_base = Fraction(1, 1000)
            for pk in s.encode(f):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    return path


def _frame_number(image) -> int:
    return round(float(image.mean()) / 10)


def test_a_background_video_seeks_on_its_open_file(tmp_path):
    """Shown again minutes later (the window keeps it), it decoded every frame in between
    on the render path (10 s for 45 s of 720p); each loop opened the file again by name,
    and a file deleted meanwhile ended the session."""
    path = _numbered_clip(tmp_path / "bg.mp4", frames=25, fps=5, gop=5)  # 5 s
    video = LoopingVideo(path)
    assert _frame_number(video(0.0)) == 0
    decoded = video._reader.decoded
    assert _frame_number(video(4.0)) == 20
    assert video._reader.decoded - decoded <= 6  # from the keyframe at 4 s, not 20 frames
    path.unlink()  # gone: the open file still plays, and loops
    for t, frame in ((4.99, 24), (5.0, 0), (5.2, 1), (7.5, 12), (1.0, 5)):
        assert _frame_number(video(t)) == frame, t


def test_a_transport_stream_background_loops_and_jumps_to_the_right_frames(tmp_path):
    """MPEG-TS seeks land on a keyframe after the time asked for: its second pass showed
    frames 4, 4, 4, 8, 8 for 0, 1, 2, 3, 4, and jumps ahead came out frames off."""
    for bframes in (False, True):  # with B-frames, a seek to its start landed on frame 10
        clip = tmp_path / f"bg{bframes}.ts"
        path = _numbered_clip(clip, frames=25, fps=10, gop=10, fmt="mpegts", bframes=bframes)
        video = LoopingVideo(path)
        reader = video._reader
        times = [i / 10 for i in range(75)] + [5.3, 9.1, 2.05]  # three passes, then jumps
        want = [i % 25 for i in range(75)] + [3, 16, 20]
        assert [_frame_number(video(t)) for t in times] == want, bframes
        assert video._reader is reader  # sought on the open file, never opened again


def test_a_background_of_non_square_pixels_is_shown_as_it_plays(tmp_path):
    """DV, DVD or HDV 1440x1080 behind the person stood stretched: its stored pixels
    were fitted, not the picture as shown (a circle came out twice as tall as wide)."""
    path = _numbered_clip(tmp_path / "dv.mp4", frames=2, sar=Fraction(2, 1))
    assert LoopingVideo(path)(0.0).shape == (48, 128, 3)


def test_a_variable_rate_background_holds_its_last_frame_for_its_own_length(tmp_path):
    """The last frame (42 ms) was held for one frame at the average rate (130 ms), a
    visible stop at every loop."""
    pts = [0, 100, 150, 400, 450, 700, 800, 1000]
    video = LoopingVideo(_numbered_clip(tmp_path / "vfr.mp4", frames=8, pts=pts))
    got = [_frame_number(video(t / 1000)) for t in range(0, 1500, 10)]
    again = next(i for i in range(1, len(got)) if got[i] == 0 and got[i - 1] != 0)
    assert again == 105  # the second pass starts at 1.042 s: 1.0 s + the last frame's own


def test_a_background_video_shows_the_colours_a_player_does(tmp_path):
    """Untagged HD is BT.709 to players and to vidmat's reader; the background video was
    read through OpenCV as BT.601: the red of (200, 150, 120) came out 14 levels low."""
    image = colour_clip(tmp_path / "hd.mp4", 1280, 720, None)
    got = LoopingVideo(tmp_path / "hd.mp4")(0.0)
    assert np.abs(got.astype(int) - image).mean() < 2
    assert np.abs(got[100, 100].astype(int) - image[100, 100]).max() <= 3


def test_a_background_video_that_cannot_be_read_is_one_sentence(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(VidmatError, match=r"bad\.mp4"):
        load_background(str(bad))


@pytest.mark.cuda
def test_cuda_matches_cpu():
    frames, lows = clip(4)
    outs = {}
    # The same algorithm on both: by default CUDA takes the colour guided filter and the
    # CPU the grey one through OpenCV, which differ by design.
    cfg = PostprocessConfig(precision="fp32", guided_color=True)
    for dev in ("cpu", "cuda"):
        post = PostProcessor(cfg, Background.color())
        with torch_only() if dev == "cpu" else contextlib.nullcontext():
            outs[dev] = [
                post.process(torch.from_numpy(f).to(dev), torch.from_numpy(lw)[None, None].to(dev))
                for f, lw in zip(frames, lows, strict=True)
            ]
    for c, g in zip(outs["cpu"], outs["cuda"], strict=True):
        torch.testing.assert_close(g.alpha.cpu(), c.alpha, atol=1e-3, rtol=0)
        assert (g.image.cpu().int() - c.image.int()).abs().max() <= 1
    half = PostProcessor(PostprocessConfig(precision="fp16"))
    out = half.process(
        torch.from_numpy(frames[0]).cuda(), torch.from_numpy(lows[0])[None, None].cuda()
    )
    assert out.image.is_cuda and out.image.dtype == torch.uint8


@pytest.mark.parametrize("bg", ["green", "blur:10", "transparent"])
def test_opencv_and_torch_paths_agree(bg):
    frames, lows = clip(3)
    outs = []
    for ctx in (contextlib.nullcontext, torch_only):
        with ctx():
            post = PostProcessor(PostprocessConfig(), bg)
            outs.append(
                [post.process(f, lw[None, None]) for f, lw in zip(frames, lows, strict=True)]
            )
    for fast, slow in zip(*outs, strict=True):
        assert (fast.alpha - slow.alpha).abs().mean() < 5e-3
        assert (fast.image.int() - slow.image.int()).abs().float().mean() < 1.0


def test_refine_only_matches_the_alpha_of_finish():
    frames, lows = clip(1)
    post = PostProcessor(PostprocessConfig(smoothing=0.0))
    a = post.refine(frames[0], lows[0][None, None])
    b = post.finish(frames[0], lows[0][None, None]).alpha
    torch.testing.assert_close(a, b)
    assert a.shape == (1, 1, 48, 64)


def test_non_contiguous_frames_are_fine():
    frames, lows = clip(1)
    wide = np.ascontiguousarray(np.concatenate([frames[0], frames[0]], 1))
    view = torch.from_numpy(wide)[:, ::2]  # a strided view, as a crop or a flip gives
    out = PostProcessor(PostprocessConfig(smoothing=0.0)).process(view, lows[0][None, None])
    assert out.image.shape == (48, 64, 3)


@pytest.mark.parametrize("lookahead", [0, 2])
def test_file_path_smooths_like_smooth_sequence(lookahead):
    """convert's PostProcessor and eval's smooth_sequence run the one tuned filter.

    The look-ahead filter tests motion on the colour guide: a person moving over a wall of
    equal brightness but another colour is motion there, not a still pixel to average. Given
    a grey guide (as convert once did), it blended neighbours over a fast skater (DAVIS
    rollerblade IoU 0.387 against 0.417).
    """
    from vidmat.core.smoothing import smooth_sequence

    rng = np.random.default_rng(3)
    n, side = 7, 32
    frames = rng.integers(0, 256, (n, side, side, 3), np.uint8)
    # the same brightness, other colours: only a colour guide sees these pixels change
    frames[1::2, 8:24] = frames[0::2, 8:24][: len(frames[1::2]), :, :, ::-1]
    raws = torch.from_numpy(rng.uniform(0, 1, (n, 1, side, side)).astype(np.float32))
    want = smooth_sequence(raws, torch.from_numpy(frames), 0.7, lookahead)
    cfg = PostprocessConfig(smoothing=0.7, lookahead=lookahead, refine=False, snap=0.0)
    post = PostProcessor(cfg, "mask")
    outs = [o for i in range(n) for o in post.push(frames[i], raws[i : i + 1])]
    got = torch.cat([o.alpha.float() for o in outs + post.flush()])
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_a_very_large_jpeg_is_decoded_at_a_size_still_larger_than_any_frame(tmp_path, monkeypatch):
    """A 16000x12000 photo froze the window 15 s while it was read whole; a JPEG whose
    shorter side is at least twice the largest side shown is decoded reduced (here with
    that side set to 20 px), and still covers it. Other formats are read whole."""
    from vidmat.io import images

    monkeypatch.setattr(images, "LARGEST_SHOWN_SIDE", 20)
    img = np.zeros((90, 200, 3), np.uint8)
    img[:, :100] = (0, 0, 255)  # red on the left, in BGR
    cv2.imwrite(str(tmp_path / "big.jpg"), img)
    cv2.imwrite(str(tmp_path / "big.png"), img)
    got = images.read_image(tmp_path / "big.jpg")
    assert got.shape == (23, 50, 3)  # a quarter: 90 // 4 = 22 >= 20, 90 // 8 = 11 is not
    assert got[10, 5, 0] > 200 and got[10, 45, 0] < 40  # RGB, the left half red
    assert images.read_image(tmp_path / "big.png").shape == (90, 200, 3)
    monkeypatch.setattr(images, "LARGEST_SHOWN_SIDE", 4320)
    assert images.read_image(tmp_path / "big.jpg").shape == (90, 200, 3)


def test_refine_takes_a_model_mask_as_large_as_the_frame():
    """eval --refine on 256 px photos at --size 256: the mask came from inference mode and
    needed no resizing, and clamping it in place raised 'Inplace update to inference
    tensor outside InferenceMode'."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    with torch.inference_mode():
        low = torch.rand(1, 1, 32, 32)
    alpha = PostProcessor(PostprocessConfig(smoothing=0.0)).refine(frame, low)
    assert alpha.shape == (1, 1, 32, 32) and 0.0 <= float(alpha.min()) <= float(alpha.max()) <= 1.0


def test_a_background_video_cut_short_is_reported_once_it_has_played_through(tmp_path):
    """A download that stopped looped after two thirds of its length, with no word: the
    early loop looked like vidmat's. Said once, at the first pass's end; a whole file and
    a first pass that jumped ahead (its counts then partial) say nothing."""
    cut = truncated_clip(tmp_path, frames=30)  # 25 fps, 1.2 s promised
    heard: list[str] = []
    video = LoopingVideo(cut, warn=heard.append)
    for i in range(75):  # three passes of what decodes
        video(i / 25)
    assert len(heard) == 1, heard
    assert heard[0].startswith("--bg cut.mp4: only ") and heard[0].endswith(
        "; it loops what decodes."
    )
    for path in (tmp_path / "full.mp4", _numbered_clip(tmp_path / "n.mp4", 25, fps=5, gop=5)):
        quiet: list[str] = []
        video = LoopingVideo(path, warn=quiet.append)
        for t in (0.0, 4.0, 4.8, 5.1, 9.9, 10.2):  # a jump ahead in the first pass, then loops
            video(t)
        full = LoopingVideo(path, warn=quiet.append)
        for i in range(60):
            full(i / 25)
        assert quiet == [], path


@pytest.mark.parametrize("how", ["emptied", "removed"])
def test_a_background_video_that_goes_bad_while_it_plays_holds_its_last_frame(tmp_path, how):
    """A file saved again from an editor (emptied first) or removed while it plays: the
    loop's reopening raised, which stopped the live camera and the recording, and the
    window's Restart failed on "Container is not open". The last frame stays, said once,
    and the file is read again a second later once it is back."""
    part = _numbered_clip(tmp_path / "part.ts", frames=10, fmt="mpegts")
    whole = part.read_bytes() * 2  # joined: it cannot seek, so each loop opens it again
    path = tmp_path / "bg.ts"
    path.write_bytes(whole)
    heard: list[str] = []
    video = LoopingVideo(path, warn=heard.append)
    assert [round(video(i / 25).mean() / 10) for i in range(20)] == [*range(10), *range(10)]
    if how == "emptied":
        path.write_bytes(b"")
    else:
        path.unlink()
    held = [round(video(t).mean() / 10) for t in (0.8, 0.9, 1.2, 1.75)]
    assert held == [9, 9, 9, 9]  # the last frame decoded, past the loop's end
    assert len(heard) == 1 and heard[0].startswith("--bg bg.ts: ")
    assert heard[0].endswith(
        "; the background holds its last frame until the file can be read again."
    )
    path.write_bytes(whole)
    # a second after it failed it is read again, from its start, its length measured anew
    assert [round(video(1.85 + i / 25).mean() / 10) for i in range(22)] == [
        *range(10),
        *range(10),
        0,
        1,
    ]
    assert len(heard) == 1


def test_a_first_pass_that_jumped_ahead_does_not_call_the_skipped_frames_missing(tmp_path):
    """The reader counts the frames it decodes; after a jump ahead fewer were decoded
    than the file holds, which is no sign of a cut file. What else it found is said."""
    import av

    path = tmp_path / "ycgco.mp4"  # a matrix read with a warning, so the reader has one
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=5, options={"preset": "ultrafast", "g": "5"})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.colorspace = 8  # YCgCo
        for i in range(25):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 10 * i, np.uint8), "rgb24")
            f.pts = i
            for pk in s.encode(f.reformat(format="yuv420p")):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    heard: list[str] = []
    video = LoopingVideo(path, warn=heard.append)
    for t in (0.0, 4.0, 4.9, 5.1):  # 0 s, then 4 s on: frames 1-14 never decoded
        video(t)
    assert len(heard) == 1 and "colour matrix (YCgCo)" in heard[0], heard
    assert "only" not in heard[0]


def test_a_background_video_plays_again_on_a_new_runs_clock(tmp_path):
    """The window keeps one background for every pipeline it starts: chosen 95 s into a
    run, then Restart (the clock back at 0), it stood on one picture for 95 s."""
    path = _numbered_clip(tmp_path / "bg.mp4", frames=25, fps=5, gop=5)
    video = LoopingVideo(path)
    assert [_frame_number(video(95.0 + i / 5)) for i in range(3)] == [0, 1, 2]
    assert [_frame_number(video(i / 5)) for i in range(4)] == [0, 1, 2, 3]
