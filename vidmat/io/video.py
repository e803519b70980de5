"""Video files in and out through PyAV, with timestamps, rotation and audio kept exactly.

Why this module exists: peers round 23.976 fps to 24, drop the audio, call an mp4
"transparent" and decode on one thread. Here

* :class:`VideoReader` decodes with ``thread_type="AUTO"`` and yields :class:`Frame`
  objects that keep their ``pts`` and ``time_base``; frames are turned upright from the
  display matrix (a phone's portrait clip is stored sideways), so the model sees people
  standing up and every output format (PNG has no display matrix) shows them the same
  way. A corrupt packet is skipped and counted instead of ending the job.
* :class:`VideoWriter` writes one of :data:`FORMATS` with the input's own time base and
  the frames' own pts (so variable frame rate and 23.976 survive), copies the audio
  packets when the container can hold the codec (else re-encodes: AAC, or Opus in
  WebM which cannot hold AAC), pads odd sizes for yuv420p, and always flushes.

Formats and where they play:

=========  ====================================  ======================================
``mp4``    H.264 yuv420p, composite (no alpha)   everywhere: browsers, phones, editors
``mov``    ProRes 4444 with alpha                Final Cut, Premiere, DaVinci, After
                                                 Effects; large files
``webm``   VP9 with alpha                        Chrome/Firefox/Edge (alpha on the web),
                                                 OBS, Premiere via plugin; not Safari
``png``    RGBA PNG sequence in a folder         any editor or compositor; timestamps in
                                                 ``frames.csv``, audio in ``audio.m4a``
``mask``   greyscale matte as H.264 mp4          editors as a luma track matte
=========  ====================================  ======================================
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from vidmat.errors import VidmatError
from vidmat.io.audio import CODEC_NAMES, AudioInfo, AudioPass, av_errors, write_audio_file
from vidmat.io.formats import FORMATS

log = logging.getLogger(__name__)


#: Give up on a file after this many undecodable packets in a row.
_MAX_CONSECUTIVE_ERRORS = 50


# --------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class VideoInfo:
    """What a user (and the writer) needs to know about an input before decoding it."""

    path: Path
    width: int  # as displayed, i.e. after rotation
    height: int
    rotation: int  # degrees counter-clockwise the stored frames are turned for display
    time_base: Fraction
    rate: Fraction | None  # average frame rate (None when unknown)
    frames: int | None  # frame count from the header (None when unknown)
    duration: float | None  # seconds
    start_time: float  # seconds; the container's first timestamp
    codec: str
    audio: AudioInfo | None = None
    #: Where the video stream itself ends, in seconds from zero, when the file says so
    #: (its own duration, or Matroska's per-track DURATION tag); None when only the
    #: container's duration is known, which runs to the end of the longest stream.
    video_end: float | None = None
    audio_tracks: int = 0  # audio streams in the file; the first is the one carried over

    def describe(self) -> str:
        rate = f"{float(self.rate):.3f} fps" if self.rate else "? fps"
        dur = f"{self.duration:.2f} s" if self.duration else "? s"
        audio = f", audio {self.audio.codec} {self.audio.sample_rate} Hz" if self.audio else ""
        return f"{self.width}x{self.height} {self.codec} {rate} {dur}{audio}"


@dataclass
class Frame:
    """One decoded frame: upright RGB pixels and the exact time they are shown at."""

    image: np.ndarray  # uint8 (H, W, 3) RGB, rotated upright
    pts: int  # in time_base units, as in the input
    time_base: Fraction
    index: int  # 0-based decode order
    duration: int = 0  # in time_base units; 0 when unknown

    @property
    def time(self) -> float:
        return float(self.pts * self.time_base)


def _tag_seconds(metadata: dict[str, str]) -> float | None:
    """Matroska's per-track ``DURATION`` tag ("00:00:02.000000000") in seconds, if any."""
    for key, value in metadata.items():
        if key.upper().startswith("DURATION"):
            try:
                h, m, sec = value.strip().split(":")
                return int(h) * 3600 + int(m) * 60 + float(sec)
            except ValueError:
                return None
    return None


def _rotate(image: np.ndarray, rotation: int) -> np.ndarray:
    """Turn stored pixels the way the display matrix says (counter-clockwise degrees)."""
    k = (round(rotation / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


def _open_input(path: Path) -> Any:
    if not path.exists():
        raise VidmatError(f"{path} does not exist.")
    if path.is_dir():
        raise VidmatError(f"{path} is a folder, not a video file.")
    if path.stat().st_size == 0:
        raise VidmatError(f"{path} is empty (0 bytes).")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except PermissionError:
        raise VidmatError(f"{path} cannot be read (permission denied).") from None
    except av_errors():
        raise VidmatError(
            f"{path} is not a video file PyAV/FFmpeg can read (corrupt, truncated or another kind of file)."
        ) from None


class VideoReader:
    """Decode a video file frame by frame, keeping timestamps; use in a ``with`` block.

    ``frames()`` may be called once. After it ends, ``decoded`` is the number of frames
    delivered and ``warnings`` lists what went wrong on the way (corrupt packets, a
    stream that ended before its header said) in user words.
    """

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        self.path = Path(path)
        self._container = _open_input(self.path)
        self.decoded = 0
        self.corrupt_packets = 0
        self.warnings: list[str] = []
        #: Set after the last frame when the file ended before its header said it would
        #: (a truncated download, a damaged file): the frames before that were delivered.
        self.incomplete: str | None = None
        self._first: Any = None
        try:
            self.info = self._probe()
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = "AUTO"
            if threads:
                self._stream.thread_count = threads
            self._peek()
        except VidmatError:
            self.close()
            raise
        except av_errors() as exc:
            self.close()
            raise VidmatError(f"{self.path} cannot be decoded ({_short(exc)}).") from None
        except BaseException:
            self.close()
            raise

    def _probe(self) -> VideoInfo:
        c = self._container
        audio = None
        if c.streams.audio:
            a = c.streams.audio[0]
            ctx = a.codec_context
            audio = AudioInfo(
                index=a.index,
                codec=CODEC_NAMES.get(ctx.name, ctx.name) if ctx else "unknown",
                sample_rate=int(ctx.sample_rate or 0) if ctx else 0,
                channels=int(ctx.channels or 0) if ctx else 0,
                time_base=a.time_base or Fraction(1, 1000),
                duration=float(a.duration * a.time_base) if a.duration and a.time_base else None,
            )
        if not c.streams.video:
            if audio is not None:
                raise VidmatError(f"{self.path} has audio only and no video to convert.")
            raise VidmatError(f"{self.path} has no video stream.")
        v = c.streams.video[0]
        ctx = v.codec_context
        if ctx is None or not ctx.width or not ctx.height:
            raise VidmatError(f"{self.path} has a video stream with no picture size (corrupt?).")
        tb = v.time_base or Fraction(1, 90000)
        duration = None
        video_end = _tag_seconds(v.metadata)
        if v.duration:
            duration = float(v.duration * tb)
            video_end = float(((v.start_time or 0) + v.duration) * tb)
        elif c.duration:
            duration = c.duration / av.time_base
        rate = v.average_rate or v.guessed_rate or None
        return VideoInfo(
            path=self.path,
            width=int(ctx.width),
            height=int(ctx.height),
            rotation=0,
            time_base=tb,
            rate=Fraction(rate) if rate else None,
            frames=int(v.frames) or None,
            duration=duration,
            start_time=(c.start_time / av.time_base) if c.start_time is not None else 0.0,
            codec=ctx.name,
            audio=audio,
            video_end=video_end,
            audio_tracks=len(c.streams.audio),
        )

    def _peek(self) -> None:
        """Decode the first frame now: its display matrix gives the rotation and an input
        with no decodable frame fails here, before any output file exists."""
        self._raw = self._decode_raw()
        first = next(self._raw, None)
        if first is None:
            raise VidmatError(f"{self.path} has no video frames that can be decoded.")
        self._first = first
        rotation = int(first.rotation or 0) % 360
        w, h = first.width, first.height
        if rotation % 180:
            w, h = h, w
        self.info = replace(self.info, rotation=rotation, width=w, height=h)

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._container.close()

    def _decode_raw(self) -> Iterator[Any]:
        """PyAV frames of the video stream; corrupt packets are skipped and counted."""
        consecutive = 0
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av_errors() as exc:
                self.warnings.append(f"reading stopped early ({_short(exc)})")
                return
            try:
                decoded = packet.decode()
                consecutive = 0
            except av_errors():
                self.corrupt_packets += 1
                consecutive += 1
                if consecutive >= _MAX_CONSECUTIVE_ERRORS:
                    self.warnings.append("too many undecodable packets in a row; stopped there")
                    return
                continue
            yield from decoded

    def frames(self) -> Iterator[Frame]:
        """Decoded frames in presentation order, upright RGB, with their pts."""
        tb = self.info.time_base
        last_pts: int | None = None
        last_len = 0
        step = max(1, round(1 / (self.info.rate * tb))) if self.info.rate else 1
        first, self._first = self._first, None
        if first is None:
            return
        corrupt_frames = 0
        last_corrupt = False
        for frame in itertools.chain([first], self._raw):
            # The decoder flags a picture it had to patch up (data missing or damaged).
            last_corrupt = bool(frame.is_corrupt)
            corrupt_frames += last_corrupt
            pts = frame.pts
            if pts is None or (last_pts is not None and pts <= last_pts):
                # Missing or repeated timestamps (some AVI/raw streams): continue the clock.
                pts = (last_pts + step) if last_pts is not None else 0
            image = frame.to_ndarray(format="rgb24")
            rotation = int(frame.rotation or 0)
            if rotation:
                image = _rotate(image, rotation)
            if image.shape[:2] != (self.info.height, self.info.width):
                # A mid-stream size change: keep the output size, scale this frame to it.
                image = cv2.resize(image, (self.info.width, self.info.height))
            yield Frame(image, int(pts), tb, self.decoded, int(frame.duration or 0) or step)
            # The last frame's length, for where the picture ends: the gap before it, else
            # its own (an AVI with drop frames has an average rate and frame durations of
            # one tick, both misleading, and pads its frame count with the empty chunks).
            last_len = (
                (pts - last_pts) if last_pts is not None else int(frame.duration or 0) or step
            )
            last_pts = int(pts)
            self.decoded += 1
        if self.corrupt_packets:
            self.warnings.append(f"{self.corrupt_packets} corrupt packet(s) skipped")
        expected = self.info.frames
        end = float((last_pts + last_len) * tb) if last_pts is not None else 0.0
        known = self.info.video_end
        # Where the file gives the video's own end, reaching it means nothing is missing at
        # the end, whatever the frame count says (an AVI counts its empty drop-frame chunks).
        # Two frames' (or 2 %) slack: the last frame's length is a guess on variable rates.
        slack = max(2 * float(max(step, last_len) * tb), 0.02 * (known or 0.0))
        short = known is not None and end < known - slack
        if expected and self.decoded < expected and (self.warnings or self.corrupt_packets):
            # Decoding failed somewhere: frames are lost, wherever they were.
            self.incomplete = f"only {self.decoded} of {expected} frames could be decoded"
        elif expected and self.decoded < expected * 0.98 - 1 and (known is None or short):
            # Headers can over-count by a frame or two; more than that is a cut-off file.
            self.incomplete = f"only {self.decoded} of {expected} frames could be decoded"
        elif not expected and last_pts is not None:
            # No frame count in the header (Matroska, MPEG-TS): compare times instead, with
            # the video's own end where the file gives it. The container's duration runs to
            # the end of the longest stream (audio that outlasts the picture), so a
            # shortfall against it alone is only worth a warning.
            if short:
                assert known is not None
                self.incomplete = (
                    f"decoding stopped after {self.decoded} frames at {end:.1f} s of {known:.1f} s"
                )
            elif known is None and self.info.duration:
                whole = self.info.start_time + self.info.duration
                if end < whole - max(0.5, 0.05 * self.info.duration):
                    self.warnings.append(
                        f"the picture stops at {end:.1f} s of the file's {whole:.1f} s "
                        "(truncated file, or audio that runs on?)"
                    )
        if last_corrupt and self.incomplete is None:
            # A stream with no frame count or end time (MPEG-TS) cut off part way through a
            # picture: the only sign is the decoder's flag on the last frame. One cut cleanly
            # between pictures cannot be told from a shorter file.
            self.incomplete = f"the file ends part way through frame {self.decoded}"
            corrupt_frames -= 1
        if corrupt_frames:
            self.warnings.append(
                f"{corrupt_frames} damaged frame(s) decoded with the missing parts filled in"
            )


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]


def probe(path: str | Path) -> VideoInfo:
    """Open, read the header, close. Raises :class:`VidmatError` with one sentence."""
    with VideoReader(path) as r:
        return r.info


def read_frames(path: str | Path) -> Iterator[Frame]:
    """Every frame of a file (convenience for tests and small tools)."""
    with VideoReader(path) as r:
        yield from r.frames()


# --------------------------------------------------------------------------- writing
@dataclass(frozen=True)
class EncodeConfig:
    """Encoder settings; defaults are visually lossless for greenscreen work."""

    crf: int | None = None  # None = per format: H.264 18, VP9 30
    preset: str = "medium"  # x264 preset
    png_compression: int = 3  # 0..9; 3 is ~4x faster than 9 for ~10% larger files

    def h264_crf(self) -> int:
        return 18 if self.crf is None else self.crf

    def vp9_crf(self) -> int:
        return 30 if self.crf is None else self.crf


class VideoWriter:
    """Write frames in one of :data:`FORMATS` to ``path`` (a file, or a folder for png).

    ``path`` should be a temporary name (see :func:`vidmat.io.files.atomic_output`);
    the writer creates it and never renames. ``write(image, pts)`` takes uint8 RGB
    (H, W, 3) or RGBA (H, W, 4); for alpha formats an RGB image gets opaque alpha, for
    opaque formats RGBA's alpha is dropped (compositing is the caller's job).
    """

    def __init__(
        self,
        path: str | Path,
        fmt: str,
        width: int,
        height: int,
        time_base: Fraction,
        rate: Fraction | None = None,
        audio_from: VideoInfo | None = None,
        encode: EncodeConfig | None = None,
        time_offset: float = 0.0,
    ) -> None:
        if fmt not in FORMATS:
            raise VidmatError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}.")
        self.path = Path(path)
        self.fmt = fmt
        self.alpha = FORMATS[fmt][1]
        self.encode_cfg = encode or EncodeConfig()
        self.width, self.height = int(width), int(height)
        self.time_base = Fraction(time_base)
        self.rate = Fraction(rate) if rate else None
        self.frames = 0
        self.audio_packets = 0
        self.audio_skipped = 0  # damaged audio packets left out of the output
        self.offset_ticks = round(time_offset / self.time_base) if time_offset else 0
        self._time_offset = time_offset
        self._closed = False
        self._audio: AudioPass | None = None
        self._container: Any = None
        self._stream: Any = None
        self.padded: tuple[int, int] | None = None
        self._durations: dict[int, int] = {}
        self.audio_copied: bool | None = None
        if fmt == "png":
            self._open_png(audio_from)
        else:
            self._open_video(audio_from)

    # -- setup
    def _open_png(self, audio_from: VideoInfo | None) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self._csv_file = open(self.path / "frames.csv", "w", newline="")  # noqa: SIM115
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow(["file", "pts", "time_base", "seconds"])
        self._audio_src = audio_from if audio_from and audio_from.audio else None

    def _open_video(self, audio_from: VideoInfo | None) -> None:
        fmt = self.fmt
        w, h = self.width, self.height
        if fmt in ("mp4", "mask") and (w % 2 or h % 2):
            self.padded = (w + w % 2, h + h % 2)
            w, h = self.padded
        container_fmt = {"mp4": "mp4", "mask": "mp4", "mov": "mov", "webm": "webm"}[fmt]
        try:
            self._container = av.open(str(self.path), "w", format=container_fmt)
        except av_errors() as exc:
            raise VidmatError(f"cannot create {self.path} ({_short(exc)}).") from None
        rate = self.rate or Fraction(30)
        if fmt in ("mp4", "mask"):
            opts = {"crf": str(self.encode_cfg.h264_crf()), "preset": self.encode_cfg.preset}
            s = self._container.add_stream("libx264", rate=rate, options=opts)
            s.pix_fmt = "yuv420p"
            self._src_format = "rgb24"
        elif fmt == "mov":
            s = self._container.add_stream(
                "prores_ks", rate=rate, options={"profile": "4444", "alpha_bits": "16"}
            )
            s.pix_fmt = "yuva444p10le"
            self._src_format = "rgba"
        else:  # webm
            opts = {
                "crf": str(self.encode_cfg.vp9_crf()),
                "b": "0",
                "deadline": "good",
                "cpu-used": "5",
                "row-mt": "1",
            }
            s = self._container.add_stream("libvpx-vp9", rate=rate, options=opts)
            s.pix_fmt = "yuva420p"
            self._src_format = "rgba"
        s.width, s.height = w, h
        s.time_base = self.time_base
        s.codec_context.time_base = self.time_base
        s.thread_type = "AUTO"
        self._stream = s
        if audio_from is not None and audio_from.audio is not None:
            try:
                self._audio = AudioPass(
                    audio_from.path,
                    audio_from.audio,
                    self._container,
                    "mp4" if fmt == "mask" else fmt,
                    self._time_offset,
                )
            except av_errors() as exc:
                log.warning("audio not written: %s", _short(exc))
                self._audio = None

    # -- frames
    def _prepare(self, image: np.ndarray) -> np.ndarray:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f"expected uint8 (H, W, 3|4), got {image.dtype} {image.shape}")
        if image.shape[0] != self.height or image.shape[1] != self.width:
            raise ValueError(
                f"frame is {image.shape[1]}x{image.shape[0]}, the stream {self.width}x{self.height}"
            )
        if self.alpha and image.shape[2] == 3:
            image = np.concatenate([image, np.full((*image.shape[:2], 1), 255, np.uint8)], 2)
        elif not self.alpha and image.shape[2] == 4:
            image = image[..., :3]
        if self.padded:
            pw, ph = self.padded
            image = np.pad(
                image, ((0, ph - image.shape[0]), (0, pw - image.shape[1]), (0, 0)), mode="edge"
            )
        return np.ascontiguousarray(image)

    def write(self, image: np.ndarray, pts: int, duration: int = 0) -> None:
        """Encode one frame shown at ``pts`` (in the writer's time base)."""
        image = self._prepare(image)
        pts = int(pts) - self.offset_ticks
        if self.fmt == "png":
            self._write_png(image, pts)
            return
        frame = av.VideoFrame.from_ndarray(image, format=self._src_format)
        frame.pts = pts
        frame.time_base = self.time_base
        if duration:
            frame.duration = int(duration)
            # Encoders do not all carry a frame's duration to its packet (ProRes, and
            # x264 reorders them); the muxer needs it for the last frame's length.
            self._durations[pts] = int(duration)
        self._mux_video(self._stream.encode(frame))
        self.frames += 1
        if self._audio is not None and self.frames % 8 == 0:
            self._audio.write_until(
                self._container, float(pts * self.time_base) + self._time_offset + 1.0
            )

    def _mux_video(self, packets: list[Any]) -> None:
        for packet in packets:
            if packet.pts is not None:
                d = self._durations.pop(packet.pts, 0)
                if d:
                    packet.duration = d
            self._container.mux(packet)

    def _write_png(self, rgba: np.ndarray, pts: int) -> None:
        name = f"frame_{self.frames + 1:06d}.png"
        bgra = cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)
        ok, data = cv2.imencode(
            ".png", bgra, [cv2.IMWRITE_PNG_COMPRESSION, self.encode_cfg.png_compression]
        )
        if not ok:
            raise VidmatError(f"could not encode PNG frame {self.frames + 1}.")
        # An OSError (disk full) goes up as it is: the caller knows the final name to report.
        (self.path / name).write_bytes(data.tobytes())
        self._csv.writerow([name, pts, str(self.time_base), f"{float(pts * self.time_base):.6f}"])
        self.frames += 1

    # -- finish
    def close(self) -> None:
        """Flush the encoder and the rest of the audio, then close the file."""
        if self._closed:
            return
        self._closed = True
        if self.fmt == "png":
            self._csv_file.close()
            if self._audio_src is not None and self._audio_src.audio is not None:
                self.audio_copied = write_audio_file(
                    self._audio_src.path,
                    self._audio_src.audio,
                    self.path / "audio.m4a",
                    self._time_offset,
                )
                self.audio_packets = 1
            return
        try:
            self._mux_video(self._stream.encode(None))
            if self._audio is not None:
                self._audio.write_until(self._container, None)
                self.audio_packets = self._audio.packets
                self.audio_skipped = self._audio.skipped
                self.audio_copied = self._audio.copy
        finally:
            if self._audio is not None:
                self._audio.close()
            self._container.close()

    def abort(self) -> None:
        """Stop without flushing (Ctrl-C, error); the caller removes the temporary output."""
        if self._closed:
            return
        self._closed = True
        if self.fmt == "png":
            with contextlib.suppress(Exception):
                self._csv_file.close()
            return
        if self._audio is not None:
            self._audio.close()
        with contextlib.suppress(Exception):
            self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
