"""Frame capture in its own thread: a camera (index or device path) or a video file played as one.

Why a thread: ``cv2.VideoCapture.read`` blocks until the camera delivers; the
model must never wait on it, and the camera must never wait on the model. The
thread pushes every frame into a :class:`~vidmat.io.queues.LatestQueue`, which
drops the oldest when the consumer falls behind, so latency cannot grow.

Why a file can be a camera: there is no camera on CI machines or in a demo
without hardware. A file is played by its own timestamps against the wall
clock (frames the reader is too late for are skipped, as a real camera would
lose them), so everything downstream sees what it would see from a webcam.

Why files are decoded with PyAV (:class:`vidmat.io.video.VideoReader`) and cameras
with OpenCV: ``cv2.VideoCapture`` knows one frame rate per file (a variable-rate
clip played evenly spaced, a last frame held for seconds flashed by, a 1000 fps
clip became 30 fps), ignores a mirrored display matrix, decodes HDR/BT.2020 with
the wrong matrix and stalls for seconds on the first 10-bit HEVC frame. The
reader is the one ``vidmat convert`` uses, so a file looks the same in both.
Still images are read with :func:`vidmat.io.images.read_image`, which turns a
photo upright by its EXIF orientation (FFmpeg does not).

Frames reach the rest of the live path as RGB, converted exactly once, here.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from vidmat.errors import VidmatError
from vidmat.io.cvlog import quiet_opencv
from vidmat.io.queues import LatestQueue, QueueClosed

if TYPE_CHECKING:
    from vidmat.io.video import VideoInfo, VideoReader

log = logging.getLogger(__name__)

#: Status events the capture thread reports: (event, human-readable message).
StatusCallback = Callable[[str, str], None]


@dataclass(frozen=True)
class Frame:
    """One captured picture and when it was taken."""

    image: np.ndarray  # uint8 RGB (H, W, 3), C-contiguous
    index: int  # capture sequence number; gaps mean the source skipped frames
    timestamp: float  # time.perf_counter() when the frame was captured (latency origin)
    pts: float  # seconds since capture started: media time for a recording (a file's
    # frames: when they were due, so a recording keeps the file's own spacing)
    #: perf_counter when the frame is meant to be shown: a file's frame when it was due
    #: (a frame delivered late under load keeps its place), a camera's when captured.
    #: The clock a recording is made on, ``pts`` on the perf_counter clock.
    due: float


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


@dataclass(frozen=True)
class FileFrame:
    """A frame of a file source and where it sits on the file's own clock."""

    image: np.ndarray  # uint8 RGB (H, W, 3), upright, at the source's delivered size
    time: float  # seconds from the first frame of the file
    duration: float  # seconds it is shown for (to the next frame; the last one its own)


#: Seconds spent at most counting a file's packets to measure its average frame rate.
_RATE_SCAN_SECONDS = 0.25


def average_rate(path: Path, info: VideoInfo) -> float:
    """Frames per second of a file over its whole length: frame count / video length.

    Why not the header's rate: a variable-rate Matroska clip says 30 (FFmpeg's guess
    from its first frames) while it averages 10, and the recorder and the virtual
    camera are set up with this number. The packets are counted without decoding
    (milliseconds for a clip); a file too long to count in a quarter of a second takes
    its header's frame count over its duration, else its header's rate.
    """
    from vidmat.io.pyav import av_errors, open_input
    from vidmat.io.video import main_video_stream

    header = float(info.rate) if info.rate else 0.0
    if info.frames and info.video_end and info.video_end > 0:
        header = info.frames / info.video_end
    deadline = time.perf_counter() + _RATE_SCAN_SECONDS
    try:
        with open_input(path) as c:
            stream = main_video_stream(c)
            count, first, end = 0, None, None
            for packet in c.demux(stream):
                if packet.pts is None:
                    continue
                count += 1
                if count % 256 == 0 and time.perf_counter() > deadline:
                    return header
                first = packet.pts if first is None else min(first, packet.pts)
                stop = packet.pts + (packet.duration or 0)
                end = stop if end is None else max(end, stop)
            tb = stream.time_base
    except av_errors():
        return header
    if count < 2 or first is None or end is None or end <= first or not tb:
        return header
    return count / float((end - first) * tb)


def _is_still(path: Path) -> bool:
    """A photo rather than a clip: an image file name (animated GIFs play as clips)."""
    from vidmat.io.formats import IMAGE_SUFFIXES

    return path.suffix.lower() in IMAGE_SUFFIXES


class VideoSource:
    """An opened capture device or file; reads RGB frames. Not thread-safe: one owner.

    A camera is read with ``cv2.VideoCapture`` (``cap``); a file with PyAV's
    :class:`~vidmat.io.video.VideoReader` (``reader``), whose frames keep their own
    times (:meth:`next_frame`). ``native_fps`` of a file is its average rate over its
    whole length, ``fps`` that capped by a requested ``--fps``.
    """

    def __init__(self, cfg: CameraConfig) -> None:
        self.cfg = cfg
        self.source = parse_source(cfg.source)
        self.is_file = is_file_source(self.source)
        self.cap: cv2.VideoCapture | None = None
        self.reader: VideoReader | None = None
        self._frames: Iterator[FileFrame] | None = None
        #: A still image's one picture (read once; every pass shows it again).
        self._still: np.ndarray | None = None
        self.width = 0
        self.height = 0
        #: A file's own display size, before a requested --resolution (None: a camera).
        self.file_size: tuple[int, int] | None = None
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
            self._open_file(Path(str(src)))
        else:
            self._open_camera(src)

    def _open_camera(self, src: int | str) -> None:
        with quiet_opencv():
            cap = cv2.VideoCapture(src)
        if not cap.isOpened():
            cap.release()
            raise VidmatError(
                f"{_describe(src)} could not be opened (no such camera, or it is busy); "
                "pass --camera INDEX, a device path such as /dev/video0, or a video file."
            )
        cfg = self.cfg
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
        self.native_fps = self.fps = native
        self.frame_count = 0
        self.cap = cap
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if cfg.width and cfg.height and (w, h) != (cfg.width, cfg.height):
            log.info(
                "%s gives %dx%d instead of %dx%d", self.description, w, h, cfg.width, cfg.height
            )
        self.width, self.height = w, h

    def _open_file(self, path: Path) -> None:
        """Open the file with PyAV (errors in one sentence) and measure its rate once."""
        from vidmat.io.video import VideoReader

        if self._still is not None:  # a photo: nothing to decode again
            self._frames = self._still_frames()
            return
        try:
            reader = VideoReader(path)  # decodes the first frame now: a bad file fails here
        except VidmatError:
            if not _is_still(path) or not self._open_still_with_opencv(path):
                raise
            return
        info = reader.info
        first_open = self.native_fps == 0.0
        if first_open:
            native = average_rate(path, info)
            self.native_fps = native if native > 0 else 30.0
            self.fps = min(self.cfg.fps, self.native_fps) if self.cfg.fps else self.native_fps
            self.frame_count = int(info.frames or 0)
            if _is_still(path):
                self._still = self._read_still(path, reader)
                if self._still is not None:
                    reader.close()
                    self._set_size(*self._still.shape[1::-1])
                    self._frames = self._still_frames()
                    return
                reader = VideoReader(path)  # an animation: played as a clip
        # Display size: upright, and anamorphic pixels widened to square ones, as a
        # player shows them (the live path has no pixel-shape tag to carry).
        sar = info.sample_aspect_ratio
        self._set_size(max(1, round(info.width * sar)) if sar else info.width, info.height)
        self.reader = reader
        self._frames = self._reader_frames(reader, sar)

    def _set_size(self, width: int, height: int) -> None:
        """The delivered size: the file's own, or the requested one (crop and scale)."""
        self.file_size = (width, height)
        if self.cfg.width and self.cfg.height:
            width, height = self.cfg.width, self.cfg.height
        self.width, self.height = width, height

    @property
    def upscale_note(self) -> str | None:
        """One line when a requested size scales a file up, else None.

        A file is cropped to the requested shape and scaled to fill it, so a size larger
        than the file's in either direction scales every frame up: no detail is added,
        and time and memory grow with the area (8000x8000 from a 240x320 file took 13 s
        and 2.4 GB for a one-second run, silently). Said, not refused: a modest upscale
        (a small clip to the size a meeting expects) is a fair request, and where
        "absurd" begins depends on the machine.
        """
        if self.file_size is None or not (self.cfg.width and self.cfg.height):
            return None
        fw, fh = self.file_size
        if self.cfg.width <= fw and self.cfg.height <= fh:
            return None
        return (
            f"--resolution {self.cfg.width}x{self.cfg.height} is larger than the file's own "
            f"{fw}x{fh}; every frame is scaled up, which adds no detail but costs time and "
            "memory."
        )

    def _open_still_with_opencv(self, path: Path) -> bool:
        """An image FFmpeg cannot read (an animated WebP): its first picture, if OpenCV
        can read it. The first open only; False leaves PyAV's error to be raised."""
        from vidmat.io.images import read_image

        if self.native_fps:
            return False
        try:
            self._still = read_image(path)
        except VidmatError:
            return False
        self.native_fps = self.fps = min(self.cfg.fps or 30.0, 30.0)
        self._set_size(*self._still.shape[1::-1])
        self._frames = self._still_frames()
        return True

    def _read_still(self, path: Path, reader: VideoReader) -> np.ndarray | None:
        """The picture of a one-frame image file, upright by EXIF; None for an animation."""
        from vidmat.io.images import read_image

        frames = reader.frames()
        first = next(frames, None)
        if first is None or next(frames, None) is not None:
            reader.close()
            return None  # an animated PNG/WebP: played as a clip
        try:
            return read_image(path)
        except VidmatError:  # a format OpenCV lacks: FFmpeg's decode, without EXIF
            return first.image

    def _still_frames(self) -> Iterator[FileFrame]:
        assert self._still is not None
        yield FileFrame(self._fit(self._still), 0.0, 1.0 / self.fps)

    def _reader_frames(self, reader: VideoReader, sar: Fraction | None) -> Iterator[FileFrame]:
        start: float | None = None
        for frame in reader.frames():
            if start is None:
                start = frame.time
            image = frame.image
            if sar:
                image = cv2.resize(image, (round(image.shape[1] * sar), image.shape[0]))
            yield FileFrame(
                self._fit(image), frame.time - start, float(frame.duration * frame.time_base)
            )

    def _fit(self, image: np.ndarray) -> np.ndarray:
        """A file's picture at the requested size (a camera mode change would give it)."""
        cfg = self.cfg
        if cfg.width and cfg.height:
            image = crop_resize(image, cfg.width, cfg.height)
        return np.ascontiguousarray(image)

    def next_frame(self) -> FileFrame | None:
        """A file's next frame with its own time, or None at its end (files only)."""
        if self._frames is None:
            return None
        return next(self._frames, None)

    @property
    def incomplete(self) -> str | None:
        """Why the file being played ended early, once its last frame was read (see
        :attr:`vidmat.io.video.VideoReader.incomplete`); None for a camera."""
        return None if self.reader is None else self.reader.incomplete

    def grab(self) -> bool:
        """Advance one frame without converting it (for skipping)."""
        if self._frames is not None:
            return self.next_frame() is not None
        return bool(self.cap is not None and self.cap.grab())

    def read(self) -> np.ndarray | None:
        """The next frame as uint8 RGB, or None at the end of a file / on a failed read."""
        if self._frames is not None:
            frame = self.next_frame()
            return None if frame is None else frame.image
        if self.cap is None:
            return None
        ok, bgr = self.cap.read()
        if not ok or bgr is None:
            return None
        if bgr.ndim == 2:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
        # The one BGR→RGB conversion of a camera's frames.
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        self.height, self.width = rgb.shape[:2]
        return rgb

    def rewind(self) -> None:
        """Back to the first frame: a new reader (PyAV opens a file in milliseconds and
        decodes from its start without a seek, which some containers get wrong)."""
        self.close()
        self.open()

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        self._frames = None


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
        #: perf_counter time a file that does not loop finished showing its last frame
        #: (played in real time, not stopped): a recording's last frame lasts until then,
        #: as long as it was on screen. None otherwise.
        self.ended_at: float | None = None
        #: Why a file source ended before its header said it would (a truncated download:
        #: "only 40 of 120 frames could be decoded"); the frames before were played.
        self.damaged: str | None = None

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

    def _emit(self, image: np.ndarray, due: float | None = None) -> None:
        """Deliver a frame; ``due`` is when a file frame was scheduled (its pts then
        keeps the file's own spacing, not the few milliseconds of wake-up jitter)."""
        now = time.perf_counter()
        self._stamps.append(now)
        at = now if due is None else min(due, now)
        frame = Frame(image=image, index=self.frames, timestamp=now, pts=at - self._t_start, due=at)
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
        """Play a file by its own frame times against the wall clock.

        A pass over the file is anchored when its first frame is in hand, so a slow
        first decode (10-bit HEVC) delays the picture instead of skipping into the
        clip; the next pass starts where the last frame ends (a last frame held for
        seconds is held for seconds). A frame whose showing time has passed before it
        is decoded is skipped, as a camera loses frames. ``--fps`` caps the rate: of
        the frames that fall into one 1/fps slot of media time only the first is kept
        (also where the file's average is below the cap: its bursts are not). A tenth
        of a slot of slack keeps frames whose times are rounded to the millisecond
        (33, 67, 100 ms under a 30 fps cap) in slots of their own.
        """
        v, cfg = self.video, self.cfg
        cap_fps = cfg.fps or None
        started = False  # the first frame is in hand (the clock is anchored)
        anchor = 0.0  # wall time of this pass's media time 0
        pass_start = 0.0  # media time (over all passes) this pass starts at
        pass_end = 0.0  # where this pass's frames end, in its own media time
        last_slot = -1
        delivered = 0  # frames delivered in this pass
        while not self._stop_event.is_set():
            frame = v.next_frame()
            if frame is None:
                if delivered == 0 and pass_start == 0.0:
                    raise VidmatError(f"{v.description} has no readable frames.")
                incomplete = v.incomplete
                if incomplete is not None and self.damaged is None:  # said once, not per pass
                    self.damaged = incomplete
                    self._status(
                        "damaged",
                        f"{v.description} is truncated or damaged: {incomplete}; the frames "
                        "that decode are played",
                    )
                # At least a frame's time at the average rate: a one-frame file with a
                # tick-long duration must not loop by reopening it thousands of times.
                pass_end = max(pass_end, 1.0 / max(v.native_fps, 1.0))
                if cfg.realtime:  # the last frame stays on screen for its duration
                    wait = anchor + pass_end - time.perf_counter()
                    if wait > 0 and self._stop_event.wait(wait):
                        break
                if not cfg.loop:
                    if cfg.realtime:
                        self.ended_at = anchor + pass_end
                    self._status("ended", f"{v.description} ended")
                    return
                v.rewind()
                anchor += pass_end
                pass_start += pass_end
                pass_end, delivered = 0.0, 0
                continue
            pass_end = max(pass_end, frame.time + frame.duration)
            if cap_fps is not None:
                slot = math.floor((pass_start + frame.time) * cap_fps + 0.1)
                if slot <= last_slot:
                    self.skipped += 1
                    continue
                last_slot = slot
            if not cfg.realtime:
                delivered += 1
                self._emit(frame.image)
                continue
            now = time.perf_counter()
            if not started:
                started, anchor = True, now - frame.time
            due = anchor + frame.time
            # On screen until the next frame, or under a cap until the next slot.
            shown = max(frame.duration, 1.0 / cap_fps) if cap_fps else frame.duration
            if delivered == 0 and now > due + shown:
                # A pass that could not start on time (a slow reopen): start it now.
                anchor = now - frame.time
                due = now
            elif now > due + shown:
                self.skipped += 1  # its time on screen is over: dropped, as a camera would
                continue
            if due > now and self._stop_event.wait(due - now):
                break
            delivered += 1
            self._emit(frame.image, due)

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
