"""Frame capture in its own thread: a camera (index or device path) or a video file played as one.

Why a thread: ``cv2.VideoCapture.read`` blocks until the camera delivers; the
model must never wait on it, and the camera must never wait on the model. The
thread pushes every frame into a :class:`~vidmat.io.queues.LatestQueue`, which
drops the oldest when the consumer falls behind, so latency cannot grow.

Why a file can be a camera: there is no camera on CI machines or in a demo
without hardware. A file is played at its own frame rate against the wall
clock (frames the reader is too late for are skipped, as a real camera would
lose them), so everything downstream sees what it would see from a webcam.

Frames are converted BGR→RGB exactly once, here; everything downstream is RGB.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vidmat.errors import VidmatError
from vidmat.io.queues import LatestQueue, QueueClosed

log = logging.getLogger(__name__)

#: Status events the capture thread reports: (event, human-readable message).
StatusCallback = Callable[[str, str], None]


@dataclass(frozen=True)
class Frame:
    """One captured picture and when it was taken."""

    image: np.ndarray  # uint8 RGB (H, W, 3), C-contiguous
    index: int  # capture sequence number; gaps mean the source skipped frames
    timestamp: float  # time.perf_counter() when the frame was captured (latency origin)
    pts: float  # seconds since capture started: media time for a recording


@dataclass(frozen=True)
class CameraConfig:
    """What to capture from. ``width``/``height``/``fps`` are requests, not promises."""

    source: int | str = 0
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    #: A file source starts over at its end (a camera never ends).
    loop: bool = True
    #: A file source is paced to its frame rate; False reads as fast as it decodes.
    realtime: bool = True
    #: Seconds between attempts to reopen a camera that stopped delivering.
    retry_interval: float = 1.0
    #: Consecutive failed reads after which a camera counts as lost.
    max_failed_reads: int = 10


def parse_source(text: str | int) -> int | str:
    """'0' → camera index 0; anything else is a device path, file or stream URL."""
    if isinstance(text, int):
        return text
    s = str(text).strip()
    if s.isdigit():
        return int(s)
    return s


def is_file_source(source: int | str) -> bool:
    """A regular file is played as a camera; a /dev/video* node or an index is a camera."""
    if isinstance(source, int):
        return False
    try:
        return stat.S_ISREG(os.stat(source).st_mode)
    except OSError:
        return False


def _describe(source: int | str) -> str:
    return f"camera {source}" if isinstance(source, int) else str(source)


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """OpenCV prints a screenful of backend warnings for a missing camera; we say one sentence."""
    logging_mod = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_mod is None:
        yield
        return
    level = logging_mod.getLogLevel()
    logging_mod.setLogLevel(logging_mod.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging_mod.setLogLevel(level)


def crop_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre-crop to the target aspect, then resize: what a camera mode change looks like."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    target = width / height
    if w / h > target:  # too wide: crop the sides
        cw = max(1, round(h * target))
        x0 = (w - cw) // 2
        image = image[:, x0 : x0 + cw]
    elif w / h < target:  # too tall: crop top and bottom
        ch = max(1, round(w / target))
        y0 = (h - ch) // 2
        image = image[y0 : y0 + ch]
    interp = cv2.INTER_AREA if image.shape[1] > width else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interp)


class VideoSource:
    """An opened capture device or file; reads RGB frames. Not thread-safe: one owner."""

    def __init__(self, cfg: CameraConfig) -> None:
        self.cfg = cfg
        self.source = parse_source(cfg.source)
        self.is_file = is_file_source(self.source)
        self.cap: cv2.VideoCapture | None = None
        self.width = 0
        self.height = 0
        self.native_fps = 0.0
        self.fps = 0.0  # rate frames are delivered at
        self.frame_count = 0
        self.open()

    @property
    def description(self) -> str:
        return _describe(self.source)

    def open(self) -> None:
        src = self.source
        if isinstance(src, str) and not self.is_file:
            looks_like_path = "://" not in src
            if looks_like_path and not Path(src).exists():
                raise VidmatError(f"camera or video file {src} does not exist.")
            if looks_like_path and Path(src).is_dir():
                raise VidmatError(f"{src} is a folder; give a camera or a video file.")
        if self.is_file:
            # PyAV first: it says what is wrong in one sentence, where OpenCV's FFmpeg
            # prints its own log lines (e.g. "moov atom not found") before failing.
            from vidmat.io.video import probe

            probe(Path(str(src)))
        with _quiet_opencv():
            if self.is_file:
                cap = cv2.VideoCapture(str(src), cv2.CAP_FFMPEG)
            else:
                cap = cv2.VideoCapture(src)
        if not cap.isOpened():
            cap.release()
            if self.is_file:
                raise VidmatError(f"{src} is not a video file OpenCV can read.")
            raise VidmatError(
                f"{_describe(src)} could not be opened (no such camera, or it is busy); "
                "pass --camera INDEX, a device path such as /dev/video0, or a video file."
            )
        cfg = self.cfg
        if not self.is_file:
            # Ask; the camera answers with what it can do and we take that (the fallback).
            if cfg.width and cfg.height:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
            if cfg.fps:
                cap.set(cv2.CAP_PROP_FPS, cfg.fps)
            # One buffered frame at most: a driver queue is latency we cannot drop.
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        native = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not (0 < native < 1000):
            native = 30.0
        self.native_fps = native
        self.fps = min(cfg.fps, native) if (self.is_file and cfg.fps) else native
        self.frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.cap = cap
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if self.is_file and cfg.width and cfg.height:
            w, h = cfg.width, cfg.height
        elif cfg.width and cfg.height and (w, h) != (cfg.width, cfg.height):
            log.info(
                "%s gives %dx%d instead of %dx%d", self.description, w, h, cfg.width, cfg.height
            )
        self.width, self.height = w, h

    def grab(self) -> bool:
        """Advance one frame without converting it (for skipping)."""
        return bool(self.cap is not None and self.cap.grab())

    def read(self) -> np.ndarray | None:
        """The next frame as uint8 RGB, or None at the end of a file / on a failed read."""
        if self.cap is None:
            return None
        ok, bgr = self.cap.read()
        if not ok or bgr is None:
            return None
        if bgr.ndim == 2:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
        cfg = self.cfg
        if self.is_file and cfg.width and cfg.height:
            bgr = crop_resize(bgr, cfg.width, cfg.height)
        # The one BGR→RGB conversion of the whole live path.
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        self.height, self.width = rgb.shape[:2]
        return rgb

    def rewind(self) -> None:
        """Back to the first frame (reopen: seeking is unreliable across containers)."""
        self.close()
        self.open()

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class CaptureThread(threading.Thread):
    """Reads frames into ``out`` until stopped; survives a camera that goes away.

    Construct it (which opens the source and raises :class:`VidmatError` with
    one sentence if that fails), then ``start()``. ``on_status(event, message)``
    is called from this thread with events ``lost`` (camera stopped delivering;
    it retries every ``retry_interval``), ``reopened`` and ``ended`` (a file
    that does not loop reached its end). The queue is closed when the thread
    ends, which tells the consumer that no more frames will come.
    """

    def __init__(
        self,
        cfg: CameraConfig,
        out: LatestQueue[Frame],
        on_status: StatusCallback | None = None,
    ) -> None:
        super().__init__(name="vidmat-capture", daemon=True)
        self.cfg = cfg
        self.out = out
        self.on_status = on_status
        self.video = VideoSource(cfg)
        self._stop_event = threading.Event()
        self.frames = 0  # frames delivered
        self.skipped = 0  # file frames skipped to keep real time
        self.lost = False
        self.error: BaseException | None = None
        self._stamps: collections.deque[float] = collections.deque(maxlen=31)
        self._t_start = 0.0

    # ------------------------------------------------------------ properties
    @property
    def width(self) -> int:
        return self.video.width

    @property
    def height(self) -> int:
        return self.video.height

    @property
    def nominal_fps(self) -> float:
        return self.video.fps

    @property
    def description(self) -> str:
        return self.video.description

    @property
    def fps(self) -> float:
        """Measured delivery rate over the last ~30 frames."""
        stamps = list(self._stamps)
        if len(stamps) < 2 or stamps[-1] <= stamps[0]:
            return 0.0
        return (len(stamps) - 1) / (stamps[-1] - stamps[0])

    # --------------------------------------------------------------- control
    def stop(self) -> None:
        self._stop_event.set()

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    def _status(self, event: str, message: str) -> None:
        log.info("capture %s: %s", event, message)
        if self.on_status is not None:
            try:
                self.on_status(event, message)
            except Exception:  # a broken listener must not kill capture
                log.exception("capture status callback failed")

    def _emit(self, image: np.ndarray) -> None:
        now = time.perf_counter()
        self._stamps.append(now)
        frame = Frame(image=image, index=self.frames, timestamp=now, pts=now - self._t_start)
        self.frames += 1
        self.out.put(frame)

    # ------------------------------------------------------------------ run
    def run(self) -> None:
        self._t_start = time.perf_counter()
        try:
            if self.video.is_file:
                self._run_file()
            else:
                self._run_camera()
        except BaseException as exc:  # reported, not raised: this is a daemon thread
            self.error = exc
            # The status line tells the user in one sentence; the traceback is debug detail.
            log.debug("capture thread failed", exc_info=True)
            self._status("error", f"capture failed: {exc}")
        finally:
            self.video.close()
            self.out.close()

    def _run_file(self) -> None:
        """Play at the wall clock; when late, skip to the frame that is due now."""
        v, cfg = self.video, self.cfg
        period = 1.0 / v.fps
        ratio = v.native_fps / v.fps  # source frames per delivered frame
        t0 = time.perf_counter()
        k = -1  # index of the delivered frame within this pass over the file
        src_pos = 0  # next source frame the decoder will return
        while not self._stop_event.is_set():
            if cfg.realtime:
                now = time.perf_counter()
                k = max(k + 1, int((now - t0) / period))
                due = t0 + k * period
                if due > now and self._stop_event.wait(due - now):
                    break
            else:
                k += 1
            target = round(k * ratio)
            ok = True
            while src_pos < target and ok:
                ok = v.grab()
                src_pos += 1
                self.skipped += ok
            image = v.read() if ok else None
            src_pos += 1
            if image is None:
                if k == 0:
                    raise VidmatError(f"{v.description} has no readable frames.")
                if not cfg.loop:
                    self._status("ended", f"{v.description} ended")
                    return
                v.rewind()
                t0 += k * period
                k, src_pos = -1, 0
                continue
            self._emit(image)

    def _run_camera(self) -> None:
        v, cfg = self.video, self.cfg
        failures = 0
        while not self._stop_event.is_set():
            image = v.read()
            if image is not None:
                failures = 0
                if self.lost:
                    self.lost = False
                    self._status("reopened", f"{v.description} is back")
                self._emit(image)
                continue
            failures += 1
            if failures < cfg.max_failed_reads:
                self._stop_event.wait(0.01)
                continue
            if not self.lost:
                self.lost = True
                self._status(
                    "lost", f"{v.description} stopped delivering frames; trying to reconnect…"
                )
            v.close()
            while not self._stop_event.wait(cfg.retry_interval):
                try:
                    v.open()
                except VidmatError:
                    continue
                failures = 0
                break


def open_capture(
    cfg: CameraConfig,
    out: LatestQueue[Frame] | None = None,
    on_status: StatusCallback | None = None,
) -> CaptureThread:
    """Open the source (errors as one sentence) and return the not-yet-started thread."""
    return CaptureThread(cfg, out if out is not None else LatestQueue(1), on_status)


def read_all(cfg: CameraConfig, limit: int | None = None) -> list[Frame]:
    """Every frame a source delivers (tests and tools); files only, since cameras never end."""
    q: LatestQueue[Frame] = LatestQueue(maxsize=1 << 20)
    cap = CaptureThread(cfg, q)
    frames: list[Frame] = []
    cap.start()
    with contextlib.suppress(QueueClosed):
        while limit is None or len(frames) < limit:
            item = q.get(timeout=5.0)
            if item is None:
                break
            frames.append(item)
    cap.stop()
    cap.join()
    return frames
