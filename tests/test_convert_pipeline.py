"""The convert pipeline with a stub model whose mask is known: every format keeps frames,
timestamps, audio, and the alpha it writes is the mask the model produced, frame by frame."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from convert_fixtures import (
    NTSC_FILM,
    anamorphic_clip,
    audio_seconds,
    colour_clip,
    frame_times,
    long_last_clip,
    make_clip,
    player_rgb,
    read_alphas,
    stub_engine,
)

from vidmat.core.backgrounds import GREENSCREEN, Background
from vidmat.core.engine import Engine, side_by_side
from vidmat.core.postprocess import PostProcessor
from vidmat.core.settings import EngineConfig, PostprocessConfig
from vidmat.errors import VidmatError
from vidmat.io.formats import FORMATS
from vidmat.io.video import VideoReader
from vidmat.pipelines.convert import (
    ConvertConfig,
    convert_image,
    convert_video,
    default_output,
    engine_config_for_files,
    transcode,
)

EXACT = PostprocessConfig(smoothing=0.0, refine=False, despill=False)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return stub_engine()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pipeline")
    return {
        "ntsc": make_clip(d / "ntsc.mp4", frames=10, rate=NTSC_FILM),
        "vfr": make_clip(
            d / "vfr.mp4",
            pts=[0, 40, 80, 200, 240, 400, 410, 600],
            time_base=Fraction(1, 1000),
            rate=Fraction(25),
        ),
        "odd": make_clip(d / "odd.mp4", width=63, height=47, frames=5),
    }


def expected_alphas(engine: Engine, src: Path, post: PostprocessConfig) -> list[np.ndarray]:
    """The known mask: the stub's output for each decoded input frame, through the core's
    own refinement (what the pipeline must deliver, whatever the format)."""
    pp = PostProcessor(post, "transparent")
    out = []
    with VideoReader(src) as r:
        for f in r.frames():
            frame = torch.from_numpy(f.image)
            low = engine.predict_lowres(f.image)
            out.append(pp.finish(frame, low).image[..., 3].numpy())
    return out


@pytest.mark.parametrize("fmt", ["mov", "webm", "png"])
@pytest.mark.parametrize("kind", ["ntsc", "vfr"])
def test_alpha_formats_carry_the_known_mask(
    engine: Engine, clips: dict[str, Path], tmp_path: Path, fmt: str, kind: str
) -> None:
    src = clips[kind]
    dst = tmp_path / f"out{FORMATS[fmt][0]}"
    result = convert_video(engine, src, dst, ConvertConfig(fmt=fmt, post=EXACT))
    expected = expected_alphas(engine, src, EXACT)
    got = read_alphas(dst)
    assert result.frames == len(expected) == len(got)
    for i, (a, e) in enumerate(zip(got, expected, strict=True)):
        diff = np.abs(a.astype(int) - e.astype(int))
        tol = 1 if fmt != "webm" else 16  # VP9's alpha plane is lossy
        assert diff.max() <= tol, (i, diff.max())
        assert diff.mean() <= {"png": 0.0, "mov": 0.1, "webm": 1.0}[fmt]
    # The mask is not trivial and it moves with the square: frame order is kept.
    assert (expected[0] == 255).mean() > 0.1 and (expected[0] == 0).mean() > 0.1
    assert np.abs(expected[0].astype(int) - expected[-1]).mean() > 5
    # Times and audio survive too.
    if fmt == "png":
        assert (dst / "audio.m4a").is_file()
    else:
        t_in, t_out = frame_times(src), frame_times(dst)
        tol_t = Fraction(0) if fmt == "mov" else Fraction(1, 2000)
        assert max(abs(a - b) for a, b in zip(t_in, t_out, strict=True)) <= tol_t
        assert abs(audio_seconds(dst) - audio_seconds(src)) < 0.025


@pytest.mark.parametrize("fmt", ["mp4", "mask"])
def test_opaque_formats(engine: Engine, clips: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    src = clips["ntsc"]
    dst = tmp_path / "out.mp4"
    result = convert_video(engine, src, dst, ConvertConfig(fmt=fmt, post=EXACT))
    assert result.audio == "copied"
    assert frame_times(dst) == frame_times(src)
    with av.open(str(dst)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
    expected = expected_alphas(engine, src, EXACT)
    if fmt == "mask":  # the matte itself, white = person
        for f, e in zip(frames, expected, strict=True):
            assert np.abs(f[..., 1].astype(int) - e).mean() < 3
    else:  # greenscreen where the mask is 0, the red square where it is 1
        green = np.array([0x00, 0xB1, 0x40])
        for f, e in zip(frames, expected, strict=True):
            bg = e == 0
            assert np.abs(f[bg].astype(int) - green).mean() < 8
            person = e == 255
            assert f[person][:, 0].mean() > 180


def test_odd_size_padded_with_warning(
    engine: Engine, clips: dict[str, Path], tmp_path: Path
) -> None:
    result = convert_video(
        engine, clips["odd"], tmp_path / "o.mp4", ConvertConfig(fmt="mp4", post=EXACT)
    )
    assert any("63x47 padded to 64x48" in w for w in result.warnings)
    result = convert_video(
        engine, clips["odd"], tmp_path / "o.mov", ConvertConfig(fmt="mov", post=EXACT)
    )
    assert result.warnings == [] and result.incomplete is None and result.frames == 5


def test_odd_size_mask_keeps_the_clips_size(
    engine: Engine, clips: dict[str, Path], tmp_path: Path
) -> None:
    """A 64x48 mask of a 63x47 clip no longer lined up with it as a track matte."""
    src = clips["odd"]
    result = convert_video(engine, src, tmp_path / "m.mp4", ConvertConfig(fmt="mask", post=EXACT))
    assert [w for w in result.warnings if "padded" in w] == []
    assert any("4:0:0" in w for w in result.warnings)
    with av.open(str(tmp_path / "m.mp4")) as c:
        v = c.streams.video[0]
        assert (v.width, v.height) == (63, 47)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(v)]
    expected = expected_alphas(engine, src, EXACT)
    assert len(frames) == len(expected) == 5
    for f, e in zip(frames, expected, strict=True):
        assert np.abs(f[..., 1].astype(int) - e).mean() < 3


def test_long_last_frame_is_whole_and_kept(engine: Engine, tmp_path: Path) -> None:
    """A VFR Matroska whose last frame is held for 3 s was "truncated or damaged"."""
    src = long_last_clip(tmp_path / "hold.mkv", content="still")
    result = convert_video(engine, src, tmp_path / "o.mp4", ConvertConfig(fmt="mp4", post=EXACT))
    assert result.incomplete is None and result.warnings == [] and result.frames == 11
    with av.open(str(tmp_path / "o.mp4")) as c:
        v = c.streams.video[0]
        assert abs(c.duration / 1e6 - 4.0) < 0.002
        total = sum(p.duration for p in c.demux(v) if p.size)
        assert abs(float(total * v.time_base) - 4.0) < 0.002


def test_hd_greenscreen_is_tagged_and_shows_exact(engine: Engine, tmp_path: Path) -> None:
    """HD BT.709 in, mp4 out: encoded BT.601 and untagged, players (BT.709 for untagged
    HD) showed the greenscreen #00B140 as about #00983D."""
    colour_clip(tmp_path / "hd.mp4", 1280, 720, "ITU709")
    dst = tmp_path / "o.mp4"
    convert_video(engine, tmp_path / "hd.mp4", dst, ConvertConfig(fmt="mp4", post=EXACT))
    with av.open(str(dst)) as c:
        frame = next(c.decode(c.streams.video[0]))
    assert (frame.colorspace, frame.color_primaries, frame.color_trc) == (1, 1, 1)
    shown = player_rgb(frame)
    # No red there, so the stub model sees no person: greenscreen all over.
    assert np.abs(shown[600, 1000].astype(int) - GREENSCREEN).max() <= 2


def test_pixel_aspect_ratio_kept_and_png_warns(engine: Engine, tmp_path: Path) -> None:
    src = anamorphic_clip(tmp_path / "a.mp4")
    result = convert_video(engine, src, tmp_path / "o.mov", ConvertConfig(fmt="mov", post=EXACT))
    assert result.warnings == []
    with av.open(str(tmp_path / "o.mov")) as c:
        assert c.streams.video[0].sample_aspect_ratio == Fraction(64, 45)
    result = convert_video(engine, src, tmp_path / "seq", ConvertConfig(fmt="png", post=EXACT))
    assert len(result.warnings) == 1 and "64:45" in result.warnings[0]


def test_a_picture_behind_an_anamorphic_clip_is_shown_undistorted(
    engine: Engine, tmp_path: Path
) -> None:
    """64x48 stored, 64:45 pixels, shown 91x48: a 91x48 picture behind the person fills
    the frame as shown, squeezed into the stored pixels. Fitted to the stored 64x48, it
    lost a seventh at each side and showed 1.42 times too wide."""
    src = anamorphic_clip(tmp_path / "a.mp4")
    picture = np.zeros((48, 91, 3), np.uint8)
    picture[..., 2] = np.linspace(0, 255, 91).round().astype(np.uint8)  # blue, left to right
    cfg = ConvertConfig(fmt="mp4", background=Background.from_image(picture), post=EXACT)
    convert_video(engine, src, tmp_path / "o.mp4", cfg)
    with av.open(str(tmp_path / "o.mp4")) as c:
        shown = player_rgb(next(c.decode(c.streams.video[0])))
    blue = shown[2, :, 2].astype(int)  # row 2: above the red square, background only
    assert blue[0] < 20 and blue[-1] > 235  # the picture's edges at the frame's edges
    # (cropped to its middle, the frame's edges showed blue 37 and 218)


def test_a_background_video_starts_with_the_output(engine: Engine, tmp_path: Path) -> None:
    """An input whose clock starts at 10 s (a recorder's MPEG-TS, a clip cut with -c copy)
    is written from 0; the ``--bg`` video was asked for 10.0 s, 10.04 s, ...: it started
    10 s in, or anywhere in its loop, where live starts it at 0."""
    src = make_clip(
        tmp_path / "late.ts",
        frames=5,
        pts=[10_000 + 40 * i for i in range(5)],
        time_base=Fraction(1, 1000),
        audio=None,
    )
    assert VideoReader(src).info.start_time == pytest.approx(10.0)
    asked: list[float] = []

    def frame_at(t: float) -> np.ndarray:
        asked.append(t)
        return np.zeros((48, 64, 3), np.uint8)

    cfg = ConvertConfig(fmt="mp4", background=Background.from_video(frame_at=frame_at, fps=25))
    convert_video(engine, src, tmp_path / "o.mp4", cfg)
    assert frame_times(tmp_path / "o.mp4")[0] == 0
    assert asked == pytest.approx([0.0, 0.04, 0.08, 0.12, 0.16])


def test_default_smoothing_and_batches_keep_every_frame_in_order(
    engine: Engine, clips: dict[str, Path], tmp_path: Path
) -> None:
    """Bidirectional look-ahead holds frames back; batches of 3 split the clip unevenly."""
    src = clips["vfr"]
    cfg = ConvertConfig(fmt="mov", post=PostprocessConfig(smoothing=0.5, lookahead=2), batch=3)
    result = convert_video(engine, src, tmp_path / "s.mov", cfg)
    assert result.frames == 8
    assert frame_times(tmp_path / "s.mov") == frame_times(src)


@pytest.mark.parametrize("batch", [None, 3])
def test_model_calls_side_by_side_keep_the_mask_and_the_order(
    engine: Engine, clips: dict[str, Path], tmp_path: Path, batch: int | None
) -> None:
    """Two workers: a batch (by default one frame each) is split and put back in order."""
    side_by_side = stub_engine(workers=2)
    cfg = ConvertConfig(fmt="png", post=EXACT, batch=batch)
    assert cfg.batch_for(side_by_side) == (batch or 2) and ConvertConfig().batch_for(engine) == 1
    src = clips["ntsc"]
    try:
        result = convert_video(side_by_side, src, tmp_path / "frames", cfg)
    finally:
        side_by_side.close()
    got = read_alphas(tmp_path / "frames")
    expected = expected_alphas(engine, src, EXACT)
    assert result.frames == len(got) == len(expected) == 10
    for a, e in zip(got, expected, strict=True):
        assert np.abs(a.astype(int) - e.astype(int)).max() <= 1


def test_files_get_two_model_calls_on_a_cpu_unless_told(monkeypatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    cpu = EngineConfig(device="cpu")
    assert (engine_config_for_files(cpu).workers, engine_config_for_files(cpu).threads) == (2, 1)
    told = engine_config_for_files(replace(cpu, threads=2))
    assert (told.workers, told.threads) == (1, 2)
    one = engine_config_for_files(replace(cpu, workers=1))
    assert (one.workers, one.threads) == (1, 1)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    big = engine_config_for_files(cpu)
    assert (big.workers, big.threads) == (2, 7)
    assert engine_config_for_files(replace(cpu, workers=4)).threads == 3
    assert side_by_side(cpu).threads == 8  # eval: nothing else to leave a core to
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    single = engine_config_for_files(cpu)
    assert (single.workers, single.threads) == (1, 1)


def test_mp4_refuses_transparency(engine: Engine, clips: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(VidmatError, match="cannot carry transparency"):
        convert_video(
            engine, clips["ntsc"], tmp_path / "t.mp4", ConvertConfig(background="transparent")
        )
    assert list(tmp_path.iterdir()) == []


def test_error_mid_stream_leaves_nothing(
    engine: Engine, clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure (here Ctrl-C in the model) after frames were written: no output, no temp."""
    calls = {"n": 0}
    real = engine.predict_lowres

    def boom(frames):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(frames)

    monkeypatch.setattr(engine, "predict_lowres", boom)
    for fmt in ("mp4", "png"):
        calls["n"] = 0
        with pytest.raises(KeyboardInterrupt):
            convert_video(engine, clips["ntsc"], tmp_path / f"x_{fmt}", ConvertConfig(fmt=fmt))
    assert list(tmp_path.iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("vidmat-")]


def test_transcode_is_frame_exact(clips: dict[str, Path], tmp_path: Path) -> None:
    r = transcode(clips["vfr"], tmp_path / "t.mp4")
    assert r.frames == 8 and frame_times(tmp_path / "t.mp4") == frame_times(clips["vfr"])


def test_still_image_rgba_and_composite(engine: Engine, tmp_path: Path) -> None:
    import cv2
    from convert_fixtures import square_frame

    img = square_frame(0, 64, 48)
    src = tmp_path / "photo.jpg"
    cv2.imwrite(str(src), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
    cfg = ConvertConfig(fmt="png", background="transparent", post=EXACT)
    dst = default_output(src, cfg)
    assert dst.name == "photo_alpha.png"
    convert_image(engine, src, dst, cfg)
    rgba = cv2.imread(str(dst), cv2.IMREAD_UNCHANGED)
    assert rgba.shape == (48, 64, 4)
    red = (img[..., 0] > 200).astype(np.uint8)
    inside = cv2.erode(red, np.ones((7, 7), np.uint8)).astype(bool)
    outside = ~cv2.dilate(red, np.ones((7, 7), np.uint8)).astype(bool)
    assert (rgba[..., 3][inside] == 255).all() and (rgba[..., 3][outside] == 0).all()
    comp = tmp_path / "c.jpg"
    convert_image(engine, src, comp, ConvertConfig(fmt="png", background="blue", post=EXACT))
    bgr = cv2.imread(str(comp))
    assert bgr.shape == (48, 64, 3)
    assert bgr[2, 2, 0] > 150  # the blue background where there was no person
    for name in ("c.xyz", "c.mp4"):  # OpenCV raises for these instead of saying False
        with pytest.raises(VidmatError, match="cannot write images with the suffix"):
            convert_image(
                engine,
                src,
                tmp_path / name,
                ConvertConfig(fmt="png", background="blue", post=EXACT),
            )
        assert not (tmp_path / name).exists()


def test_an_animated_image_says_only_its_first_picture_was_converted(
    engine: Engine, tmp_path: Path
) -> None:
    import cv2
    from convert_fixtures import animated_webp, square_frame

    if "libwebp_anim" not in av.codecs_available:
        pytest.skip("no animated WebP encoder in this PyAV")
    src = animated_webp(tmp_path / "anim.webp")
    if cv2.imcount(str(src)) != 3:
        pytest.skip("this OpenCV does not count an animation's pictures")
    cfg = ConvertConfig(fmt="png", background="transparent", post=EXACT)
    result = convert_image(engine, src, tmp_path / "a.png", cfg)
    assert result.warnings == ["an animation of 3 pictures; only the first was converted."]
    still = tmp_path / "still.png"
    cv2.imwrite(str(still), square_frame(0, 64, 48))
    assert convert_image(engine, still, tmp_path / "s.png", cfg).warnings == []


def test_a_decoder_failure_is_never_taken_for_the_end_of_the_file(monkeypatch) -> None:
    """The decoder queued its end before its error was recorded; a frames() loop reading
    the end in between returned normally, and a truncated output was a success."""
    import time

    from vidmat.pipelines import convert as cv

    real_put = cv._put

    def put_then_lose_the_cpu(q, item, stop, workers=()):
        ok = real_put(q, item, stop, workers)
        if item is cv._END:
            time.sleep(0.05)  # the decoder thread is preempted right after queueing the end
        return ok

    monkeypatch.setattr(cv, "_put", put_then_lose_the_cpu)

    class Reader:
        def frames(self):
            yield from range(3)
            raise RuntimeError("decoder failed mid-file")

    class Writer:
        def write(self, *a): ...
        def close(self): ...
        def abort(self): ...

    job = cv._Job(Reader(), Writer(), 4, Path("out.mp4"))
    job.start()
    got = []
    with pytest.raises(RuntimeError, match="decoder failed mid-file"):
        got.extend(job.frames())
    assert got == [0, 1, 2]
    job.cancel()


def test_a_cancel_never_closes_the_file_under_a_write(monkeypatch) -> None:
    """After its 5 s wait, cancel() closed the container while the encoder thread was
    still inside a write (a stalled disk), which can crash in FFmpeg."""
    import time

    from vidmat.pipelines import convert as cv

    monkeypatch.setattr(cv._Job, "join_seconds", 0.05)
    calls: list[str] = []

    class Reader:
        def frames(self):
            yield from range(2)

    class Writer:
        def write(self, *a):
            calls.append("write")
            time.sleep(0.5)
            calls.append("written")

        def abort(self):
            calls.append("abort")

    job = cv._Job(Reader(), Writer(), 4, Path("out.mp4"))
    job.start()
    job.emit(np.zeros((2, 2, 3), np.uint8), 0, 1)
    while not calls:
        time.sleep(0.01)
    job.cancel()  # the write has 0.5 s to go
    assert calls == ["write"]
    job.encoder.join(2.0)
    assert calls == ["write", "written"]  # and no abort under it or after it
    job.cancel()  # once the encoder is done, a cancel aborts the file
    assert calls[-1] == "abort"


def test_a_cancel_never_closes_the_file_under_a_decode(monkeypatch, tmp_path: Path) -> None:
    """A decode that outlasts cancel()'s wait (a huge frame, a stalled network drive): the
    `with VideoReader` around the job then closed the file under FFmpeg, which can crash."""
    import threading
    import time

    from convert_fixtures import make_clip

    from vidmat.pipelines import convert as cv

    monkeypatch.setattr(cv._Job, "join_seconds", 0.05)
    clip = make_clip(tmp_path / "c.mp4", frames=6, audio=None)
    inside = threading.Event()
    reader = VideoReader(clip)
    real = reader.frames

    def slow_frames():
        inside.set()
        time.sleep(0.5)
        yield from real()

    reader.frames = slow_frames  # type: ignore[method-assign]

    class Writer:
        def abort(self): ...

    job = cv._Job(reader, Writer(), 4, tmp_path / "out.mp4")
    job.start()
    inside.wait()
    job.cancel()
    assert job.decoder.is_alive() and reader.keep_open
    reader.close()  # as the with-block does: the file stays open under the decode
    job.decoder.join(5.0)
    assert job.decoder.error is None  # it decoded on, from a file still open
    # a reader no thread holds closes as before
    with VideoReader(clip) as other:
        pass
    assert not other.keep_open


def test_an_animated_background_picture_says_it_stands_still(tmp_path: Path) -> None:
    """An animated WebP as --bg showed its first picture for the whole clip in silence."""
    import cv2
    from convert_fixtures import animated_webp

    from vidmat.io.images import load_background

    if "libwebp_anim" not in av.codecs_available:
        pytest.skip("no animated WebP encoder in this PyAV")
    src = animated_webp(tmp_path / "anim.webp")
    if cv2.imcount(str(src)) != 3:
        pytest.skip("this OpenCV does not count an animation's pictures")
    said: list[str] = []
    bg = load_background(str(src), warn=said.append)
    assert bg.kind == "image"
    assert said == ["--bg anim.webp is an animation of 3 pictures; only the first is shown."]


@pytest.mark.parametrize(("suffix", "quality"), [(".png", 101), (".webp", 101), (".webp", 80)])
def test_a_background_picture_with_transparent_parts_says_they_are_not_used(
    tmp_path: Path, suffix: str, quality: int
) -> None:
    """Its hidden colours showed behind the person in silence (QA: a PNG's transparent
    half came out red, and opaque in a .mov's alpha); an opaque RGBA picture says nothing."""
    import cv2

    from vidmat.io.images import load_background

    picture = np.zeros((20, 20, 4), np.uint8)
    picture[..., 2] = 255  # red under it all
    picture[..., 3] = 255
    opaque = tmp_path / f"opaque{suffix}"
    assert cv2.imwrite(str(opaque), picture, [cv2.IMWRITE_WEBP_QUALITY, quality])
    picture[:, :10, 3] = 0
    holed = tmp_path / f"holed{suffix}"
    assert cv2.imwrite(str(holed), picture, [cv2.IMWRITE_WEBP_QUALITY, quality])  # 80: yuva420p
    said: list[str] = []
    load_background(str(opaque), warn=said.append)
    assert said == []
    bg = load_background(str(holed), warn=said.append)
    assert bg.kind == "image" and bg.image.shape == (20, 20, 3)
    assert said == [
        f"--bg holed{suffix} has transparent parts; they are not used, so the colours stored "
        "under them show (flatten the picture onto a colour first)."
    ]


def test_a_ts_starting_just_before_its_clock_wraps_is_converted_whole(
    engine: Engine, tmp_path: Path
) -> None:
    """MPEG-TS counts 33 bits of 90 kHz and goes round every 26.5 hours; FFmpeg unwraps a
    file that starts a second before to negative times. The output started at 0 and its
    edit list hid the frames before: 25 of 50 frames, and "converted" whole."""
    src = tmp_path / "wrap.ts"
    with av.open(str(src), "w", format="mpegts") as c:
        v = c.add_stream("libx264", rate=25, options={"bf": "0"})
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        for i in range(50):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 5, np.uint8), format="rgb24")
            f.pts, f.time_base = 2**33 - 90000 + i * 3600, Fraction(1, 90000)
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    dst = tmp_path / "out.mp4"
    assert convert_video(engine, src, dst, ConvertConfig(fmt="mp4")).frames == 50
    times = [float(t) for t in frame_times(dst)]
    assert len(times) == 50 and times[0] == pytest.approx(0.0, abs=0.03)
    assert times[-1] == pytest.approx(1.96, abs=0.03)
