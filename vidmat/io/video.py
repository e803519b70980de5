"""Video files in and out through PyAV, with timestamps, rotation and audio kept exactly.

Why this module exists: peers round 23.976 fps to 24, drop the audio, call an mp4
"transparent" and decode on one thread. Here

* :class:`VideoReader` decodes with ``thread_type="AUTO"`` and yields :class:`Frame`
  objects that keep their ``pts`` and ``time_base``; frames are turned upright (and
  un-mirrored) from the display matrix (a phone's portrait clip is stored sideways), so
  the model sees people standing up and every output format (PNG has no display matrix)
  shows them the same way. A corrupt packet is skipped and counted instead of ending
  the job.
* :class:`VideoWriter` writes one of :data:`FORMATS` with the input's own time base and
  the frames' own pts (so variable frame rate and 23.976 survive, and a last frame held
  for seconds keeps its length), copies the audio packets when the container can hold
  the codec (else re-encodes: AAC, or Opus in WebM which cannot hold AAC), keeps the
  input's pixel aspect ratio (anamorphic DV/DVD), and always flushes.

Colour: pictures are stored as YUV with one of several matrices, and a player picks the
matrix from the file's tags, or from the picture size when there are none (BT.709 for
HD, BT.601 for SD). The reader decodes with the tagged matrix and range, and an untagged
file the way players do; the writer encodes with the input's matrix (BT.709 when the
input's cannot be written, or when there is no input) and tags it, primaries and
transfer and limited range in the output, so a player shows the input's colours and the
greenscreen's exact #00B140 (an untagged BT.601 output, as before, shifted it to about
#00983D in players that read untagged HD as BT.709). HDR input (PQ/HLG) is written as
SDR without tone mapping, with a warning.

Odd sizes: yuv420p cannot store them, so the composite ``mp4`` is padded by one edge
pixel (it must play everywhere); the ``mask`` keeps the exact size, so it lines up as a
track matte, in H.264 4:0:0 (greyscale; allowed by the High profile), which FFmpeg-based
players and tools decode but many hardware decoders, browsers and some editors do not.

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

import collections
import contextlib
import csv
import itertools
import logging
import math
import stat
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from av.sidedata.sidedata import Type as SideDataType
from av.video.reformatter import (
    ColorPrimaries,
    ColorRange,
    Colorspace,
    ColorTrc,
    Interpolation,
    VideoReformatter,
)

from vidmat.errors import VidmatError
from vidmat.io.audio import (
    CODEC_NAMES,
    PAST_PICTURE,
    AudioInfo,
    AudioPass,
    LeftOut,
    NoSound,
    iso_language,
    open_tracks,
    track_title,
    write_audio_file,
)
from vidmat.io.channels import channel_list
from vidmat.io.formats import FORMATS, FRAME_AUDIO, FRAME_CSV, frame_name
from vidmat.io.matroska import set_display_size
from vidmat.io.pyav import av_errors, open_input
from vidmat.io.timeline import Timeline, can_jump, scan_timeline

log = logging.getLogger(__name__)


#: swscale's flags for YUV -> RGB. Its default (fast, SIMD) path truncates: every picture
#: came out about one level darker than it went in, the person too, in every format
#: (QA: -1.06 luma; -1.2 R, -1.4 G in a 1080p gradient). Accurate rounding needs full
#: chroma interpolation beside it (alone it was -2.3): within 0.02, for about 6 ms more a
#: 1080p frame on 2 cores (swscale threads it).
TO_RGB = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
#: RGB -> YUV: accurate rounding took the encoder's -0.2 level to 0.01, at no cost measured.
FROM_RGB = Interpolation.BILINEAR | Interpolation.ACCURATE_RND


#: Give up on a file after this many undecodable packets in a row.
_MAX_CONSECUTIVE_ERRORS = 50

#: "Unspecified" in FFmpeg's AVColorSpace, AVColorPrimaries and AVColorTransferCharacteristic.
_UNSPECIFIED = 2


class Matrix:
    """FFmpeg's AVColorSpace numbers (the H.264/HEVC/VP9 matrix codes); PyAV names only
    swscale's coefficient sets (:class:`Colorspace`), whose numbers differ."""

    RGB = 0
    BT709 = 1
    BT470BG = 5  # BT.601 625 lines (PAL)
    SMPTE170M = 6  # BT.601 525 lines (NTSC)
    BT2020_NCL = 9


#: Matrices swscale has no coefficients for (it refuses the picture), with the nearest set
#: it has and the name a warning gives: YCgCo, BT.2020 constant luminance, SMPTE 2085,
#: chromaticity-derived and ICtCp.
_UNCONVERTIBLE: dict[int, tuple[Colorspace, str]] = {
    8: (Colorspace.ITU709, "YCgCo"),
    10: (Colorspace.BT2020, "BT.2020 constant luminance"),
    11: (Colorspace.ITU709, "SMPTE 2085"),
    12: (Colorspace.ITU709, "chromaticity-derived (non-constant)"),
    13: (Colorspace.ITU709, "chromaticity-derived (constant)"),
    14: (Colorspace.BT2020, "ICtCp"),
}

#: Matrices the writer can encode with: swscale's coefficients and the default primaries
#: to tag beside each when the input tags none.
_ENCODABLE: dict[int, tuple[Colorspace, int]] = {
    Matrix.BT709: (Colorspace.ITU709, ColorPrimaries.BT709),
    Matrix.BT470BG: (Colorspace.ITU601, ColorPrimaries.BT470BG),
    Matrix.SMPTE170M: (Colorspace.ITU601, ColorPrimaries.SMPTE170M),
    Matrix.BT2020_NCL: (Colorspace.BT2020, ColorPrimaries.BT2020),
}


@dataclass(frozen=True)
class Colour:
    """How a file's RGB is stored as YUV: matrix, primaries and transfer (FFmpeg's numbers).

    The matrix decides which YUV a colour becomes; a player that decodes with another
    one shows other colours. Primaries and transfer are carried as tags only (nothing
    here converts gamuts or curves).
    """

    matrix: int = Matrix.BT709
    primaries: int = ColorPrimaries.BT709
    trc: int = ColorTrc.BT709

    @property
    def hdr(self) -> bool:
        """PQ (HDR10, Dolby Vision) or HLG: a curve SDR outputs cannot carry."""
        return self.trc in (ColorTrc.SMPTE2084, ColorTrc.ARIB_STD_B67)

    @staticmethod
    def for_size(width: int, height: int) -> Colour:
        """What players assume for an untagged picture of this size (mpv's and most
        players' rule): BT.709 for HD, BT.601 for SD."""
        if width >= 1280 or height > 576:
            return Colour()
        return Colour(Matrix.SMPTE170M, ColorPrimaries.SMPTE170M, ColorTrc.BT709)

    def for_output(self) -> Colour:
        """What an SDR output of pictures with these tags is encoded with and tagged as:
        the same, with defaults for missing tags, BT.709 for a matrix the writer cannot
        encode, and the SDR curve for HDR (written without tone mapping)."""
        if self.matrix not in _ENCODABLE:
            return Colour()
        primaries = self.primaries
        if primaries == _UNSPECIFIED:
            primaries = _ENCODABLE[self.matrix][1]
        trc = ColorTrc.BT709 if self.trc == _UNSPECIFIED or self.hdr else self.trc
        return Colour(self.matrix, primaries, trc)


# --------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class VideoInfo:
    """What a user (and the writer) needs to know about an input before decoding it."""

    path: Path
    width: int  # as displayed, i.e. after rotation
    height: int
    rotation: int  # degrees counter-clockwise the stored frames are turned for display
    # (a left-right mirror reads as 180 here; the reader un-mirrors it, see _display_turn)
    time_base: Fraction
    rate: Fraction | None  # average frame rate (None when unknown)
    frames: int | None  # frame count from the header (None when unknown)
    duration: float | None  # seconds
    start_time: float  # seconds; the container's first timestamp
    codec: str
    #: The audio streams, in the file's order; every one is carried into the output.
    audio_streams: tuple[AudioInfo, ...] = ()
    #: Where the video stream itself ends, in seconds from zero, when the file says so
    #: (its own duration, or Matroska's per-track DURATION tag); None when only the
    #: container's duration is known, which runs to the end of the longest stream.
    video_end: float | None = None
    #: Width:height of one pixel as displayed (after rotation); None for square pixels.
    #: Anamorphic PAL DV is 720x576 at 64:45, shown 1024x576.
    sample_aspect_ratio: Fraction | None = None
    #: The pictures' colour tags, with the matrix the reader decoded an untagged file with.
    colour: Colour = Colour()
    #: When the first picture is shown, in input seconds (None: not known).
    video_start: float | None = None
    #: Where an MPEG-TS/PS clock jumps (parts joined end to end), the shifts that play
    #: the parts in turn; the reader and the audio apply them, and ``duration`` and
    #: ``video_end`` are the joined ones. None: the timestamps are used as stored.
    timeline: Timeline | None = None

    @property
    def frames_expected(self) -> int | None:
        """The frame count for a progress bar: the header's, else duration x rate. Matroska
        and WebM (what OBS records) store no count, and their bars showed no total or
        time left; the estimate is off by a frame or two where the rate varies."""
        if self.frames:
            return self.frames
        # The video's own span where known: the container's runs to its longest stream.
        span = self.video_end - self.start_time if self.video_end else self.duration
        if span and span > 0 and self.rate:
            return max(1, round(span * float(self.rate)))
        return None

    @property
    def output_zero(self) -> float:
        """The input time an output starts at: the file's start, or 0 for a file that
        starts a little before 0 with its picture at 0 (an MP4's sound priming, which
        its edit list hides). A picture before 0 (an MPEG-TS clock FFmpeg unwraps to
        negative times just before its 26.5-hour wrap) starts the output: else the
        frames before 0 went under an edit list that hid them (25 of 50 frames lost,
        'converted' whole)."""
        if self.start_time > 0 or (self.video_start is not None and self.video_start < 0):
            return self.start_time
        return 0.0

    @property
    def audio(self) -> AudioInfo | None:
        """The first audio stream, what a player plays unless told otherwise."""
        return self.audio_streams[0] if self.audio_streams else None

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


#: How stored pixels are turned for display: (transpose, mirror left-right, mirror
#: top-bottom), applied in that order.
_Turn = tuple[bool, bool, bool]
_UPRIGHT: _Turn = (False, False, False)


def _display_turn(frame: Any) -> _Turn:
    """The display matrix as axis swaps and mirrors (quarter turns and flips only).

    The matrix maps a stored pixel (x, y) to (a*x + c*y, b*x + d*y) on screen. Reading
    its four cells, not only the rotation angle PyAV derives from them, tells a
    mirrored picture from a turned one: a left-right mirror reads as a 180 degree
    rotation, which turned such clips upside down.
    """
    try:
        data = bytes(frame.side_data[SideDataType.DISPLAYMATRIX])
    except (KeyError, ValueError, TypeError):
        return _UPRIGHT
    if len(data) < 36:
        return _UPRIGHT
    m = np.frombuffer(data[:36], dtype=np.int32)
    a, b, c, d = int(m[0]), int(m[1]), int(m[3]), int(m[4])
    if abs(a) + abs(d) >= abs(b) + abs(c):
        return (False, a < 0, d < 0)
    return (True, c < 0, b < 0)


def _apply_turn(image: np.ndarray, turn: _Turn) -> np.ndarray:
    """Stored pixels as displayed (see :func:`_display_turn`)."""
    if turn == _UPRIGHT:
        return image
    transpose, mirror_x, mirror_y = turn
    if transpose:
        image = image.transpose(1, 0, 2)
    if mirror_x:
        image = image[:, ::-1]
    if mirror_y:
        image = image[::-1]
    return np.ascontiguousarray(image)


def _open_input(path: Path) -> Any:
    if not path.exists():
        raise VidmatError(f"{path} does not exist.")
    if path.is_dir():
        raise VidmatError(f"{path} is a folder, not a video file.")
    if not stat.S_ISREG(path.stat().st_mode):
        # `cat clip.mp4 | vidmat convert /dev/stdin` read as "is empty (0 bytes)"
        raise VidmatError(
            f"{path} is a pipe or device, not a file; vidmat reads video files (save the "
            "stream to a file and give that)."
        )
    if path.stat().st_size == 0:
        raise VidmatError(f"{path} is empty (0 bytes).")
    try:
        return open_input(path)
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
        #: What is worth saying of a file that reads fine (it is interlaced): not warnings.
        self.notes: list[str] = []
        self._read_failed = False  # reading stopped on an error: frames after it are lost
        #: Set after the last frame when the file ended before its header said it would
        #: (a truncated download, a damaged file): the frames before that were delivered.
        self.incomplete: str | None = None
        self._first: Any = None
        #: swscale's matrix for untagged frames, where it differs from FFmpeg's BT.601.
        self._guess: Colorspace | None = None
        #: One converter for every frame: ``to_ndarray`` built one per frame, with a worker
        #: thread per core each, kept until the garbage collector freed the frame (a soak
        #: run climbed to 440 threads on 2 cores, 50 new ones a second).
        self._to_rgb = VideoReformatter()
        #: The display matrix, read off the first frame: reading a frame's side data ties
        #: it in a reference cycle, so every frame waited for the garbage collector.
        self._turn: _Turn = _UPRIGHT
        try:
            self.info = self._probe()
            timeline = self.info.timeline
            #: Counts the packets read from the start to shift each (see io/timeline).
            self._clock = timeline.clock() if timeline is not None and timeline.moves else None
            self._stream = main_video_stream(self._container)
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
        audio = tuple(_audio_info(a, n) for n, a in enumerate(c.streams.audio, 1))
        if not c.streams.video:
            if audio:
                raise VidmatError(f"{self.path} has audio only and no video.")
            raise VidmatError(f"{self.path} has no video stream.")
        if audio and all(_is_picture(s) for s in c.streams.video):
            # a song or podcast with cover art: its one picture was "decoding stopped
            # after 1 frames at 0.0 s of 2.0 s" (truncated or damaged, exit 2)
            raise VidmatError(f"{self.path} has audio and a cover picture only, no video.")
        v = main_video_stream(c)
        ctx = v.codec_context
        if ctx is None or not ctx.width or not ctx.height:
            raise VidmatError(f"{self.path} has a video stream with no picture size (corrupt?).")
        others = [o for o in c.streams.video if o is not v and not _is_picture(o)]
        if others:
            largest = max((v, *others), key=lambda o: (_area(o), -o.index))
            why = "the largest" if largest is v else "marked default"
            self.warnings.append(
                f"the file has {len(others) + 1} video streams; taking stream {v.index} "
                f"({ctx.width}x{ctx.height}, {why}), not " + ", ".join(str(o.index) for o in others)
            )
        tb = v.time_base or Fraction(1, 90000)
        duration = None
        video_end = _tag_seconds(v.metadata)
        if v.duration:
            duration = float(v.duration * tb)
            video_end = float(((v.start_time or 0) + v.duration) * tb)
        elif c.duration:
            duration = c.duration / av.time_base
        start = (c.start_time / av.time_base) if c.start_time is not None else 0.0
        timeline = None
        if can_jump(c):
            timeline = scan_timeline(self.path, [v.index, *(a.index for a in audio)])
        if timeline is not None and timeline.joined:
            self.notes.append(timeline.describe())
        if timeline is not None and timeline.moves:
            video_end = timeline.ends.get(v.index, video_end)
            duration = max(timeline.ends.values()) - start
        rate = _plausible_rate(v.average_rate) or _plausible_rate(v.guessed_rate)
        # The container's pixel aspect ratio, else the codec's (FFmpeg's own choice).
        sar = v.sample_aspect_ratio
        return VideoInfo(
            path=self.path,
            width=int(ctx.width),
            height=int(ctx.height),
            rotation=0,
            time_base=tb,
            rate=Fraction(rate) if rate else None,
            frames=int(v.frames) or None,
            duration=duration,
            start_time=start,
            codec=ctx.name,
            audio_streams=audio,
            video_end=video_end,
            sample_aspect_ratio=Fraction(sar) if sar and sar > 0 and sar != 1 else None,
            timeline=timeline,
        )

    def _peek(self) -> None:
        """Decode the first frame now: its display matrix gives the rotation, its tags the
        colours, and an input with no decodable frame fails here, before any output file
        exists."""
        self._raw = self._decode_raw()
        first = next(self._raw, None)
        if first is None:
            raise VidmatError(f"{self.path} has no video frames that can be decoded.")
        self._first = first
        rotation = int(first.rotation or 0) % 360
        w, h = first.width, first.height
        sar = self.info.sample_aspect_ratio
        self._turn = _display_turn(first)
        if self._turn[0]:
            w, h = h, w
            sar = 1 / sar if sar else None  # a pixel turned on its side
        # Untagged pictures are decoded with the matrix players assume for their size
        # (FFmpeg would take BT.601 for all), so the output looks as the input did there.
        guess = Colour.for_size(first.width, first.height)
        self._guess = Colorspace.ITU709 if guess.matrix == Matrix.BT709 else None
        tagged = int(first.colorspace) != _UNSPECIFIED
        colour = Colour(
            int(first.colorspace) if tagged else guess.matrix,
            int(first.color_primaries),
            int(first.color_trc),
        )
        if colour.hdr:
            curve = "PQ" if colour.trc == ColorTrc.SMPTE2084 else "HLG"
            self.warnings.append(
                f"HDR ({curve}) video is written as SDR without tone mapping: "
                "bright parts clip and colours look flat"
            )
        first_time = float(first.pts * first.time_base) if first.pts is not None else None
        self.info = replace(
            self.info,
            rotation=rotation,
            width=w,
            height=h,
            sample_aspect_ratio=sar,
            colour=colour,
            video_start=first_time,
        )

    @property
    def can_seek(self) -> bool:
        """False where :meth:`seek` never can (a file whose packets are read at other
        times than stored: see io/timeline); where True a seek may still fail, and the
        caller reads the file again."""
        return self.info.timeline is None or not self.info.timeline.moves

    def seek(self, seconds: float) -> bool:
        """Make the next :meth:`frames` start at or before ``seconds`` of input time, from
        a keyframe (the first frame when that is before it): a looping background goes
        back to its start, or jumps ahead, without opening the file again or decoding
        every frame in between. MPEG-TS and -PS land on a keyframe after the time asked
        for (a loop showed frames 4, 4, 4, 8 for 0, 1, 2, 3): the seek then backs off, and
        False says it could not get there (the caller opens the file again), as for a file
        whose clock jumps (see :mod:`vidmat.io.timeline`)."""
        if not self.can_seek:
            # Its packets are shifted by their count from the start, which a seek loses:
            # read as stored, a looped background froze on the wrong part.
            return False
        start = self.info.start_time
        target = max(seconds, start)
        # The last try is before the file's start: a TS with B-frames sought to its start
        # lands on its second keyframe; sought to 0 it lands on its first.
        for at in (target, target - 1.0, target - 5.0, min(start, 0.0) - 1.0):
            try:
                self._container.seek(
                    max(0, math.floor(at / self.info.time_base)),
                    stream=self._stream,
                    backward=True,
                )
            except av_errors():
                return False
            self._raw = self._decode_raw()
            self._first = next(self._raw, None)
            landed = None if self._first is None else self._first.time
            if self._first is not None and (landed is None or landed <= target + 1e-6):
                return True
            # past the time asked for, or nothing decoded (a seek near the end): back off
        return False

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    #: Set while another thread may still be inside a decode of this reader (one that
    #: outlasted a cancel's wait): close() then leaves the file open, as closing it under
    #: FFmpeg can crash the process. It is closed when the reader is collected.
    keep_open = False

    def close(self) -> None:
        if self.keep_open:
            return
        with contextlib.suppress(Exception):
            self._container.close()
        # The frame generator refers back to the reader: a reader closed part-way (a
        # cancelled convert, a background reopened to loop) lingered, with its decoder
        # and converter threads, until the garbage collector ran.
        self._raw = iter(())
        self._first = None

    def _decode_raw(self) -> Iterator[Any]:
        """PyAV frames of the video stream; corrupt packets are skipped and counted."""
        consecutive = 0
        packets = self._container.demux(self._stream)
        clock = self._clock
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av_errors() as exc:
                self.warnings.append(f"reading stopped early ({_short(exc)})")
                self._read_failed = True
                yield from self._drain()
                return
            if clock is not None:
                clock.shift(packet)
            try:
                decoded = packet.decode()
                consecutive = 0
            except av_errors():
                self.corrupt_packets += 1
                consecutive += 1
                if consecutive >= _MAX_CONSECUTIVE_ERRORS:
                    self.warnings.append("too many undecodable packets in a row; stopped there")
                    self._read_failed = True
                    yield from self._drain()
                    return
                continue
            yield from decoded

    def _drain(self) -> Iterator[Any]:
        """The frames the decoder still holds (reordered B-frames, frame threads) when
        reading stops before the file's end: the demuxer's end-of-file packet never came,
        and without this the last few decoded pictures were lost."""
        try:
            yield from self._stream.decode(None)
        except av_errors():
            return

    def _rgb(self, frame: Any) -> np.ndarray:
        """The picture as RGB: by its own matrix tag, the size's guess when it has none, and
        the nearest matrix swscale knows for one it has no coefficients for."""
        matrix = int(frame.colorspace)
        if matrix == _UNSPECIFIED and self._guess is not None:
            source: Colorspace | None = self._guess
        elif matrix in _UNCONVERTIBLE:
            source, name = _UNCONVERTIBLE[matrix]
            note = (
                f"the video's colour matrix ({name}) cannot be converted; it was read as "
                f"{'BT.2020' if source == Colorspace.BT2020 else 'BT.709'}, so colours may be off"
            )
            if note not in self.warnings:
                self.warnings.append(note)
        else:
            source = None  # PyAV reads the frame's tags
        try:
            rgb = self._to_rgb.reformat(
                frame, format="rgb24", src_colorspace=source, interpolation=TO_RGB
            )
            return rgb.to_ndarray()
        except av_errors() as exc:
            raise VidmatError(
                f"{self.path}: frame {self.decoded + 1} cannot be converted to RGB ({_short(exc)})."
            ) from None

    def frames(self) -> Iterator[Frame]:
        """Decoded frames in presentation order, upright RGB, with their pts.

        A frame's duration is how long it is shown: the time to the next frame, and for
        the last one the time to where the file says the video ends (or its own). Each
        frame is therefore delivered when the next one is decoded. FFmpeg's own frame
        durations follow decode order in MP4 with B-frames, so a last frame held for
        seconds came out on the frame before it (and the last frame lost its length).
        """
        tb = self.info.time_base
        last_pts: int | None = None
        last_len = 0
        step = max(1, round(1 / (self.info.rate * tb))) if self.info.rate else 1
        first, self._first = self._first, None
        if first is None:
            return
        corrupt_frames = 0
        last_corrupt = False
        gap = 0
        recent: collections.deque[int] = collections.deque(maxlen=RECENT_GAPS)
        resized: str | None = None
        held: Frame | None = None
        for frame, pts in _increasing_times(itertools.chain([first], self._raw), step):
            # The decoder flags a picture it had to patch up (data missing or damaged).
            last_corrupt = bool(frame.is_corrupt)
            if self.decoded == 0 and getattr(frame, "interlaced_frame", False):
                # Written out progressive, players no longer deinterlace it: said, as an
                # MPEG-2 or DV tape capture came out combed without a word. A note, not a
                # warning: warnings are what went wrong, and count as damage below.
                self.notes.append(
                    "the video is interlaced; its frames are converted whole, not "
                    "deinterlaced, so moving edges keep their comb-like lines"
                )
            corrupt_frames += last_corrupt
            image = self._rgb(frame)
            image = _apply_turn(image, self._turn)
            if image.shape[:2] != (self.info.height, self.info.width):
                # A mid-stream size change: keep the output size, scale this frame to it.
                if resized is None:
                    resized = (
                        f"the picture size changes from {self.info.width}x{self.info.height} "
                        f"to {image.shape[1]}x{image.shape[0]} at frame {self.decoded + 1}; "
                        "the frames of other sizes were stretched to the first size"
                    )
                    self.warnings.append(resized)
                image = cv2.resize(image, (self.info.width, self.info.height))
            if held is not None:
                held.duration = int(pts) - held.pts
                yield held
            own = int(frame.duration or 0)
            held = Frame(image, int(pts), tb, self.decoded, own or step)
            # The last frame's length, for where the picture ends: its own, which a file
            # may give as seconds (a VFR WebM holding its last picture); else the gap before
            # it (an AVI with drop frames has an average rate and frame durations of one
            # tick, both too short, and pads its frame count with the empty chunks).
            recent.append(gap)  # the gaps before the last one, the latest few
            gap = (pts - last_pts) if last_pts is not None else 0
            last_len = max(gap, own) or step
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
        # A frame by the widest of the few gaps before the last one, not by the last: a
        # cut Matroska that lost the B-frames before its last picture had a last gap of 4
        # frames, and its slack of 8 frames hid the 6 frames lost. Only the latest few: a
        # 10 s pause early in a screen recording would hide a 20 s cut at its end.
        widest = max(recent, default=0)
        slack = max(2 * float(max(step, widest) * tb), 0.02 * (known or 0.0))
        short = known is not None and end < known - slack
        # Damage only: other warnings (HDR shown as SDR, a second video stream, a matrix
        # read as the nearest) are no sign of frames lost, and with a header a frame over
        # they made a whole file "only N of N+1 frames" (exit 2).
        if expected and self.decoded < expected and (self._read_failed or self.corrupt_packets):
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
        if held is not None:
            if known is not None and self.incomplete is None:
                # Shown until the video's own end, which is where an MP4 says how long its
                # last frame lasts. Not shorter than its own length by the millisecond an
                # MP4 edit list rounds its end to, a few ticks before the last frame's end;
                # nor longer: with B-frames the length FFmpeg gives follows decode order,
                # and a last frame 40 ms long came with the 29.9 s of the gap before it
                # (a 30 s clip converted to 60 s).
                end = round(known / tb) - held.pts
                if end > 0:
                    rounding = math.ceil(0.001 / tb) + 1
                    held.duration = (
                        end if held.duration > end + rounding else max(held.duration, end)
                    )
            yield held


#: How many of the gaps before a video's last frame set the slack of its end (frames).
RECENT_GAPS = 8

#: The most frames of one repeated timestamp held back to be spread over the time to the
#: next one; a longer run (a stream whose clock stands still) continues the clock instead.
REPEAT_RUN = 16


def _increasing_times(frames: Iterator[Any], step: int) -> Iterator[tuple[Any, int]]:
    """Each decoded frame with a timestamp later than the one before.

    A missing timestamp (raw streams) continues the clock by a frame. Frames repeating
    the last one's (a muxer's rounding, some screen recorders) are spread evenly over
    the time to the next real one: continuing the clock by a frame each pushed every
    later frame later too (0, 33, 33, 67 ms ... came out 0, 33, 66, 67, then 64 ms
    behind the sound). Up to :data:`REPEAT_RUN` of them, and where that time has room.
    """
    last: int | None = None
    run: list[Any] = []

    def continue_clock() -> Iterator[tuple[Any, int]]:
        nonlocal last
        for f in run:
            last = (last + step) if last is not None else 0
            yield f, last
        run.clear()

    steady = False
    for frame in frames:
        pts = frame.pts
        if pts is not None and last is not None and pts > last:
            steady = False
        if pts is None:
            yield from continue_clock()
            last = (last + step) if last is not None else 0
            yield frame, last
        elif last is None or pts > last:
            if run and last is not None and pts - last > len(run):
                gap, n = pts - last, len(run) + 1
                for k, f in enumerate(run, 1):
                    yield f, last + k * gap // n
                run.clear()
            yield from continue_clock()
            last = max(int(pts), last + step) if last is not None and pts <= last else int(pts)
            yield frame, last
        elif steady:  # past REPEAT_RUN repeats: the clock goes on until a real time passes it
            last += step
            yield frame, last
        else:
            run.append(frame)
            if len(run) > REPEAT_RUN:
                yield from continue_clock()
                steady = True
    yield from continue_clock()


def _is_picture(stream: Any) -> bool:
    """Cover art or a thumbnail: a video stream of one attached picture."""
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _is_default(stream: Any) -> bool:
    return bool(stream.disposition & av.stream.Disposition.default)


#: What marking a stream default is worth against picture area, as in the ffmpeg command
#: line's own pick: about a 2236x2236 picture, so a default track wins unless another is
#: far larger.
DEFAULT_STREAM_BONUS = 5_000_000


def _area(stream: Any) -> int:
    ctx = stream.codec_context
    return (ctx.width or 0) * (ctx.height or 0) if ctx is not None else 0


def main_video_stream(container: Any) -> Any:
    """The video stream to convert, as the ffmpeg command line picks one: not cover art,
    then the largest picture with a default mark counted as :data:`DEFAULT_STREAM_BONUS`
    pixels (the first of equals). The first stream was taken: a small preview track
    before the main one was converted."""
    streams = [s for s in container.streams.video if not _is_picture(s)]
    streams = streams or list(container.streams.video)
    return max(
        streams,
        key=lambda s: (_area(s) + (DEFAULT_STREAM_BONUS if _is_default(s) else 0), -s.index),
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

    ``sample_aspect_ratio`` and ``colour`` are the input's (:class:`VideoInfo`): the
    output is tagged with the same pixel shape and encoded with the same matrix. After
    ``close()``, ``warnings`` says what the chosen format could not keep.
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
        sample_aspect_ratio: Fraction | None = None,
        colour: Colour | None = None,
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
        self._audio: list[AudioPass] = []
        self._container: Any = None
        self._stream: Any = None
        self.padded: tuple[int, int] | None = None
        #: An odd-sized mask is stored as greyscale H.264 (4:0:0), which allows odd sides.
        self.monochrome = False
        self.warnings: list[str] = []
        sar = Fraction(sample_aspect_ratio) if sample_aspect_ratio else None
        self.sample_aspect_ratio = sar if sar and sar > 0 and sar != 1 else None
        self.colour = (colour or Colour.for_size(self.width, self.height)).for_output()
        self._durations: dict[int, int] = {}
        # Where the last shown frame ends (pts + its duration), when the caller said.
        self._last_shown: tuple[int, int] | None = None
        self._first_pts: int | None = None
        self._first_dts: int | None = None
        self._held: Any = None  # the newest video packet; see _queue_video
        self._reformatter = VideoReformatter()
        #: The input's audio tracks written, each with whether it was stream-copied (True)
        #: or re-encoded; set when the output is closed.
        self.audio_tracks: list[tuple[AudioInfo, bool]] = []
        #: The input whose audio tracks the output carries (None: no audio).
        self._audio_src = audio_from if audio_from and audio_from.audio_streams else None
        if fmt == "png":
            self._open_png()
        else:
            self._open_video()

    # -- setup
    def _open_png(self) -> None:
        if self.sample_aspect_ratio is not None:
            sar = self.sample_aspect_ratio
            shown = round(self.width * sar)
            self.warnings.append(
                f"PNG has square pixels: the input's {sar.numerator}:{sar.denominator} pixel "
                f"aspect ratio is not kept; scale the frames to {shown}x{self.height} to show "
                "them as the input was shown"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self._csv_file = open(self.path / FRAME_CSV, "w", newline="")  # noqa: SIM115
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow(["file", "pts", "time_base", "seconds"])

    def _open_video(self) -> None:
        fmt = self.fmt
        w, h = self.width, self.height
        odd = bool(w % 2 or h % 2)
        if fmt == "mp4" and odd:
            self.padded = (w + w % 2, h + h % 2)
            w, h = self.padded
        elif fmt == "mask" and odd:
            # A padded matte would no longer line up with its clip as a track matte.
            self.monochrome = True
            self.warnings.append(
                f"the {w}x{h} mask keeps its odd size as greyscale (4:0:0) H.264, which "
                "FFmpeg-based players and tools read but many hardware decoders, browsers "
                "and some editors do not"
            )
        container_fmt = {"mp4": "mp4", "mask": "mp4", "mov": "mov", "webm": "webm"}[fmt]
        try:
            self._container = av.open(str(self.path), "w", format=container_fmt)
        except av_errors() as exc:
            raise VidmatError(f"cannot create {self.path} ({_short(exc)}).") from None
        rate = self.rate or Fraction(30)
        if fmt in ("mp4", "mask"):
            opts = {"crf": str(self.encode_cfg.h264_crf()), "preset": self.encode_cfg.preset}
            s = self._container.add_stream("libx264", rate=rate, options=opts)
            s.pix_fmt = "gray" if self.monochrome else "yuv420p"
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
        ctx = s.codec_context
        if self.sample_aspect_ratio is not None:
            ctx.sample_aspect_ratio = self.sample_aspect_ratio  # H.264 VUI, mov/mp4 'pasp'
        # Tags in the bitstream (H.264 VUI, VP9 header) and the container ('colr', Colour).
        ctx.colorspace = self.colour.matrix
        ctx.color_primaries = self.colour.primaries
        ctx.color_trc = self.colour.trc
        ctx.color_range = ColorRange.MPEG
        self._matrix = _ENCODABLE[self.colour.matrix][0]
        self._pix_fmt = str(s.pix_fmt)
        self._stream = s
        if self._audio_src is not None:
            self._audio, left_out = open_tracks(
                self._audio_src.path,
                self._audio_src.audio_streams,
                self._container,
                "mp4" if fmt == "mask" else fmt,
                self._time_offset,
                self._audio_src.timeline,
            )
            self._audio_left_out(left_out)

    def _audio_left_out(self, left_out: list[LeftOut]) -> None:
        """Audio that cannot go into the output (no decoder for its codec, an encoder that
        will not open) is left out and the video written all the same; ``warnings`` says
        why, in the one line a user reads for the other audio problems."""
        for track, exc in left_out:
            if isinstance(exc, NoSound):
                self.warnings.append(f"{self._which(track)} holds no sound")
            else:
                self.warnings.append(f"{self._which(track)} was left out: {_short(exc)}")

    def _which(self, track: AudioInfo) -> str:
        """How a warning names a track: "the audio" when the input has one, else
        'audio track 2 of 3 ("Desktop")'."""
        assert self._audio_src is not None
        tracks = len(self._audio_src.audio_streams)
        which = "the audio" if tracks == 1 else f"audio track {track.number} of {tracks}"
        return which + track.named()

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
        if self._last_shown is None or pts >= self._last_shown[0]:
            self._last_shown = (pts, int(duration))  # the picture's end, for the sound too
        if self.fmt == "png":
            self._write_png(image, pts)
            return
        if self._pix_fmt == "gray":
            # swscale writes grey in full range whatever dst_color_range says, under the
            # stream's limited-range tag: a reader honouring it stretched the soft edges
            # (11.8 levels off on average). The mask's grey level is its Y, scaled here.
            grey = image[..., 0] if image.ndim == 3 else image
            y = ((grey.astype(np.uint16) * 219 + 127) // 255 + 16).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(y), format="gray")
        else:
            rgb = av.VideoFrame.from_ndarray(image, format=self._src_format)
            # Converted here rather than by the encoder, which would use swscale's default
            # BT.601 whatever the tags say; one reformatter for all frames, as the encoder's.
            frame = self._reformatter.reformat(
                rgb,
                format=self._pix_fmt,
                dst_colorspace=self._matrix,
                dst_color_range=ColorRange.MPEG,
                interpolation=FROM_RGB,
            )
        frame.colorspace = self.colour.matrix  # BT470BG and SMPTE170M share coefficients
        frame.color_primaries = self.colour.primaries  # ProRes takes its tags from frames
        frame.color_trc = self.colour.trc
        frame.pts = pts
        frame.time_base = self.time_base
        if self._first_pts is None or pts < self._first_pts:
            self._first_pts = pts
        if duration:
            frame.duration = int(duration)
            # Encoders do not all carry a frame's duration to its packet (ProRes, and
            # x264 reorders them); the muxer needs it for the last frame's length.
            self._durations[pts] = int(duration)
        self._queue_video(self._stream.encode(frame))
        self.frames += 1
        if self._audio and self.frames % 8 == 0:
            seconds = float(pts * self.time_base) + self._time_offset + 1.0
            for audio in self._audio:
                audio.write_until(self._container, seconds)

    def _queue_video(self, packets: list[Any]) -> None:
        """Give packets their frames' durations and mux them, holding back the newest.

        The last packet in decode order sets where an MP4's sample table ends, and with
        x264's reordering it is not the last frame shown: :meth:`_finish_video` stretches
        it so that the file ends where the last shown frame does.
        """
        ready = []
        for packet in packets:
            if packet.pts is not None:
                d = self._durations.pop(packet.pts, 0)
                if d:
                    packet.duration = d
            if self._first_dts is None and packet.dts is not None:
                self._first_dts = int(packet.dts)
            if self._held is not None:
                ready.append(self._held)
            self._held = packet
        if ready:
            self._mux_video(ready)

    def _finish_video(self) -> None:
        """Mux the held last packet, lasting to the end of the last shown frame.

        The packets' durations follow decode order (dts), so the last one must cover
        the reorder delay's worth of presentation too: end - dts - (first pts - first
        dts). For encoders that do not reorder (ProRes, VP9) that is its own duration.
        Without it an MP4 whose last frame is held for seconds said so in its edit list
        but its sample durations ended after the previous frame (players disagreed).
        """
        packet, self._held = self._held, None
        if packet is None:
            return
        last = self._last_shown
        if (
            last is not None
            and last[1] > 0
            and packet.dts is not None
            and self._first_dts is not None
            and self._first_pts is not None
        ):
            delay = self._first_pts - self._first_dts
            length = last[0] + last[1] - int(packet.dts) - delay
            if length > 0:
                packet.duration = length
        self._mux_video([packet])

    def _mux_video(self, packets: list[Any]) -> None:
        for packet in packets:
            self._container.mux(packet)

    def _write_png(self, rgba: np.ndarray, pts: int) -> None:
        name = frame_name(self.frames + 1)
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
            if self._audio_src is not None:
                passes, left_out = write_audio_file(
                    self._audio_src.path,
                    self._audio_src.audio_streams,
                    self.path / FRAME_AUDIO,
                    self._time_offset,
                    self._audio_src.timeline,
                    self._sound_limit(),
                )
                self._audio_left_out(left_out)
                self._count_audio(passes)
            return
        try:
            self._queue_video(self._stream.encode(None))
            self._finish_video()
            for audio in self._audio:
                audio.limit = self._sound_limit()
                audio.write_until(self._container, None)
            self._count_audio(self._audio)
        finally:
            for audio in self._audio:
                audio.close()
            self._container.close()
        if self.fmt == "webm" and self.sample_aspect_ratio is not None:
            # FFmpeg's Matroska muxer takes the pixel shape from a stream field PyAV
            # cannot set; the display size goes into the finished file instead.
            shown = round(self.width * self.sample_aspect_ratio)
            if not set_display_size(self.path, shown, self.height):
                sar = self.sample_aspect_ratio
                self.warnings.append(
                    f"the input's {sar.numerator}:{sar.denominator} pixel aspect ratio "
                    "could not be stored in the WebM; it shows with square pixels"
                )

    def _sound_limit(self) -> float | None:
        """Output seconds the sound may be re-encoded to after a gap: the last picture's
        end and :data:`PAST_PICTURE` (None before any picture)."""
        if self._last_shown is None:
            return None
        pts, duration = self._last_shown
        return float((pts + duration) * self.time_base) + PAST_PICTURE

    def _count_audio(self, passes: list[AudioPass]) -> None:
        """What went in. A track whose packets were all damaged is not counted (one
        without any is left out before it has a stream: :class:`NoSound`)."""
        for a in passes:
            which = self._which(a.track)
            if not a.packets:
                self.warnings.append(f"{which} holds no sound")
                continue
            if a.channels < a.track.channels:
                into = "stereo" if a.channels == 2 else f"{a.channels} channels"
                dropped = f", leaving out {channel_list(a.left_out)}" if a.left_out else ""
                self.warnings.append(
                    f"{which} was mixed down from {a.track.channels} channels to {into}{dropped}"
                )
            if a.filled > 0.1 and not a.copy:
                self.warnings.append(
                    f"{which} pauses ({a.filled:.1f} s in all); re-encoded with the pauses "
                    "as silence, so the sound after them stays in sync"
                )
            if a.past_end is not None:
                self.warnings.append(
                    f"{which} has sound stamped at {a.past_end:.1f} s, after a gap and past "
                    "the picture's end (a damaged time?); left out"
                )
            if a.gaps_kept:
                self.warnings.append(
                    f"{which} could only be copied, so its gaps are not filled with "
                    "silence: the sound after a gap (a joined part with less sound than "
                    "picture, a pause) plays that much early"
                )
            if a.language_lost:
                self.warnings.append(
                    f'{which}: a .mov has no code for its language "{a.language_lost}"; '
                    "left untagged"
                )
        self.audio_tracks = [(a.track, a.copy) for a in passes if a.packets]
        self.audio_packets = sum(a.packets for a in passes)
        self.audio_skipped = sum(a.skipped for a in passes)

    def abort(self) -> None:
        """Stop without flushing (Ctrl-C, error); the caller removes the temporary output."""
        if self._closed:
            return
        self._closed = True
        if self.fmt == "png":
            with contextlib.suppress(Exception):
                self._csv_file.close()
            return
        for audio in self._audio:
            audio.close()
        with contextlib.suppress(Exception):
            self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


#: No video plays faster than this; a header that says so is wrong (an H.264 stream's
#: timing info read as a rate: 25000 "fps" for a 25 fps clip), and the VP9 encoder
#: refused to encode a single frame at it.
MAX_PLAUSIBLE_RATE = 1000


def _plausible_rate(rate: Fraction | None) -> Fraction | None:
    return rate if rate and 0 < rate <= MAX_PLAUSIBLE_RATE else None


def _language(tag: str | None) -> str | None:
    """A track's ISO 639-2 language; "und" (undetermined, MP4's default) is none."""
    lang = (tag or "").strip().lower()
    return iso_language(lang) if lang and lang != "und" else None


def _audio_info(stream: Any, number: int) -> AudioInfo:
    ctx = stream.codec_context
    tb = stream.time_base
    return AudioInfo(
        index=stream.index,
        codec=CODEC_NAMES.get(ctx.name, ctx.name) if ctx else "unknown",
        sample_rate=int(ctx.sample_rate or 0) if ctx else 0,
        channels=int(ctx.channels or 0) if ctx else 0,
        time_base=tb or Fraction(1, 1000),
        duration=float(stream.duration * tb) if stream.duration and tb else None,
        number=number,
        title=track_title(stream.metadata),
        language=_language(stream.metadata.get("language")),
    )
