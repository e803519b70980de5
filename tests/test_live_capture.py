"""Capture thread and latest-frame queue: real-time file playback, RGB order, drops, loss."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from live_fixtures import make_clip

from vidmat.errors import VidmatError
from vidmat.io.camera import (
    CameraConfig,
    CaptureThread,
    Frame,
    crop_resize,
    parse_source,
    read_all,
)
from vidmat.io.queues import LatestQueue, QueueClosed


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
