"""Reading background files: still images with OpenCV, looping videos decoded on demand.

The core only describes backgrounds (:mod:`vidmat.core.backgrounds`); opening the
file a user named is I/O and lives here::

    bg = load_background(args.bg)          # "green", "blur:25", "beach.jpg", "waves.mp4", ...
    post = PostProcessor(cfg, bg)
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from vidmat.core.backgrounds import Background, parse_background
from vidmat.errors import VidmatError
from vidmat.io.files import require_file
from vidmat.io.formats import IMAGE_SUFFIXES, VIDEO_SUFFIXES


def read_image(path: str | Path) -> np.ndarray:
    """uint8 RGB (H, W, 3) from an image file (alpha dropped, grey expanded)."""
    p = Path(path)
    require_file(p, "background image")
    data = np.fromfile(str(p), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise VidmatError(f"{p} is not an image OpenCV can read.")
    return np.ascontiguousarray(img[:, :, ::-1])


class LoopingVideo:
    """``frame_at(t)``: the frame of a video file at ``t`` seconds, looped.

    Decodes sequentially (seeks only when time goes backwards or jumps far ahead), so
    playing along with the output costs one decode per background frame.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        require_file(self.path, "background video")
        # PyAV first, for one sentence instead of OpenCV's FFmpeg log lines on a bad file.
        from vidmat.io.video import probe

        probe(self.path)
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise VidmatError(f"{self.path} is not a video OpenCV can read.")
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS)) or 30.0
        if not 1.0 <= self.fps <= 240.0:
            self.fps = 30.0
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self._lock = threading.Lock()
        self._index = -1
        self._frame: np.ndarray | None = None
        first = self._read()
        if first is None:
            raise VidmatError(f"{self.path} has no video frames.")
        self.frame_count = count if count > 0 else None

    def _read(self) -> np.ndarray | None:
        ok, img = self._cap.read()
        if not ok or img is None:
            return None
        self._index += 1
        self._frame = np.ascontiguousarray(img[:, :, ::-1])
        return self._frame

    def _rewind(self) -> None:
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        self._index = -1

    def __call__(self, t: float) -> np.ndarray:
        with self._lock:
            target = max(0, int(t * self.fps + 1e-6))
            if self.frame_count:
                target %= self.frame_count
            if target < self._index or target > self._index + 4 * self.fps:
                self._rewind()
                if target > 0:
                    self._cap.set(cv2.CAP_PROP_POS_FRAMES, target)
                    self._index = target - 1
            while self._index < target:
                if self._read() is None:  # end reached earlier than the header said: loop
                    self.frame_count = max(1, self._index + 1)
                    self._rewind()
                    target %= self.frame_count
                    if self._read() is None:
                        break
            assert self._frame is not None
            return self._frame

    def close(self) -> None:
        self._cap.release()


def picture_count(path: str | Path) -> int:
    """How many pictures an image file holds: above 1 for an animated WebP or PNG (OpenCV 5
    counts those; older OpenCV, or a path it cannot open, answers 1)."""
    try:
        return max(1, int(cv2.imcount(str(path))))
    except (cv2.error, AttributeError, OverflowError, SystemError, ValueError):
        return 1


def load_background(spec: str | Background | None) -> Background:
    """Resolve a CLI background spec; files become image or looping-video backgrounds."""
    bg = parse_background(spec)
    if bg.kind != "file":
        return bg
    assert bg.path is not None
    path = Path(bg.path).expanduser()
    suffix = path.suffix.lower()
    if not path.exists():
        raise VidmatError(
            f"background {bg.path!r} is neither a colour, blur, transparent, mask nor an existing file."
        )
    if suffix in IMAGE_SUFFIXES:
        return Background.from_image(read_image(path))
    if suffix in VIDEO_SUFFIXES:
        video = LoopingVideo(path)
        return Background.from_video(frame_at=video, fps=video.fps)
    # Unknown suffix: try as an image, then as a video.
    try:
        return Background.from_image(read_image(path))
    except VidmatError:
        video = LoopingVideo(path)
        return Background.from_video(frame_at=video, fps=video.fps)
