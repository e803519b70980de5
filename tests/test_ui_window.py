"""The live window, offscreen: frames shown, controls drive the pipeline, record, errors, settings."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import pytest
from live_fixtures import make_clip, stub_engine

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


def test_snapshot_and_resize(qtbot, window, tmp_path):
    path = window.snapshot()
    assert path is not None and path.exists() and path.suffix == ".png"
    window.resize(500, 420)
    qtbot.wait(50)
    r, v = window.view.image_rect(), window.view.rect()
    assert v.contains(r)
    assert r.width() / r.height() == pytest.approx(64 / 48, rel=0.05)
    assert r.width() == v.width() or r.height() == v.height()


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
