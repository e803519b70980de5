"""Virtual camera: frames reach pyvirtualcam's Camera; missing package or device is one sentence."""

from __future__ import annotations

import sys
import time
import types
from typing import ClassVar

import numpy as np
import pytest

from vidmat.errors import VidmatError


class FakeCamera:
    instances: ClassVar[list[FakeCamera]] = []
    fail: ClassVar[str | None] = None
    vanish_after: ClassVar[int | None] = None  # frames sent before the device goes

    def __init__(self, width, height, fps, fmt=None, device=None):
        if FakeCamera.fail:
            raise RuntimeError(FakeCamera.fail)
        self.width, self.height, self.fps, self.device = width, height, fps, "/dev/video9"
        self.frames: list[np.ndarray] = []
        self.closed = False
        FakeCamera.instances.append(self)

    def send(self, frame):
        assert frame.shape == (self.height, self.width, 3) and frame.dtype == np.uint8
        if FakeCamera.vanish_after is not None and len(self.frames) >= FakeCamera.vanish_after:
            raise RuntimeError("device vanished")
        self.frames.append(frame)

    def close(self):
        self.closed = True


@pytest.fixture
def fake_pyvirtualcam(monkeypatch):
    mod = types.ModuleType("pyvirtualcam")
    mod.Camera = FakeCamera
    mod.PixelFormat = types.SimpleNamespace(RGB="RGB")
    monkeypatch.setitem(sys.modules, "pyvirtualcam", mod)
    FakeCamera.instances.clear()
    FakeCamera.fail = None
    FakeCamera.vanish_after = None
    return mod


def test_frames_are_resized_and_sent(fake_pyvirtualcam):
    from vidmat.io.virtualcam import VirtualCamera

    cam = VirtualCamera(64, 48, 30)
    cam.send(np.zeros((96, 128, 4), np.uint8))  # RGBA, another size
    deadline = time.time() + 2
    while cam.sent < 1 and time.time() < deadline:
        time.sleep(0.01)
    cam.close()
    fake = FakeCamera.instances[0]
    assert len(fake.frames) == 1 and fake.closed and cam.device == "/dev/video9"


def test_no_loopback_device_is_one_sentence(fake_pyvirtualcam):
    from vidmat.io.virtualcam import VirtualCamera

    FakeCamera.fail = "'v4l2loopback' kernel module not loaded"
    with pytest.raises(VidmatError, match=r"v4l2loopback|OBS"):
        VirtualCamera(64, 48, 30)


def test_missing_package_says_what_to_install(monkeypatch):
    from vidmat.io import virtualcam

    monkeypatch.setitem(sys.modules, "pyvirtualcam", None)  # import fails
    with pytest.raises(VidmatError, match="pip install"):
        virtualcam.VirtualCamera(64, 48, 30)


def test_a_device_gone_mid_run_is_one_sentence_and_ends_the_run(
    fake_pyvirtualcam, tmp_path, capsys
):
    """A traceback ("RuntimeError: device vanished") went to the terminal, the run went
    on sending nowhere until --duration and exited 0."""
    from live_fixtures import make_clip

    from vidmat.cli import main
    from vidmat.model.spec import WeightsSpec
    from vidmat.model.u2net import build_model
    from vidmat.model.weights import save_weights

    clip = make_clip(tmp_path / "clip.mp4", frames=30, fps=30)
    weights = tmp_path / "random.safetensors"
    save_weights(build_model("u2netp"), WeightsSpec(name="random", arch="u2netp"), weights)
    FakeCamera.vanish_after = 3
    argv = ["live", "--no-window", "--camera", str(clip), "--weights", str(weights)]
    argv += ["--size", "64", "--quiet", "--duration", "30", "--loop", "--virtual-camera"]
    t0 = time.perf_counter()
    assert main(argv) == 2
    assert time.perf_counter() - t0 < 15
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.endswith(
        "vidmat: error: the virtual camera /dev/video9 stopped (device vanished).\n"
    )


def test_the_windows_virtual_camera_failing_fails_the_run_and_restart_opens_it_again(
    fake_pyvirtualcam, qtbot, tmp_path
):
    """Headless exits 2 when the device cannot be opened or goes mid-run; the window
    exited 0, and a device gone mid-run showed nothing there at all."""
    pytest.importorskip("pytestqt")
    from live_fixtures import make_clip, stub_engine
    from PyQt6.QtCore import QSettings

    from vidmat.io.camera import CameraConfig
    from vidmat.pipelines.live import LiveConfig, LivePipeline
    from vidmat.ui.app import _attach_virtual_camera
    from vidmat.ui.window import LiveWindow

    clip = make_clip(tmp_path / "clip.mp4", frames=30, fps=30)
    config = LiveConfig(camera=CameraConfig(source=str(clip), loop=True), display_reports=True)

    def make(settings, callbacks):
        return LivePipeline(stub_engine(), config, settings, **callbacks)

    qs = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    FakeCamera.fail = "'v4l2loopback' kernel module not loaded"
    w = LiveWindow(make, qsettings=qs)
    qtbot.addWidget(w)
    _attach_virtual_camera(w, types.SimpleNamespace(virtual_device=None))
    w.show()
    w.start_pipeline()
    qtbot.waitUntil(lambda: "v4l2loopback" in w.failure, timeout=5000)
    assert w.view.message_is_error

    FakeCamera.fail, FakeCamera.vanish_after = None, 3
    w.restart()
    qtbot.waitUntil(lambda: "stopped (device vanished)" in w.failure, timeout=5000)
    assert "device vanished" in w.view.message

    FakeCamera.vanish_after = None
    w.restart()
    qtbot.waitUntil(lambda: len(FakeCamera.instances) == 2, timeout=5000)
    qtbot.waitUntil(lambda: len(FakeCamera.instances[1].frames) > 3, timeout=5000)
    assert w.failure == "" and FakeCamera.instances[0].closed
    dead = [s for s in w.sinks if getattr(s, "error", None)]
    assert dead == [] and not [s for s in w.pipeline._sinks if getattr(s, "error", None)]
    w.close()
