"""Shared helpers for the live/ui tests: tiny clips made on the spot and stub models."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch
from torch import nn


def clip_frame(i: int, width: int = 64, height: int = 48) -> np.ndarray:
    """Frame ``i`` of the test clip: red left half, blue right half, brightness steps with i.

    The left/right colours tell whether RGB order survived capture; a white
    square that moves with ``i`` lets a stub model "see" a person.
    """
    img = np.zeros((height, width, 3), np.uint8)
    img[:, : width // 2] = (200, 30, 30)
    img[:, width // 2 :] = (30, 30, 200)
    x = (i * 2) % max(1, width - 16)
    img[height // 4 : height // 4 + 16, x : x + 16] = 255
    return img


def make_clip(
    path: Path, frames: int = 30, width: int = 64, height: int = 48, fps: int = 30
) -> Path:
    """An H.264 mp4 of ``frames`` synthetic frames (a few KB, made in milliseconds)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "18"}
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(clip_frame(i, width, height), format="rgb24")
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


class BrightStub(nn.Module):
    """A stub segmenter: 'person' wherever the normalised input is bright (the white square)."""

    def __init__(self, delay: float = 0.0, fail_after: int | None = None) -> None:
        super().__init__()
        self.delay = delay
        self.fail_after = fail_after
        self.calls = 0
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import time

        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("stub model exploded")
        if self.delay:
            time.sleep(self.delay)
        return (x.mean(dim=1, keepdim=True) > 1.0).float() + self.dummy * 0


def stub_engine(delay: float = 0.0, size: int = 32, fail_after: int | None = None):
    from vidmat.core.engine import Engine
    from vidmat.core.settings import EngineConfig
    from vidmat.model.spec import WeightsSpec

    spec = WeightsSpec(name="stub", arch="u2netp", input_size=size)
    return Engine(BrightStub(delay, fail_after), spec, EngineConfig(device="cpu"))


def disk_full_after(monkeypatch, frames: int) -> None:
    """The recorder's writer raises "No space left on device" after ``frames`` frames."""
    import errno
    import os

    from vidmat.io.recorder import _LiveWriter

    real_write = _LiveWriter.write
    written = [0]

    def write(self, *args, **kwargs):
        if written[0] >= frames:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written[0] += 1
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(_LiveWriter, "write", write)
