"""`vidmat live` with its window, through ui.app.run_window: a stub engine, settings in tmp_path."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
from live_fixtures import disk_full_after, make_clip, stub_engine

pytest.importorskip("pytestqt")
from PyQt6.QtCore import QSettings, QTimer

import vidmat.ui.window as window_module
from vidmat.cli import build_parser
from vidmat.commands.live import LiveRequest
from vidmat.ui.app import run_window


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("app") / "clip.mp4", frames=30, fps=30)


@pytest.fixture
def live(qapp, tmp_path, monkeypatch):
    """``live(*argv, on_start=f)`` runs `vidmat live ARGV` in a window until --duration
    closes it and returns that window; ``f(window)`` runs once its first frame is out.
    The engine is a stub and the window remembers its settings in tmp_path, never in
    the user's config folder."""
    monkeypatch.setattr(LiveRequest, "engine", lambda self: stub_engine())
    settings_file = str(tmp_path / "vidmat-live.ini")
    windows: list[window_module.LiveWindow] = []
    hooks: list = []

    class IsolatedWindow(window_module.LiveWindow):
        def __init__(self, *args, **kwargs) -> None:
            qs = QSettings(settings_file, QSettings.Format.IniFormat)
            super().__init__(*args, qsettings=qs, retry_interval=0.2, **kwargs)
            windows.append(self)
            for hook in hooks:
                self.started_hooks.append(lambda info, hook=hook: hook(self))

    monkeypatch.setattr(window_module, "LiveWindow", IsolatedWindow)

    def run(*argv: str, on_start=None, code: int = 0) -> window_module.LiveWindow:
        hooks[:] = [on_start] if on_start is not None else []
        args = build_parser().parse_args(["live", "--mode", "sync", *argv])
        try:
            got = run_window(LiveRequest(args))
        except KeyboardInterrupt as stop:  # a stop signal: what the CLI exits with
            got = 128 + getattr(stop, "signum", 2)
        assert got == code
        return windows[-1]

    return run


def test_a_bg_file_chosen_again_in_the_window_is_remembered_next_run(
    live, clip, tmp_path, monkeypatch
):
    from PyQt6.QtGui import QColor, QImage

    im = QImage(32, 32, QImage.Format.Format_RGB888)
    im.fill(QColor(0, 0, 255))
    assert im.save(str(tmp_path / "beach.png"))
    monkeypatch.chdir(tmp_path)  # --bg relative to where the command runs
    first = live("--camera", str(clip), "--bg", "beach.png", "--duration", "0.5")
    assert first.frames_shown > 0 and first.file_button.text() == "beach.png"
    assert live("--camera", str(clip), "--duration", "0.5").bg_combo.currentData() == "blur"

    def green_then_back_to_the_image(w: window_module.LiveWindow) -> None:
        assert w.set_background_kind("green") and w.set_background_kind("image")

    argv = ("--camera", str(clip), "--bg", "beach.png", "--duration", "0.5")
    live(*argv, on_start=green_then_back_to_the_image)
    monkeypatch.chdir(Path(clip).parent)  # the next run starts elsewhere
    w = live("--camera", str(clip), "--duration", "0.5")
    assert w.bg_combo.currentData() == "image" and w.file_button.text() == "beach.png"
    assert w.current_settings().background.kind == "image"
    assert w.qs.value("background/image") == str(tmp_path / "beach.png")


def test_mirror_on_the_command_line_holds_for_its_run_and_no_mirror_undoes_the_window(live, clip):
    assert live("--camera", str(clip), "--mirror", "--duration", "0.3").mirror_box.isChecked()
    assert not live("--camera", str(clip), "--duration", "0.3").mirror_box.isChecked()

    def tick_mirror(w: window_module.LiveWindow) -> None:
        w.mirror_box.click()

    live("--camera", str(clip), "--duration", "0.3", on_start=tick_mirror)
    seen: list[bool] = []
    w = live(
        "--camera",
        str(clip),
        "--no-mirror",
        "--duration",
        "0.3",
        on_start=lambda w: seen.append(w.pipeline.settings.mirror),
    )
    assert seen == [False] and not w.mirror_box.isChecked()
    # --no-mirror held for its run: the mirror the user ticked in the window is kept.
    assert live("--camera", str(clip), "--duration", "0.3").mirror_box.isChecked()


def test_a_window_recording_runs_at_the_rate_the_file_plays_at(live, clip, tmp_path, capsys):
    out = tmp_path / "rec.mp4"
    w = live("--camera", str(clip), "--fps", "60", "--record", str(out), "--duration", "0.7")
    assert w.last_saved is not None and w.last_saved.path == out
    # the terminal is told, as headless tells it (only the gone status bar had said so)
    assert f"vidmat live: wrote {out} ({w.last_saved.frames} frames, " in capsys.readouterr().err
    with av.open(str(out)) as c:
        frames = list(c.decode(video=0))
        rate = c.streams.video[0].average_rate
    assert len(frames) == w.last_saved.frames
    # The clip plays at its own 30 fps whatever --fps 60 asked: so is it recorded.
    assert float(frames[-1].duration * frames[-1].time_base) == pytest.approx(1 / 30, abs=0.002)
    assert float(rate) == pytest.approx(30, rel=0.1)


def test_the_terminal_hears_why_only_when_no_video_was_shown(live, clip, tmp_path, capsys):
    # and exits 2 as headless does (it exited 0: a script took it for a run that worked)
    w = live("--camera", str(tmp_path / "absent.mp4"), "--duration", "0.5", code=2)
    assert w.frames_shown == 0
    err = capsys.readouterr().err
    assert "vidmat live: no video:" in err and "absent.mp4" in err
    # A run that showed video said everything in its window: an error it got past (a bad
    # background file, picked and replaced) is not printed as if it were the outcome.
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture")

    def pick_a_bad_file_then_a_colour(w: window_module.LiveWindow) -> None:
        assert not w.set_background_kind("image", str(bad))
        w.set_color((1, 2, 3))

    w = live("--camera", str(clip), "--duration", "0.5", on_start=pick_a_bad_file_then_a_colour)
    assert w.frames_shown > 0 and "bad.png" in w.last_error
    assert "vidmat live:" not in capsys.readouterr().err


def test_a_hang_up_closes_the_window_and_keeps_the_recording(live, clip, tmp_path):
    """A closed terminal (SIGHUP) ended the process on the spot, the recording left in its
    temporary file; it now closes the window as Ctrl-C does, and the recording is saved."""
    import os
    import signal
    import time

    missed: list[int] = []  # where the signal lands if the window did not take it
    previous = signal.signal(signal.SIGHUP, lambda signum, frame: missed.append(signum))
    out = tmp_path / "rec.mp4"
    t0 = time.monotonic()
    try:
        w = live(
            "--camera",
            str(clip),
            "--record",
            str(out),
            "--duration",
            "20",  # the clip loops until then, unless the hang-up closes the window
            # half a second of recording first, then the terminal goes
            on_start=lambda window: QTimer.singleShot(
                500, lambda: os.kill(os.getpid(), signal.SIGHUP)
            ),
            code=129,  # as a headless run stopped so (it exited 0)
        )
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert missed == [] and time.monotonic() - t0 < 10
    assert w.last_saved is not None and w.last_saved.path == out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".rec")] == []
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == w.last_saved.frames > 0


def test_a_recording_that_failed_exits_2_and_says_so(live, clip, tmp_path, capsys, monkeypatch):
    """--record with a full disk in the window: shown there, then exit 0 and silence in the
    terminal, where the same run headless exits 2 with the reason."""
    disk_full_after(monkeypatch, 3)
    out = tmp_path / "rec.mp4"
    w = live("--camera", str(clip), "--record", str(out), "--duration", "0.7", code=2)
    assert w.frames_shown > 0 and not out.exists()
    err = capsys.readouterr().err
    assert f"vidmat live: recording to {out} failed: No space left on device." in err


def test_a_record_path_that_cannot_be_recorded_to_exits_2(
    live, clip, tmp_path, capsys, monkeypatch
):
    """--record whose recording would not start (the folder gone since the command was
    checked, the disk full): shown in the window, and the run ended 0 as if it had
    recorded."""
    from vidmat.errors import VidmatError
    from vidmat.io.recorder import Recorder

    def cannot(self) -> None:
        raise VidmatError(f"output folder {tmp_path / 'gone'} does not exist.")

    monkeypatch.setattr(Recorder, "start", cannot)
    out = tmp_path / "gone" / "rec.mp4"
    w = live("--camera", str(clip), "--record", str(out), "--duration", "0.5", code=2)
    assert w.frames_shown > 0 and not out.exists()
    err = capsys.readouterr().err
    assert f"vidmat live: output folder {tmp_path / 'gone'} does not exist." in err
