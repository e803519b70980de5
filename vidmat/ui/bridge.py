"""The Qt side of the live pipeline's callbacks: plain Python callables in, Qt signals out.

The pipeline calls ``on_frame`` from its worker thread. Emitting a queued
signal per frame would let frames pile up in the GUI event queue whenever
painting is slower than the camera, and latency would grow without bound
(exactly what the latest-frame queue prevents upstream). So the bridge keeps
only the newest frame and has at most one "frame ready" notification in
flight; frames the GUI never picked up are counted as ``skipped``.
"""

from __future__ import annotations

import threading
from typing import Any

from PyQt6.QtCore import QObject, pyqtSignal


class LiveBridge(QObject):
    """Translate pipeline callbacks (any thread) into signals delivered in the GUI thread."""

    started = pyqtSignal(dict)
    frameReady = pyqtSignal()  # fetch with take_frame(); at most one pending
    error = pyqtSignal(str)
    finished = pyqtSignal()
    status = pyqtSignal(str, str)  # capture events: lost / reopened / ended / error

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._lock = threading.Lock()
        self._latest: Any = None
        self._pending = False
        self.skipped = 0

    # ---- callbacks handed to LivePipeline (called from worker threads) ----
    def on_started(self, info: dict) -> None:
        self.started.emit(dict(info))

    def on_frame(self, frame: Any) -> None:
        with self._lock:
            if self._latest is not None:
                self.skipped += 1
            self._latest = frame
            notify = not self._pending
            self._pending = True
        if notify:
            self.frameReady.emit()

    def on_error(self, message: str) -> None:
        self.error.emit(message)

    def on_finished(self) -> None:
        self.finished.emit()

    def on_status(self, event: str, message: str) -> None:
        self.status.emit(event, message)

    def callbacks(self) -> dict[str, Any]:
        """Keyword arguments for :class:`vidmat.pipelines.live.LivePipeline`."""
        return {
            "on_started": self.on_started,
            "on_frame": self.on_frame,
            "on_error": self.on_error,
            "on_finished": self.on_finished,
            "on_status": self.on_status,
        }

    # ---- GUI thread ----
    def take_frame(self) -> Any:
        """The newest frame (or None), re-arming the notification."""
        with self._lock:
            frame, self._latest = self._latest, None
            self._pending = False
        return frame
