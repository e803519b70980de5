"""Offline conversion: decoder thread -> batched inference -> post-processing -> encoder thread.

Why threads and bounded queues: on a GPU the model is fast enough that one thread doing
decode, inference and encode in turn leaves the GPU idle most of the time (the 4 it/s
against 33 it/s gap reported for RobustVideoMatting, #206). Here decoding and encoding
run in their own threads (FFmpeg releases the GIL) and the main thread only batches
frames for the model and post-processes them in frame order. Every queue is bounded, so
a slow stage holds back the ones before it instead of buffering: a one-hour clip runs in
the same memory as a ten-second one.

::

    engine = Engine.from_config(EngineConfig())
    result = convert_video(engine, Path("in.mp4"), Path("out.mp4"), ConvertConfig(fmt="mp4"))

``convert_video`` writes to a temporary name beside the output and renames it only when
complete; on an error or Ctrl-C nothing is left at the output path.
"""

from __future__ import annotations

import contextlib
import errno
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from vidmat.core.backgrounds import GREENSCREEN, Background, parse_background
from vidmat.core.engine import Engine, app_precision, side_by_side
from vidmat.core.postprocess import PostProcessor
from vidmat.core.settings import EngineConfig, PostprocessConfig
from vidmat.errors import VidmatError
from vidmat.io.cvlog import decode_image
from vidmat.io.files import (
    atomic_folder,
    atomic_output,
    check_not_input,
    check_output_path,
    leftover_parts,
    leftovers_note,
    read_input,
)
from vidmat.io.formats import FORMATS, FRAME_FOLDER, IMAGE_SUFFIXES
from vidmat.io.images import load_background, picture_alpha, picture_count
from vidmat.io.video import (
    EncodeConfig,
    Frame,
    VideoInfo,
    VideoReader,
    VideoWriter,
)

#: Progress callback: called with the number of frames just finished.
Progress = Callable[[int], None]

_END = object()  # end-of-stream marker in the queues


@dataclass(frozen=True)
class ConvertConfig:
    """One conversion job's settings (the CLI builds this from its flags)."""

    fmt: str = "mp4"
    #: Background spec (colour, #hex, blur, image/video path, transparent, mask) or a
    #: resolved Background; None = per format: green for mp4, transparent for
    #: mov/webm/png, the matte for mask.
    background: str | Background | None = None
    post: PostprocessConfig = field(default_factory=PostprocessConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    #: Frames per model call; None = 8 on CUDA (throughput), on the CPU one for each of the
    #: engine's workers (a larger batch gains nothing there and only adds memory).
    batch: int | None = None
    #: Decoded frames allowed to wait for the model, and finished ones for the encoder.
    queue_frames: int | None = None

    def batch_for(self, engine: Engine) -> int:
        if self.batch:
            return max(1, int(self.batch))
        return 8 if engine.device.type == "cuda" else engine.workers

    def validate(self) -> ConvertConfig:
        if self.fmt not in FORMATS:
            raise VidmatError(f"unknown format {self.fmt!r}; use one of {', '.join(FORMATS)}.")
        given = self.background is not None
        if self.fmt == "mask" and given and parse_background(self.background).kind != "mask":
            raise VidmatError(
                "--format mask writes the matte alone, with no background; leave out --bg."
            )
        bg = self.resolved_background_spec()
        if self.fmt in ("mp4",) and _is_transparent(bg):
            raise VidmatError(
                "mp4 (H.264) cannot carry transparency; use --format mov, webm or png for alpha, "
                "or pick a --bg colour, image, video or blur."
            )
        self.post.validate()
        return self

    def resolved_background_spec(self) -> str | Background:
        if self.fmt == "mask":
            return Background.mask()
        if self.background is not None:
            return self.background
        return "transparent" if FORMATS[self.fmt][1] else "green"


def _is_transparent(bg: str | Background) -> bool:
    if isinstance(bg, Background):
        return bg.kind == "transparent"
    return bg.strip().lower() in ("transparent", "alpha", "rgba", "none")


@dataclass
class ConvertResult:
    """What happened to one input, for the summary line and the benchmark."""

    input: Path
    output: Path
    frames: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    audio: str | None = None  # "copied", "re-encoded" or None
    #: Why the input could not be read to its end (its decodable frames were converted).
    incomplete: str | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def engine_config_for_files(cfg: EngineConfig) -> EngineConfig:
    """On the CPU, two model calls side by side, on the cores decoding and encoding leave.

    Decoding, post-processing and encoding run beside the model in their own threads. One
    call with torch on every core stalls whenever they (or any other program) take a core,
    because its OpenMP threads wait for each other at every layer; two calls of one thread
    each do not (:attr:`EngineConfig.workers`). `vidmat bench convert --frames 64` of the
    720p demo clip at 256 px on a 2-core CPU: 3.3 fps with one thread (the default before),
    5.1 with one call of two threads, 5.4 with two calls of one; with another busy process
    on the machine 3.2, 0.57 and 3.4. ``--threads`` alone: one call with that many.
    ``--precision auto``: bf16 on a CPU that has it in hardware (:func:`app_precision`).
    """
    return app_precision(side_by_side(cfg, spare_cores=1))


# --------------------------------------------------------------------------- threads
class _Stage(threading.Thread):
    """A worker thread whose exception is re-raised in the main thread."""

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:
            self.error = exc


def _put(
    q: queue.Queue, item: Any, stop: threading.Event, workers: tuple[_Stage, ...] = ()
) -> bool:
    """Blocking put that gives up when the job is stopped or the consumer died.

    This is the back-pressure: a full queue blocks the producer, never grows.
    """
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            for w in workers:
                if w.error is not None:
                    raise w.error from None
    return False


def _get(q: queue.Queue, stop: threading.Event, workers: list[_Stage]) -> Any:
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            for w in workers:
                if w.error is not None:
                    raise w.error from None
            if stop.is_set():
                return _END


def _io_error(exc: BaseException, where: Path) -> VidmatError:
    """An OS/FFmpeg error while writing, as one sentence."""
    code = getattr(exc, "errno", None)
    if code == errno.ENOSPC:
        return VidmatError(f"the disk is full while writing {where}; no output was kept.")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return VidmatError(f"{where.parent} is not writable; no output was kept.")
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return VidmatError(f"writing {where} failed ({text[:120]}); no output was kept.")


class _Job:
    """The three-stage machinery shared by conversion and the plain transcode."""

    def __init__(self, reader: VideoReader, writer: VideoWriter, depth: int, dst: Path) -> None:
        self.reader, self.writer, self.dst = reader, writer, dst
        self.stop = threading.Event()
        self.frames_in: queue.Queue = queue.Queue(maxsize=depth)
        self.frames_out: queue.Queue = queue.Queue(maxsize=depth)
        self.decoder = _Stage("vidmat-decode", self._decode)
        self.encoder = _Stage("vidmat-encode", self._encode)
        self.written = 0
        self.progress: Progress | None = None

    def _decode(self) -> None:
        try:
            for frame in self.reader.frames():
                if not _put(self.frames_in, frame, self.stop):
                    return
        except BaseException as exc:
            # Set before the end is queued: _Stage.run sets it only after this method has
            # returned, and frames() reading the end first took a failed decode for the
            # end of the file (a truncated output reported as a success).
            self.decoder.error = exc
            raise
        finally:
            _put(self.frames_in, _END, self.stop)

    def _encode(self) -> None:
        while True:
            item = _get(self.frames_out, self.stop, [])
            if item is _END or self.stop.is_set():  # cancelled: drop what is queued
                return
            image, pts, duration = item
            try:
                self.writer.write(image, pts, duration)
            except VidmatError:
                raise
            except (OSError, ValueError) as exc:
                raise _io_error(exc, self.dst) from None
            self.written += 1
            if self.progress is not None:
                self.progress(1)

    def start(self) -> None:
        self.decoder.start()
        self.encoder.start()

    def frames(self) -> Iterator[Frame]:
        while True:
            item = _get(self.frames_in, self.stop, [self.decoder, self.encoder])
            if item is _END:
                if self.decoder.error is not None:
                    raise self.decoder.error
                return
            yield item

    def emit(self, image: np.ndarray, pts: int, duration: int) -> None:
        if self.encoder.error is not None:
            raise self.encoder.error
        _put(self.frames_out, (image, pts, duration), self.stop, (self.encoder,))

    def finish(self) -> None:
        """End of input: let the encoder drain, then flush the file."""
        _put(self.frames_out, _END, self.stop, (self.encoder,))
        while self.encoder.is_alive():
            self.encoder.join(0.1)
        if self.encoder.error is not None:
            raise self.encoder.error
        try:
            self.writer.close()
        except VidmatError:
            raise
        except (OSError, ValueError) as exc:
            raise _io_error(exc, self.dst) from None

    #: How long cancel() waits for each thread to see the stop.
    join_seconds = 5.0

    def cancel(self) -> None:
        self.stop.set()
        for t in (self.decoder, self.encoder):
            if t.is_alive():
                t.join(self.join_seconds)
        if self.decoder.is_alive():
            # Still inside a decode (a huge frame, a stalled network drive): the reader's
            # close when the caller's `with` ends would pull the file from under FFmpeg.
            self.reader.keep_open = True
        if self.encoder.is_alive():
            # Still inside a write (a stalled disk): closing the container under it can
            # crash in FFmpeg. The temporary file is removed by name all the same, and
            # the daemon thread ends with the program.
            return
        self.writer.abort()


# --------------------------------------------------------------------------- outputs
#: The tags :func:`default_output` puts after an input's name; a folder scan knows its own
#: earlier outputs by them.
OUTPUT_TAGS = ("green", "alpha", "composite", "mask", "blur")


def default_output(src: Path, cfg: ConvertConfig, folder: Path | None = None) -> Path:
    """``clip.mp4`` -> ``clip_green.mp4`` / ``clip_alpha.mov`` / ``clip_alpha/`` / ``clip_mask.mp4``."""
    folder = folder if folder is not None else src.parent
    bg = parse_background(cfg.resolved_background_spec())
    tag: str
    if bg.kind in ("mask", "blur"):
        tag = bg.kind
    elif bg.kind == "transparent":
        tag = "alpha"
    elif bg.kind == "color" and bg.rgb == GREENSCREEN:
        tag = "green"
    else:
        tag = "composite"
    assert tag in OUTPUT_TAGS
    if src.suffix.lower() in IMAGE_SUFFIXES:
        return folder / f"{src.stem}_{tag}.png"
    return folder / f"{src.stem}_{tag}{FORMATS[cfg.fmt][0]}"


def check_paths(src: Path, dst: Path, overwrite: bool, folder: bool = False) -> None:
    """Refuse early what would destroy the input or an existing output."""
    check_not_input(dst, src)
    check_output_path(dst, overwrite, folder, kind=FRAME_FOLDER if folder else None)


def _background(cfg: ConvertConfig) -> Background:
    return load_background(cfg.resolved_background_spec())


# --------------------------------------------------------------------------- video
def _to_numpy_batch(images: list[torch.Tensor]) -> list[np.ndarray]:
    """One device->host copy per batch instead of per frame (matters on CUDA)."""
    if not images:
        return []
    if len({tuple(t.shape) for t in images}) == 1:
        host = torch.stack(images).cpu().numpy()
        return list(host)
    return [t.cpu().numpy() for t in images]


def convert_video(
    engine: Engine,
    src: Path,
    dst: Path,
    cfg: ConvertConfig,
    overwrite: bool = False,
    progress: Progress | None = None,
    on_start: Callable[[VideoInfo], None] | None = None,
) -> ConvertResult:
    """Convert one video file; see the module docstring for the stages."""
    cfg = cfg.validate()
    src, dst = Path(src), Path(dst)
    check_paths(src, dst, overwrite, folder=cfg.fmt == "png")
    leftovers = leftover_parts(dst, folder=cfg.fmt == "png")  # before this run makes its own
    background = _background(cfg)
    batch = cfg.batch_for(engine)
    depth = cfg.queue_frames or max(4, 2 * batch)
    result = ConvertResult(src, dst)
    t0 = time.perf_counter()
    with VideoReader(src) as reader:
        info = reader.info
        if on_start is not None:
            on_start(info)
        post = PostProcessor(cfg.post, background, float(info.sample_aspect_ratio or 1))
        offset = info.output_zero
        with _output(dst, cfg.fmt, overwrite) as tmp:
            writer = _open_writer(tmp, cfg, info, offset, dst)
            job = _Job(reader, writer, depth, dst)
            job.progress = progress
            try:
                job.start()  # inside: a Ctrl-C just after it must still stop both threads
                _run_model(engine, post, job, batch, offset)
                job.finish()
            except BaseException:
                job.cancel()
                raise
            if job.written == 0:
                raise VidmatError(f"{src} has no video frames that can be decoded.")
        result.frames = job.written
        result.warnings = [*reader.notes, *reader.warnings, *leftovers_note(dst, leftovers)]
        result.incomplete = reader.incomplete
    result.seconds = time.perf_counter() - t0
    if writer.padded:
        result.warnings.append(
            f"odd size {info.width}x{info.height} padded to {writer.padded[0]}x{writer.padded[1]} "
            "(H.264 yuv420p needs even sides)"
        )
    result.warnings.extend(writer.warnings)
    result.audio = _audio_note(writer)
    if writer.audio_skipped:
        result.warnings.append(
            f"{writer.audio_skipped} damaged or out-of-order audio packet(s) left out"
        )
    return result


def _audio_note(writer: VideoWriter) -> str | None:
    """How the audio went in: "copied", "re-encoded", "2 tracks copied", "2 tracks: 1
    copied, 1 re-encoded"; " to audio.m4a" beside a PNG sequence."""
    if not writer.audio_tracks:
        return None
    copied = sum(1 for _, c in writer.audio_tracks if c)
    n = len(writer.audio_tracks)
    if copied in (0, n):
        how = "copied" if copied else "re-encoded"
        note = how if n == 1 else f"{n} tracks {how}"
    else:
        note = f"{n} tracks: {copied} copied, {n - copied} re-encoded"
    return note + (" to audio.m4a" if writer.fmt == "png" else "")


@contextlib.contextmanager
def _output(dst: Path, fmt: str, overwrite: bool) -> Iterator[Path]:
    """A temporary file (or folder for png) beside ``dst``, renamed onto it when complete."""
    manager = (
        atomic_folder(dst, overwrite, FRAME_FOLDER)
        if fmt == "png"
        else atomic_output(dst, None, overwrite)
    )
    try:
        tmp = manager.__enter__()
    except OSError as exc:  # the folder became unwritable, or root-only paths
        raise _io_error(exc, dst) from None
    try:
        yield tmp
    except BaseException:
        if not manager.__exit__(*sys.exc_info()):
            raise
    else:
        try:
            manager.__exit__(None, None, None)
        except OSError as exc:
            raise _io_error(exc, dst) from None


def _open_writer(
    tmp: Path, cfg: ConvertConfig, info: VideoInfo, offset: float, dst: Path
) -> VideoWriter:
    try:
        return VideoWriter(
            tmp,
            cfg.fmt,
            info.width,
            info.height,
            info.time_base,
            info.rate,
            audio_from=info,
            encode=cfg.encode,
            time_offset=offset,
            sample_aspect_ratio=info.sample_aspect_ratio,
            colour=info.colour,
        )
    except VidmatError:
        raise
    except OSError as exc:
        raise _io_error(exc, dst) from None


def _run_model(
    engine: Engine, post: PostProcessor, job: _Job, batch: int, start: float = 0.0
) -> None:
    """Main-thread stage: batch frames, run the model, post-process in frame order.

    ``start``: the input time the output starts at (the writer's offset); a ``--bg`` video
    plays from its own start there, as in live, not from the input clock's 10 s or 1 h.
    """
    pending: deque[tuple[int, int]] = deque()  # (pts, duration) of frames inside `post`
    frames = job.frames()
    done = False
    while not done:
        chunk: list[Frame] = []
        for frame in frames:
            chunk.append(frame)
            if len(chunk) >= batch:
                break
        else:
            done = True
        if chunk:
            _infer_chunk(engine, post, job, chunk, pending, start)
    outs = post.flush()
    _emit(job, outs, pending)


@torch.inference_mode()
def _infer_chunk(
    engine: Engine,
    post: PostProcessor,
    job: _Job,
    chunk: list[Frame],
    pending: deque[tuple[int, int]],
    start: float = 0.0,
) -> None:
    images = [f.image for f in chunk]
    if len({im.shape for im in images}) != 1:
        for f in chunk:  # a size change inside the batch: one at a time
            _infer_chunk(engine, post, job, [f], pending, start)
        return
    device_frames = engine.to_device(np.stack(images))
    lowres = engine.predict_lowres(device_frames)
    for f in chunk:
        pending.append((f.pts, f.duration))
    outs = post.push(device_frames, lowres, t=[max(0.0, f.time - start) for f in chunk])
    _emit(job, outs, pending)


def _emit(job: _Job, outs: list[Any], pending: deque[tuple[int, int]]) -> None:
    for image in _to_numpy_batch([o.image for o in outs]):
        pts, duration = pending.popleft()
        job.emit(image, pts, duration)


# --------------------------------------------------------------------------- transcode
def transcode(
    src: Path,
    dst: Path,
    fmt: str = "mp4",
    encode: EncodeConfig | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    depth: int = 8,
) -> ConvertResult:
    """Plain decode + encode through the same threads and writer: the benchmark's yardstick."""
    src, dst = Path(src), Path(dst)
    check_paths(src, dst, overwrite, folder=fmt == "png")
    cfg = ConvertConfig(fmt=fmt, encode=encode or EncodeConfig())
    result = ConvertResult(src, dst)
    t0 = time.perf_counter()
    with VideoReader(src) as reader:
        info = reader.info
        offset = info.output_zero
        with _output(dst, fmt, overwrite) as tmp:
            writer = _open_writer(tmp, cfg, info, offset, dst)
            job = _Job(reader, writer, depth, dst)
            job.progress = progress
            try:
                job.start()
                for frame in job.frames():
                    job.emit(frame.image, frame.pts, frame.duration)
                job.finish()
            except BaseException:
                job.cancel()
                raise
        result.frames = job.written
        result.warnings = list(reader.warnings) + writer.warnings
        result.incomplete = reader.incomplete
    result.seconds = time.perf_counter() - t0
    return result


# --------------------------------------------------------------------------- images
def read_still(path: Path) -> np.ndarray:
    """uint8 RGB (H, W, 3) of a still image given as input, with one-sentence errors."""
    if not path.exists():
        raise VidmatError(f"{path} does not exist.")
    if path.stat().st_size == 0:
        raise VidmatError(f"{path} is empty (0 bytes).")
    data = np.frombuffer(read_input(path), dtype=np.uint8)
    img = decode_image(data, cv2.IMREAD_COLOR, path)
    if img is None:
        raise VidmatError(f"{path} is not an image that can be read (corrupt or another format).")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)  # in place: no copy of a large photo


#: Still formats that can carry transparency: a still's own, and an RGBA output.
_ALPHA_SUFFIXES = (".png", ".webp", ".tif", ".tiff")


def still_alpha(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """A still's own alpha as uint8 (H, W), where it has one that is not all opaque (a
    cut-out photo): the matte of its hidden pixels had made them visible again. None
    for other pictures, and for one whose stored size differs from how it is shown."""
    if path.suffix.lower() not in _ALPHA_SUFFIXES:
        return None
    alpha = picture_alpha(path)
    return alpha if alpha is not None and alpha.shape == shape[:2] else None


def _times(alpha: np.ndarray, own: np.ndarray) -> np.ndarray:
    """uint8 ``alpha`` x ``own`` / 255, rounded."""
    return ((alpha.astype(np.uint16) * own + 127) // 255).astype(np.uint8)


def image_config(cfg: ConvertConfig, bg_given: bool) -> ConvertConfig:
    """Stills: an RGBA PNG unless a background was asked for (then a composite)."""
    if cfg.fmt == "mask":
        return cfg
    if not bg_given:
        return replace(cfg, fmt="png", background="transparent")
    return replace(cfg, fmt="png")


@torch.inference_mode()
def convert_image(
    engine: Engine, src: Path, dst: Path, cfg: ConvertConfig, overwrite: bool = False
) -> ConvertResult:
    """One still image -> RGBA PNG (transparent), a composite, or a grey matte."""
    src, dst = Path(src), Path(dst)
    check_paths(src, dst, overwrite)
    t0 = time.perf_counter()
    rgb = read_still(src)
    post_cfg = replace(cfg.post, smoothing=0.0)
    bg = cfg.resolved_background_spec()
    post = PostProcessor(post_cfg, load_background(bg))
    frames = engine.to_device(rgb)
    lowres = engine.predict_lowres(frames)
    out = post.finish(frames[0], lowres, t=0.0).image.cpu().numpy()
    suffix = dst.suffix.lower() or ".png"
    if out.shape[2] == 4 and suffix not in _ALPHA_SUFFIXES:
        raise VidmatError(f"{dst.name}: {suffix} cannot hold transparency; write a .png instead.")
    own = still_alpha(src, rgb.shape)
    if post.background.kind == "mask":
        picture = out[..., 0]  # one channel: a grey PNG, as the mask video is grey (it was RGB)
        if own is not None:
            picture = _times(picture, own)
    else:
        if own is not None and out.shape[2] == 4:
            out = out.copy()
            out[..., 3] = _times(out[..., 3], own)
        code = cv2.COLOR_RGBA2BGRA if out.shape[2] == 4 else cv2.COLOR_RGB2BGR
        picture = cv2.cvtColor(out, code)
    try:  # OpenCV raises for a suffix it has no encoder for, rather than returning False
        ok, data = cv2.imencode(suffix, picture)
    except cv2.error:
        ok = False
    if not ok:
        raise VidmatError(f"cannot write images with the suffix {suffix!r}; use .png or .jpg.")
    with _output(dst, "image", overwrite) as tmp:
        try:
            tmp.write_bytes(data.tobytes())
        except OSError as exc:
            raise _io_error(exc, dst) from None
    result = ConvertResult(src, dst, frames=1, seconds=time.perf_counter() - t0)
    if own is not None and post.background.kind not in ("mask", "transparent"):
        result.warnings.append(
            "its own transparency is not used for a composite; convert it without --bg for "
            "a cut-out that keeps it."
        )
    pictures = picture_count(src)
    if pictures > 1:
        result.warnings.append(
            f"an animation of {pictures} pictures; only the first was converted."
        )
    return result


__all__ = [
    "ConvertConfig",
    "ConvertResult",
    "check_paths",
    "convert_image",
    "convert_video",
    "default_output",
    "read_still",
    "transcode",
]
