"""PyAV reader/writer: timestamps, rotation, audio, alpha and odd sizes survive every format."""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from convert_fixtures import (
    NTSC_FILM,
    anamorphic_clip,
    audio_only_file,
    audio_seconds,
    colour_clip,
    frame_times,
    long_last_clip,
    make_clip,
    player_rgb,
    read_alphas,
    square_frame,
    zero_frame_file,
)

from vidmat.core.backgrounds import GREENSCREEN
from vidmat.errors import VidmatError
from vidmat.io import video as video_mod
from vidmat.io.files import atomic_folder
from vidmat.io.formats import FORMATS
from vidmat.io.video import VideoReader, VideoWriter, probe

VFR_PTS = [0, 40, 80, 200, 240, 400, 410, 600, 640]  # ms: pauses, a burst, irregular steps


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "cfr": make_clip(d / "cfr.mp4", frames=10, rate=Fraction(25)),
        "ntsc": make_clip(d / "ntsc.mp4", frames=10, rate=NTSC_FILM),
        "vfr": make_clip(
            d / "vfr.mp4", pts=VFR_PTS, time_base=Fraction(1, 1000), rate=Fraction(25)
        ),
        "odd": make_clip(d / "odd.mp4", width=63, height=47, frames=6),
        "rot": make_clip(d / "rot.mp4", frames=4, rotation=90, audio=None),
    }


def _transcode(src: Path, dst: Path, fmt: str) -> VideoWriter:
    with VideoReader(src) as r:
        info = r.info
        w = VideoWriter(
            dst,
            fmt,
            info.width,
            info.height,
            info.time_base,
            info.rate,
            info,
            sample_aspect_ratio=info.sample_aspect_ratio,
            colour=info.colour,
        )
        with w:
            for f in r.frames():
                w.write(f.image, f.pts, f.duration)
    return w


def _last_end(path: Path) -> Fraction:
    """End of the last video frame (pts + duration), from Matroska's block durations."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        packets = [p for p in c.demux(v) if p.pts is not None]
        last = max(packets, key=lambda p: p.pts)
        return Fraction(last.pts + last.duration) * v.time_base


def _duration_us(path: Path) -> int:
    """What players show as the length (microseconds)."""
    with av.open(str(path)) as c:
        return int(c.duration)


def _last_frame_duration(path: Path) -> Fraction:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        last = list(c.decode(v))[-1]
        return Fraction(last.duration) * v.time_base


def _png_times(folder: Path) -> list[Fraction]:
    with open(folder / "frames.csv") as fh:
        rows = list(csv.DictReader(fh))
    return [Fraction(int(r["pts"])) * Fraction(r["time_base"]) for r in rows]


# --------------------------------------------------------------------------- reading
def test_reader_keeps_pts_and_rate(clips: dict[str, Path]) -> None:
    with VideoReader(clips["ntsc"]) as r:
        assert r.info.rate == NTSC_FILM
        assert r.info.frames == 10
        frames = list(r.frames())
    assert [f.pts * f.time_base for f in frames] == [Fraction(1001 * i, 24000) for i in range(10)]
    assert frames[3].image.shape == (48, 64, 3)
    # The decoded pixels are the fixture's frames (the red square moved 2 px per frame).
    assert np.abs(frames[3].image.astype(int) - square_frame(3, 64, 48)).mean() < 6


def test_reader_vfr_timestamps(clips: dict[str, Path]) -> None:
    with VideoReader(clips["vfr"]) as r:
        times = [f.pts * f.time_base for f in r.frames()]
    assert times == [Fraction(p, 1000) for p in VFR_PTS]


def test_reader_spreads_repeated_timestamps_instead_of_drifting(tmp_path: Path) -> None:
    """Frames repeating a timestamp were each given one frame more, which pushed every
    later frame later: 64 ms behind the sound after two such runs in a third of a second."""
    path = tmp_path / "repeats.mkv"
    stamps = [0, 33, 33, 67, 100, 100, 100, 133, 167]
    with av.open(str(path), "w") as c:
        s = c.add_stream("mjpeg", rate=30)
        s.width, s.height, s.pix_fmt = 32, 32, "yuvj420p"
        s.time_base = s.codec_context.time_base = Fraction(1, 1000)
        packets = []
        for i in range(len(stamps)):
            img = np.full((32, 32, 3), i * 20, np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuvj420p")
            frame.pts, frame.time_base = i * 33, Fraction(1, 1000)
            packets += s.encode(frame)
        packets += s.encode()
        for p, t in zip(packets, stamps, strict=True):
            p.pts = p.dts = t
            c.mux(p)
    with VideoReader(path) as r:
        frames = list(r.frames())
    ms = [round(float(Fraction(f.pts) * f.time_base) * 1000) for f in frames]
    assert ms == [0, 33, 50, 67, 100, 111, 122, 133, 167]
    assert [round(int(f.image[0, 0, 0]) / 20) for f in frames] == list(range(9))  # in order


@pytest.mark.parametrize(
    ("marked", "size", "why"),
    [(1, (320, 180), "the largest"), (0, (160, 90), "marked default")],
)
def test_reader_takes_the_main_video_stream_and_says_so(
    tmp_path: Path, marked: int, size: tuple[int, int], why: str
) -> None:
    """Stream 0 was taken whatever it was: a 160x90 preview before the 320x180 picture
    was converted, without a word about the other stream. Now as the ffmpeg command line
    picks: the largest, a default mark counting as a large picture."""
    path = tmp_path / "two.mkv"
    with av.open(str(path), "w") as c:
        streams = [c.add_stream("libx264", rate=25) for _ in range(2)]
        for k, (s, (w, h)) in enumerate(zip(streams, ((160, 90), (320, 180)), strict=True)):
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            s.disposition = (
                av.stream.Disposition.default if k == marked else av.stream.Disposition(0)
            )
        for s in streams:
            for i in range(3):
                img = np.full((s.height, s.width, 3), 60 * i, np.uint8)
                for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
    with VideoReader(path) as r:
        frames = list(r.frames())
    w, h = size
    assert (r.info.width, r.info.height) == size and frames[0].image.shape == (h, w, 3)
    taken, other = (1, 0) if size == (320, 180) else (0, 1)
    assert r.warnings == [
        f"the file has 2 video streams; taking stream {taken} ({w}x{h}, {why}), not {other}"
    ]


def test_reader_turns_rotated_frames_upright(clips: dict[str, Path]) -> None:
    with VideoReader(clips["rot"]) as r:
        assert r.info.rotation == 90
        assert (r.info.width, r.info.height) == (48, 64)
        img = next(r.frames()).image
    assert img.shape == (64, 48, 3)
    expected = np.rot90(square_frame(0, 64, 48))  # stored sideways, shown upright
    assert np.abs(img.astype(int) - expected).mean() < 6


def test_reader_audio_info(clips: dict[str, Path]) -> None:
    info = probe(clips["cfr"])
    assert info.audio is not None and info.audio.codec == "aac"
    assert info.audio.sample_rate == 48000
    assert probe(clips["rot"]).audio is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"", r"empty \(0 bytes\)"),
        (b"just some text, not a video\n" * 20, "not a video file"),
    ],
)
def test_reader_bad_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "clip.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VidmatError, match=message):
        VideoReader(path)


def test_reader_audio_only(tmp_path: Path) -> None:
    with pytest.raises(VidmatError, match="audio only"):
        VideoReader(audio_only_file(tmp_path / "tone.m4a"))


def test_reader_zero_frames(tmp_path: Path) -> None:
    # Matroska keeps a video track that has no frames
    with pytest.raises(VidmatError, match="no video frames"):
        VideoReader(zero_frame_file(tmp_path / "empty.mkv"))


def test_reader_corrupt_middle_converts_what_decodes(tmp_path: Path) -> None:
    data = bytearray(make_clip(tmp_path / "ok.mp4", frames=40, audio=None).read_bytes())
    start = data.find(b"mdat") + 4  # damage the middle of the picture data, not the index
    size = int.from_bytes(data[start - 8 : start - 4], "big")
    mid = start + size // 2
    data[mid : mid + 400] = bytes(400)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    with VideoReader(bad) as r:
        n = len(list(r.frames()))
    assert 0 < n < 40
    assert r.incomplete is not None and f"only {n} of 40 frames" in r.incomplete
    assert any("corrupt packet" in w for w in r.warnings)


def _mpeg_ts(path: Path, frames: int) -> bytes:
    """An MPEG-TS clip with no frame count or end time in it, each picture many TS packets
    long (noise does not compress), so a cut between packets lands inside a picture."""
    rng = np.random.default_rng(0)
    c = av.open(str(path), "w", format="mpegts")
    s = c.add_stream("mpeg2video", rate=25)
    s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
    for _ in range(frames):
        image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
        for pk in s.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            c.mux(pk)
    for pk in s.encode():
        c.mux(pk)
    c.close()
    return path.read_bytes()


def test_reader_mpeg_ts_cut_inside_a_picture_is_incomplete(tmp_path: Path) -> None:
    data = _mpeg_ts(tmp_path / "whole.ts", frames=20)
    with VideoReader(tmp_path / "whole.ts") as r:
        assert len(list(r.frames())) == 20
    assert r.incomplete is None and r.warnings == []
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[: len(data) // 2 // 188 * 188])  # whole TS packets, half a stream
    with VideoReader(cut) as r:
        n = len(list(r.frames()))
    assert 0 < n < 20
    assert r.incomplete == f"the file ends part way through frame {n}"
    assert r.warnings == []  # the cut picture is the incomplete one, not a damaged one


# --------------------------------------------------------------------------- writing
@pytest.mark.parametrize("fmt", ["mp4", "mov", "webm", "mask"])
@pytest.mark.parametrize("kind", ["cfr", "ntsc", "vfr"])
def test_writer_keeps_frames_times_duration_audio(
    clips: dict[str, Path], tmp_path: Path, fmt: str, kind: str
) -> None:
    src = clips[kind]
    dst = tmp_path / f"out{FORMATS[fmt][0]}"
    w = _transcode(src, dst, fmt)
    t_in, t_out = frame_times(src), frame_times(dst)
    assert len(t_out) == len(t_in)
    if fmt == "webm":  # Matroska stores milliseconds: exact to the millisecond
        assert max(abs(a - b) for a, b in zip(t_in, t_out, strict=True)) <= Fraction(1, 2000)
        assert abs(_last_end(dst) - (t_in[-1] + Fraction(_last_frame_duration(src)))) <= Fraction(
            1, 500
        )
    else:
        assert t_out == t_in
        # MP4 edit lists count in milliseconds (the movie timescale): the length is exact
        # to the millisecond there and exact outright in mov.
        assert abs(_duration_us(dst) - _duration_us(src)) <= (0 if fmt == "mov" else 1000)
    assert abs(audio_seconds(dst) - audio_seconds(src)) < 0.025
    assert w.audio_packets > 0
    assert [copied for _, copied in w.audio_tracks] == [fmt != "webm"]  # Opus in webm


def test_writer_png_sequence(clips: dict[str, Path], tmp_path: Path) -> None:
    src = clips["vfr"]
    dst = tmp_path / "seq"
    _transcode(src, dst, "png")
    pngs = sorted(dst.glob("frame_*.png"))
    assert len(pngs) == len(VFR_PTS)
    assert _png_times(dst) == frame_times(src)
    img = cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED)
    assert img.shape == (48, 64, 4) and (img[..., 3] == 255).all()  # RGB input: opaque
    assert abs(audio_seconds(dst / "audio.m4a") - audio_seconds(src)) < 0.001


@pytest.mark.parametrize("fmt", ["mov", "webm", "png"])
def test_writer_alpha_round_trip(tmp_path: Path, fmt: str) -> None:
    """RGBA in -> the same alpha out (exact for PNG, 10-bit ProRes, lossy VP9 close)."""
    rgba = np.zeros((48, 64, 4), np.uint8)
    rgba[..., :3] = square_frame(0, 64, 48)
    rgba[8:40, 10:30, 3] = 255
    rgba[20:30, 40:60, 3] = 128
    dst = tmp_path / f"a{FORMATS[fmt][0]}"
    with VideoWriter(dst, fmt, 64, 48, Fraction(1, 25), Fraction(25)) as w:
        for i in range(3):
            w.write(rgba, i)
    alphas = read_alphas(dst)
    assert len(alphas) == 3
    tol = {"png": 0, "mov": 1, "webm": 12}[fmt]
    assert np.abs(alphas[1].astype(int) - rgba[..., 3]).max() <= tol


def test_writer_pads_odd_sizes_for_h264_only(clips: dict[str, Path], tmp_path: Path) -> None:
    w = _transcode(clips["odd"], tmp_path / "odd.mp4", "mp4")
    assert w.padded == (64, 48)
    with av.open(str(tmp_path / "odd.mp4")) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (64, 48)
    w = _transcode(clips["odd"], tmp_path / "odd.mov", "mov")
    assert w.padded is None
    with av.open(str(tmp_path / "odd.mov")) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (63, 47)


def test_writer_rotated_input_written_upright(clips: dict[str, Path], tmp_path: Path) -> None:
    _transcode(clips["rot"], tmp_path / "up.mp4", "mp4")
    with VideoReader(tmp_path / "up.mp4") as r:
        assert r.info.rotation == 0 and (r.info.width, r.info.height) == (48, 64)


def test_atomic_folder_leaves_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "seq"
    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        (tmp / "frame_000001.png").write_bytes(b"x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_folder(target) as tmp:
        (tmp / "a").write_bytes(b"1")
    assert (target / "a").read_bytes() == b"1"
    with pytest.raises(VidmatError, match="already exists"), atomic_folder(target) as tmp:
        pass
    with atomic_folder(target, overwrite=True) as tmp:
        (tmp / "b").write_bytes(b"2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["seq"]


@pytest.mark.parametrize(("fmt", "codec"), [("mp4", "aac"), ("webm", "opus"), ("mov", "pcm_s16le")])
def test_audio_reencoded_when_container_cannot_copy(tmp_path: Path, fmt: str, codec: str) -> None:
    """PCM audio (from a .mov) cannot go into mp4 or webm as it is: AAC / Opus instead."""
    src = make_clip(tmp_path / "pcm.mov", frames=8, audio="pcm_s16le")
    dst = tmp_path / f"out{FORMATS[fmt][0]}"
    w = _transcode(src, dst, fmt)
    assert [copied for _, copied in w.audio_tracks] == [fmt == "mov"]
    with av.open(str(dst)) as c:
        assert c.streams.audio[0].codec_context.name == codec
    assert abs(audio_seconds(dst) - audio_seconds(src)) < 0.03


# --------------------------------------------------------------------------- last frame
def test_reader_long_last_frame_is_not_truncation(tmp_path: Path) -> None:
    """11 frames 100 ms apart and a last one of 3 s: the file is whole at 4.0 s. The end
    was taken as the last pts plus the previous gap (1.1 s), so it was called truncated."""
    src = long_last_clip(tmp_path / "hold.mkv")
    with VideoReader(src) as r:
        assert r.info.video_end == 4.0
        frames = list(r.frames())
    assert len(frames) == 11 and frames[-1].duration == 3000
    assert r.incomplete is None and r.warnings == []


def test_a_short_last_frame_after_a_long_gap_keeps_its_own_length(tmp_path: Path) -> None:
    """Frames at 0, 0.1 and 30 s, the last 40 ms long (the file ends at 30.04 s), with
    B-frames: FFmpeg's durations follow decode order, so the last frame came with the
    29.9 s of the gap before it, and a 30 s clip was converted to 60 s."""
    path = tmp_path / "gap.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=None, options={"preset": "veryfast", "bf": "2"})
        s.width, s.height, s.pix_fmt, s.time_base = 64, 48, "yuv420p", Fraction(1, 1000)
        for i, pts in enumerate((0, 100, 30000)):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 60 * i, np.uint8), "rgb24")
            f.pts, f.time_base = pts, Fraction(1, 1000)
            for pk in s.encode(f):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    with VideoReader(path) as r:
        frames = list(r.frames())
        end = r.info.video_end
    assert end is not None and 30.0 < end < 30.2
    last = frames[-1]
    assert last.time == pytest.approx(30.0)
    assert float((last.pts + last.duration) * last.time_base) == pytest.approx(end, abs=1e-3)


def test_a_cut_that_lost_the_frames_before_the_last_is_incomplete(tmp_path: Path) -> None:
    """A Matroska cut in half lost the B-frames shown before its last decodable picture:
    pictures at 0..11 and 15 of 24 (12 fps), the file saying 2.0 s. The slack for the
    last frame's unknown length went by that last gap of 4 frames, 8 frames in all, and
    the 6 frames missing were never said (exit 0). Here the frames 12-14 are left out
    when writing, and the file cut after the picture at 15."""
    path = tmp_path / "whole.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=12, options={"preset": "ultrafast", "g": "1"})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in [*range(12), *range(15, 24)]:
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 10 * i, np.uint8), "rgb24")
            f.pts = i
            for pk in s.encode(f):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    with av.open(str(path)) as c:
        after = next(p.pos for p in c.demux(video=0) if p.pts is not None and p.pts > 1250)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(path.read_bytes()[:after])
    with VideoReader(cut) as r:
        assert r.info.video_end == pytest.approx(2.0, abs=0.01)
        frames = list(r.frames())
    assert round(frames[-1].time * 12) == 15
    assert r.incomplete is not None and "decoding stopped after 13 frames" in r.incomplete


def _mux_frames(container: Any, stream: Any, images: list[np.ndarray]) -> None:
    """Encode RGB ``images`` as frames 0, 1, ... in ``stream``'s pixel format, and flush."""
    for i, image in enumerate(images):
        f = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format=stream.pix_fmt)
        f.pts = i
        for pk in stream.encode(f):
            container.mux(pk)
    for pk in stream.encode():
        container.mux(pk)


def test_an_interlaced_video_is_said_to_be_converted_whole(tmp_path: Path) -> None:
    """A tape capture (MPEG-2, top field first) came out progressive and combed, in silence."""
    path = tmp_path / "tape.mpg"
    with av.open(str(path), "w", format="mpeg") as c:
        s = c.add_stream("mpeg2video", rate=25, options={"flags": "+ilme+ildct", "top": "1"})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        _mux_frames(c, s, [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(4)])
    with VideoReader(path) as r:
        assert len(list(r.frames())) == 4
    assert r.notes == [
        "the video is interlaced; its frames are converted whole, not deinterlaced, so "
        "moving edges keep their comb-like lines"
    ]
    assert r.warnings == [] and r.incomplete is None  # a note, not damage
    with VideoReader(make_clip(tmp_path / "p.mp4", frames=3, audio=None)) as r:
        list(r.frames())
    assert r.notes == [] and r.warnings == []


def test_reader_long_last_frame_file_cut_short_is_still_incomplete(tmp_path: Path) -> None:
    data = long_last_clip(tmp_path / "hold.mkv", frames=30, content="noise").read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    with VideoReader(cut) as r:
        n = len(list(r.frames()))
    assert 0 < n < 30
    assert r.incomplete is not None


@pytest.mark.parametrize("fmt", ["mp4", "mov", "webm", "mask"])
def test_writer_keeps_a_long_last_frame(tmp_path: Path, fmt: str) -> None:
    """The output lasts 4.0 s in its header and in its frames' durations alike (an mp4
    said 4.0 s in its edit list while its sample durations summed to 1.1 s)."""
    src = long_last_clip(tmp_path / "hold.mkv", content="still")
    dst = tmp_path / f"out{FORMATS[fmt][0]}"
    _transcode(src, dst, fmt)
    with av.open(str(dst)) as c:
        v = c.streams.video[0]
        packets = [p for p in c.demux(v) if p.size]
        assert abs(c.duration / 1e6 - 4.0) < 0.002
        assert abs(float(sum(p.duration for p in packets) * v.time_base) - 4.0) < 0.002
    assert frame_times(dst) == frame_times(src)
    # Read back, each frame lasts until the next and the last one 3 s (FFmpeg's frame
    # durations follow decode order in an MP4 with B-frames: 3 s on the frame before).
    with VideoReader(dst) as r:
        lengths = [f.duration * f.time_base for f in r.frames()]
    assert r.incomplete is None and r.warnings == []
    assert lengths == [Fraction(1, 10)] * 10 + [Fraction(3)]


# --------------------------------------------------------------------------- pixel shape
def test_reader_pixel_aspect_ratio_turns_with_the_picture(tmp_path: Path) -> None:
    assert probe(anamorphic_clip(tmp_path / "a.mp4")).sample_aspect_ratio == Fraction(64, 45)
    turned = probe(anamorphic_clip(tmp_path / "r.mp4", rotation=90))
    assert (turned.width, turned.height) == (48, 64)
    assert turned.sample_aspect_ratio == Fraction(45, 64)
    assert probe(make_clip(tmp_path / "sq.mp4", frames=2, audio=None)).sample_aspect_ratio is None


@pytest.mark.parametrize("fmt", ["mp4", "mov", "webm", "mask"])
def test_writer_keeps_pixel_aspect_ratio(tmp_path: Path, fmt: str) -> None:
    """Anamorphic input came out with square pixels: shown squeezed."""
    dst = tmp_path / f"out{FORMATS[fmt][0]}"
    w = _transcode(anamorphic_clip(tmp_path / "a.mp4"), dst, fmt)
    assert w.warnings == []
    with av.open(str(dst)) as c:
        v = c.streams.video[0]
        assert (v.width, v.height) == (64, 48)
        if fmt == "webm":  # Matroska stores a display width in whole pixels: 91
            assert v.sample_aspect_ratio == Fraction(91, 64)
        else:
            assert v.sample_aspect_ratio == Fraction(64, 45)
    assert len(frame_times(dst)) == 3  # the WebM still plays after its header was patched


def test_writer_png_says_it_drops_the_pixel_aspect_ratio(tmp_path: Path) -> None:
    w = _transcode(anamorphic_clip(tmp_path / "a.mp4"), tmp_path / "seq", "png")
    assert len(w.warnings) == 1 and "64:45" in w.warnings[0] and "91x48" in w.warnings[0]


# --------------------------------------------------------------------------- colour
@pytest.mark.parametrize("fmt", ["mp4", "mov", "webm"])
def test_writer_encodes_with_the_inputs_matrix_and_tags_it(tmp_path: Path, fmt: str) -> None:
    """A BT.709-tagged input came out encoded with BT.601 and untagged: players, which
    read untagged HD as BT.709, showed the greenscreen #00B140 as about #00983D."""
    image = colour_clip(tmp_path / "hd.mp4", 64, 48, "ITU709")
    dst = tmp_path / f"out{FORMATS[fmt][0]}"
    _transcode(tmp_path / "hd.mp4", dst, fmt)
    with av.open(str(dst)) as c:
        v = c.streams.video[0]
        frame = next(c.decode(v))
        assert (frame.colorspace, frame.color_primaries, frame.color_trc) == (1, 1, 1)
        assert frame.color_range == 1  # limited ("TV") range, tagged
        shown = player_rgb(frame)
    # Within swscale's fast YUV->RGB error (2 levels) when the input was decoded.
    assert np.abs(shown[40, 50].astype(int) - GREENSCREEN).max() <= 3
    assert np.abs(shown[10, 10].astype(int) - image[10, 10]).max() <= 3  # the "person"
    assert np.abs(shown.astype(int) - image).mean() < 3


def _grey_ramp_clip(path: Path) -> np.ndarray:
    """A lossless H.264 clip of one picture whose Y runs over 16..235 with neutral chroma;
    returns the RGB a player shows for it, (Y - 16) * 255 / 219 on every channel."""
    h, w = 48, 220
    y = np.tile(np.arange(16, 16 + w, dtype=np.uint8), (h, 1))
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25, options={"qp": "0"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        chroma = np.full((h // 2, w), 128, np.uint8)  # U then V, each (h/2, w/2), row-packed
        frame = av.VideoFrame.from_ndarray(np.vstack([y, chroma]), format="yuv420p")
        frame.pts = 0
        for packet in (*s.encode(frame), *s.encode(None)):
            c.mux(packet)
    level = np.round((y.astype(float) - 16) * 255 / 219)
    return np.repeat(level[..., None], 3, axis=2)


def test_pictures_are_read_and_written_without_a_level_of_bias(tmp_path: Path) -> None:
    """swscale's default YUV->RGB truncated: every picture, the person too, came out about
    one level darker than it went in (QA: -1.06 luma), in every format; a ProRes copy of
    it read back lost as much again."""
    src = tmp_path / "ramp.mp4"
    shown = _grey_ramp_clip(src)
    with VideoReader(src) as r:
        got = next(r.frames()).image.astype(float)
    assert abs((got - shown).mean()) < 0.1 and np.abs(got - shown).max() <= 1
    _transcode(src, tmp_path / "copy.mov", "mov")
    with VideoReader(tmp_path / "copy.mov") as r:
        again = next(r.frames()).image.astype(float)
    assert abs((again - shown).mean()) < 0.1 and np.abs(again - shown).max() <= 1


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_reading_frames_starts_no_threads_and_leaves_no_frames_to_the_collector(
    tmp_path: Path,
) -> None:
    """Each frame's to_ndarray built a converter with a thread per core, and reading its
    side data tied the frame in a reference cycle: threads and frames piled up until the
    garbage collector ran (a 10-minute live soak: 36 to 440 threads, 50 new a second)."""
    import gc
    import os

    src = make_clip(tmp_path / "c.mp4", frames=60)
    threads = lambda: len(os.listdir("/proc/self/task"))  # noqa: E731
    gc.collect()
    gc.disable()
    try:
        with VideoReader(src) as r:
            frames = r.frames()
            next(frames)
            before = threads()
            n = 1 + sum(1 for _ in frames)
            grown = threads() - before
            alive = sum(1 for o in gc.get_objects() if type(o).__name__ == "VideoFrame")
    finally:
        gc.enable()
    assert n == 60
    assert grown <= 2, f"{grown} threads more after {n} frames"
    assert alive <= 3, f"{alive} decoded frames wait for the garbage collector"
    # A reader closed part-way (a cancelled convert) is freed at once, not by the collector.
    import weakref

    gc.disable()
    try:
        with VideoReader(src) as r:
            next(r.frames())
        gone = weakref.ref(r)
        del r
        assert gone() is None
    finally:
        gc.enable()


def test_writer_keeps_bt601_tags_and_untagged_input_gets_tags(tmp_path: Path) -> None:
    colour_clip(tmp_path / "sd.mp4", 64, 48, "ITU601")
    assert probe(tmp_path / "sd.mp4").colour.matrix == 6
    _transcode(tmp_path / "sd.mp4", tmp_path / "o.mp4", "mp4")
    with av.open(str(tmp_path / "o.mp4")) as c:
        frame = next(c.decode(c.streams.video[0]))
    assert (frame.colorspace, frame.color_primaries) == (6, 6)
    assert np.abs(player_rgb(frame)[40, 50].astype(int) - GREENSCREEN).max() <= 3
    # No input colour (the live recorder): tagged all the same.
    with VideoWriter(tmp_path / "r.mp4", "mp4", 64, 48, Fraction(1, 25)) as w:
        w.write(np.full((48, 64, 3), GREENSCREEN, np.uint8), 0)
    with av.open(str(tmp_path / "r.mp4")) as c:
        frame = next(c.decode(c.streams.video[0]))
    assert frame.colorspace == 6  # BT.601 for SD, as a player would assume
    assert np.abs(player_rgb(frame)[40, 50].astype(int) - GREENSCREEN).max() <= 3


def test_reader_decodes_untagged_hd_as_players_do(tmp_path: Path) -> None:
    """Untagged HD is BT.709 to players; FFmpeg's own default is BT.601."""
    image = colour_clip(tmp_path / "hd.mp4", 1280, 720, None)
    with VideoReader(tmp_path / "hd.mp4") as r:
        assert r.info.colour.matrix == 1
        got = next(r.frames()).image
    assert np.abs(got.astype(int) - image).mean() < 2
    assert np.abs(got[600, 1000].astype(int) - GREENSCREEN).max() <= 3


@pytest.mark.parametrize(("matrix", "name"), [(8, "YCgCo"), (10, "BT.2020 constant luminance")])
def test_a_matrix_swscale_lacks_is_read_as_the_nearest_with_a_warning(
    tmp_path: Path, matrix: int, name: str
) -> None:
    """A YCgCo-tagged (or BT.2020-CL, ICtCp, ...) file failed in the decoder thread with
    swscale's 'Operation not supported': a traceback out of convert, a failed camera live."""
    path, image = tmp_path / "odd.mp4", np.full((48, 64, 3), GREENSCREEN, np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25, options={"preset": "ultrafast", "crf": "8"})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.colorspace = matrix
        _mux_frames(c, s, [image] * 3)
    with VideoReader(path) as r:
        assert r.info.colour.matrix == matrix
        frames = list(r.frames())
    assert len(frames) == 3 and frames[0].image.shape == (48, 64, 3)
    assert [w for w in r.warnings if "colour matrix" in w] == [
        f"the video's colour matrix ({name}) cannot be converted; it was read as "
        f"{'BT.709' if matrix == 8 else 'BT.2020'}, so colours may be off"
    ]
    w = _transcode(path, tmp_path / "o.mp4", "mp4")
    assert w.colour.matrix == 1  # written as BT.709, which it can encode
    assert len(frame_times(tmp_path / "o.mp4")) == 3


def test_reader_warns_once_about_hdr(tmp_path: Path) -> None:
    path = tmp_path / "hlg.mp4"
    colour_clip(path, 64, 48, "BT2020", hlg=True)
    w = _transcode(path, tmp_path / "o.mp4", "mp4")
    with VideoReader(path) as r:
        assert len(list(r.frames())) == 2
    assert r.warnings == [
        "HDR (HLG) video is written as SDR without tone mapping: "
        "bright parts clip and colours look flat"
    ]
    assert w.colour.trc == 1 and w.colour.matrix == 9  # SDR curve, the input's matrix


# --------------------------------------------------------------------------- odd masks
def test_writer_mask_keeps_odd_size(clips: dict[str, Path], tmp_path: Path) -> None:
    """A padded 64x48 mask of a 63x47 clip no longer lined up as a track matte."""
    rgb = np.zeros((47, 63, 3), np.uint8)
    rgb[10:30, 5:40] = 255
    rgb[30:, 40:] = 128
    dst = tmp_path / "m.mp4"
    with VideoWriter(dst, "mask", 63, 47, Fraction(1, 25), Fraction(25)) as w:
        for i in range(3):
            w.write(rgb, i)
    assert w.padded is None and w.monochrome
    assert len(w.warnings) == 1 and "4:0:0" in w.warnings[0]
    with av.open(str(dst)) as c:
        v = c.streams.video[0]
        assert (v.width, v.height) == (63, 47)
        assert v.codec_context.color_range == 1  # tagged limited range ...
        decoded = list(c.decode(v))
        frames = [f.to_ndarray(format="rgb24") for f in decoded]
    # ... and stored so: the grey was written full range under that tag (0 and 255 as Y)
    plane = decoded[1].planes[0]
    y = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:47, :63]
    for level, want in ((0, 16), (128, 126), (255, 235)):
        assert abs(int(np.median(y[rgb[..., 0] == level])) - want) <= 1, level
    assert len(frames) == 3
    assert np.abs(frames[1].astype(int) - rgb).mean() < 1.5
    assert np.abs(frames[1].astype(int) - rgb).max() <= 40  # only at the edges
    # Even sizes stay plain 4:2:0 (every player), odd composites stay padded.
    assert _transcode(clips["cfr"], tmp_path / "e.mp4", "mask").monochrome is False
    with av.open(str(tmp_path / "e.mp4")) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
    assert _transcode(clips["odd"], tmp_path / "o.mp4", "mp4").padded == (64, 48)


# --------------------------------------------------------------------------- E
@pytest.mark.parametrize(("hflip", "vflip"), [(True, False), (False, True), (True, True)])
def test_reader_mirrored_display_matrix(tmp_path: Path, hflip: bool, vflip: bool) -> None:
    """A left-right mirror reads as a 180 degree rotation to PyAV: it was turned upside down."""
    path = tmp_path / "m.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25, options={"preset": "ultrafast", "crf": "10"})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.set_display_rotation(0, hflip=hflip, vflip=vflip)
        stored = square_frame(0, 64, 48)
        stored[:8, :8] = 255  # a white corner: the square alone is symmetric top-bottom
        f = av.VideoFrame.from_ndarray(stored, format="rgb24")
        for pk in [*s.encode(f), *s.encode()]:
            c.mux(pk)
    expected = stored
    if hflip:
        expected = expected[:, ::-1]
    if vflip:
        expected = expected[::-1]
    with VideoReader(path) as r:
        img = next(r.frames()).image
    assert np.abs(img.astype(int) - expected).mean() < 6


def test_reader_warns_once_about_a_size_change(tmp_path: Path) -> None:
    parts = []
    for k, (w, h) in enumerate([(64, 48), (96, 64)]):
        part = tmp_path / f"p{k}.h264"
        with av.open(str(part), "w", format="h264") as c:
            s = c.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            for i in range(4):
                f = av.VideoFrame.from_ndarray(square_frame(i, w, h), format="rgb24")
                for pk in s.encode(f):
                    c.mux(pk)
            for pk in s.encode():
                c.mux(pk)
        parts.append(part.read_bytes())
    joined = tmp_path / "joined.h264"
    joined.write_bytes(b"".join(parts))
    with VideoReader(joined) as r:
        images = [f.image for f in r.frames()]
    assert len(images) == 8 and {im.shape for im in images} == {(48, 64, 3)}
    assert r.warnings == [
        "the picture size changes from 64x48 to 96x64 at frame 5; "
        "the frames of other sizes were stretched to the first size"
    ]


def test_reading_that_stops_early_keeps_the_frames_the_decoder_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read error before the end (a network drive gone, a damaged index) lost the
    pictures the decoder still held: 10 of 12 frames, the warning saying nothing of it."""
    src = make_clip(tmp_path / "in.mp4", frames=12, audio=None)
    real = video_mod.open_input

    class FailsAtTheEnd:
        """The file, whose demuxer fails where it would have given the end-of-file packet."""

        def __init__(self, path: Path) -> None:
            self._c = real(path)

        def demux(self, *args: object, **kwargs: object):
            for packet in self._c.demux(*args, **kwargs):
                if packet.size == 0:
                    raise av.error.InvalidDataError(1094995529, "Invalid data")
                yield packet

        def __getattr__(self, name: str) -> object:
            return getattr(self._c, name)

    monkeypatch.setattr(video_mod, "open_input", FailsAtTheEnd)
    with VideoReader(src) as r:
        frames = list(r.frames())
    assert len(frames) == 12
    assert [f.index for f in frames] == list(range(12))
    assert any("reading stopped early" in w for w in r.warnings)


def test_a_tag_that_is_not_utf8_does_not_stop_the_file(tmp_path: Path) -> None:
    """A Latin-1 title (an old camera's): PyAV 18 raised on opening unless told to ignore
    it, PyAV 19 dropped that option; either way the file opens and every frame is read."""
    from vidmat.io.pyav import open_input

    good = tmp_path / "title.mp4"
    with av.open(str(good), "w") as c:
        c.metadata["title"] = "cafXQQ-marker"
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for _ in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    data = good.read_bytes()
    at = data.index(b"cafXQQ-marker") + 3
    bad = tmp_path / "latin1.mp4"
    bad.write_bytes(data[:at] + b"\xe9" + data[at + 1 :])  # "café" in Latin-1
    with open_input(bad) as c:
        assert c.metadata["title"].startswith("caf")
    with VideoReader(bad) as r:
        assert sum(1 for _ in r.frames()) == 5
    assert probe(bad).frames == 5


def test_a_header_rate_no_video_has_is_not_believed(tmp_path: Path) -> None:
    """make_clip's H.264 stream carries timing info that FFmpeg reads as 25000 fps; copied
    into Matroska, that became the file's average rate, and a WebM output of it failed at
    its first frame (the VP9 encoder refuses such a rate). FFmpeg's guess is taken then."""
    from convert_fixtures import with_tracks

    src = with_tracks(tmp_path / "copy.mkv", [make_clip(tmp_path / "c.mp4", frames=12)], [{}])
    with av.open(str(src)) as c:
        assert c.streams.video[0].average_rate == 25000  # what the header says
    assert probe(src).rate == 25


def test_a_file_without_a_frame_count_gets_an_estimate_for_progress(tmp_path: Path) -> None:
    """Matroska stores no frame count, so a bar over an .mkv (what OBS records) had no
    total and no time left; duration x rate stands in for it."""
    from convert_fixtures import with_tracks

    src = with_tracks(tmp_path / "c.mkv", [make_clip(tmp_path / "c.mp4", frames=12)], [{}])
    info = probe(src)
    assert info.frames is None and info.frames_expected == 12
    assert probe(tmp_path / "c.mp4").frames_expected == 12  # the header's count
