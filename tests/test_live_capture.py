"""Capture thread and latest-frame queue: real-time file playback, RGB order, drops, loss."""

from __future__ import annotations

import contextlib
import struct
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from convert_fixtures import animated_webp, colour_clip, long_last_clip, square_frame
from convert_fixtures import make_clip as make_timed_clip
from live_fixtures import make_clip

from vidmat.errors import VidmatError
from vidmat.io import camera
from vidmat.io.camera import (
    CameraConfig,
    CaptureThread,
    Frame,
    VideoSource,
    crop_resize,
    parse_source,
    read_all,
)
from vidmat.io.queues import LatestQueue, QueueClosed
from vidmat.io.video import VideoReader, read_frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=15, fps=30)


# ---------------------------------------------------------------- queue
def test_queue_drops_oldest_and_counts():
    q: LatestQueue[int] = LatestQueue(maxsize=2)
    assert q.put(1) is None
    assert q.put(2) is None
    assert q.put(3) == 1  # the oldest went
    assert q.dropped == 1 and q.put_count == 3 and len(q) == 2
    assert q.get(timeout=0) == 2
    assert q.get(timeout=0) == 3
    assert q.get(timeout=0.01) is None


def test_queue_close_wakes_consumer_and_ignores_late_puts():
    q: LatestQueue[int] = LatestQueue()
    got: list[object] = []

    def consume():
        try:
            q.get()
        except QueueClosed:
            got.append("closed")

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.05)
    q.close()
    t.join(1)
    assert not t.is_alive() and got == ["closed"]
    q.put(5)
    assert len(q) == 0


def test_queue_never_grows_under_fast_producer():
    q: LatestQueue[int] = LatestQueue(maxsize=1)
    for i in range(1000):
        q.put(i)
    assert len(q) == 1 and q.max_depth == 1 and q.dropped == 999
    assert q.get() == 999


# --------------------------------------------------------------- sources
def test_parse_source():
    assert parse_source("0") == 0
    assert parse_source(2) == 2
    assert parse_source("/dev/video0") == "/dev/video0"
    assert parse_source(" clip.mp4 ") == "clip.mp4"


def test_crop_resize_keeps_centre():
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, 8:56] = 255  # the centre 48x48
    out = crop_resize(img, 32, 32)
    assert out.shape == (32, 32, 3)
    assert out.min() == 255  # the black side bars were cropped, not squeezed in


def test_file_plays_in_real_time_as_rgb(clip):
    t0 = time.perf_counter()
    frames = read_all(CameraConfig(source=str(clip), loop=False))
    wall = time.perf_counter() - t0
    assert len(frames) == 15
    assert [f.index for f in frames] == list(range(15))
    # 15 frames at 30 fps take ~0.5 s of wall clock, not a burst.
    assert 0.4 < wall < 1.5
    gaps = np.diff([f.timestamp for f in frames])
    assert 0.02 < np.median(gaps) < 0.05
    img = frames[0].image
    assert img.dtype == np.uint8 and img.shape == (48, 64, 3) and img.flags.c_contiguous
    r, _g, b = img[40, 5]
    assert r > 150 and b < 80  # left half is red in RGB order
    r, _g, b = img[40, 60]
    assert b > 150 and r < 80


def test_requested_size_and_lower_fps(clip):
    frames = read_all(CameraConfig(source=str(clip), width=32, height=32, fps=15, loop=False))
    assert frames[0].image.shape == (32, 32, 3)
    assert 6 <= len(frames) <= 9  # every other source frame


def test_file_loops_when_asked(clip):
    frames = read_all(CameraConfig(source=str(clip), realtime=False, loop=True), limit=40)
    assert len(frames) == 40


def test_bad_sources_are_one_sentence(tmp_path):
    with pytest.raises(VidmatError, match="does not exist"):
        CaptureThread(CameraConfig(source=str(tmp_path / "nope.mp4")), LatestQueue())
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    with pytest.raises(VidmatError, match="video"):
        CaptureThread(CameraConfig(source=str(bad)), LatestQueue())
    with pytest.raises(VidmatError, match="could not be opened"):
        CaptureThread(CameraConfig(source=97), LatestQueue())


def test_stop_joins_quickly(clip):
    q: LatestQueue[Frame] = LatestQueue()
    cap = CaptureThread(CameraConfig(source=str(clip), loop=True), q)
    cap.start()
    assert q.get(timeout=2) is not None
    cap.stop()
    cap.join(1)
    assert not cap.is_alive()
    with pytest.raises(QueueClosed):
        while True:
            q.get(timeout=1)


def test_camera_loss_is_reported_and_retried(clip, monkeypatch):
    """A camera that stops delivering: 'lost', retries, 'reopened' when frames come back."""
    events: list[str] = []
    q: LatestQueue[Frame] = LatestQueue(maxsize=100)
    cfg = CameraConfig(source=str(clip), retry_interval=0.02, max_failed_reads=3)
    cap = CaptureThread(cfg, q, on_status=lambda e, m: events.append(e))
    cap.video.is_file = False  # behave as a camera
    real_read, real_open = cap.video.read, cap.video.open
    state = {"reads": 0, "opens": 0}

    def flaky_read():
        state["reads"] += 1
        if 5 <= state["reads"] < 12:
            return None  # unplugged
        return real_read()

    def flaky_open():
        state["opens"] += 1
        if state["opens"] < 3:
            raise VidmatError("camera busy")
        real_open()

    monkeypatch.setattr(cap.video, "read", flaky_read)
    monkeypatch.setattr(cap.video, "open", flaky_open)
    cap.start()
    deadline = time.time() + 3
    while "reopened" not in events and time.time() < deadline:
        time.sleep(0.01)
    cap.stop()
    cap.join(1)
    assert events[:2] == ["lost", "reopened"]
    assert state["opens"] >= 3 and cap.frames > 4


# ------------------------------------------------- files played by their own clock
def _play(cfg: CameraConfig, limit: int | None = None) -> tuple[list[Frame], CaptureThread]:
    """Every frame a file source delivers, and the thread (for its statistics)."""
    q: LatestQueue[Frame] = LatestQueue(maxsize=1 << 16)
    cap = CaptureThread(cfg, q)
    cap.start()
    frames: list[Frame] = []
    with contextlib.suppress(QueueClosed):
        while limit is None or len(frames) < limit:
            item = q.get(timeout=5.0)
            assert item is not None
            frames.append(item)
    cap.stop()
    cap.join(5)
    assert cap.error is None
    return frames, cap


def test_variable_rate_file_keeps_its_frame_times(tmp_path: Path) -> None:
    """QA: a VFR clip (frames at 0, 40, 80, 300, 500 ms) played evenly spaced, too fast."""
    times_ms = [0, 40, 80, 300, 500, 540]
    clip = make_timed_clip(
        tmp_path / "vfr.mkv",
        pts=times_ms,
        time_base=Fraction(1, 1000),
        rate=Fraction(25),
        audio=None,
    )
    t0 = time.perf_counter()
    frames = read_all(CameraConfig(source=str(clip), loop=False))
    wall = time.perf_counter() - t0
    assert len(frames) == len(times_ms)
    got = np.array([f.pts for f in frames]) - frames[0].pts
    assert np.abs(got - np.array(times_ms) / 1000).max() < 0.03
    stamps = np.array([f.timestamp for f in frames]) - frames[0].timestamp
    assert np.abs(stamps - np.array(times_ms) / 1000).max() < 0.05  # delivered then too
    # Its average rate (6 frames in 0.58 s), not the header's guess, is the nominal rate.
    assert VideoSource(CameraConfig(source=str(clip))).native_fps == pytest.approx(6 / 0.58)
    assert wall >= 0.5


def test_last_frame_is_held_for_its_own_length(tmp_path: Path) -> None:
    """QA: a last frame shown for seconds lasted one frame period; the next pass (or the
    end of a --no-loop run) comes when it is over."""
    clip = long_last_clip(tmp_path / "long.mkv", last_ms=600, frames=4)  # ends at 0.9 s
    frames, _ = _play(CameraConfig(source=str(clip), loop=True), limit=5)
    pts = [f.pts - frames[0].pts for f in frames]
    assert pts[3] == pytest.approx(0.3, abs=0.03)
    assert pts[4] == pytest.approx(0.9, abs=0.05)  # the loop's first frame after the hold
    t0 = time.perf_counter()
    frames, _ = _play(CameraConfig(source=str(clip), loop=False))
    assert len(frames) == 4 and time.perf_counter() - t0 >= 0.85


def test_high_rate_file_plays_at_its_rate(tmp_path: Path, monkeypatch) -> None:
    """QA: a 1000 fps clip counted as 30 fps and played 33 times too slowly."""
    clip = make_timed_clip(tmp_path / "fast.mp4", frames=300, rate=Fraction(1000), audio=None)
    t0 = time.perf_counter()
    frames, cap = _play(CameraConfig(source=str(clip), loop=False))
    wall = time.perf_counter() - t0
    assert cap.nominal_fps == pytest.approx(1000, rel=0.02)
    assert wall < 1.5  # 0.3 s of video, not 10 s
    assert frames[-1].pts - frames[0].pts < 0.5
    assert len(frames) + cap.skipped == 300
    # --fps caps it: one frame per 1/100 s slot of media time, the rest skipped.
    # (Not in real time: which frames a busy CI machine is too late for is not fixed.)
    frames, cap = _play(CameraConfig(source=str(clip), fps=100, realtime=False, loop=False))
    assert cap.nominal_fps == 100 and len(frames) in (30, 31)  # one per 10 ms slot
    assert len(frames) + cap.skipped == 300
    # A file too long to count in time: its header's frame count over its length.
    monkeypatch.setattr(camera, "_RATE_SCAN_SECONDS", -1.0)
    with VideoReader(clip) as r:
        assert camera.average_rate(clip, r.info) == pytest.approx(1000, rel=0.02)


def test_fps_cap_holds_in_bursts_and_keeps_rounded_frame_times(tmp_path: Path) -> None:
    """--fps caps a burst of a variable-rate file even where its average is lower, and
    keeps every frame of a clip at the cap whose times are whole milliseconds."""
    burst = [0, 10, 20, 30, 500, 1000, 1500, 2000]  # averages 3.5 fps, bursts at 100
    clip = make_timed_clip(
        tmp_path / "b.mkv", pts=burst, time_base=Fraction(1, 1000), rate=Fraction(25), audio=None
    )
    frames, cap = _play(CameraConfig(source=str(clip), fps=10, realtime=False, loop=False))
    assert len(frames) == 5 and cap.skipped == 3
    ms30 = [round(i * 1000 / 30) for i in range(12)]  # 0, 33, 67, 100, ...
    clip = make_timed_clip(
        tmp_path / "c.mkv", pts=ms30, time_base=Fraction(1, 1000), rate=Fraction(30), audio=None
    )
    frames, cap = _play(CameraConfig(source=str(clip), fps=30, realtime=False, loop=False))
    assert len(frames) == 12 and cap.skipped == 0


def test_slow_first_frame_delays_instead_of_skipping(clip, monkeypatch) -> None:
    """QA: OpenCV's 2 s first read of a 10-bit HEVC clip made the wall clock skip the
    clip's first seconds; the clock now starts when the first frame is in hand."""
    calls = {"n": 0}

    def slow_first(real):
        def wrapper(self: VideoSource):
            calls["n"] += 1
            if calls["n"] == 1:
                time.sleep(0.4)
            return real(self)

        return wrapper

    for name in ("next_frame", "read"):  # whichever the player reads with
        real = getattr(VideoSource, name, None)
        if real is not None:
            monkeypatch.setattr(VideoSource, name, slow_first(real))
    frames, cap = _play(CameraConfig(source=str(clip), loop=False))
    assert len(frames) == 15 and cap.skipped == 0


def test_file_colours_match_convert(tmp_path: Path) -> None:
    """QA: OpenCV decoded HDR iPhone clips (BT.2020 matrix) 28 levels off; the live path
    decodes files with their own matrix, as convert does."""
    image = colour_clip(tmp_path / "hlg.mov", 64, 64, "BT2020", hlg=True)
    got = read_all(CameraConfig(source=str(tmp_path / "hlg.mov"), loop=False))[0].image
    assert np.array_equal(got, next(read_frames(tmp_path / "hlg.mov")).image)
    assert np.abs(got[48, 48].astype(int) - image[48, 48]).max() <= 3  # the greenscreen
    assert np.abs(got[10, 10].astype(int) - image[10, 10]).max() <= 3  # the "person"


@pytest.mark.parametrize(("hflip", "vflip"), [(True, False), (False, True), (True, True)])
def test_mirrored_file_plays_as_displayed(tmp_path: Path, hflip: bool, vflip: bool) -> None:
    """QA: a left-right mirror (display matrix) came out upside down, a top-bottom one
    not at all."""
    path = tmp_path / "m.mp4"
    stored = square_frame(0, 64, 48)
    stored[:8, :8] = 255  # a white corner: the square alone is symmetric top-bottom
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25, options={"preset": "ultrafast", "crf": "10"})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.set_display_rotation(0, hflip=hflip, vflip=vflip)
        f = av.VideoFrame.from_ndarray(stored, format="rgb24")
        for pk in [*s.encode(f), *s.encode()]:
            c.mux(pk)
    expected = stored[:, ::-1] if hflip else stored
    expected = expected[::-1] if vflip else expected
    img = read_all(CameraConfig(source=str(path), loop=False))[0].image
    assert np.abs(img.astype(int) - expected).mean() < 6


def test_rotated_file_plays_upright(tmp_path: Path) -> None:
    clip = make_timed_clip(tmp_path / "r.mp4", frames=3, rotation=90, audio=None)
    frames = read_all(CameraConfig(source=str(clip), loop=False))
    assert frames[0].image.shape == (64, 48, 3)


def _exif_jpeg(path: Path, image: np.ndarray, orientation: int) -> Path:
    """A JPEG of ``image`` whose EXIF says how to turn it (6: 90 degrees clockwise)."""
    ok, data = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    ifd = struct.pack(">HHHIHHI", 1, 0x0112, 3, 1, orientation, 0, 0)
    exif = b"Exif\0\0" + b"MM\0*" + struct.pack(">I", 8) + ifd
    app1 = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    raw = data.tobytes()
    path.write_bytes(raw[:2] + app1 + raw[2:])
    return path


def test_exif_rotated_photo_plays_upright_and_loops(tmp_path: Path) -> None:
    """QA: a phone photo (EXIF orientation 6) as --camera played sideways."""
    stored = square_frame(0, 64, 48)
    photo = _exif_jpeg(tmp_path / "p.jpg", stored, 6)
    upright = np.rot90(stored, -1)  # 48x64 stored, 64 tall when shown
    frames = read_all(CameraConfig(source=str(photo), realtime=False, loop=True), limit=3)
    assert len(frames) == 3
    for f in frames:
        assert f.image.shape == (64, 48, 3)
        assert np.abs(f.image.astype(int) - upright).mean() < 8
    assert len(read_all(CameraConfig(source=str(photo), loop=False))) == 1
    sized = read_all(CameraConfig(source=str(photo), width=32, height=32, loop=False))
    assert sized[0].image.shape == (32, 32, 3)


def test_animated_image_plays_as_a_clip(tmp_path: Path) -> None:
    path = tmp_path / "a.gif"
    with av.open(str(path), "w") as c:
        s = c.add_stream("gif", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "rgb8"
        for i in range(3):
            f = av.VideoFrame.from_ndarray(square_frame(i * 8, 64, 48), format="rgb24")
            f.pts = i
            for pk in s.encode(f.reformat(format="rgb8")):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    frames = read_all(CameraConfig(source=str(path), loop=False))
    assert len(frames) == 3 and not np.array_equal(frames[0].image, frames[2].image)


def test_image_ffmpeg_cannot_read_plays_as_a_still(tmp_path: Path) -> None:
    """An animated WebP (FFmpeg before 8 has no decoder for it) failed to open; OpenCV
    reads its first picture, shown as a still."""
    if "libwebp_anim" not in av.codecs_available:
        pytest.skip("no animated WebP encoder in this PyAV")
    path = animated_webp(tmp_path / "a.webp")
    # FFmpeg 8 (in PyAV 19) decodes animated WebP: then it plays as the video it is
    try:
        with av.open(str(path)) as c:
            decoded = sum(1 for _ in c.decode(video=0))
    except av.error.FFmpegError:
        decoded = 0
    if decoded != 3 and cv2.imread(str(path)) is None:  # OpenCV 4.8 cannot either
        with pytest.raises(VidmatError):
            read_all(CameraConfig(source=str(path), loop=False))
        return
    frames = read_all(CameraConfig(source=str(path), realtime=False, loop=True), limit=3)
    assert len(frames) == 3 and frames[0].image.shape == (48, 64, 3)
    played = read_all(CameraConfig(source=str(path), loop=False))
    assert len(played) == (3 if decoded == 3 else 1)
    if decoded == 3:
        assert not np.array_equal(played[0].image, played[2].image)
