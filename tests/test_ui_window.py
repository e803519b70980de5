"""The live window, offscreen: frames shown, controls drive the pipeline, record, errors, settings."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from live_fixtures import disk_full_after, make_clip, stub_engine

pytest.importorskip("pytestqt")
from PyQt6.QtCore import QSettings, Qt

from vidmat.io.camera import CameraConfig
from vidmat.io.recorder import Recorder, RecorderConfig
from vidmat.pipelines.live import LiveConfig, LivePipeline
from vidmat.ui.window import LiveWindow


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("ui") / "clip.mp4", frames=30, fps=30)


@pytest.fixture
def qsettings(tmp_path):
    qs = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    qs.setValue("record_dir", str(tmp_path))
    qs.setValue("snapshot_dir", str(tmp_path))
    return qs


def factory(source, engine_kw=None, made=None):
    def make(settings, callbacks):
        p = LivePipeline(
            stub_engine(**(engine_kw or {})),
            LiveConfig(camera=CameraConfig(source=str(source)), mode="sync", display_reports=True),
            settings,
            **callbacks,
        )
        if made is not None:
            made.append(p)
        return p

    return make


@pytest.fixture
def window(qtbot, clip, qsettings, tmp_path):
    made: list[LivePipeline] = []

    def make_recorder(path: Path) -> Recorder:
        return Recorder(RecorderConfig(path, audio=None))

    w = LiveWindow(
        factory(clip, made=made),
        make_recorder=make_recorder,
        qsettings=qsettings,
        retry_interval=0.2,
    )
    w.made = made
    qtbot.addWidget(w)
    w.show()
    w.start_pipeline()
    qtbot.waitUntil(lambda: w.view.image is not None and w.pipeline.outputs > 2, timeout=5000)
    yield w
    w.close()


def test_frames_are_shown_with_status_and_close_joins_threads(qtbot, window):
    qtbot.waitUntil(lambda: "fps" in window.status_labels["capture"].text(), timeout=3000)
    qtbot.waitUntil(lambda: window.pipeline.stats.displayed > 5, timeout=3000)
    assert window.view.image.width() == 64 and window.view.painted > 0
    text = " ".join(lab.text() for lab in window.status_labels.values())
    for word in ("capture", "inference", "latency", "dropped"):
        assert word in text
    assert window.pipeline.status()["latency_ms"] is not None  # measured at display
    pipe = window.pipeline
    window.close()
    assert window.pipeline is None and not any(t.is_alive() for t in pipe.threads())


def test_controls_change_the_pipeline_settings(qtbot, window):
    pipe = window.pipeline
    window.smoothing_slider.setValue(80)
    window.threshold_slider.setValue(30)
    window.feather_slider.setValue(4)
    window.mirror_box.setChecked(True)
    s = pipe.settings
    assert (s.smoothing, s.threshold, s.feather, s.mirror) == (0.8, 0.3, 4.0, True)
    window.bg_combo.activated.emit(window.bg_combo.findData("mask"))
    assert pipe.settings.background.kind == "mask"
    window.set_color((10, 20, 30))
    assert pipe.settings.background.rgb == (10, 20, 30)
    # Keyboard: M toggles mirror, B cycles the background, Up raises smoothing.
    qtbot.keyClick(window, Qt.Key.Key_M)
    assert pipe.settings.mirror is False
    before = pipe.settings.background.describe()
    qtbot.keyClick(window, Qt.Key.Key_B)  # colour -> greenscreen
    assert pipe.settings.background.describe() != before
    qtbot.keyClick(window, Qt.Key.Key_Up)
    assert pipe.settings.smoothing == pytest.approx(0.9)
    # The pipeline applies them to the frames: the mask view is grey.
    window.set_background_kind("mask")
    n = pipe.outputs
    qtbot.waitUntil(lambda: pipe.outputs > n + 2, timeout=3000)
    img = pipe.last_frame.image
    assert (img[..., 0] == img[..., 2]).all()


def test_image_background_from_a_file(qtbot, window, tmp_path):
    from PyQt6.QtGui import QColor, QImage

    path = tmp_path / "bg.png"
    im = QImage(32, 32, QImage.Format.Format_RGB888)
    im.fill(QColor(0, 0, 255))
    assert im.save(str(path))
    assert window.set_background_kind("image", str(path))
    assert window.pipeline.settings.background.kind == "image"
    assert not window.set_background_kind("video", str(tmp_path / "missing.mp4"))
    assert "missing.mp4" in window.last_error and "missing.mp4" in window.view.message
    assert window.pipeline.settings.background.kind == "image"


def test_a_background_file_opens_under_a_wait_cursor(qtbot, window, tmp_path, monkeypatch):
    """A 24 MP photo takes about a second to open on the window's thread; it stood still
    with no sign of work. The cursor is back once it opened, or failed to."""
    from PyQt6.QtWidgets import QApplication

    import vidmat.io.images as images

    seen: list[object] = []
    real = images.load_background

    def watched(*args, **kwargs):
        cursor = QApplication.overrideCursor()
        seen.append(None if cursor is None else cursor.shape())
        return real(*args, **kwargs)

    monkeypatch.setattr(images, "load_background", watched)
    good = tmp_path / "bg.png"
    assert cv2.imwrite(str(good), np.full((16, 16, 3), 200, np.uint8))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture")
    assert window.set_background_kind("image", str(good))
    assert not window.set_background_kind("image", str(bad))
    assert seen == [Qt.CursorShape.WaitCursor] * 2
    assert QApplication.overrideCursor() is None


def test_a_picture_over_opencvs_pixel_limit_is_an_error_not_the_end(qtbot, window, tmp_path):
    """OpenCV raises for it instead of returning nothing: the exception left the Qt slot
    and PyQt aborted the process, a recording in progress lost."""
    from core_fixtures import huge_png_header

    huge = huge_png_header(tmp_path / "huge.png")
    assert not window.set_background_kind("image", str(huge))
    assert "larger than OpenCV reads" in window.last_error
    assert "huge.png" in window.view.message and window.view.message_is_error
    assert window.pipeline.running


def test_what_a_background_file_hides_is_said_in_the_status_bar(qtbot, window, tmp_path):
    """An animated picture stood still and a video cut short looped early, in silence
    (the command line's --bg said both on stderr). The video's word comes from the render
    thread, once it has played through."""
    import cv2
    from convert_fixtures import animated_webp, truncated_clip

    cut = truncated_clip(tmp_path)
    assert window.set_background_kind("video", str(cut))
    bar = window.statusBar()
    qtbot.waitUntil(lambda: "cut.mp4: only " in bar.currentMessage(), timeout=8000)
    assert bar.currentMessage().endswith("it loops what decodes.")
    if "libwebp_anim" not in av.codecs_available:
        pytest.skip("no animated WebP encoder in this PyAV")
    anim = animated_webp(tmp_path / "anim.webp")
    if cv2.imcount(str(anim)) != 3:
        pytest.skip("this OpenCV does not count an animation's pictures")
    assert window.set_background_kind("image", str(anim))
    qtbot.waitUntil(lambda: "anim.webp is an animation of 3" in bar.currentMessage())


def test_two_notes_of_one_background_file_share_the_status_bar(
    qtbot, window, tmp_path, monkeypatch
):
    """An animation's note and a transparency's came one after the other, the second
    hiding the first."""
    holed = np.zeros((16, 16, 4), np.uint8)
    holed[:8, :, 3] = 255
    assert cv2.imwrite(str(tmp_path / "holed.png"), holed)
    notes: list[str] = []
    monkeypatch.setattr("vidmat.io.images.picture_count", lambda path: 2)  # as an APNG
    window.backgroundNote.connect(notes.append)
    assert window.set_background_kind("image", str(tmp_path / "holed.png"))
    qtbot.waitUntil(lambda: bool(notes))
    assert notes == [
        "--bg holed.png is an animation of 2 pictures; only the first is shown. --bg holed.png "
        "has transparent parts; they are not used, so the colours stored under them show "
        "(flatten the picture onto a colour first)."
    ]
    assert window.statusBar().currentMessage() == notes[0]


def test_record_toggles_and_writes_a_valid_file(qtbot, window, tmp_path):
    window.record_button.click()
    assert window.recorder is not None and window.record_button.isChecked()
    assert "REC" in window.status_labels["rec"].text()
    pipe = window.pipeline
    n = pipe.outputs
    qtbot.waitUntil(lambda: pipe.outputs > n + 10, timeout=5000)
    qtbot.keyClick(window, Qt.Key.Key_R)  # R stops it
    assert window.recorder is None and not window.record_button.isChecked()
    qtbot.waitUntil(lambda: window.last_saved is not None, timeout=10000)
    info = window.last_saved
    assert info.path is not None and info.path.parent == tmp_path and info.frames >= 10
    with av.open(str(info.path)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in c.decode(video=0)) == info.frames


def test_a_recording_that_fails_stops_and_says_so_at_once(qtbot, window, tmp_path, monkeypatch):
    disk_full_after(monkeypatch, 3)
    window.record_button.click()
    target = window.recorder.path
    # nobody presses stop: the window notices within its status refresh
    qtbot.waitUntil(lambda: window.recorder is None, timeout=5000)
    assert not window.record_button.isChecked() and window.status_labels["rec"].text() == ""
    qtbot.waitUntil(lambda: window.last_saved is not None, timeout=5000)
    said = f"recording to {target} failed: No space left on device."
    assert window.last_saved == said and said in window.view.message
    assert window.pipeline.running  # the picture goes on
    assert list(tmp_path.glob("*.mp4*")) == []


def test_snapshot_and_resize(qtbot, window, tmp_path):
    path = window.snapshot()
    assert path is not None and path.exists() and path.suffix == ".png"
    window.resize(500, 420)
    qtbot.wait(50)
    r, v = window.view.image_rect(), window.view.rect()
    assert v.contains(r)
    assert r.width() / r.height() == pytest.approx(64 / 48, rel=0.05)
    assert r.width() == v.width() or r.height() == v.height()


def test_a_snapshot_that_cannot_be_written_leaves_nothing_and_its_error_clears(
    qtbot, window, tmp_path, monkeypatch
):
    """On a full disk QImage.save left a cut-off PNG under the snapshot's name, the red
    "Could not save" gave no reason and stayed over the video after a snapshot worked."""
    import errno
    import os

    real = Path.write_bytes

    def full(self, data):
        real(self, data[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)
    assert window.snapshot() is None
    assert list(tmp_path.glob("*.png")) == [] and list(tmp_path.glob(".*")) == []
    assert window.view.message_is_error
    assert window.view.message.endswith(" (No space left on device).")
    monkeypatch.setattr(Path, "write_bytes", real)
    path = window.snapshot()
    assert path is not None and path.stat().st_size > 100
    assert not window.view.message_is_error and "snapshot" not in window.view.message


def test_camera_loss_message(qtbot, window):
    window.bridge.status.emit("lost", "camera 0 stopped delivering frames; trying to reconnect…")
    assert "Camera lost" in window.view.message
    window.bridge.status.emit("reopened", "camera 0 is back")
    assert window.view.message == ""


def test_model_error_is_shown_and_window_stays_alive(qtbot, clip, qsettings):
    w = LiveWindow(factory(clip, {"fail_after": 2}), qsettings=qsettings)
    qtbot.addWidget(w)
    w.show()
    w.start_pipeline()
    qtbot.waitUntil(lambda: "stub model exploded" in w.last_error, timeout=5000)
    assert "stub model exploded" in w.view.message
    qtbot.waitUntil(lambda: not w.pipeline.running, timeout=3000)
    w.smoothing_slider.setValue(10)  # still responsive
    qtbot.wait(20)
    w.close()


def test_missing_camera_shows_message_and_retries(qtbot, clip, qsettings, tmp_path):
    late = tmp_path / "late.mp4"
    w = LiveWindow(factory(late), qsettings=qsettings, retry_interval=0.2)
    qtbot.addWidget(w)
    w.show()
    w.start_pipeline()
    assert "does not exist" in w.view.message and "Retrying" in w.view.message
    assert w.pipeline is None
    shutil.copy(clip, late)  # the camera appears
    qtbot.waitUntil(lambda: w.pipeline is not None and w.pipeline.outputs > 0, timeout=5000)
    qtbot.waitUntil(lambda: w.view.message == "", timeout=3000)
    w.close()


def test_settings_are_remembered_and_cli_overrides_win(qtbot, clip, qsettings):
    w = LiveWindow(factory(clip), qsettings=qsettings)
    qtbot.addWidget(w)
    w.smoothing_slider.setValue(30)
    w.feather_slider.setValue(7)
    w.mirror_box.setChecked(True)
    w.set_color((1, 2, 3))
    assert w.current_settings().contrast == 1.0 and w.current_settings().grow == 0
    w.close()
    overrides = {"feather": 2.0, "contrast": 2.5, "grow": -2}
    w2 = LiveWindow(factory(clip), qsettings=qsettings, overrides=overrides)
    qtbot.addWidget(w2)
    s = w2.current_settings()
    assert s.smoothing == 0.3 and s.mirror is True and s.feather == 2.0
    # --contrast and --grow have no slider: the window must carry them along.
    assert s.contrast == 2.5 and s.grow == -2
    assert s.background.kind == "color" and s.background.rgb == (1, 2, 3)
    w2.close()


def _settings_file(tmp_path: Path, text: str) -> QSettings:
    """A settings file as a user (or a crash) may have left it: raw INI text."""
    path = tmp_path / "edited.ini"
    path.write_text(text)
    return QSettings(str(path), QSettings.Format.IniFormat)


@pytest.mark.parametrize(
    "text, field, expected",
    [
        ("[General]\nsmoothing=abc\n", "smoothing", 0.5),
        ("[General]\nsmoothing=nan\nfeather=nan\n", "feather", 0.0),
        ("[General]\nsmoothing=nan\n", "smoothing", 0.5),
        ("[General]\nsmoothing=7\n", "smoothing", 1.0),  # clamped to what it takes
        # set on a slider a command line had widened: 35 came back as the span's 20
        ("[General]\nfeather=35\n", "feather", 35.0),
        ("[General]\nthreshold=0.98\n", "threshold", 0.98),
        ("[General]\nthreshold=-1e999\n", "threshold", 0.5),
        ("[General]\nfeather=1e400\n", "feather", 0.0),
        ("[General]\nmirror=perhaps\n", "mirror", False),
        ("[General]\ngeometry=junk\n", "smoothing", 0.5),
        ("[General]\ngeometry=@ByteArray(junk)\n", "smoothing", 0.5),
        ("[background]\nkind=blur\nblur=abc\n", "blur", 20.0),
        ("[background]\nkind=blur\nblur=inf\n", "blur", 20.0),
        ("[background]\nkind=blur\nblur=nan\n", "blur", 20.0),
        ("[background]\nkind=blur\nblur=-5\n", "blur", 20.0),  # no strength: the default
        ("[background]\nkind=blur\nblur=500\n", "blur", 500.0),  # the slider widens to it
        ("[background]\nkind=sideways\ncolor=rgb(999,0,0)\n", "blur", 20.0),
    ],
)
def test_a_damaged_settings_file_falls_back_to_defaults(
    qtbot, clip, tmp_path, text, field, expected
):
    w = LiveWindow(factory(clip), qsettings=_settings_file(tmp_path, text))
    qtbot.addWidget(w)
    s = w.current_settings().validated()  # every value is one the pipeline takes
    got = s.background.blur if field == "blur" else getattr(s, field)
    assert got == pytest.approx(expected) if field != "mirror" else got is expected
    assert s.background.kind == "blur" and w.bg_combo.currentData() == "blur"
    assert w.blur_slider.value() == round(s.background.blur)
    w.close()


def test_a_negative_saved_blur_runs_with_the_default_and_saves_cleanly(
    qtbot, clip, tmp_path, caplog
):
    qs = _settings_file(tmp_path, "[background]\nkind=blur\nblur=-5\n")
    w = LiveWindow(factory(clip), qsettings=qs, retry_interval=0.2)
    qtbot.addWidget(w)
    w.show()
    w.start_pipeline()
    assert w.pipeline is not None and "Retrying" not in w.view.message
    qtbot.waitUntil(lambda: w.pipeline.outputs > 2, timeout=5000)
    assert w.pipeline.settings.background.describe() == "blur:20"
    w.close()
    assert "saving settings failed" not in caplog.text
    assert float(qs.value("background/blur")) == 20.0


def test_a_remembered_file_that_is_gone_falls_back_visibly_and_is_forgotten(
    qtbot, clip, qsettings, tmp_path
):
    gone = str(tmp_path / "beach.jpg")
    qsettings.setValue("background/kind", "image")
    qsettings.setValue("background/image", gone)
    w = LiveWindow(factory(clip), qsettings=qsettings)
    qtbot.addWidget(w)
    # The picker shows what is applied, and the status bar says why once.
    assert w.bg_combo.currentData() == "blur" and w.current_settings().background.kind == "blur"
    assert gone in w.statusBar().currentMessage()
    assert "no longer exists" in w.statusBar().currentMessage()
    assert w.file_button.text() == "Choose file…"
    w.close()
    assert qsettings.value("background/kind") == "blur"
    assert qsettings.value("background/image") is None  # not saved again


def test_a_dead_remembered_file_is_not_applied_by_the_picker_or_b(qtbot, window, tmp_path):
    window.set_color((1, 2, 3))
    window._bg_paths["video"] = str(tmp_path / "gone.mp4")  # remembered, since deleted
    assert not window.set_background_kind("video")
    assert window.bg_combo.currentData() == "color"
    assert window.pipeline.settings.background.describe() == "color #010203"
    window.qs.setValue("background/video", str(tmp_path / "gone.mp4"))
    window._bg_paths["image"] = str(tmp_path / "gone.png")
    window.set_background_kind("green")
    qtbot.keyClick(window, Qt.Key.Key_B)  # green -> (dead image, skipped) -> transparent
    assert window.bg_combo.currentData() == "transparent"
    assert window.pipeline.settings.background.kind == "transparent"
    assert "gone.png" in window.statusBar().currentMessage()  # why it was skipped
    # in words about the file, not about a --bg text ("neither a colour, blur, ...")
    assert window.statusBar().currentMessage() == f"{tmp_path / 'gone.png'} does not exist."
    window.close()
    assert window.qs.value("background/image") is None
    assert window.qs.value("background/video") is None


def blue_png(path: Path) -> Path:
    """A 32x32 blue picture, for an image background."""
    from PyQt6.QtGui import QColor, QImage

    im = QImage(32, 32, QImage.Format.Format_RGB888)
    im.fill(QColor(0, 0, 255))
    assert im.save(str(path))
    return path


def test_a_file_background_from_the_command_line_is_remembered_only_once_changed_here(
    qtbot, clip, qsettings, tmp_path
):
    from vidmat.io.images import load_background

    path = blue_png(tmp_path / "beach.png")
    overrides = {"background": load_background(str(path)), "background_path": str(path)}
    w = LiveWindow(factory(clip), qsettings=qsettings, overrides=overrides)
    qtbot.addWidget(w)
    assert w.bg_combo.currentData() == "image" and w.file_button.text() == "beach.png"
    w.close()
    w2 = LiveWindow(factory(clip), qsettings=qsettings)  # the next run, without --bg
    qtbot.addWidget(w2)
    assert w2.bg_combo.currentData() == "blur"  # --bg held for its own run only
    w2.close()
    # Once the user changes the background in the window it is theirs: remembered, and
    # the Image entry with the file --bg opened, so the next run shows that very file.
    w3 = LiveWindow(factory(clip), qsettings=qsettings, overrides=overrides)
    qtbot.addWidget(w3)
    assert w3.set_background_kind("green") and w3.set_background_kind("image")
    w3.close()
    w4 = LiveWindow(factory(clip), qsettings=qsettings)
    qtbot.addWidget(w4)
    assert w4.bg_combo.currentData() == "image" and w4.file_button.text() == "beach.png"
    assert w4.current_settings().background.kind == "image"
    w4.close()


def test_look_options_from_the_command_line_are_not_saved_unless_changed_here(
    qtbot, clip, qsettings
):
    from vidmat.core.backgrounds import Background

    w = LiveWindow(factory(clip), qsettings=qsettings)
    qtbot.addWidget(w)
    w.smoothing_slider.setValue(30)
    w.set_color((1, 2, 3))
    w.close()
    given = {
        "mirror": True,
        "smoothing": 0.9,
        "threshold": 0.7,
        "feather": 3.0,
        "background": Background.color((9, 9, 9)),
    }
    w2 = LiveWindow(factory(clip), qsettings=qsettings, overrides=given)
    qtbot.addWidget(w2)
    s = w2.current_settings()
    assert (s.mirror, s.smoothing, s.threshold, s.feather) == (True, 0.9, 0.7, 3.0)
    assert s.background.describe() == "color #090909"
    w2.feather_slider.setValue(5)  # the only one the user changes in this run
    w2.close()
    w3 = LiveWindow(factory(clip), qsettings=qsettings)  # the next run, plain
    qtbot.addWidget(w3)
    s = w3.current_settings()
    assert (s.mirror, s.smoothing, s.threshold, s.feather) == (False, 0.3, 0.5, 5.0)
    assert s.background.describe() == "color #010203"
    w3.close()
    # Given on the command line and then changed in the window (M, the picker): saved.
    w4 = LiveWindow(factory(clip), qsettings=qsettings, overrides=given)
    qtbot.addWidget(w4)
    w4.mirror_box.click()
    w4.mirror_box.click()  # back to mirrored, by the user's hand
    w4.set_background_kind("transparent")
    w4.close()
    w5 = LiveWindow(factory(clip), qsettings=qsettings)
    qtbot.addWidget(w5)
    s = w5.current_settings()
    assert s.mirror is True and s.smoothing == 0.3 and s.background.kind == "transparent"
    w5.close()


@pytest.mark.parametrize(("blur", "low", "high"), [(100.0, 1, 100), (0.0, 0, 60), (25.0, 1, 60)])
def test_the_blur_slider_shows_a_command_line_blur_beyond_its_range(
    qtbot, clip, qsettings, blur, low, high
):
    from vidmat.core.backgrounds import Background

    w = LiveWindow(
        factory(clip), qsettings=qsettings, overrides={"background": Background.blurred(blur)}
    )
    qtbot.addWidget(w)
    slider = w.blur_slider
    assert (slider.minimum(), slider.maximum(), slider.value()) == (low, high, round(blur))
    assert w.current_settings().background.describe() == f"blur:{blur:g}"
    w.show()
    w.start_pipeline()
    qtbot.waitUntil(lambda: w.pipeline is not None and w.pipeline.outputs > 0, timeout=5000)
    assert w.pipeline.settings.background.describe() == f"blur:{blur:g}"
    slider.setValue(high)  # the far end of the slider is a strength the user can take
    assert w.pipeline.settings.background.describe() == f"blur:{high}"
    w.close()


@pytest.mark.parametrize(
    ("threshold", "feather", "shown"),
    [(0.99, 50.0, (99, 50)), (0.02, 0.5, (2, 0)), (0.333, 2.25, (33, 2))],
)
def test_a_command_line_look_beyond_or_between_the_sliders_steps_runs_as_given(
    qtbot, clip, qsettings, threshold, feather, shown
):
    """--feather 50 --threshold 0.99 ran at 20 and 0.95 (the sliders' ends), and
    --feather 0.5 at 0, without a word. The sliders widen to show them; a value between
    steps holds until its slider is moved, and the command line's is not remembered."""
    w = LiveWindow(
        factory(clip), qsettings=qsettings, overrides={"threshold": threshold, "feather": feather}
    )
    qtbot.addWidget(w)
    assert (w.threshold_slider.value(), w.feather_slider.value()) == shown
    s = w.current_settings()
    assert (s.threshold, s.feather) == (threshold, feather)
    w.show()
    w.start_pipeline()
    qtbot.waitUntil(lambda: w.pipeline is not None and w.pipeline.outputs > 0, timeout=5000)
    assert (w.pipeline.settings.threshold, w.pipeline.settings.feather) == (threshold, feather)
    w.feather_slider.setValue(3)  # moved: the slider's value from then on
    assert (w.pipeline.settings.threshold, w.pipeline.settings.feather) == (threshold, 3.0)
    w.close()
    assert qsettings.value("threshold") is None and float(qsettings.value("feather")) == 3.0


def test_a_file_picked_under_the_other_kind_shows_as_what_it_is(
    qtbot, window, clip, tmp_path, monkeypatch
):
    from PyQt6.QtWidgets import QFileDialog

    picked: list[str] = []
    monkeypatch.setattr(
        QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (picked[-1], ""))
    )
    pipe = window.pipeline
    # "Image…" in the picker, then a video in the dialog: it plays, so the picker says Video.
    picked.append(str(clip))
    window.bg_combo.activated.emit(window.bg_combo.findData("image"))
    assert pipe.settings.background.kind == "video"
    assert window.bg_combo.currentData() == "video" and window.file_button.text() == clip.name
    # The file button under Video, then a picture: it stands still, so the picker says Image.
    picked.append(str(blue_png(tmp_path / "still.png")))
    window.file_button.click()
    assert pipe.settings.background.kind == "image"
    assert window.bg_combo.currentData() == "image" and window.file_button.text() == "still.png"
    # A path handed over directly (the same path the dialog takes) and B agree too.
    assert window.set_background_kind("image", str(clip))
    assert window.bg_combo.currentData() == "video" and pipe.settings.background.kind == "video"
    assert window.set_background_kind("image")  # the picture chosen before, still open
    assert window.bg_combo.currentData() == "image" and window.file_button.text() == "still.png"
    window.close()
    # Each kind remembers the file that is that kind, never the other's.
    assert window.qs.value("background/video") == str(clip)
    assert window.qs.value("background/image") == str(tmp_path / "still.png")


def test_a_background_error_clears_once_a_later_change_works(qtbot, window, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture")
    pipe = window.pipeline
    assert not window.set_background_kind("image", str(bad))
    assert "bad.png" in window.view.message and window.view.message_is_error
    window.set_color((9, 9, 9))
    assert window.view.message == "" and pipe.settings.background.rgb == (9, 9, 9)
    # The blur slider and B are background changes too.
    assert not window.set_background_kind("image", str(bad))
    window.set_background_kind("blur")
    assert window.view.message == ""
    assert not window.set_background_kind("image", str(bad))
    window.blur_slider.setValue(33)
    assert window.view.message == "" and pipe.settings.background.describe() == "blur:33"
    assert not window.set_background_kind("image", str(bad))
    qtbot.keyClick(window, Qt.Key.Key_B)
    assert window.view.message == ""
    # What the overlay said before the error comes back, not a blank.
    window.view.set_message("The video ended.")
    assert not window.set_background_kind("image", str(bad))
    assert not window.set_background_kind("video", str(bad))  # two errors in a row
    window.set_background_kind("mask")
    assert window.view.message == "The video ended." and not window.view.message_is_error
    # Frames showing means the camera is not the failure; a bad file never is.
    assert window.frames_shown > 0 and window.failure == ""


def test_recordings_started_in_the_same_second_get_their_own_files(
    qtbot, clip, qsettings, tmp_path, monkeypatch
):
    import threading

    monkeypatch.setattr("vidmat.ui.window.time.strftime", lambda fmt: "vidmat-20250101-120000")
    release = threading.Event()

    class SlowToFinish(Recorder):
        def stop(self, timeout: float = 30.0):
            release.wait(10)  # the first is still being finalised when the second starts
            return super().stop(timeout)

    w, saved = _window_saving_recordings(
        qtbot, factory(clip), qsettings, lambda p: SlowToFinish(RecorderConfig(p, audio=None))
    )
    qtbot.waitUntil(lambda: w.pipeline is not None and w.pipeline.outputs > 2, timeout=5000)

    def record_a_little() -> None:
        assert w.start_recording()
        n = w.pipeline.outputs
        qtbot.waitUntil(lambda: w.pipeline.outputs > n + 3, timeout=5000)
        w.stop_recording()

    record_a_little()
    record_a_little()  # the first has not been renamed into place yet
    release.set()
    qtbot.waitUntil(lambda: len(saved) == 2, timeout=10000)
    record_a_little()  # both are in place now
    qtbot.waitUntil(lambda: len(saved) == 3, timeout=10000)
    names = [info.path.name for info in saved]
    assert sorted(names) == [
        "vidmat-20250101-120000-1.mp4",
        "vidmat-20250101-120000-2.mp4",
        "vidmat-20250101-120000.mp4",
    ]
    for info in saved:
        assert info.frames >= 3
        with av.open(str(info.path)) as c:
            assert sum(1 for _ in c.decode(video=0)) == info.frames
    w.close()


def _window_saving_recordings(qtbot, make, qsettings, make_recorder) -> tuple[LiveWindow, list]:
    """A shown window whose pipeline is starting, and the list its saved recordings (or
    their error strings) are appended to as the window reports them."""
    w = LiveWindow(make, make_recorder=make_recorder, qsettings=qsettings)
    qtbot.addWidget(w)
    saved: list = []
    w.recordingSaved.connect(saved.append)
    w.show()
    w.start_pipeline()
    return w, saved


def _played_once(path):
    """A pipeline factory for ``path`` played once (--no-loop), model stubbed."""

    def make(settings, callbacks):
        camera = CameraConfig(source=str(path), loop=False)
        config = LiveConfig(camera=camera, mode="sync", display_reports=True)
        return LivePipeline(stub_engine(), config, settings, **callbacks)

    return make


def test_record_is_refused_once_a_file_camera_has_ended(qtbot, clip, qsettings):
    w = LiveWindow(_played_once(clip), qsettings=qsettings)
    qtbot.addWidget(w)
    w.show()
    w.start_pipeline()
    qtbot.waitUntil(lambda: w.pipeline.outputs > 0 and not w.pipeline.running, timeout=10000)
    qtbot.keyClick(w, Qt.Key.Key_R)
    assert w.recorder is None and not w.record_button.isChecked()
    assert w.record_button.text() == "● Record (R)" and w.status_labels["rec"].text() == ""
    assert "Nothing to record" in w.last_error
    w.close()


def test_a_held_last_frame_is_recorded_as_long_as_it_was_shown(qtbot, qsettings, tmp_path):
    # A --no-loop file whose last picture is held 3 s: the window stopped the recording
    # with rec.stop() when the pipeline finished, so that picture got 1/fps, where
    # headless live recorded it for the 3 s it was shown.
    from convert_fixtures import long_last_clip

    held = long_last_clip(tmp_path / "held.mkv")
    w, saved = _window_saving_recordings(
        qtbot, _played_once(held), qsettings, lambda p: Recorder(RecorderConfig(p, audio=None))
    )
    qtbot.waitUntil(lambda: w.pipeline is not None and w.pipeline.running, timeout=5000)
    assert w.start_recording(tmp_path / "out.mp4")
    qtbot.waitUntil(lambda: len(saved) == 1, timeout=15000)  # stopped when the file ended
    assert w.pipeline is not None and w.pipeline.source_ended
    with av.open(str(saved[0].path)) as c:
        seconds = c.duration / 1e6
        times = [float(f.pts * f.time_base) for f in c.decode(video=0)]
    assert seconds - times[-1] == pytest.approx(3.0, abs=0.15)  # shown 3 s, not 1/fps
    assert saved[0].duration == pytest.approx(seconds, abs=0.05)
    w.close()


def test_closing_waits_for_a_recording_still_being_saved(qtbot, clip, qsettings, tmp_path):
    """R then Q at once: the save ran on a thread nobody waited for, and the program
    exited leaving a hidden temporary file (a slow disk, a backlog to encode)."""
    import time

    class SlowToSave(Recorder):
        def stop(self, *args, **kwargs):
            time.sleep(0.8)
            return super().stop(*args, **kwargs)

    w, _saved = _window_saving_recordings(
        qtbot, factory(clip), qsettings, lambda p: SlowToSave(RecorderConfig(p, audio=None))
    )
    qtbot.waitUntil(lambda: w.pipeline is not None and w.pipeline.outputs > 2, timeout=5000)
    assert w.start_recording()
    n = w.pipeline.outputs
    qtbot.waitUntil(lambda: w.pipeline.outputs > n + 3, timeout=5000)
    w.stop_recording()
    w.close()  # at once: the file is complete when close returns
    assert [p.name for p in tmp_path.glob(".*part*")] == []
    (saved,) = tmp_path.glob("vidmat-*.mp4")
    with av.open(str(saved)) as c:
        assert sum(1 for _ in c.decode(video=0)) >= 3
    assert w.recording_failures == []


def test_a_failed_recording_is_kept_for_the_exit_code(qtbot, window, monkeypatch):
    """A full disk mid-recording was shown in the window and the command exited 0."""
    disk_full_after(monkeypatch, 3)
    window.record_button.click()
    qtbot.waitUntil(lambda: window.last_saved is not None, timeout=5000)
    assert window.recording_failures == [window.last_saved]
    assert "No space left on device" in window.recording_failures[0]


def test_a_recording_error_clears_once_recording_works(qtbot, window, tmp_path):
    """'output folder ... does not exist' stayed over the video after recording worked."""
    window.view.set_message("")
    assert not window.start_recording(tmp_path / "no" / "such" / "x.mp4")
    assert "does not exist" in window.view.message and window.view.message_is_error
    assert window.start_recording(tmp_path / "ok.mp4")
    assert window.view.message == ""
    assert window.statusBar().currentMessage() == f"Recording to {tmp_path / 'ok.mp4'} (audio off)"
    n = window.pipeline.outputs
    qtbot.waitUntil(lambda: window.pipeline.outputs > n + 3, timeout=5000)
    window.stop_recording(wait=True)
    assert window.view.message == "" and (tmp_path / "ok.mp4").exists()


def test_recording_the_transparent_view_says_it_is_recorded_over_black(qtbot, window, tmp_path):
    window.set_background_kind("transparent")
    assert window.start_recording(tmp_path / "t.mp4")
    assert window.statusBar().currentMessage() == (
        f"Recording to {tmp_path / 't.mp4'} (audio off; the transparent view is recorded "
        "over black: MP4 has no alpha)"
    )
    window.stop_recording(wait=True)


def test_a_recording_without_sound_says_so_in_the_window(qtbot, window, tmp_path, monkeypatch):
    """Headless said "no microphone found; recording without audio"; the window only
    "Recording to ...", and the file came out silent."""
    from vidmat.io import recorder

    monkeypatch.setattr(recorder, "alsa_capture_devices", lambda: [])
    monkeypatch.setattr(recorder.av, "formats_available", {"alsa", "mp4"})
    window.make_recorder = lambda path: recorder.Recorder(recorder.RecorderConfig(path))
    assert window.start_recording(tmp_path / "quiet.mp4")
    assert window.statusBar().currentMessage() == (
        f"Recording to {tmp_path / 'quiet.mp4'} (no microphone found; recording without audio)"
    )
    window.stop_recording(wait=True)


def test_arrow_keys_move_the_focused_slider_not_the_smoothing(qtbot, window):
    """Up/Down are the smoothing's shortcut; with the threshold's slider focused they
    moved the smoothing instead of it."""
    from PyQt6.QtCore import Qt

    window.activateWindow()
    smoothing, threshold = window.smoothing_slider.value(), window.threshold_slider.value()
    window.threshold_slider.setFocus()
    qtbot.waitUntil(lambda: window.focusWidget() is window.threshold_slider, timeout=2000)
    qtbot.keyClick(window.threshold_slider, Qt.Key.Key_Up)
    assert window.threshold_slider.value() == threshold + 1
    assert window.smoothing_slider.value() == smoothing
    window.view.setFocus()
    qtbot.waitUntil(lambda: window.focusWidget() is window.view, timeout=2000)
    qtbot.keyClick(window.view, Qt.Key.Key_Down)
    assert window.smoothing_slider.value() == max(0, smoothing - 10)


def test_closing_during_a_slow_frame_closes_at_once_and_the_exit_waits_for_it(
    qtbot, clip, qsettings, caplog
):
    """A model on a 17 s frame (--size 2048 on a CPU): closing froze the window up to 10 s
    and the program then exited with the model's thread still in torch, which the C++
    runtime aborted ("terminate called without an active exception", a signal 6)."""
    import time

    made: list[LivePipeline] = []
    w = LiveWindow(factory(clip, {"delay": 1.5}, made=made), qsettings=qsettings)
    qtbot.addWidget(w)
    w.show()
    w.start_pipeline()
    qtbot.waitUntil(lambda: w.pipeline.outputs >= 1, timeout=8000)  # now inside a frame
    t0 = time.perf_counter()
    w.close()
    assert time.perf_counter() - t0 < 1.2
    threads = made[0].threads()
    assert any(t.is_alive() for t in threads)
    # what the end of app.exec() does: the objects given to deleteLater go
    from PyQt6.QtCore import QCoreApplication, QEvent

    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
    said: list[str] = []
    w.wait_for_threads(said.append)
    # the bridge the threads call as they finish their frame was still there
    assert not [r for r in caplog.records if "deleted" in r.getMessage() or r.exc_info]
    assert said == ["waiting for the model to finish the frame it is on"]
    assert not any(t.is_alive() for t in threads)
    w.wait_for_threads(said.append)  # nothing left: says nothing more
    assert len(said) == 1
