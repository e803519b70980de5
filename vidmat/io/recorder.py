"""Recording the live composite to H.264 mp4 in its own thread, at the frames' real timestamps.

Why a thread: x264 needs several ms per frame; the live worker must not wait
for it. Frames arrive through a bounded :class:`~vidmat.io.queues.LatestQueue`
(if the encoder ever falls behind, the oldest waiting frame is dropped and
counted rather than memory growing).

Why real timestamps: a live source delivers at whatever rate the camera and
the model manage (variable frame rate). Each frame is written at its capture
time relative to the first recorded frame, so the file plays back at the speed
it happened, whatever the frame rate was. Encoding goes through the converter's
:class:`vidmat.io.video.VideoWriter` (one H.264 encoder in the project); each
frame is held until the next arrives so it can be written with its real
duration, without which the mp4 muxer would report a VFR file shorter than it is.

Audio: with ``audio="auto"`` the microphone is read through PyAV's ``alsa``
input when an ALSA capture device exists (otherwise the recording is silent,
and :attr:`Recorder.audio_message` says why), encoded to AAC and muxed beside
the video, timed from the same clock. A device named explicitly that cannot be
opened is refused by ``start()`` instead: who named one wants that sound. The
audio of a video file played as the camera is not recorded.

The output appears at its path only once finalised (``stop()``/``close()``):
until then it is written under a temporary name beside it.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from vidmat.errors import VidmatError
from vidmat.io.files import atomic_output, check_output_path
from vidmat.io.queues import LatestQueue, QueueClosed
from vidmat.io.video import EncodeConfig, VideoWriter

log = logging.getLogger(__name__)

#: Milliseconds: fine enough for any camera rate, and mp4 stores it exactly.
TIME_BASE = Fraction(1, 1000)
AUDIO_RATE = 48000


#: Said when the transparent view is recorded, in the window and headless alike.
TRANSPARENT_NOTE = "the transparent view is recorded over black: MP4 has no alpha"


@dataclass(frozen=True)
class RecorderConfig:
    path: Path
    overwrite: bool = False
    crf: int = 20
    #: x264 preset: live recording shares the CPU with the model. ultrafast also has no
    #: B-frames, so a VFR file's duration comes out exact (the muxer sums decode-order
    #: durations, which B-frame reordering skews by a frame).
    preset: str = "ultrafast"
    #: The rate the source delivers frames at: the header's nominal rate and the last
    #: frame's length (the others last until the next frame's real timestamp).
    fps: float = 30.0
    #: "auto" (microphone if one exists), None (no audio) or an ALSA device name.
    audio: str | None = "auto"
    #: PyAV input format for ``audio`` (tests feed a wav file with format "wav").
    audio_format: str = "alsa"
    #: Frames allowed to wait for the encoder before the oldest is dropped.
    max_queue: int = 60


@dataclass(frozen=True)
class RecordingInfo:
    path: Path | None  # None when nothing was recorded
    frames: int
    duration: float  # seconds of video
    dropped: int
    audio: bool
    message: str = ""

    def describe(self) -> str:
        """What the terminal is told once it is saved, headless or from the window."""
        if self.path is None:
            return "nothing was recorded (no frames)."
        sound = "with audio" if self.audio else "no audio"
        return f"wrote {self.path} ({self.frames} frames, {self.duration:.1f} s, {sound})"


def alsa_capture_devices() -> list[str]:
    """ALSA capture PCM nodes (``/dev/snd/pcmC0D0c``...): is there a microphone at all?"""
    return sorted(glob.glob("/dev/snd/pcmC*D*c"))


def check_recording_name(path: Path) -> None:
    """Refuse a name that is not .mp4/.m4v: the recording is always an MP4 container
    (H.264 + AAC), and a .mov or .mkv name would hold MP4 under another container's name.
    A function of its own so that a command can refuse it before it opens the camera."""
    if path.suffix.lower() not in (".mp4", ".m4v"):
        if path.name.lower() in (".mp4", ".m4v"):  # a suffix alone is a hidden file's name
            raise VidmatError(
                f"record to a named .mp4 file, e.g. take1.mp4; {path.name} alone has no name."
            )
        raise VidmatError(f"record to an .mp4 file, got {path.name}.")


#: Where a system's ALSA configuration lives. The pip PyAV wheels bundle a libasound
#: built to look for it under its build prefix (/tmp/vendor/share/alsa), which no
#: machine has: without ALSA_CONFIG_DIR it knows no PCM at all, not even ``default``
#: or ``null`` ("Unknown PCM default"), so a microphone was never recorded.
SYSTEM_ALSA_CONFIG = Path("/usr/share/alsa")


def _use_system_alsa_config() -> None:
    """Point a bundled libasound at the system's configuration, unless the user chose one."""
    if "ALSA_CONFIG_DIR" not in os.environ and (SYSTEM_ALSA_CONFIG / "alsa.conf").is_file():
        os.environ["ALSA_CONFIG_DIR"] = str(SYSTEM_ALSA_CONFIG)


@contextlib.contextmanager
def _quiet_stderr() -> Any:
    """Send what C libraries write to file descriptor 2 to a debug log instead.

    libasound prints its own "ALSA lib /project/build/...: Unknown PCM" lines straight
    to stderr when a device does not open; vidmat says that in one sentence of its own.
    Only around the open (milliseconds), as the descriptor is the whole process's.
    """
    fd = 2  # the C library's stderr, whatever Python's sys.stderr is (a test's capture)
    try:
        sys.stderr.flush()
        saved = os.dup(fd)
    except (OSError, ValueError):
        yield  # no descriptor 2 to redirect
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            said = sink.read().decode(errors="replace").strip()
            if said:
                log.debug("audio device said: %s", said)


def open_audio_device(device: str, fmt: str = "alsa") -> Any:
    """Open an audio input (an ALSA device name, or a file with another ``fmt``), or raise
    :class:`VidmatError` in one sentence naming it; libasound's own lines go to a debug log.

    A command checks an explicitly named microphone with it before it loads the model, so
    a typo is refused at once and not found out after a silent recording.
    """
    if fmt == "alsa":
        _use_system_alsa_config()
    source = None
    try:
        with _quiet_stderr() if fmt == "alsa" else contextlib.nullcontext():
            source = av.open(device, format=fmt)
        if not source.streams.audio:
            raise VidmatError(f"{device} has no audio stream")
    except Exception as exc:
        if source is not None:
            with contextlib.suppress(Exception):
                source.close()
        reason = str(exc).rstrip(".")
        raise VidmatError(
            f"the microphone {device!r} cannot be opened ({reason}); name another ALSA "
            "device (arecord -L lists them) or record with --audio off."
        ) from exc
    return source


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """RGBA (the transparent view) is recorded over black; RGB passes through."""
    if image.ndim == 3 and image.shape[2] == 4:
        a = image[..., 3:4].astype(np.uint16)
        image = ((image[..., :3].astype(np.uint16) * a + 127) // 255).astype(np.uint8)
    return image


class _LiveWriter(VideoWriter):
    """The converter's writer plus a live audio stream muxed into the same container.

    Video packets (recorder thread) and audio packets (microphone thread) share
    one muxer, so both go through ``mux_lock``. Closing takes it too and seals the
    writer: a microphone thread that outlived its join (a stalled device) must not encode
    or mux into a container that has been freed under it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.mux_lock = threading.RLock()  # close() flushes video through _mux_video
        self.sealed = False
        self.mic_packets = 0  # what the microphone really gave, for RecordingInfo.audio
        super().__init__(*args, **kwargs)

    def close(self) -> None:
        with self.mux_lock:
            self.sealed = True
            super().close()

    def abort(self) -> None:
        with self.mux_lock:
            self.sealed = True
            super().abort()

    @property
    def container(self) -> Any:
        return self._container

    def _mux_video(self, packets: list[Any]) -> None:
        with self.mux_lock:
            super()._mux_video(packets)

    def encode_audio(self, stream: Any, frame: Any) -> bool:
        """Encode ``frame`` (None: flush) into ``stream`` and mux it; False once sealed."""
        with self.mux_lock:
            if self.sealed:
                return False
            for p in stream.encode(frame):
                self._container.mux(p)
                self.mic_packets += 1
            return True


class Recorder:
    """``start()``, then ``submit(image, t)`` from the live worker, then ``stop()``.

    ``t`` is the frame's time in seconds on any monotonic clock (as a sink it takes the
    captured frame's ``due``: a camera's capture time, a file frame's scheduled time);
    the first frame defines zero.
    A recorder is also a pipeline sink: ``recorder(live_frame)`` submits it.
    """

    def __init__(self, cfg: RecorderConfig) -> None:
        self.cfg = cfg
        path = Path(cfg.path)
        check_recording_name(path)
        check_output_path(path, cfg.overwrite)
        self.path = path
        self.queue: LatestQueue[tuple[np.ndarray, float]] = LatestQueue(cfg.max_queue)
        self._thread = threading.Thread(target=self._run, name="vidmat-recorder", daemon=True)
        self._audio_thread: threading.Thread | None = None
        self._stop_audio = threading.Event()
        self._abandon = threading.Event()  # stop() ran out of time: drop the file
        self._t0: float | None = None  # the first frame's time (perf_counter clock)
        self._t0_set = threading.Event()
        self.frames = 0
        self.last_pts = -1
        self.error: BaseException | None = None
        self.info: RecordingInfo | None = None
        self.audio_enabled = False
        self.audio_message = ""
        self._audio_failure: str | None = None
        self._end: float | None = None  # when the recording ends (see stop())
        self._cut = True  # whether _end cut the run short (see stop())
        self._audio_input: Any = None  # the opened audio source, until the thread takes it
        self._audio_source: tuple[str, str] | None = self._pick_audio()

    # ------------------------------------------------------------ control
    def _pick_audio(self) -> tuple[str, str] | None:
        a = self.cfg.audio
        if a is None:
            self.audio_message = "audio off"
            return None
        if self.cfg.audio_format != "alsa":
            self.audio_message = f"audio from {a}"  # until the device opens, or says why not
            return (a, self.cfg.audio_format)
        if "alsa" not in av.formats_available:
            self.audio_message = "this PyAV build has no ALSA input; recording without audio"
            return None
        if a == "auto":
            if not alsa_capture_devices():
                self.audio_message = "no microphone found; recording without audio"
                return None
            a = "default"
        self.audio_message = f"audio from {a}"  # until the device opens, or says why not
        return (a, "alsa")

    def start(self) -> Recorder:
        """Open the audio source, then start recording.

        The microphone is opened here, in the caller's thread, so that a device named
        explicitly that cannot be opened is refused (:class:`VidmatError`) before any
        file is written; ``auto`` falls back to a silent recording and says so in
        :attr:`audio_message`, which from here on tells what will really be recorded.
        """
        self._audio_input = self._open_audio_input()
        self._thread.start()
        return self

    def _open_audio_input(self) -> Any:
        if self._audio_source is None:
            return None
        device, fmt = self._audio_source
        try:
            return open_audio_device(device, fmt)
        except VidmatError as exc:
            if self.cfg.audio != "auto":
                raise
            reason = str(exc.__cause__ or exc).rstrip(".")
            # auto: a busy or missing microphone must not stop the video
            self.audio_message = f"microphone {device!r} unavailable ({reason}); no audio"
            log.info(self.audio_message)
            self._audio_source = None
            return None

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def submit(self, image: np.ndarray, t: float) -> None:
        """Queue one RGB(A) frame captured at ``t`` seconds; never blocks."""
        if self._t0 is None:
            self._t0 = t
            self._t0_set.set()
        self.queue.put((image, t))

    def __call__(self, frame: Any) -> None:
        """Sink interface for :class:`vidmat.pipelines.live.LivePipeline`.

        Recorded at the time the picture was due, not delivered: a file's frame late by a
        few milliseconds under load keeps the file's spacing, and its last frame lasts its
        full time up to the capture's ``ended_at``, which is on the same clock.
        """
        self.submit(frame.image, frame.source.due)

    def stop(
        self, timeout: float = 30.0, end: float | None = None, cut: bool = True
    ) -> RecordingInfo:
        """Finish: encode what is queued, flush, close and move the file into place.

        ``end``: when the run ended, on the frames' clock (a live pipeline's
        ``ended_at``). ``cut`` (the run was cut short: a duration, a stop): the last frame
        lasts until then, at most one frame at the configured rate: a source delivering
        one frame in a thousand seconds gave its only frame a thousand seconds, a recording
        far longer than the run, and a camera stopped seconds after its last frame (a
        stall, a slow shutdown) did not mean that picture to last. Not ``cut`` (the source
        ended by itself and ``end`` is when its last frame stopped being shown, a live
        pipeline's ``source_ended``): the last frame lasts until then, however long, as a
        file's last picture held for seconds was shown for seconds. None: one frame at the
        rate (nothing says how long the last frame was shown).
        """
        self._end = end
        self._cut = cut
        self.queue.close()
        self._stop_audio.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                # A stalled disk or encoder: a thread still writing when the program exits
                # is killed mid-file, its temporary file left behind, so it is told to
                # give up and remove it, and the user hears why there is no file.
                self._abandon.set()
                self._thread.join(5.0)
                stuck = self._thread.is_alive()  # in a write: nothing more can be done
                if stuck or (self.info is not None and self.info.message == "abandoned"):
                    left = (
                        "its temporary file may be left beside it"
                        if stuck
                        else "no file was written"
                    )
                    raise VidmatError(
                        f"recording to {self.path} was still being written after "
                        f"{timeout:g} s (a stalled disk or encoder) and was abandoned; {left}."
                    )
                # else it finished within the grace time (its last frame was written
                # before the loop could see the stop, then it closed): the file stands
        elif not self._thread.ident:
            self.info = RecordingInfo(None, 0, 0.0, 0, False, "recorder never started")
        if self.error is not None:
            raise VidmatError(self.failure()) from self.error
        assert self.info is not None
        return self.info

    @property
    def failed(self) -> bool:
        """Whether the recording has failed for good (the writer raised: a full disk).

        Set by the recorder thread only after its temporary file is removed, so a caller
        polling it (headless live's status loop) can stop the run at once instead of
        playing on for nothing until --duration, or forever with --loop.
        """
        return self.error is not None

    def failure(self) -> str:
        """The failure as one sentence naming the recording: an OS error by its words
        ("No space left on device"), not Python's "[Errno 28] ..." form."""
        exc = self.error
        reason = getattr(exc, "strerror", None) or str(exc)  # OSError's, DiskFull's
        return f"recording to {self.path} failed: {reason.rstrip('.')}."

    close = stop

    # ------------------------------------------------------------ thread
    def _run(self) -> None:
        try:
            with atomic_output(self.path, None, self.cfg.overwrite) as tmp:
                frames = self._record(tmp)
                if frames == 0:
                    raise _NothingRecorded
        except _NothingRecorded:
            self.info = RecordingInfo(None, 0, 0.0, self.queue.dropped, False, "no frames")
        except _Abandoned:
            self.info = RecordingInfo(
                None, self.frames, 0.0, self.queue.dropped, False, "abandoned"
            )
        except BaseException as exc:
            # stop() turns this into one sentence for the user; the traceback only goes to a
            # debug log, where an application that configures logging can find it.
            log.debug("recording failed", exc_info=True)
            self.error = exc
            self.info = RecordingInfo(None, self.frames, 0.0, self.queue.dropped, False, str(exc))
        else:
            duration = (self.last_pts + self._last_duration()) / 1000.0
            self.info = RecordingInfo(
                self.path,
                self.frames,
                duration,
                self.queue.dropped,
                self.audio_enabled,
                self.audio_message,
            )
        finally:
            if self._audio_input is not None:  # opened, never used: no frame came
                with contextlib.suppress(Exception):
                    self._audio_input.close()
                self._audio_input = None

    def _record(self, tmp: Path) -> int:
        first = self._next()
        if first is None:
            return 0
        image, t = first
        image = _to_rgb(image)
        h, w = image.shape[:2]
        writer = _LiveWriter(
            tmp,
            "mp4",
            w,
            h,
            TIME_BASE,
            rate=Fraction(max(1, round(self.cfg.fps))),  # the header's rate; never 0
            encode=EncodeConfig(crf=self.cfg.crf, preset=self.cfg.preset),
        )
        audio = self._open_audio(writer)
        held: tuple[np.ndarray, int] | None = None  # written once the next frame's time is known
        ok = False
        try:
            while True:
                pts = self._pts(t)
                if held is not None:
                    writer.write(held[0], held[1], pts - held[1])
                    self.frames += 1
                held = (self._fit(image, (w, h)), pts)
                if self._abandon.is_set():
                    raise _Abandoned
                item = self._next()
                if item is None:
                    break
                image, t = item
                image = _to_rgb(image)
            writer.write(held[0], held[1], self._last_duration())
            self.frames += 1
            ok = True
        finally:
            self._stop_audio.set()
            if audio is not None:
                audio.join(10)
            if ok:
                writer.close()
            else:
                writer.abort()
            if self.audio_enabled and writer.mic_packets == 0:
                # The microphone opened and then gave nothing (or failed): the file has no
                # sound, which RecordingInfo said it had ("audio from empty.wav").
                self.audio_enabled = False
                self.audio_message = self._audio_failure or (
                    f"{self.audio_message.removeprefix('audio from ')} gave no sound; "
                    "recorded without audio"
                )
        return self.frames

    def _last_duration(self) -> int:
        """Milliseconds the last frame lasts: until ``end`` (at most one frame at the rate
        when the run was cut short), else one frame at the rate."""
        frame = max(1, round(1000.0 / self.cfg.fps))
        if self._end is None or self._t0 is None:
            return frame
        until_end = round((self._end - self._t0) * 1000.0) - self.last_pts
        return max(1, min(frame, until_end) if self._cut else until_end)

    def _pts(self, t: float) -> int:
        """Milliseconds since the first frame, strictly increasing whatever the clock did."""
        assert self._t0 is not None
        pts = max(round((t - self._t0) * 1000.0), self.last_pts + 1)
        self.last_pts = pts
        return pts

    @staticmethod
    def _fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        if (image.shape[1], image.shape[0]) == size:
            return image
        import cv2  # a resolution change mid-recording (camera reconnect): keep the stream

        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)

    def _next(self) -> tuple[np.ndarray, float] | None:
        while True:
            try:
                item = self.queue.get(timeout=0.5)
            except QueueClosed:
                return None
            if item is not None:
                return item

    # ------------------------------------------------------------- audio
    def _open_audio(self, writer: _LiveWriter) -> threading.Thread | None:
        """Start muxing the source ``start()`` opened, if any."""
        source, self._audio_input = self._audio_input, None
        if source is None or self._audio_source is None:
            return None
        device = self._audio_source[0]
        try:
            out = writer.container.add_stream("aac", rate=AUDIO_RATE)
            out.layout = "stereo"
            out.time_base = Fraction(1, AUDIO_RATE)
        except Exception as exc:  # an encoder that will not open: the microphone is let go
            with contextlib.suppress(Exception):
                source.close()
            self._audio_failure = f"audio recording failed ({exc}); the video continues"
            self.audio_message = self._audio_failure
            return None
        self.audio_enabled = True
        self.audio_message = f"audio from {device}"
        t = threading.Thread(
            target=self._run_audio, args=(source, writer, out), name="vidmat-audio", daemon=True
        )
        t.start()
        self._audio_thread = t
        return t

    def _run_audio(self, source: Any, writer: _LiveWriter, out: Any) -> None:
        """Microphone → AAC; the first sample is placed at its wall-clock offset from frame 0."""
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
        next_pts: int | None = None
        live = self._audio_source is not None and self._audio_source[1] == "alsa"
        try:
            for packet in source.demux(source.streams.audio[0]):
                if live and self._stop_audio.is_set():
                    break  # a microphone never ends; a file source (tests) is read whole
                for frame in packet.decode():
                    for rframe in resampler.resample(frame):
                        if next_pts is None:
                            offset = 0.0
                            if live and self._t0 is not None:
                                offset = max(0.0, time.perf_counter() - self._t0)
                                offset -= rframe.samples / AUDIO_RATE
                            next_pts = max(0, round(offset * AUDIO_RATE))
                        rframe.pts = next_pts
                        rframe.time_base = Fraction(1, AUDIO_RATE)
                        next_pts += rframe.samples
                        if not writer.encode_audio(out, rframe):
                            return  # the recording was closed without waiting for us
            for rframe in resampler.resample(None):
                if next_pts is not None:
                    rframe.pts = next_pts
                    next_pts += rframe.samples
                if not writer.encode_audio(out, rframe):
                    return
            writer.encode_audio(out, None)
        except Exception as exc:
            log.exception("audio recording failed; the video continues")
            self._audio_failure = f"audio recording failed ({exc}); the video continues"
        finally:
            with contextlib.suppress(Exception):
                source.close()


class _NothingRecorded(Exception):
    pass


class _Abandoned(Exception):
    """stop() gave up waiting: the file is removed, not finished."""
