"""Recording the live composite: valid H.264 mp4 at real timestamps, audio muxed, finalised on stop."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
from live_fixtures import make_clip, stub_engine

from vidmat.core.backgrounds import Background
from vidmat.core.settings import LiveSettings
from vidmat.errors import VidmatError
from vidmat.io.camera import CameraConfig, Frame
from vidmat.io.recorder import Recorder, RecorderConfig
from vidmat.pipelines.live import LiveConfig, LivePipeline


def probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        times = [float(f.pts * f.time_base) for f in c.decode(video=0)]
        return {
            "codec": v.codec_context.name,
            "size": (v.width, v.height),
            "times": times,
            "duration": c.duration / 1e6,
            "audio": [float(a.duration * a.time_base) for a in c.streams.audio],
        }


def make_tone(path: Path, seconds: float = 0.5, rate: int = 16000) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=rate)
        s.layout = "mono"
        t = np.arange(int(seconds * rate)) / rate
        data = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)[None]
        f = av.AudioFrame.from_ndarray(data, format="s16", layout="mono")
        f.sample_rate, f.pts = rate, 0
        for p in [*s.encode(f), *s.encode()]:
            c.mux(p)
    return path


def test_frames_are_written_at_their_real_timestamps(tmp_path):
    out = tmp_path / "rec.mp4"
    r = Recorder(RecorderConfig(out, audio=None)).start()
    times = [0.0, 0.033, 0.07, 0.1, 0.25, 0.3, 0.5]  # irregular, as a live source is
    for t in times:
        r.submit(np.full((48, 64, 3), 120, np.uint8), 1000.0 + t)
    assert not out.exists()  # only the temporary file while recording
    info = r.stop()
    assert info.path == out and info.frames == len(times) and not info.audio
    p = probe(out)
    assert p["codec"] == "h264" and p["size"] == (64, 48)
    assert np.allclose(p["times"], times, atol=0.002)
    assert p["duration"] == pytest.approx(0.5 + 1 / 30, abs=0.01)
    assert [f.name for f in tmp_path.iterdir()] == ["rec.mp4"]


def test_odd_sizes_rgba_and_audio_from_a_source(tmp_path):
    out = tmp_path / "rec.mp4"
    tone = make_tone(tmp_path / "tone.wav")
    cfg = RecorderConfig(out, audio=str(tone), audio_format="wav")
    r = Recorder(cfg)
    assert r.audio_message == f"audio from {tone}"  # said before the device opens, not ""
    r.start()
    for i in range(10):
        img = np.zeros((47, 65, 4), np.uint8)
        img[..., 0] = 255
        img[..., 3] = 255 if i % 2 else 0  # transparent frames are recorded over black
        r.submit(img, i / 20)
    info = r.stop()
    assert info.audio and info.frames == 10
    p = probe(out)
    assert p["size"] == (66, 48)  # the writer pads odd sizes for yuv420p
    assert p["audio"] and p["audio"][0] == pytest.approx(0.5, abs=0.05)
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert frames[0][..., 0].mean() < 20 and frames[1][..., 0].mean() > 200


def test_a_microphone_that_gives_no_sound_is_not_called_audio(tmp_path):
    """A source that opened and then gave nothing left a file without sound that
    RecordingInfo called audio ("audio from empty.wav")."""
    import wave

    empty = tmp_path / "empty.wav"
    with wave.open(str(empty), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
    out = tmp_path / "rec.mp4"
    r = Recorder(RecorderConfig(out, audio=str(empty), audio_format="wav")).start()
    for i in range(5):
        r.submit(np.zeros((48, 64, 3), np.uint8), i / 20)
    info = r.stop()
    assert info.frames == 5 and not info.audio
    assert info.message == f"{empty} gave no sound; recorded without audio"
    assert not probe(out)["audio"]


def test_an_audio_encoder_that_will_not_open_lets_the_microphone_go(tmp_path, monkeypatch):
    """Adding the AAC stream failed: the exception ended the recording's thread, and the
    microphone opened for it was never closed."""
    from vidmat.io import recorder as recorder_mod

    class Proxy:
        """PyAV's objects take no new attributes: one in front of them that does."""

        def __init__(self, inner, **own):
            self._inner, self.__dict__["own"] = inner, own

        def __getattr__(self, name):
            return self.own[name] if name in self.own else getattr(self._inner, name)

    closed = []
    real_open = recorder_mod.open_audio_device

    def tracked_open(*args, **kwargs):
        source = real_open(*args, **kwargs)
        return Proxy(source, close=lambda: (closed.append(True), source.close()))

    def refusing_aac(container):
        def add_stream(codec, *a, **k):
            if codec == "aac":
                raise ValueError("no encoder")
            return container.add_stream(codec, *a, **k)

        return Proxy(container, add_stream=add_stream)

    monkeypatch.setattr(recorder_mod, "open_audio_device", tracked_open)
    monkeypatch.setattr(
        recorder_mod._LiveWriter, "container", property(lambda w: refusing_aac(w._container))
    )
    out = tmp_path / "rec.mp4"
    tone = make_tone(tmp_path / "tone.wav")
    r = Recorder(RecorderConfig(out, audio=str(tone), audio_format="wav")).start()
    for i in range(5):
        r.submit(np.zeros((48, 64, 3), np.uint8), i / 20)
    info = r.stop()
    assert info.frames == 5 and not info.audio and closed == [True]
    assert info.message == "audio recording failed (no encoder); the video continues"
    assert not probe(out)["audio"]


def test_a_closed_recording_takes_no_more_audio(tmp_path):
    """A microphone thread still running after its join (a stalled device) encoded and
    muxed into the container closed under it; the writer is sealed on close instead."""
    from fractions import Fraction

    from vidmat.io.recorder import AUDIO_RATE, TIME_BASE, _LiveWriter

    w = _LiveWriter(tmp_path / "a.mp4", "mp4", 64, 48, TIME_BASE, rate=Fraction(30))
    out = w.container.add_stream("aac", rate=AUDIO_RATE)
    out.layout = "stereo"

    def silence(pts: int) -> av.AudioFrame:
        f = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), "fltp", "stereo")
        f.sample_rate, f.pts, f.time_base = AUDIO_RATE, pts, Fraction(1, AUDIO_RATE)
        return f

    assert all(w.encode_audio(out, silence(i * 1024)) for i in range(8))
    w.write(np.zeros((48, 64, 3), np.uint8), 0, 33)
    w.close()
    assert not w.encode_audio(out, silence(8 * 1024)) and not w.encode_audio(out, None)
    with av.open(str(tmp_path / "a.mp4")) as c:
        assert c.streams.audio and c.streams.video


def test_refuses_to_overwrite_and_leaves_nothing_when_empty(tmp_path):
    out = tmp_path / "rec.mp4"
    out.write_bytes(b"precious")
    with pytest.raises(VidmatError, match="already exists"):
        Recorder(RecorderConfig(out))
    for name in ("rec.gif", "rec.mkv", "rec.mov"):  # an MP4 under another container's name
        with pytest.raises(VidmatError, match=r"\.mp4"):
            Recorder(RecorderConfig(tmp_path / name))
    with pytest.raises(VidmatError, match=r"\.mp4 alone has no name"):  # not "got .mp4"
        Recorder(RecorderConfig(tmp_path / ".mp4"))
    other = tmp_path / "empty.mp4"
    info = Recorder(RecorderConfig(other, audio=None)).start().stop()
    assert info.path is None and info.frames == 0
    assert sorted(f.name for f in tmp_path.iterdir()) == ["rec.mp4"]
    assert out.read_bytes() == b"precious"


def test_a_recording_that_outlasts_stop_is_abandoned_in_one_sentence(tmp_path, monkeypatch):
    """A writer slower than stop()'s timeout (a stalled disk) ended in a bare
    AssertionError, and the thread killed at exit left its .part file behind."""
    import time

    def slow_fit(image, size):
        time.sleep(0.2)
        return image

    monkeypatch.setattr(Recorder, "_fit", staticmethod(slow_fit))
    rec = Recorder(RecorderConfig(tmp_path / "rec.mp4", audio=None)).start()
    for i in range(8):
        rec.submit(np.zeros((32, 32, 3), np.uint8), i / 30)
    with pytest.raises(VidmatError, match=r"still being written after 0.1 s .* no file"):
        rec.stop(timeout=0.1)
    assert not rec.running and list(tmp_path.iterdir()) == []
    # slow only in closing the file, within the grace time: the file stands and stop()
    # says so, not "no file was written" with the file in place
    from vidmat.io.recorder import _LiveWriter

    monkeypatch.setattr(Recorder, "_fit", staticmethod(lambda image, size: image))
    real_close = _LiveWriter.close

    def slow_close(self):
        time.sleep(0.5)
        real_close(self)

    monkeypatch.setattr(_LiveWriter, "close", slow_close)
    rec = Recorder(RecorderConfig(tmp_path / "rec.mp4", audio=None)).start()
    for i in range(3):
        rec.submit(np.zeros((32, 32, 3), np.uint8), i / 30)
    time.sleep(0.3)
    info = rec.stop(timeout=0.1)
    assert not rec.running and info.path == tmp_path / "rec.mp4" and info.frames == 3
    assert [p.name for p in tmp_path.iterdir()] == ["rec.mp4"]


def test_no_microphone_is_said_not_fatal(tmp_path, monkeypatch):
    import vidmat.io.recorder as rec

    monkeypatch.setattr(rec, "alsa_capture_devices", list)
    r = Recorder(RecorderConfig(tmp_path / "a.mp4"))
    assert "without audio" in r.audio_message


def test_live_pipeline_records_the_expected_duration(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", frames=30, fps=30)
    out = tmp_path / "live.mp4"
    recorder = Recorder(RecorderConfig(out, audio=None)).start()
    frames = []
    p = LivePipeline(
        stub_engine(),
        LiveConfig(camera=CameraConfig(source=str(clip), loop=False), mode="sync"),
        LiveSettings(background=Background.color("green"), smoothing=0.0),
        on_frame=frames.append,
    )
    p.add_sink(recorder)
    p.start()
    assert p.wait(6)
    p.stop()
    info = recorder.stop()
    assert info.frames == len(frames) >= 15  # every frame shown is recorded; load may skip some
    probed = probe(out)
    assert len(probed["times"]) == info.frames
    # 30 frames at 30 fps played as a camera: one second of video, each frame at the time
    # it was due, which is the file's own spacing (k/30 s) however late it was delivered.
    assert probed["duration"] == pytest.approx(1.0, abs=0.1)
    expect = [f.source.due - frames[0].source.due for f in frames]
    assert np.allclose(probed["times"], expect, atol=0.002)
    assert np.allclose(np.round(np.array(expect) * 30) / 30, expect, atol=0.002)


def test_the_last_frame_lasts_until_the_end_at_most(tmp_path):
    # One frame from a source at 0.001 fps, stopped 2 s later: the last frame was given
    # 1/fps (a 1000 s recording of a 2 s run). It lasts until the end, capped at 1/fps.
    slow = tmp_path / "slow.mp4"
    r = Recorder(RecorderConfig(slow, audio=None, fps=0.001)).start()
    r.submit(np.full((48, 64, 3), 120, np.uint8), 100.0)
    info = r.stop(end=102.0)
    assert info.frames == 1 and info.duration == pytest.approx(2.0)
    assert probe(slow)["duration"] == pytest.approx(2.0, abs=0.01)
    # A fast source stopped long after its last frame: still one frame at its rate.
    fast = tmp_path / "fast.mp4"
    r = Recorder(RecorderConfig(fast, audio=None, fps=25)).start()
    for t in (0.0, 0.04, 0.08):
        r.submit(np.full((48, 64, 3), 120, np.uint8), 100.0 + t)
    assert r.stop(end=105.0).duration == pytest.approx(0.12)
    assert probe(fast)["duration"] == pytest.approx(0.12, abs=0.01)


def test_the_last_frame_lasts_until_a_source_end_that_is_not_a_cut(tmp_path):
    # A file's last picture held 3 s, and the source ended by itself when it stopped being
    # shown: that end is not a cut, so the frame lasts the 3 s (it lasted 1/fps: 0.1 s).
    out = tmp_path / "held.mp4"
    r = Recorder(RecorderConfig(out, audio=None, fps=10)).start()
    for t in (0.0, 0.1, 0.2):
        r.submit(np.full((48, 64, 3), 120, np.uint8), 100.0 + t)
    info = r.stop(end=103.2, cut=False)
    assert info.frames == 3 and info.duration == pytest.approx(3.2)
    assert probe(out)["duration"] == pytest.approx(3.2, abs=0.01)


def test_a_sink_records_when_each_frame_was_due_not_delivered(tmp_path):
    # A file played as a camera under load: each frame reached the pipeline up to 25 ms
    # after it was due. Recorded by delivery, the spacing jittered and the last frame,
    # ending at the capture's end (due-based), lasted 8 ms instead of 1/25 s.
    out = tmp_path / "late.mp4"
    r = Recorder(RecorderConfig(out, audio=None, fps=25)).start()
    due = [100.0 + i * 0.04 for i in range(5)]
    late = [0.0, 0.012, 0.025, 0.003, 0.032]
    for i, (d, x) in enumerate(zip(due, late, strict=True)):
        src = Frame(np.full((48, 64, 3), 120, np.uint8), i, timestamp=d + x, pts=d - 100.0, due=d)
        r(SimpleNamespace(image=src.image, source=src))
    info = r.stop(end=100.2, cut=False)
    p = probe(out)
    assert np.allclose(p["times"], [d - 100.0 for d in due], atol=0.002)
    assert info.duration == pytest.approx(0.2) and p["duration"] == pytest.approx(0.2, abs=0.01)


def test_a_named_audio_source_that_does_not_open_is_refused_on_start(tmp_path):
    out = tmp_path / "rec.mp4"
    missing = tmp_path / "nowhere.wav"
    r = Recorder(RecorderConfig(out, audio=str(missing), audio_format="wav"))
    with pytest.raises(VidmatError, match=r"^the microphone '.*nowhere\.wav' cannot be opened"):
        r.start()
    assert not r.running and list(tmp_path.iterdir()) == []


def test_auto_audio_that_does_not_open_records_without_and_says_so(tmp_path, monkeypatch):
    import vidmat.io.recorder as rec

    def refuse(device, fmt="alsa"):
        raise VidmatError("the microphone 'default' cannot be opened") from OSError("busy")

    monkeypatch.setattr(rec, "alsa_capture_devices", lambda: ["/dev/snd/pcmC0D0c"])
    monkeypatch.setattr(rec, "open_audio_device", refuse)
    if "alsa" not in av.formats_available:
        pytest.skip("this PyAV build has no ALSA input")
    r = Recorder(RecorderConfig(tmp_path / "a.mp4")).start()
    assert r.audio_message == "microphone 'default' unavailable (busy); no audio"
    r.submit(np.zeros((48, 64, 3), np.uint8), 0.0)
    info = r.stop()
    assert info.frames == 1 and not info.audio and "no audio" in info.message


@pytest.mark.skipif("alsa" not in av.formats_available, reason="no ALSA input in this PyAV")
def test_alsa_finds_the_system_configuration_and_keeps_its_lines_quiet(monkeypatch, capfd):
    # The PyAV wheel's libasound looks for alsa.conf under its build prefix: without
    # ALSA_CONFIG_DIR it knows no PCM at all, not even 'null' ("Unknown PCM null").
    import vidmat.io.recorder as rec

    monkeypatch.delenv("ALSA_CONFIG_DIR", raising=False)
    with pytest.raises(VidmatError, match="cannot be opened"):
        rec.open_audio_device("hw:99")
    assert "ALSA lib" not in capfd.readouterr().err  # libasound's own lines: debug log
    if not (rec.SYSTEM_ALSA_CONFIG / "alsa.conf").is_file():
        pytest.skip("no system ALSA configuration here")
    import os

    assert os.environ["ALSA_CONFIG_DIR"] == str(rec.SYSTEM_ALSA_CONFIG)
    rec.open_audio_device("null").close()
    monkeypatch.setenv("ALSA_CONFIG_DIR", "/elsewhere")  # a user's own choice is kept
    rec._use_system_alsa_config()
    assert os.environ["ALSA_CONFIG_DIR"] == "/elsewhere"
