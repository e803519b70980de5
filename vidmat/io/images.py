"""Reading background files: still images with OpenCV, looping videos decoded on demand.

The core only describes backgrounds (:mod:`vidmat.core.backgrounds`); opening the
file a user named is I/O and lives here::

    bg = load_background(args.bg)          # "green", "blur:25", "beach.jpg", "waves.mp4", ...
    post = PostProcessor(cfg, bg)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np

from vidmat.core.backgrounds import Background, parse_background
from vidmat.errors import VidmatError
from vidmat.io.cvlog import decode_image
from vidmat.io.files import read_input, require_file
from vidmat.io.formats import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from vidmat.io.pyav import av_errors, open_input
from vidmat.io.video import Frame, VideoReader

#: No background shows larger than an 8K frame (7680x4320): a JPEG whose shorter side is
#: at least twice this is decoded at a half, a quarter or an eighth of its size, which
#: libjpeg does while decoding (a 16000x12000 photo: 1.2 s instead of 3.1 s, in the window).
LARGEST_SHOWN_SIDE = 4320

_REDUCED = (
    (8, cv2.IMREAD_REDUCED_COLOR_8),
    (4, cv2.IMREAD_REDUCED_COLOR_4),
    (2, cv2.IMREAD_REDUCED_COLOR_2),
)


def _header(path: Path) -> tuple[str, int, av.VideoFormat | None] | None:
    """A picture's codec, shorter side and pixel format (where the header names one), read
    from its header alone; None where FFmpeg cannot open it."""
    try:
        with open_input(path) as container:
            ctx = container.streams.video[0].codec_context
            fmt = av.VideoFormat(ctx.pix_fmt) if ctx.pix_fmt else None
            return ctx.name, min(int(ctx.width), int(ctx.height)), fmt
    except av_errors(IndexError):
        return None


def _decode_flag(path: Path) -> int:
    """How to decode ``path``: reduced for a very large JPEG (its size read from the
    header alone), else whole."""
    header = _header(path)
    if header is None or header[0] != "mjpeg":
        return cv2.IMREAD_COLOR  # other formats decode whole and then shrink: no gain
    short = header[1]
    for factor, flag in _REDUCED:
        if short // factor >= LARGEST_SHOWN_SIDE:
            return flag
    return cv2.IMREAD_COLOR


def read_image(path: str | Path) -> np.ndarray:
    """uint8 RGB (H, W, 3) from an image file (alpha dropped, grey expanded)."""
    p = Path(path)
    require_file(p, "background image")
    data = np.frombuffer(read_input(p), dtype=np.uint8)
    img = decode_image(data, _decode_flag(p), p) if data.size else None
    if img is None:
        raise VidmatError(f"{p} is not an image OpenCV can read.")
    # In place: a reversed copy of a 16000x12000 photo took 2.3 s, on the window's thread.
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)


class LoopingVideo:
    """``frame_at(t)``: the frame of a video file shown at ``t`` seconds, looped.

    Decoded with PyAV, as every other video here, so a background shows the colours the
    file does in a player (OpenCV read untagged HD with BT.601: red 200 came out 186) and
    stands upright when the file says it is turned. Decodes sequentially, one decode per
    background frame when played along with the output; going back (the loop's end) or
    far ahead seeks on the open file, never decoding minutes of frames in between nor
    opening the file again (but a joined MPEG-TS/PS, which cannot seek: it decodes on to
    a time ahead, and is opened again to go back). Its time starts at the first ``t`` asked for, so a background
    chosen a minute into a live session plays from its beginning, and again at a ``t``
    before that (a new run's clock).
    """

    #: A jump ahead longer than this (seconds) seeks instead of decoding every frame.
    SEEK_AHEAD = 2.0

    #: Seconds between tries to read a file that failed while it played.
    RETRY = 1.0

    def __init__(self, path: str | Path, warn: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self._warn = warn
        self._skipped = False  # a seek ahead in the first pass: the reader's counts are partial
        require_file(self.path, "background video")
        self._lock = threading.Lock()
        self._reader = VideoReader(self.path)  # a bad file fails here with one sentence
        self._origin: float | None = None  # the first frame's time in the file
        self._widened: tuple[Frame, np.ndarray] | None = None  # see _shown_image
        self._go_to(0.0)
        rate = self._reader.info.rate
        self.fps = float(rate) if rate and 1 <= rate <= 240 else 30.0
        self._start: float | None = None  # the first time asked for: the video's 0
        self._length: float | None = None  # seconds of one pass, known after the first
        self._failed_at: float | None = None  # the time the file last failed to read

    def _go_to(self, local: float) -> None:
        """Decode from the keyframe at or before ``local`` seconds into the video; the
        file is opened again only where it cannot seek."""
        if self._origin is not None and not self._reader.seek(self._origin + local):
            fresh = VideoReader(self.path)  # first: a file gone now leaves the old reader open
            self._reader.close()
            self._reader = fresh
        self._frames = self._reader.frames()
        first = next(self._frames, None)
        if first is None:
            raise VidmatError(f"{self.path} has no video frames that can be decoded.")
        if self._origin is None:
            self._origin = first.time
        self._current, self._next = first, next(self._frames, None)

    def _shown_at(self, frame: Frame) -> float:
        assert self._origin is not None
        return frame.time - self._origin

    def __call__(self, t: float) -> np.ndarray:
        with self._lock:
            if self._start is None or t < self._start:
                # A time before the first one is a new timeline: a live pipeline started
                # again (Restart, another camera) with the window's same background, or the
                # next file of a convert. Kept, the video stood still until t caught up
                # with the old start (95 s when chosen 95 s into the first run).
                self._start = t
                self._failed_at = None  # and the file is tried again at once
            if self._failed_at is not None:
                if t - self._failed_at < self.RETRY:
                    return self._shown_image()
                # Tried again: a file back (saved anew) plays from its start, its length
                # measured again; the pass that failed may have ended early (an emptied
                # file read as one cut short), and kept, it looped only that part.
                self._start, self._length = t, None
            try:
                image = self._frame_at(t)
            except av_errors(VidmatError) as exc:
                # The file emptied, replaced or removed while it plays (saved again from
                # an editor): it stopped the camera and the recording, and a Restart
                # failed on the same background. The last frame stays until it reads.
                if self._failed_at is None and self._warn is not None:
                    self._warn(
                        f"--bg {self.path.name}: {str(exc).rstrip('.')}; the background "
                        "holds its last frame until the file can be read again."
                    )
                self._failed_at = t
                return self._shown_image()
            self._failed_at = None
            return image

    def _frame_at(self, t: float) -> np.ndarray:
        """The frame shown at ``t``, decoding (and seeking, or opening the file again) to it."""
        assert self._start is not None
        # A microsecond's slack: 0.2 + 0.1 is above 0.3 in floating point.
        local = max(0.0, t - self._start) + 1e-6
        if self._length:
            local %= self._length
        shown = self._shown_at(self._current)
        # Ahead in a file that cannot seek (a joined TS, read again from its start on
        # a seek) it decodes on to the time: reopened, a 3 s jump took 2.5 s.
        ahead = local > shown + self.SEEK_AHEAD and self._reader.can_seek
        if local < shown or ahead:
            self._skipped = self._skipped or self._length is None
            self._go_to(local)
        while True:
            if self._next is None:  # the last frame: shown until the video's end
                cur = self._current
                # its own length where the file gives one (a VFR clip's last frame
                # of 42 ms was held 130 ms, one frame at the average rate)
                own = float(cur.duration * cur.time_base)
                end = self._shown_at(cur) + (own if own > 0 else 1.0 / self.fps)
                if local < end:
                    break
                if self._length is None:
                    self._first_pass_read()
                self._length = end
                local %= end
                self._go_to(local)
                continue
            if self._shown_at(self._next) > local:
                break
            self._current, self._next = self._next, next(self._frames, None)
        return self._shown_image()

    def _first_pass_read(self) -> None:
        """Say what went wrong reading the video once through: a file cut short loops
        early and a damaged one shows grey blocks, which had looked like vidmat's fault.
        Whether frames are missing is told by counting them, so not after a first pass
        that jumped ahead (it would call the frames skipped missing)."""
        reader = self._reader
        cut = [reader.incomplete] if reader.incomplete and not self._skipped else []
        problems = [*reader.warnings, *cut]
        if self._warn is not None and problems:
            self._warn(f"--bg {self.path.name}: {'; '.join(problems)}; it loops what decodes.")

    def _shown_image(self) -> np.ndarray:
        """The current frame as shown: a video of non-square pixels (DV, DVD, HDV 1440x1080)
        widened to them, or it stood stretched behind the person (a circle twice as tall
        as wide)."""
        sar = self._reader.info.sample_aspect_ratio
        image = self._current.image
        if not sar:
            return image
        if self._widened is None or self._widened[0] is not self._current:
            height, width = image.shape[:2]
            shown = (max(1, round(width * float(sar))), height)
            how = cv2.INTER_LINEAR if sar > 1 else cv2.INTER_AREA
            self._widened = (self._current, cv2.resize(image, shown, interpolation=how))
        return self._widened[1]

    def close(self) -> None:
        self._reader.close()


def picture_count(path: str | Path) -> int:
    """How many pictures an image file holds: above 1 for an animated WebP or PNG (OpenCV 5
    counts those; older OpenCV, or a path it cannot open, answers 1)."""
    try:
        return max(1, int(cv2.imcount(str(path))))
    except (cv2.error, AttributeError, OverflowError, SystemError, ValueError):
        return 1


def load_background(
    spec: str | Background | None, warn: Callable[[str], None] | None = None
) -> Background:
    """Resolve a CLI background spec; files become image or looping-video backgrounds.

    ``warn`` hears what the user should know: an animated WebP or PNG shows its first
    picture only (FFmpeg cannot play them; OpenCV reads one), which it did in silence; a
    video that is cut short or damaged, once it has played through (see LoopingVideo)."""
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
        try:
            image = read_image(path)
        except VidmatError:
            if not _is_video_container(path):
                raise
            return _video_background(path, warn)  # a video named .png plays as the video it is
        pictures = picture_count(path) if warn is not None else 1
        if pictures > 1:
            assert warn is not None
            warn(
                f"--bg {path.name} is an animation of {pictures} pictures; only the first is shown."
            )
        if warn is not None and _has_transparency(path):
            warn(
                f"--bg {path.name} has transparent parts; they are not used, so the colours "
                "stored under them show (flatten the picture onto a colour first)."
            )
        return Background.from_image(image)
    if suffix in VIDEO_SUFFIXES:
        return _video_background(path, warn)
    # Unknown suffix: try as an image, then as a video.
    try:
        return Background.from_image(read_image(path))
    except VidmatError:
        return _video_background(path, warn)


def picture_alpha(path: Path) -> np.ndarray | None:
    """A picture's own alpha as uint8 (H, W), as stored, where it has one that is not all
    opaque (a cut-out photo); None for other pictures. OpenCV gives grey + alpha and a
    palette's transparency as four channels too."""
    raw = decode_image(np.frombuffer(read_input(path), np.uint8), cv2.IMREAD_UNCHANGED, path)
    if raw is None or raw.ndim != 3 or raw.shape[2] != 4:
        return None
    alpha = raw[..., 3]
    if alpha.dtype == np.uint16:
        alpha = (alpha >> 8).astype(np.uint8)
    return None if alpha.min() == 255 else np.ascontiguousarray(alpha)


def _has_transparency(path: Path) -> bool:
    """Whether a picture has pixels less than opaque: their hidden colours showed behind the
    person in silence (QA: a PNG's transparent half came out red). Read again with its
    alpha only where its format has one, so an opaque JPEG costs a header read."""
    fmt = header[2] if (header := _header(path)) is not None else None
    # grey + alpha, colour + alpha (a lossy WebP's yuva420p too), or a palette (PNG tRNS)
    if fmt is None or not (len(fmt.components) in (2, 4) or fmt.has_palette):
        return False
    return picture_alpha(path) is not None


def _is_video_container(path: Path) -> bool:
    """Whether FFmpeg opens ``path`` as a video container rather than as a picture: an
    MP4 saved as ``.png`` was refused as "not an image OpenCV can read", though it plays."""
    try:
        with open_input(path) as container:
            name = container.format.name
            has_video = bool(container.streams.video)
    except av_errors():
        return False
    return has_video and not (name == "image2" or name.endswith("_pipe"))


def _video_background(path: Path, warn: Callable[[str], None] | None) -> Background:
    """A looping video background; what the reader refuses is said of the background
    ("the background empty.mp4 is empty"): beside an input video, "empty.mp4 is empty"
    did not tell which file was meant."""
    try:
        video = LoopingVideo(path, warn)
    except VidmatError as exc:
        text = str(exc)
        raise VidmatError(
            text if text.startswith("background") else f"the background {text}"
        ) from None
    return Background.from_video(frame_at=video, fps=video.fps)
