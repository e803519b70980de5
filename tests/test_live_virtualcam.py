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

    def __init__(self, width, height, fps, fmt=None, device=None):
        if FakeCamera.fail:
            raise RuntimeError(FakeCamera.fail)
        self.width, self.height, self.fps, self.device = width, height, fps, "/dev/video9"
        self.frames: list[np.ndarray] = []
        self.closed = False
        FakeCamera.instances.append(self)

    def send(self, frame):
        assert frame.shape == (self.height, self.width, 3) and frame.dtype == np.uint8
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
