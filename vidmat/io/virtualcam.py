"""The composite as a virtual camera (Zoom, Meet, OBS) through the optional pyvirtualcam package.

pyvirtualcam drives v4l2loopback on Linux and OBS Virtual Camera on Windows and
macOS. Neither the package nor the loopback device can be assumed, so opening
one turns every way it can fail into one sentence that says what to install.
Sending happens in its own thread behind a one-slot latest-frame queue, so a
slow consumer on the other side never stalls the live worker.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from vidmat.errors import VidmatError
from vidmat.io.queues import LatestQueue, QueueClosed

log = logging.getLogger(__name__)


def _install_hint() -> str:
    if sys.platform.startswith("linux"):
        return (
            "load the v4l2loopback kernel module, e.g. "
            "'sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=vidmat'"
        )
    return "install OBS Studio and start its Virtual Camera once"


def import_pyvirtualcam() -> Any:
    try:
        return importlib.import_module("pyvirtualcam")
    except ImportError:
        raise VidmatError(
            "--virtual-camera needs the optional pyvirtualcam package: pip install pyvirtualcam."
        ) from None


class VirtualCamera:
    """Open with the output size; ``send(rgb)`` or use it as a pipeline sink; ``close()``."""

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        device: str | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        """``on_error`` is called (from the sender thread) with one sentence if sending
        fails; the frames then go nowhere, so callers end the run as for a failed
        recording (a traceback had gone to the terminal, the run exiting 0)."""
        pyvirtualcam = import_pyvirtualcam()
        try:
            self._cam = pyvirtualcam.Camera(
                width=width,
                height=height,
                fps=max(1.0, float(fps)),
                fmt=pyvirtualcam.PixelFormat.RGB,
                device=device,
            )
        except Exception as exc:  # pyvirtualcam raises RuntimeError/ValueError with details
            raise VidmatError(
                f"no virtual camera device could be opened ({exc}); {_install_hint()}."
            ) from None
        self.width, self.height = width, height
        self.device = str(getattr(self._cam, "device", device or "virtual camera"))
        self._on_error = on_error
        #: Why sending stopped, once it has.
        self.error: str | None = None
        self._queue: LatestQueue[np.ndarray] = LatestQueue(1)
        self._thread = threading.Thread(target=self._run, name="vidmat-virtualcam", daemon=True)
        self._thread.start()
        self.sent = 0

    def send(self, image: np.ndarray) -> None:
        """Queue an RGB(A) frame; converted to the camera's size and RGB in the sender thread."""
        self._queue.put(image)

    def __call__(self, frame: Any) -> None:
        self.send(frame.image)

    def _run(self) -> None:
        import cv2

        try:
            while True:
                try:
                    image = self._queue.get()
                except QueueClosed:
                    return
                if image is None:
                    continue
                if image.ndim == 3 and image.shape[2] == 4:  # transparent view: over black
                    a = image[..., 3:4].astype(np.uint16)
                    image = ((image[..., :3].astype(np.uint16) * a + 127) // 255).astype(np.uint8)
                if image.shape[:2] != (self.height, self.width):
                    image = cv2.resize(image, (self.width, self.height))
                self._cam.send(np.ascontiguousarray(image))
                self.sent += 1
        except Exception as exc:  # a device gone mid-run: said once, in a sentence
            log.debug("virtual camera stopped", exc_info=True)
            self.error = f"the virtual camera {self.device} stopped ({exc or type(exc).__name__})."
            if self._on_error is not None:
                self._on_error(self.error)

    def close(self) -> None:
        self._queue.close()
        self._thread.join(5)
        try:
            self._cam.close()
        except Exception:
            log.debug("closing the virtual camera failed", exc_info=True)
