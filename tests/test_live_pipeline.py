"""The live pipeline end to end with a file played as a camera and a stub model."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from convert_fixtures import long_last_clip
from live_fixtures import make_clip, stub_engine

from vidmat.core.backgrounds import Background
from vidmat.core.settings import LiveSettings
from vidmat.errors import VidmatError
from vidmat.io.camera import CameraConfig
from vidmat.pipelines.live import LiveConfig, LiveFrame, LivePipeline


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("live") / "clip.mp4", frames=30, fps=30)


def run_pipeline(clip, engine=None, settings=None, timeout=6.0, **cfg):
    frames: list[LiveFrame] = []
    events: dict[str, list] = {"started": [], "error": [], "finished": []}
    camera = cfg.pop("camera", CameraConfig(source=str(clip), loop=False))
    p = LivePipeline(
        engine or stub_engine(),
        LiveConfig(camera=camera, **cfg),
        settings or LiveSettings(background=Background.mask(), smoothing=0.0),
        on_started=events["started"].append,
        on_frame=frames.append,
        on_error=events["error"].append,
        on_finished=lambda: events["finished"].append(True),
    )
    p.start()
    assert p.wait(timeout), "pipeline did not finish"
    p.stop()
    return p, frames, events


def square_columns(image: np.ndarray) -> np.ndarray:
    """Columns where the mask view shows the stub's 'person' (the white square)."""
    return np.flatnonzero(image[..., 0].max(axis=0) > 128)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_frames_flow_and_stop_joins_every_thread(clip, mode):
    before = {t.ident for t in threading.enumerate()}
    p, frames, events = run_pipeline(clip, mode=mode)
    # The file is played through at real time: the last frame shown is from its end, and
    # most frames reach the output (a loaded CI machine may skip a few to keep real time,
    # as a camera would; once 24 of 30 arrived).
    assert frames[-1].source.index >= 27
    assert len(frames) >= 15
    assert [f.index for f in frames] == list(range(len(frames)))
    assert frames[0].image.shape == (48, 64, 3) and frames[0].image.dtype == np.uint8
    assert len(events["started"]) == 1 and events["started"][0]["width"] == 64
    assert events["finished"] == [True] and events["error"] == []
    # The mask view shows the stub's mask: the white square moves 2 px per frame.
    f = frames[10]
    cols = square_columns(f.image)
    x = (f.source.index * 2) % 48
    if mode == "sync":
        assert abs(cols.min() - x) <= 2 and abs(cols.max() - (x + 15)) <= 2
    assert p.threads() and not any(t.is_alive() for t in p.threads())
    leftover = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert not [t for t in leftover if t.name.startswith("vidmat")]
    st = p.status()
    assert st["frames"] == len(frames) and st["dropped"] == p.dropped


def test_slow_worker_drops_oldest_frames_and_counts_them(clip):
    p, frames, _ = run_pipeline(clip, engine=stub_engine(delay=0.1), mode="sync")
    assert len(frames) <= 14  # 1 s of video, 100 ms per frame
    assert p.dropped >= 12
    # Nothing queues up: every output shows a recent frame, not one from long ago.
    assert all(f.latency_ms < 250 for f in frames)
    captured = p.capture.frames
    assert len(frames) + p.dropped == captured


def test_async_mode_keeps_display_rate_with_a_slow_model(clip):
    # A model four times slower than the camera: the display must not wait for it. The
    # assertions compare counts from the same run, so a loaded CI box that shows fewer
    # frames (once 17 of 30 with a 100 ms model) still leaves a wide margin.
    p, frames, _ = run_pipeline(clip, engine=stub_engine(delay=0.25), mode="async")
    assert p.stats.inferences <= 6  # 1 s of video: the model runs at its own pace...
    assert len(frames) >= 2 * p.stats.inferences + 2  # ...while compositing keeps going
    assert len(frames) >= 12
    assert max(f.mask_age_ms for f in frames[5:]) > 100


def test_infer_every_nth_frame(clip):
    engine = stub_engine()
    _p, frames, _ = run_pipeline(clip, engine=engine, mode="sync", infer_every=3)
    assert [f.inferred for f in frames[:6]] == [True, False, False, True, False, False]
    assert engine.model.calls == sum(f.inferred for f in frames)


def test_infer_every_nth_frame_in_async_mode(clip):
    # The model is fast enough for every frame here, so only --infer-every holds it back:
    # it was ignored in async mode, the model running on all ~30 frames.
    engine = stub_engine()
    p, frames, events = run_pipeline(clip, engine=engine, mode="async", infer_every=5)
    assert events["error"] == [] and len(frames) >= 15
    assert 2 <= p.stats.inferences <= -(-len(frames) // 5)  # at most one in every 5 frames
    assert engine.model.calls == p.stats.inferences


def _wait_for(frames: list, count: int, deadline: float) -> None:
    """Until ``frames`` holds ``count`` (the pipeline's callback appends), or ``deadline``."""
    while len(frames) < count and time.time() < deadline:
        time.sleep(0.01)


def test_settings_change_while_running(clip):
    frames: list[LiveFrame] = []
    camera = CameraConfig(source=str(clip), loop=True)
    p = LivePipeline(
        stub_engine(),
        LiveConfig(camera=camera, mode="sync"),
        LiveSettings(background=Background.color("black"), smoothing=0.0),
        on_frame=frames.append,
    )
    p.start()
    try:
        deadline = time.time() + 3
        _wait_for(frames, 3, deadline)
        p.update(background="mask", mirror=True, feather=2.0, threshold=0.4, grow=1)
        n = len(frames)
        _wait_for(frames, n + 5, deadline)
    finally:
        p.stop()
    assert p.post.config.feather_px == 2.0 and p.post.config.threshold == 0.4
    assert p.post.config.erode_dilate_px == 1
    early = frames[0].image
    assert early[40, 5, 1] < 10  # black background where the frame is red
    late = frames[-1]
    assert np.array_equal(late.image[..., 0], late.image[..., 1])  # grey mask view
    cols = square_columns(late.image)
    x = (late.source.index * 2) % 48
    mirrored_centre = 64 - (x + 8)
    assert abs(cols.mean() - mirrored_centre) <= 3


def test_bad_setting_is_refused():
    p = LivePipeline(stub_engine(), LiveConfig(camera=CameraConfig(source="nope.mp4")))
    with pytest.raises(VidmatError, match="smoothing"):
        p.update(smoothing=3.0)
    with pytest.raises(VidmatError, match="colour"):
        p.update(background="#zz")
    with pytest.raises(VidmatError, match="does not exist"):
        p.start()


def test_model_error_is_reported_and_everything_stops(clip):
    p, frames, events = run_pipeline(clip, engine=stub_engine(fail_after=3), mode="sync")
    assert len(frames) == 3
    assert len(events["error"]) == 1 and "stub model exploded" in events["error"][0]
    assert events["finished"] == [True]
    assert not any(t.is_alive() for t in p.threads())


def test_duration_stops_a_looping_source(clip):
    camera = CameraConfig(source=str(clip), loop=True)
    t0 = time.perf_counter()
    _p, frames, _ = run_pipeline(clip, camera=camera, mode="sync", duration=0.5)
    assert 0.4 < time.perf_counter() - t0 < 2.0
    assert 8 <= len(frames) <= 17  # 15 at 30 fps; late file frames are skipped under load
    assert frames[-1].pts - frames[0].pts < 0.5


@pytest.mark.parametrize("grow", [4, -4])
def test_grow_reaches_the_matte(clip, grow):
    """--grow shapes live's matte through the same post-processor step as convert's."""

    def widths(g: int) -> list[int]:
        settings = LiveSettings(background=Background.mask(), smoothing=0.0, grow=g)
        p, frames, events = run_pipeline(clip, settings=settings, mode="sync")
        assert events["error"] == [] and p.post.config.erode_dilate_px == g
        return [len(square_columns(f.image)) for f in frames[3:8]]

    plain, shaped = widths(0), widths(grow)
    # The 16 px square gains (or loses) about ``grow`` pixels on each side.
    assert all(abs(s - (p + 2 * grow)) <= 2 for p, s in zip(plain, shaped, strict=True))


def test_grow_beyond_the_limit_is_refused():
    with pytest.raises(VidmatError, match="at most 100 pixels"):
        LiveSettings(grow=101).validated()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_duration_is_wall_time_when_frames_come_slowly(clip, mode):
    # One frame a second and a 0.3 s duration: the worker checked the duration only when
    # a frame came, so the run lasted until the second frame (--fps 0.1 ran 10 s).
    camera = CameraConfig(source=str(clip), fps=1.0, loop=True)
    t0 = time.perf_counter()
    p, frames, events = run_pipeline(clip, camera=camera, mode=mode, duration=0.3)
    assert time.perf_counter() - t0 < 0.9
    assert len(frames) == 1 and events["error"] == []
    assert p.ended_at == pytest.approx(frames[0].source.timestamp + 0.3, abs=1e-6)


def test_duration_stops_a_source_that_delivers_nothing(clip, monkeypatch):
    # A camera that is lost before its first frame: the run still ends on time.
    from vidmat.io.camera import CaptureThread

    monkeypatch.setattr(CaptureThread, "run", lambda self: self._stop_event.wait())
    t0 = time.perf_counter()
    p, frames, events = run_pipeline(clip, mode="sync", duration=0.3)
    assert 0.25 < time.perf_counter() - t0 < 0.9
    assert frames == [] and events["finished"] == [True] and p.ended_at is not None


def test_a_capture_failure_is_an_error_not_a_status(clip, monkeypatch):
    # The capture thread reported a failure only as on_status("error", ...): a caller
    # that stops on errors (headless live, exit 2) took it for a normal end.
    from vidmat.io import camera

    def fail(self):
        try:
            raise VidmatError("camera or video file gone.mp4 does not exist.")
        except VidmatError as exc:
            self._status("error", f"capture failed: {exc}")
        finally:
            self.out.close()

    monkeypatch.setattr(camera.CaptureThread, "run", fail)
    p, _frames, events = run_pipeline(clip, mode="sync")
    assert events["error"] == ["capture failed: camera or video file gone.mp4 does not exist."]
    assert p.error == events["error"][0] and events["finished"] == [True]


def test_a_source_that_ends_by_itself_ends_when_its_last_frame_stops_showing(tmp_path):
    # A file's last frame held for 0.6 s: the run ends when that hold is over (ended_at
    # stayed None, so a recording gave the frame 1/fps), and says the source ended it.
    clip = long_last_clip(tmp_path / "long.mkv", last_ms=600, frames=4)  # ends at 0.9 s
    p, frames, events = run_pipeline(clip, mode="sync")
    assert events["error"] == [] and frames[-1].source.index == 3
    assert p.source_ended and p.ended_at is not None
    assert p.ended_at - frames[-1].source.timestamp == pytest.approx(0.6, abs=0.1)


def test_a_run_cut_short_is_not_a_source_end(clip):
    camera = CameraConfig(source=str(clip), loop=True)
    p, _frames, _ = run_pipeline(clip, camera=camera, mode="sync", duration=0.3)
    assert p.ended_at is not None and not p.source_ended


def test_a_mirror_switch_flips_the_mask_the_model_has_not_redone(tmp_path):
    """Async mode: after the mirror was switched on, the mask of the last unmirrored
    frame was laid on the mirrored ones, backwards, until the model caught up."""
    import av

    clip = tmp_path / "still.mp4"
    with av.open(str(clip), "w") as c:  # a square that stays at the left, columns 4-19
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        img = np.full((48, 64, 3), 40, np.uint8)
        img[12:28, 4:20] = 255
        for _ in range(10):
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    frames: list[LiveFrame] = []
    p = LivePipeline(
        stub_engine(delay=0.4),  # the model is busy for 0.4 s after each frame it takes
        LiveConfig(camera=CameraConfig(source=str(clip), loop=True), mode="async"),
        LiveSettings(background=Background.mask(), smoothing=0.0),
        on_frame=frames.append,
    )
    p.start()
    try:
        deadline = time.time() + 5
        _wait_for(frames, 3, deadline)
        p.update(mirror=True)
        n = len(frames)
        _wait_for(frames, n + 6, deadline)
    finally:
        p.stop()
    assert square_columns(frames[0].image).mean() < 16
    after = frames[n + 1 : n + 6]  # frames[n] may have been composited before the switch
    assert len(after) == 5
    for f in after:
        assert square_columns(f.image).mean() > 48, f.index  # mirrored: columns 44-59


def test_the_run_rate_never_exceeds_the_sources() -> None:
    """The end-of-run fps was the rolling display rate, which counts the burst after
    start-up: a 0.2 s run of a 30 fps file said 49 fps. Over the source's own times a
    run of 30 fps pictures, some shown in a burst and one dropped, is 30 or less."""
    from vidmat.pipelines.live import LiveStats

    stats = LiveStats()
    shown = [0, 1, 2, 3, 5]  # frames of a 30 fps source; frame 4 dropped
    for k, i in enumerate(shown):
        stats.displayed_at(10.0 + 0.005 * k, source_time=i / 30)  # painted 5 ms apart
    assert stats.fps() > 100  # the rolling rate of the burst
    assert stats.run_fps() == pytest.approx(4 / (5 / 30))  # 24 fps: 4 gaps over 5 frames
    assert LiveStats().run_fps() == 0.0
