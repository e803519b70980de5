"""Clips made in fixtures for the video I/O and convert tests, and a stub model with a known mask.

A clip is a red square moving over a dark blue background (so the stub model's mask
is known for every frame and moves, which catches reordered frames) with a sine tone.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from torch import nn

from vidmat.core.backgrounds import GREENSCREEN

NTSC_FILM = Fraction(24000, 1001)


def square_frame(i: int, width: int, height: int) -> np.ndarray:
    """Frame ``i``: dark blue with a red square that moves right 2 px per frame."""
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 2] = 90
    img[..., 1] = 20
    side = max(8, min(width, height) // 2)
    x0 = (4 + 2 * i) % max(1, width - side)
    y0 = (height - side) // 2
    img[y0 : y0 + side, x0 : x0 + side] = (230, 40, 30)
    return img


def make_clip(
    path: Path,
    *,
    width: int = 64,
    height: int = 48,
    frames: int = 12,
    rate: Fraction = Fraction(25),
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    audio: str | None = "aac",
    sample_rate: int = 48000,
    rotation: int = 0,
    codec: str = "libx264",
    faststart: bool = False,
    audio_seconds: float | None = None,
    audio_layout: str = "mono",
    channel_gains: list[float] | None = None,
) -> Path:
    """Write a test clip. ``pts`` (in ``time_base``) gives variable frame rate.

    Odd sizes are stored with yuv444p (libx264 refuses odd sizes in yuv420p).
    ``audio_seconds``: the audio's length (default: the video's). ``audio_layout``: the
    same tone (peak 0.3) in every channel of it ("5.1", "quad" for downmix tests), each
    channel scaled by its ``channel_gains`` (to tell the channels apart).
    """
    tb = time_base or (Fraction(1, 1) / rate / 1000 if rate.denominator == 1 else 1 / rate / 1001)
    if time_base is None:
        tb = Fraction(rate.denominator, rate.numerator * (1000 if rate.denominator == 1 else 1))
        if rate == NTSC_FILM:
            tb = Fraction(1, 24000)
    if pts is None:
        step = round(1 / (rate * tb))
        pts = [i * step for i in range(frames)]
    # faststart puts the index first, so a truncated copy still opens (as downloads do).
    c = av.open(str(path), "w", options={"movflags": "faststart"} if faststart else None)
    s = c.add_stream(codec, rate=rate)
    s.width, s.height = width, height
    s.pix_fmt = "yuv444p" if (width % 2 or height % 2) and codec == "libx264" else "yuv420p"
    if codec == "libx264":
        s.options = {"crf": "12", "preset": "ultrafast"}
    s.time_base = tb
    s.codec_context.time_base = tb
    if rotation:
        s.set_display_rotation(rotation)
    a = None
    if audio:
        a = c.add_stream(audio, rate=sample_rate, layout=audio_layout)
    duration = float((pts[-1] + round(1 / (rate * tb))) * tb)
    for i, p in enumerate(pts):
        f = av.VideoFrame.from_ndarray(square_frame(i, width, height), format="rgb24")
        f.pts, f.time_base = p, tb
        for pk in s.encode(f):
            c.mux(pk)
    for pk in s.encode():
        c.mux(pk)
    if a is not None:
        n = int((audio_seconds or duration) * sample_rate)
        t = np.arange(n) / sample_rate
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        fmt = a.codec_context.codec.audio_formats[0].name
        channels = av.AudioLayout(audio_layout).nb_channels
        chunk = 1024
        for start in range(0, n, chunk):
            block = np.repeat(tone[start : start + chunk][None], channels, 0)
            if channel_gains is not None:
                block = block * np.asarray(channel_gains, np.float32)[:, None]
            # packed: PyAV's planar from_ndarray stops at 7 channels
            packed = np.ascontiguousarray(block.T).reshape(1, -1)
            af = av.AudioFrame.from_ndarray(packed, format="flt", layout=audio_layout)
            af.sample_rate = sample_rate
            af.pts = start
            af.time_base = Fraction(1, sample_rate)
            if fmt != "fltp":
                rs = av.AudioResampler(format=fmt, layout=audio_layout, rate=sample_rate)
                frames_ = rs.resample(af)
            else:
                frames_ = [af]
            for fr in frames_:
                for pk in a.encode(fr):
                    c.mux(pk)
        for pk in a.encode():
            c.mux(pk)
    c.close()
    return path


def frame_times(path: Path) -> list[Fraction]:
    """Presentation times of every video frame of a file, exactly."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return [Fraction(f.pts) * v.time_base for f in c.decode(v)]


def audio_seconds(path: Path) -> float:
    """Decoded audio length in seconds (0 when there is no audio)."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return 0.0
        a = c.streams.audio[0]
        n = sum(f.samples for f in c.decode(a))
        return n / a.codec_context.sample_rate


def track_seconds(path: Path) -> list[float]:
    """Decoded length in seconds of each audio track of a file, in order."""
    out = []
    with av.open(str(path)) as c:
        for a in c.streams.audio:
            c.seek(0)
            out.append(sum(f.samples for f in c.decode(a)) / a.codec_context.sample_rate)
    return out


def with_tracks(dst: Path, clips: list[Path], tags: list[dict[str, str]]) -> Path:
    """The first clip's video with the audio of every clip as tracks of one file (its
    container from ``dst``'s suffix), stream-copied, track i tagged with ``tags[i]`` (as a
    recording with the microphone and the desktop sound on tracks of their own)."""
    with av.open(str(dst), "w") as out:
        ins = [av.open(str(c)) for c in clips]
        try:
            video = out.add_stream_from_template(ins[0].streams.video[0])
            tracks = []
            for c, t in zip(ins, tags, strict=True):
                s = out.add_stream_from_template(c.streams.audio[0])
                s.metadata.update(t)
                tracks.append(s)
            for pk in ins[0].demux(ins[0].streams.video[0]):
                if pk.size:
                    pk.stream = video
                    out.mux(pk)
            for c, s in zip(ins, tracks, strict=True):
                c.seek(0)  # the first clip's was read to its end for the video
                for pk in c.demux(c.streams.audio[0]):
                    if pk.size:
                        pk.stream = s
                        out.mux(pk)
        finally:
            for c in ins:
                c.close()
    return dst


class RedMask(nn.Module):
    """Stub segmentation model: 'person' = where the (normalised) red channel is high.

    The fixture's red square is then the person, so every frame has a known, moving mask.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, :1] > 0.0).float()


def stub_engine(size: int = 32, workers: int | None = None):
    from vidmat.core.engine import Engine
    from vidmat.core.settings import EngineConfig
    from vidmat.model.spec import WeightsSpec

    spec = WeightsSpec(name="stub", arch="u2netp", input_size=size, scale="255")
    return Engine(RedMask(), spec, EngineConfig(device="cpu", size=size, workers=workers))


def read_alphas(path: Path) -> list[np.ndarray]:
    """Alpha planes (H, W) uint8 of every frame of a mov/webm file or a PNG-sequence folder.

    FFmpeg's native VP9 decoder ignores the alpha WebM stores beside the picture; the
    libvpx decoder reads it, so WebM is decoded with that one.
    """
    import cv2

    path = Path(path)
    if path.is_dir():
        return [
            cv2.imread(str(p), cv2.IMREAD_UNCHANGED)[..., 3] for p in sorted(path.glob("*.png"))
        ]
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        if v.codec_context.name == "vp9":
            ctx = av.CodecContext.create("libvpx-vp9", "r")
            frames = [f for p in c.demux(v) for f in ctx.decode(p)]
        else:
            frames = list(c.decode(v))
        return [f.to_ndarray(format="rgba")[..., 3] for f in frames]


def audio_only_file(path: Path, fmt: str | None = None, video: bool = False) -> Path:
    """An AAC tone file; with ``video`` also a video track that never gets a frame."""
    with av.open(str(path), "w", format=fmt) as c:
        if video:  # a video track that never gets a frame
            v = c.add_stream("libx264", rate=25)
            v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = c.add_stream("aac", rate=48000, layout="mono")
        f = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        f.sample_rate, f.pts = 48000, 0
        for p in [*a.encode(f), *a.encode()]:
            c.mux(p)
    return path


def cover_art_audio(path: Path) -> Path:
    """A tone with cover art: its one video stream is an attached MJPEG picture."""
    with av.open(str(path), "w", format="mp4") as c:
        a = c.add_stream("aac", rate=48000, layout="mono")
        v = c.add_stream("mjpeg", rate=1)
        v.width, v.height, v.pix_fmt = 64, 48, "yuvj420p"
        v.disposition = av.stream.Disposition.attached_pic
        pic = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 120, np.uint8), "rgb24")
        pic = pic.reformat(format="yuvj420p")
        pic.pts = 0
        for p in [*v.encode(pic), *v.encode()]:
            c.mux(p)
        f = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        f.sample_rate, f.pts = 48000, 0
        for p in [*a.encode(f), *a.encode()]:
            c.mux(p)
    return path


def zero_frame_file(path: Path) -> Path:
    return audio_only_file(path, "matroska", video=True)


def long_last_clip(
    path: Path, last_ms: int = 3000, frames: int = 11, content: str = "moving"
) -> Path:
    """Matroska, one frame every 100 ms, the last shown for ``last_ms`` (a VFR screen
    recording that holds its last picture): its DURATION tag is 1 s + ``last_ms``.
    ``content``: "moving" (the square), "still" (x264 then ends on B-frames, so the
    last packet written is not the last frame shown) or "noise" (big frames)."""
    tb = Fraction(1, 1000)
    rng = np.random.default_rng(0)
    durations = {i * 100: (last_ms if i == frames - 1 else 100) for i in range(frames)}
    with av.open(str(path), "w", format="matroska") as c:
        s = c.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.time_base = s.codec_context.time_base = tb

        def mux(packets: list[av.Packet]) -> None:
            for pk in packets:
                pk.duration = durations[pk.pts]
                c.mux(pk)

        for i in range(frames):
            if content == "noise":
                image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            else:
                image = square_frame(i if content == "moving" else 0, 64, 48)
            f = av.VideoFrame.from_ndarray(image, format="rgb24")
            f.pts, f.time_base = i * 100, tb
            mux(s.encode(f))
        mux(s.encode())
    return path


def anamorphic_clip(path: Path, rotation: int = 0) -> Path:
    """64x48 H.264 with 64:45 pixels (PAL widescreen's shape), tagged in the stream."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.sample_aspect_ratio = Fraction(64, 45)
        if rotation:
            s.set_display_rotation(rotation)
        _mux_all(
            c,
            s,
            [av.VideoFrame.from_ndarray(square_frame(i, 64, 48), format="rgb24") for i in range(3)],
        )
    return path


def player_rgb(frame: av.VideoFrame) -> np.ndarray:
    """RGB as a player shows a frame: by its matrix tag, else BT.709 for HD and BT.601
    for SD, in exact arithmetic (swscale's fast YUV->RGB is off by up to 2 levels)."""
    matrix = frame.colorspace
    if matrix == 2:
        matrix = 1 if frame.width >= 1280 or frame.height > 576 else 6
    kr, kb = {1: (0.2126, 0.0722), 5: (0.299, 0.114), 6: (0.299, 0.114)}[matrix]
    y, u, v = frame.reformat(format="yuv444p").to_ndarray().astype(float)  # no matrix used
    y, u, v = (y - 16) / 219, (u - 128) / 224, (v - 128) / 224  # limited range
    r = y + 2 * (1 - kr) * v
    b = y + 2 * (1 - kb) * u
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    return np.clip(np.rint(np.stack([r, g, b], -1) * 255), 0, 255).astype(np.uint8)


#: Tags written for each ``colour_clip`` matrix: (matrix, primaries) in FFmpeg's numbers.
_COLOUR_TAGS = {"ITU709": (1, 1), "ITU601": (6, 6), "BT2020": (9, 9)}


def colour_clip(
    path: Path, width: int, height: int, matrix: str | None, hlg: bool = False
) -> np.ndarray:
    """Greenscreen with a skin-toned block, encoded with ``matrix`` ("ITU709", "ITU601",
    "BT2020") and tagged with it, or BT.709-encoded and untagged (None); ``hlg``: 10-bit
    with the HLG curve tagged, as an iPhone's HDR clip. Returns the RGB image."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = GREENSCREEN
    image[: height // 2, : width // 2] = (200, 150, 120)
    pix_fmt = "yuv420p10le" if hlg else "yuv420p"
    with av.open(str(path), "w") as c:
        # H.264 (High 10 for HLG) rather than HEVC: the colour path is the same, and
        # libx265 is not in every FFmpeg build.
        s = c.add_stream("libx264", rate=25, options={"preset": "ultrafast", "crf": "8"})
        s.width, s.height, s.pix_fmt = width, height, pix_fmt
        if matrix is not None:
            code, primaries = _COLOUR_TAGS[matrix]
            ctx = s.codec_context
            ctx.colorspace, ctx.color_primaries = code, primaries
            ctx.color_trc, ctx.color_range = (18 if hlg else 1), 1
        for i in range(2):
            rgb = av.VideoFrame.from_ndarray(image, format="rgb24")
            f = rgb.reformat(format=pix_fmt, dst_colorspace=matrix or "ITU709")
            f.pts = i
            for pk in s.encode(f):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    return image


def animated_webp(path: Path, frames: int = 3) -> Path:
    """An animated WebP of the moving square, 64x48 at 10 fps (needs PyAV's libwebp_anim:
    callers skip when ``"libwebp_anim" not in av.codecs_available``)."""
    with av.open(str(path), "w", format="webp") as c:
        s = c.add_stream("libwebp_anim", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        pictures = [
            av.VideoFrame.from_ndarray(square_frame(i * 8, 64, 48), format="rgb24").reformat(
                format="yuv420p"
            )
            for i in range(frames)
        ]
        _mux_all(c, s, pictures)
    return path


def _mux_all(container: Any, stream: Any, frames: list[av.VideoFrame]) -> None:
    """Encode ``frames`` with pts 0, 1, 2... into ``stream``, flush, and mux every packet."""
    for i, f in enumerate(frames):
        f.pts = i
        for pk in stream.encode(f):
            container.mux(pk)
    for pk in stream.encode():
        container.mux(pk)


def truncated_clip(folder: Path, frames: int = 30) -> Path:
    """``folder``/cut.mp4: a faststart clip of ``frames`` frames cut to two thirds of its
    bytes, as a download that stopped (its header still promises every frame)."""
    full = make_clip(folder / "full.mp4", frames=frames, faststart=True)
    data = full.read_bytes()
    cut = folder / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    return cut
