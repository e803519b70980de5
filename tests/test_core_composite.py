"""Compositing is exact on known arrays for every background kind; background specs parse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidmat.core.backgrounds import GREENSCREEN, Background, parse_background, parse_color
from vidmat.core.composite import Compositor, composite, composite_np, cover_fit
from vidmat.core.postprocess import PostProcessor
from vidmat.core.refine import torch_only
from vidmat.errors import VidmatError

H, W = 6, 8


def known():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    alpha = np.zeros((H, W), np.float32)
    alpha[:, :3] = 1.0
    # Fractions whose blends never land on .5: rounding is then unambiguous.
    alpha[:, 3] = 0.4
    alpha[:, 4] = 1 / 3
    alpha[:, 5] = 0.2
    return frame, alpha


def expected(frame, alpha, bg):
    a = alpha[..., None].astype(np.float64)
    return np.rint(frame * a + np.asarray(bg, np.float64) * (1 - a)).astype(np.uint8)


def test_formula_exact():
    frame, alpha = known()
    bg = np.full((H, W, 3), 17, np.uint8)
    out = composite(
        torch.from_numpy(frame), torch.from_numpy(alpha)[..., None], torch.from_numpy(bg)
    )
    np.testing.assert_array_equal(out.numpy(), expected(frame, alpha, bg))


@pytest.mark.parametrize(
    ("spec", "rgb"), [("green", GREENSCREEN), ("#ff0000", (255, 0, 0)), ("blue", (0, 0x47, 0xBB))]
)
def test_solid_colour(spec, rgb):
    frame, alpha = known()
    out = composite_np(frame, alpha, spec)
    np.testing.assert_array_equal(out, expected(frame, alpha, rgb))
    assert (out[:, 6:] == rgb).all()  # alpha 0 is pure background
    assert (out[:, :3] == frame[:, :3]).all()  # alpha 1 is the frame untouched


def test_image_cover_fit_and_cached():
    frame, alpha = known()
    # A 3x8 image for a 6x8 frame: scaled x2 to 6x16 and centre-cropped to columns 4..11.
    img = np.zeros((3, 8, 3), np.uint8)
    img[:, :, 0] = np.arange(8, dtype=np.uint8)[None] * 10
    bg = Background.from_image(img)
    comp = Compositor(bg)
    t = torch.from_numpy(frame)
    out = comp(t, torch.from_numpy(alpha)[None, None]).numpy()
    buf = comp.background_buffer((H, W), t.device)
    assert buf.shape == (H, W, 3)
    np.testing.assert_array_equal(out, expected(frame, alpha, buf.numpy()))
    # Scaled x2 (bilinear) to 6x16 and the centre 8 columns kept: no bars, no squeeze.
    ref = F.interpolate(
        torch.from_numpy(img).permute(2, 0, 1)[None].float(), (6, 16), mode="bilinear"
    )
    np.testing.assert_array_equal(buf.numpy(), ref[0, :, :, 4:12].permute(1, 2, 0).round().numpy())
    assert comp.background_buffer((H, W), t.device) is buf  # prepared once, not per frame


def test_a_picture_fits_the_frame_as_shown():
    """Pixels twice as wide as high: an 8-column frame shows 16 wide, and a 3x8 picture
    (the shown shape) fills it whole, squeezed into the 8 stored columns, instead of
    losing its sides to a crop to the stored shape (columns 2..5 of it)."""
    img = np.zeros((3, 8, 3), np.uint8)
    img[:, :, 0] = np.arange(8, dtype=np.uint8)[None] * 10
    device = torch.device("cpu")
    wide = Compositor(Background.from_image(img), pixel_aspect=2.0)
    buf = wide.background_buffer((H, W), device).numpy()[..., 0].astype(int)
    assert buf.shape == (H, W)
    assert (buf == buf[:1]).all() and (np.diff(buf[0]) > 0).all()  # one ramp in every row
    assert buf[0, 0] <= 5 and buf[0, -1] >= 65  # the picture's own ends, 0 and 70
    square = Compositor(Background.from_image(img)).background_buffer((H, W), device).numpy()
    assert square[0, 0, 0] >= 15 and square[0, -1, 0] <= 55  # cropped to its middle
    # A background switched while running keeps fitting that way.
    post = PostProcessor(background=Background.from_image(img), pixel_aspect=2.0)
    post.set_background(Background.from_image(img[:, ::-1].copy()))
    flipped = post.compositor.background_buffer((H, W), device).numpy()[..., 0].astype(int)
    np.testing.assert_array_equal(flipped, buf[:, ::-1])


def test_cover_fit_no_bars_no_distortion():
    img = torch.arange(2 * 4, dtype=torch.float32).view(1, 1, 2, 4)
    out = cover_fit(img, (4, 4))
    assert out.shape == (1, 1, 4, 4)


def test_video_frames_loop_in_step_with_time():
    frame, alpha = known()
    frames = [np.full((H, W, 3), v, np.uint8) for v in (10, 20, 30)]
    comp = Compositor(Background.from_video(frames=frames, fps=10.0))
    t, a = torch.from_numpy(frame), torch.from_numpy(alpha)[None, None]
    for time, v in [(0.0, 10), (0.1, 20), (0.25, 30), (0.3, 10), (0.45, 20)]:
        np.testing.assert_array_equal(comp(t, a, t=time).numpy(), expected(frame, alpha, (v, v, v)))


def test_video_callable():
    frame, alpha = known()
    calls = []

    def frame_at(ts):
        calls.append(ts)
        v = int(ts * 100) % 256
        return np.full((3, 4, 3), v, np.uint8)

    comp = Compositor(Background.from_video(frame_at=frame_at))
    out = comp(torch.from_numpy(frame), torch.from_numpy(alpha)[None, None], t=0.5)
    np.testing.assert_array_equal(out.numpy(), expected(frame, alpha, (50, 50, 50)))
    comp(torch.from_numpy(frame), torch.from_numpy(alpha)[None, None], t=0.5)
    assert calls == [0.5]


def test_blur_background():
    frame, alpha = known()
    flat = np.full((H, W, 3), 90, np.uint8)
    flat[:, :3] = 200  # the "person" is bright; it must not bleed into the blurred background
    out = composite_np(flat, alpha, "blur:40")
    assert (out[:, :3] == 200).all()
    assert np.abs(out[:, 6:].astype(int) - 90).max() <= 2
    # sigma 0 is no blur at all: alpha 0 shows the frame itself
    out0 = composite_np(frame, alpha, "blur:0")
    np.testing.assert_array_equal(out0, frame)


def test_transparent_rgba():
    frame, alpha = known()
    out = composite_np(frame, alpha, "transparent")
    assert out.shape == (H, W, 4)
    np.testing.assert_array_equal(out[..., :3], frame)
    np.testing.assert_array_equal(out[..., 3], np.rint(alpha * 255).astype(np.uint8))


def test_mask_view():
    frame, alpha = known()
    out = composite_np(frame, alpha, "mask")
    assert out.shape == (H, W, 3)
    want = np.rint(alpha * 255).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], want)


def test_batch_frames():
    frame, alpha = known()
    frames = torch.from_numpy(np.stack([frame, frame[::-1].copy()]))
    alphas = torch.from_numpy(np.stack([alpha, alpha]))[:, None]
    out = Compositor("white")(frames, alphas)
    assert out.shape == (2, H, W, 3)
    np.testing.assert_array_equal(out[1].numpy(), expected(frame[::-1], alpha, (255, 255, 255)))


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("green", "color"),
        ("#00ff00", "color"),
        ("0F0", "color"),
        ("rgb(1, 2, 3)", "color"),
        ("Blue", "color"),
        ("blur", "blur"),
        ("blur:25", "blur"),
        ("transparent", "transparent"),
        ("mask", "mask"),
        ("beach.jpg", "file"),
        ("/tmp/waves.mp4", "file"),
        (None, "color"),
    ],
)
def test_parse_background(spec, kind):
    bg = parse_background(spec)
    assert bg.kind == kind
    if spec == "blur:25":
        assert bg.blur == 25.0
    if spec == "beach.jpg":
        assert bg.path == "beach.jpg"


def test_parse_colour_values():
    assert parse_color("#00B140") == GREENSCREEN
    assert parse_color("0F0") == (0, 255, 0)
    assert parse_color("rgb(1,2,3)") == (1, 2, 3)
    assert parse_color("white") == (255, 255, 255)


def test_out_of_range_colour_names_its_values():
    """The message quotes what was typed; it had said "got ()" (the values were read twice)."""
    with pytest.raises(VidmatError, match=r"got \(300, 0, 12\)"):
        parse_color("rgb(300, 0, 12)")


@pytest.mark.parametrize(
    "spec",
    [
        "blur:abc",
        "blur:-3",
        "blur:inf",
        "blur:nan",
        "blur:",
        "",
        "color:notacolour",
        "rgb(300,0,0)",
    ],
)
def test_bad_specs_are_user_errors(spec):
    with pytest.raises(VidmatError):
        parse_background(spec)


def test_file_background_must_be_opened():
    with pytest.raises(ValueError):
        Compositor("beach.jpg")


@pytest.mark.parametrize(
    "spec", ["green", "#102030", "image", "video", "blur:10", "transparent", "mask"]
)
def test_opencv_and_torch_paths_agree(spec):
    frame, alpha = known()
    frame = np.repeat(np.repeat(frame, 8, 0), 8, 1)  # 48x64
    alpha = np.repeat(np.repeat(alpha, 8, 0), 8, 1)
    rng = np.random.default_rng(1)
    if spec == "image":
        spec = Background.from_image(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    elif spec == "video":
        spec = Background.from_video(frames=[rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)] * 2)
    t, a = torch.from_numpy(frame), torch.from_numpy(alpha)[None, None]
    fast = Compositor(spec)(t, a, t=0.1).int()
    with torch_only():
        slow = Compositor(spec)(t, a, t=0.1).int()
    tol = 3 if isinstance(spec, str) and spec.startswith("blur") else 0
    assert (fast - slow).abs().max() <= tol


@pytest.mark.parametrize("pixel_aspect", [1.0, 64 / 45])
def test_a_large_picture_shrinks_the_same_on_both_paths(pixel_aspect):
    """The OpenCV path fits a 4K video frame to the output in a few ms (PyTorch's CPU area
    resize took 200 ms); it must give the torch path's picture, to a level of rounding."""
    yy, xx = np.mgrid[0:540, 0:960].astype(np.float32)
    img = np.stack([xx / 960 * 255, yy / 540 * 255, 128 + 100 * np.sin(xx / 40)], -1)
    img = np.rint(img).astype(np.uint8)
    size = (77, 101)  # no integer ratio to the picture, and a crop on one side
    fast = Compositor(Background.from_image(img), pixel_aspect=pixel_aspect)
    buf = fast.background_buffer(size, torch.device("cpu"), dtype=torch.uint8).numpy()
    with torch_only():
        slow = Compositor(Background.from_image(img), pixel_aspect=pixel_aspect)
        ref = slow.background_buffer(size, torch.device("cpu"), dtype=torch.uint8).numpy()
    assert buf.shape == ref.shape == (*size, 3)
    diff = np.abs(buf.astype(int) - ref.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.5


@pytest.mark.cuda
def test_cuda_matches_cpu():
    frame, alpha = known()
    for spec in ["green", "blur:10", "transparent", "mask"]:
        cpu = Compositor(spec, dtype=torch.float32)(
            torch.from_numpy(frame), torch.from_numpy(alpha)[None, None]
        )
        gpu = Compositor(spec)(
            torch.from_numpy(frame).cuda(), torch.from_numpy(alpha)[None, None].cuda()
        )
        assert (gpu.cpu().int() - cpu.int()).abs().max() <= 1
