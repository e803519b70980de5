"""The audio path (vidmat.io.audio) never costs the video: audio FFmpeg cannot decode, or at
a rate the encoder refuses, or an encoder that will not open, leaves the audio out (said in
one warning) or is resampled; surround mixed down to stereo keeps its level in every format."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from convert_fixtures import audio_seconds, frame_times, make_clip, stub_engine, with_tracks

from vidmat.cli import main
from vidmat.core.engine import Engine
from vidmat.io import audio as audio_mod
from vidmat.io.audio import encoder_rate
from vidmat.io.channels import channel_list, channel_names, layouts_to_try, left_out_of_mix
from vidmat.io.video import VideoWriter, probe
from vidmat.pipelines.convert import ConvertConfig, convert_video

TONE_PEAK = 0.3  # make_clip's tone, in every channel


@pytest.fixture(scope="module")
def engine() -> Engine:
    return stub_engine()


def undecodable_clip(path: Path) -> Path:
    """A Matroska clip whose audio codec ID is one FFmpeg does not know (as a file from a
    newer or odd muxer): PyAV gives the stream no codec context at all. Same length as
    ``A_PCM/INT/LIT``, so the EBML sizes stay right."""
    good = make_clip(path.with_name("pcm_" + path.name), frames=8, audio="pcm_s16le")
    data = good.read_bytes()
    assert data.count(b"A_PCM/INT/LIT") == 1
    path.write_bytes(data.replace(b"A_PCM/INT/LIT", b"A_QQQ/QQQ/QQQ"))
    return path


def audio_streams(path: Path) -> list[tuple[str, int, str]]:
    """(codec, sample rate, layout) of each audio stream of a file."""
    with av.open(str(path)) as c:
        return [
            (a.codec_context.name, a.codec_context.sample_rate, a.codec_context.layout.name)
            for a in c.streams.audio
        ]


def audio_levels(path: Path) -> tuple[float, float]:
    """Peak and RMS of a file's audio (first channel, full scale 1.0 whatever the sample
    format); the RMS leaves out the first and last tenth, where encoders ramp in and out."""
    with av.open(str(path)) as c:
        parts = []
        for f in c.decode(c.streams.audio[0]):
            a = f.to_ndarray()
            a = a[0] if not f.format.is_packed else a.reshape(-1)[:: f.layout.nb_channels]
            if a.dtype.kind == "i":
                a = a / float(np.iinfo(a.dtype).max + 1)
            parts.append(a.astype(np.float64))
    x = np.concatenate(parts)
    middle = x[len(x) // 10 : -len(x) // 10]
    return float(np.abs(x).max()), float(np.sqrt(np.mean(middle**2)))


# --------------------------------------------------------------------------- 1: no decoder
@pytest.mark.parametrize("fmt", ["mp4", "png"])
def test_undecodable_audio_is_left_out_with_one_warning(
    engine: Engine, tmp_path: Path, fmt: str
) -> None:
    """Used to end in AttributeError ('NoneType' has no 'decode') and no output."""
    src = undecodable_clip(tmp_path / "odd.mkv")
    info = probe(src)
    assert info.audio is not None and info.audio.codec == "unknown"
    dst = tmp_path / ("out.mp4" if fmt == "mp4" else "out")
    result = convert_video(engine, src, dst, ConvertConfig(fmt=fmt))
    assert result.frames == 8 and result.audio is None
    assert result.warnings == ["the audio was left out: FFmpeg has no decoder for its codec"]
    if fmt == "png":
        assert len(list(dst.glob("*.png"))) == 8 and not (dst / "audio.m4a").exists()
    else:
        assert len(frame_times(dst)) == 8 and audio_streams(dst) == []


@pytest.mark.parametrize("fmt", ["mp4", "png"])
def test_an_undecodable_track_costs_only_itself(engine: Engine, tmp_path: Path, fmt: str) -> None:
    """Of two tracks, the one FFmpeg cannot decode is left out, said by its number; the
    other is carried all the same."""
    mic = make_clip(tmp_path / "mic.mp4", frames=8)
    pcm = make_clip(tmp_path / "pcm.mov", frames=8, audio="pcm_s16le")
    good = with_tracks(tmp_path / "two.mkv", [mic, pcm], [{"title": "Mic"}, {"title": "Odd"}])
    data = good.read_bytes()
    assert data.count(b"A_PCM/INT/LIT") == 1
    src = tmp_path / "odd.mkv"
    src.write_bytes(data.replace(b"A_PCM/INT/LIT", b"A_QQQ/QQQ/QQQ"))
    assert [a.codec for a in probe(src).audio_streams] == ["aac", "unknown"]
    dst = tmp_path / ("out.mp4" if fmt == "mp4" else "out")
    result = convert_video(engine, src, dst, ConvertConfig(fmt=fmt))
    assert result.frames == 8
    assert result.audio == "copied" + (" to audio.m4a" if fmt == "png" else "")
    assert result.warnings == [
        'audio track 2 of 2 ("Odd") was left out: FFmpeg has no decoder for its codec'
    ]
    audio = dst / "audio.m4a" if fmt == "png" else dst
    assert audio_streams(audio) == [("aac", 48000, "mono")]


@pytest.mark.parametrize("fmt", ["mp4", "webm", "png"])
def test_a_track_without_sound_is_said_and_not_counted(
    engine: Engine, tmp_path: Path, fmt: str
) -> None:
    """A track with no packet at all: the MP4 muxer leaves it out, WebM kept it as a
    silent track; the note said "2 tracks copied" either way. Now it names the track, is
    left out of every format and counts the others only; with no sound anywhere, no
    audio.m4a is written."""
    clip = make_clip(tmp_path / "a.mp4", frames=8)
    src = tmp_path / "empty.mkv"
    with av.open(str(clip)) as c, av.open(str(src), "w") as out:
        video = out.add_stream_from_template(c.streams.video[0])
        first = out.add_stream_from_template(c.streams.audio[0])
        out.add_stream("libopus", rate=48000, layout="stereo").metadata["title"] = "Silent"
        for pk in c.demux():
            if pk.size:
                pk.stream = video if pk.stream.type == "video" else first
                out.mux(pk)
    dst = tmp_path / ("out" if fmt == "png" else f"out.{fmt}")
    result = convert_video(engine, src, dst, ConvertConfig(fmt=fmt))
    assert result.warnings == ['audio track 2 of 2 ("Silent") holds no sound']
    assert result.audio == ("copied" if fmt != "webm" else "re-encoded") + (
        " to audio.m4a" if fmt == "png" else ""
    )
    with av.open(str(dst / "audio.m4a" if fmt == "png" else dst)) as c:
        assert len(c.streams.audio) == 1


def test_a_track_of_a_few_milliseconds_is_carried_and_counted(
    engine: Engine, tmp_path: Path
) -> None:
    """10 ms of PCM re-encoded to AAC: every packet comes out of the encoder's flush, and
    those were not counted, so the track was called silent (and an audio.m4a of it
    deleted)."""
    src = make_clip(tmp_path / "short.mov", frames=8, audio="pcm_s16le", audio_seconds=0.01)
    for fmt, dst in (("mp4", tmp_path / "o.mp4"), ("png", tmp_path / "o")):
        result = convert_video(engine, src, dst, ConvertConfig(fmt=fmt))
        assert result.warnings == [] and result.audio is not None
        assert result.audio.startswith("re-encoded")
        audio = dst / "audio.m4a" if fmt == "png" else dst
        assert [codec for codec, _, _ in audio_streams(audio)] == ["aac"]


def test_undecodable_audio_in_a_batch_does_not_stop_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = stub_engine()
    monkeypatch.setattr(Engine, "from_config", classmethod(lambda cls, cfg: engine))
    bad = undecodable_clip(tmp_path / "a_odd.mkv")
    good = make_clip(tmp_path / "b_good.mp4", frames=8)
    assert main(["convert", "--quiet", str(bad), str(good)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "vidmat: warning: a_odd.mkv: the audio was left out" in err
    assert (tmp_path / "a_odd_green.mp4").is_file() and (tmp_path / "b_good_green.mp4").is_file()


@pytest.mark.parametrize("fmt", ["mp4", "png"])
def test_writer_given_undecodable_audio_writes_the_video(tmp_path: Path, fmt: str) -> None:
    """The writer on its own (no convert pre-check): the audio pass refuses before it adds
    a stream or file, and the frames are written without audio."""
    src = undecodable_clip(tmp_path / "odd.mkv")
    info = probe(src)
    dst = tmp_path / ("out.mp4" if fmt == "mp4" else "out")
    with VideoWriter(dst, fmt, 64, 48, info.time_base, info.rate, info) as w:
        w.write(np.zeros((48, 64, 3), np.uint8), 0)
    assert w.audio_tracks == []
    if fmt == "png":
        assert sorted(p.name for p in dst.iterdir()) == ["frame_000001.png", "frames.csv"]
    else:
        assert audio_streams(dst) == [] and len(frame_times(dst)) == 1


# --------------------------------------------------------------------------- 2: sample rates
@pytest.mark.parametrize(
    ("codec", "rate", "expected"),
    [
        ("aac", 48000, 48000),
        ("aac", 96000, 96000),  # taken as it is
        ("aac", 37800, 44100),  # the next rate up: nothing of the input lost
        ("aac", 192000, 48000),  # not above 48 kHz when it must change
        ("aac", 50000, 48000),
        ("libopus", 44100, 48000),
        ("libopus", 22050, 24000),
    ],
)
def test_encoder_rate(codec: str, rate: int, expected: int) -> None:
    assert encoder_rate(av.Codec(codec, "w"), rate) == expected


@pytest.mark.parametrize(
    ("rate", "fmt", "expected"),
    [(192000, "mp4", 48000), (37800, "mask", 44100), (192000, "png", 48000)],
)
def test_sample_rate_aac_refuses_is_resampled(
    engine: Engine, tmp_path: Path, rate: int, fmt: str, expected: int
) -> None:
    """PCM at 192 kHz or 37.8 kHz used to fail the whole mp4/mask/png output when AAC
    refused to open ('avcodec_open2("aac") returned 22')."""
    src = make_clip(tmp_path / "hi.mov", frames=8, audio="pcm_s24le", sample_rate=rate)
    dst = tmp_path / ("out.mp4" if fmt != "png" else "out")
    result = convert_video(engine, src, dst, ConvertConfig(fmt=fmt))
    assert result.frames == 8 and result.warnings == []
    audio_file = dst / "audio.m4a" if fmt == "png" else dst
    assert audio_streams(audio_file) == [("aac", expected, "mono")]
    assert abs(audio_seconds(audio_file) - audio_seconds(src)) < 0.03


def test_encoder_that_will_not_open_leaves_the_audio_out(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever makes the audio encoder refuse to open (here a rate AAC has no table for),
    the video is written without audio and the warning says why."""
    monkeypatch.setattr(audio_mod, "encoder_rate", lambda codec, rate: 37800)
    src = make_clip(tmp_path / "pcm.mov", frames=8, audio="pcm_s16le")
    dst = tmp_path / "out.mp4"
    result = convert_video(engine, src, dst, ConvertConfig(fmt="mp4"))
    assert result.frames == 8 and result.audio is None
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith(
        "the audio was left out: the aac encoder would not open at 37800 Hz mono"
    )
    assert len(frame_times(dst)) == 8 and audio_streams(dst) == []


# --------------------------------------------------------------------------- 3: surround
def channel_levels(path: Path) -> dict[str, float]:
    """RMS of each channel of a file's first audio track, by channel name ("FL", "SL")."""
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        names = [ch.name for ch in stream.codec_context.layout.channels]
        # packed: PyAV's planar to_ndarray crashes at 8 channels
        resampler = av.AudioResampler(format="flt", layout=stream.codec_context.layout)
        parts = [g.to_ndarray() for f in c.decode(stream) for g in resampler.resample(f)]
    x = np.concatenate(parts, axis=1).reshape(-1, len(names)).T.astype(np.float64)
    x = x[:, x.shape[1] // 10 : -x.shape[1] // 10]
    return dict(zip(names, np.sqrt(np.mean(x**2, axis=1)).tolist(), strict=True))


def write_with_audio_of(src: Path, dst: Path, fmt: str) -> VideoWriter:
    info = probe(src)
    with VideoWriter(dst, fmt, 64, 48, info.time_base, info.rate, info) as w:
        for i in range(8):
            w.write(np.zeros((48, 64, 3), np.uint8), i * round(Fraction(1, 25) / info.time_base))
    return w


SIDES_BACK = {"SL": ("BL",), "SR": ("BR",)}
BACK_CENTRE_SPLIT = {"BC": ("BL", "BR")}


@pytest.mark.parametrize(
    ("layout", "fmt", "out_layout", "moves"),
    [
        ("5.1", "mp4", "5.1", {}),
        ("5.1(side)", "mp4", "5.1", SIDES_BACK),  # AAC would store side speakers unnamed
        ("7.1", "mp4", "7.1", {}),
        ("6.1", "mp4", "7.1", BACK_CENTRE_SPLIT),  # AAC stores 6.1 unnamed
        ("3.1", "mp4", "5.1", {}),  # the backs silent
        ("quad", "webm", "quad", {}),
        ("5.1", "webm", "5.1", {}),
        ("5.1(side)", "webm", "5.1", SIDES_BACK),  # Opus has no side layout
        ("7.1", "webm", "7.1", {}),
        ("5.0", "webm", "5.1", {}),  # libopus swapped 5.0's channels (centre at BR)
        ("6.1", "webm", "7.1", BACK_CENTRE_SPLIT),  # ... and 6.1's
        ("4.0", "webm", "5.1", BACK_CENTRE_SPLIT),
        ("2.1", "webm", "5.1", {}),
    ],
)
def test_a_surround_track_re_encoded_keeps_its_channels(
    tmp_path: Path, layout: str, fmt: str, out_layout: str, moves: dict[str, tuple[str, ...]]
) -> None:
    """Re-encoded surround keeps every channel at its level in a place of its own (it was
    mixed to stereo whatever the encoder could carry): a PCM track in a MOV into mp4
    (AAC) and webm (Opus), each channel at a level of its own. A layout the encoder does
    not keep goes into the smallest one that does: a side speaker plays from the back
    one, a back centre from both backs at -3 dB each, extra speakers are silent."""
    n = av.AudioLayout(layout).nb_channels
    gains = [0.3 + 0.1 * k for k in range(n)]
    src = make_clip(
        tmp_path / "surround.mov",
        frames=8,
        audio="pcm_s16le",
        audio_layout=layout,
        channel_gains=gains,
    )
    dst = tmp_path / f"out.{fmt}"
    w = write_with_audio_of(src, dst, fmt)
    assert w.warnings == [] and [c for _, c in w.audio_tracks] == [False]
    assert audio_streams(dst)[0][2] == out_layout
    want: dict[str, float] = dict.fromkeys(channel_names(out_layout), 0.0)
    for name, level in channel_levels(src).items():
        to = moves.get(name, (name,))
        for speaker in to:
            want[speaker] = level / np.sqrt(len(to))
    got = channel_levels(dst)
    if fmt == "mp4" and "LFE" in got:  # AAC keeps only the lows in LFE; the tone is 440 Hz
        assert got.pop("LFE") < 0.01
        want.pop("LFE")
    assert set(got) == set(want)
    for name, level in want.items():
        if level == 0.0:
            assert got[name] < 0.005, name
        else:
            assert got[name] == pytest.approx(level, rel=0.05), name


@pytest.mark.parametrize(
    ("layout", "aac", "opus"),
    [
        ("5.1", "5.1", "5.1"),
        ("5.0(side)", "5.0", "5.1"),
        ("quad(side)", "quad", "quad"),
        ("4.1", "5.1", "5.1"),
        ("6.0", "7.1", "7.1"),
        ("hexagonal", "stereo", "stereo"),  # BC and the backs would share the back speakers
        ("7.1(wide)", "stereo", "stereo"),  # no layout of either has front-centre pairs
        ("hexadecagonal", "stereo", "stereo"),
    ],
)
def test_the_layout_a_track_takes(layout: str, aac: str, opus: str) -> None:
    source = av.AudioLayout(layout)
    for encoder, first in (("aac", aac), ("libopus", opus)):
        tried = layouts_to_try(source, source.nb_channels, encoder)
        assert tried[0] == first and tried[-1] == "stereo"
    # a track whose order is unknown is read in FFmpeg's default order for its count
    # (5 -> 5.0, 7 -> 6.1), then placed as that layout would be
    unknown = {n: av.AudioLayout(f"{n} channels") for n in (5, 6, 7)}
    assert layouts_to_try(unknown[6], 6, "libopus")[0] == "5.1"
    assert layouts_to_try(unknown[5], 5, "libopus")[0] == "5.1"
    assert layouts_to_try(unknown[5], 5, "aac")[0] == "5.0"
    assert layouts_to_try(unknown[7], 7, "aac")[0] == "7.1"
    assert layouts_to_try(None, 16, "aac") == ["stereo"]
    assert layouts_to_try(None, 1, "aac") == ["mono"]


def test_a_stereo_mix_names_the_channels_ffmpeg_leaves_out() -> None:
    opts = audio_mod.RESAMPLE_OPTIONS
    assert left_out_of_mix(av.AudioLayout("5.1"), opts) == ["LFE"]
    assert left_out_of_mix(av.AudioLayout("quad"), opts) == []
    top_and_wide = ["TFC", "TBL", "TBC", "TBR", "WL", "WR"]
    assert left_out_of_mix(av.AudioLayout("hexadecagonal"), opts) == top_and_wide
    # a custom order (PyAV 18 aborts the process making a frame in one) is not probed
    assert left_out_of_mix(av.AudioLayout("FR+FL+FC+LFE+BL+BR+SL+SR+TFL"), opts) == []
    assert channel_list(["4", "13", "14"]) == "channels 4, 13 and 14"
    assert channel_list(["LFE"]) == "LFE"


@pytest.mark.parametrize("layout", ["stereo", "hexadecagonal"])
@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_downmix_keeps_the_level_and_never_clips(tmp_path: Path, layout: str, fmt: str) -> None:
    """A layout no encoder takes (16 channels: AAC and Opus stop at 8) is mixed to stereo,
    and the same tone in every channel comes out at the level it went in, in mp4 (AAC,
    float samples) as in webm (Opus, s16). FFmpeg's matrix for float output was not
    normalised: 5.1 came out 2.4x louder than each channel (+4 dBFS, clipped, for
    channels at 0.7) and 2.4x louder than the same source in webm."""
    src = make_clip(tmp_path / "surround.mov", frames=8, audio="pcm_s16le", audio_layout=layout)
    dst = tmp_path / f"out.{fmt}"
    w = write_with_audio_of(src, dst, fmt)
    assert audio_streams(dst)[0][2] == "stereo"
    mixed = [
        "the audio was mixed down from 16 channels to stereo, "
        "leaving out TFC, TBL, TBC, TBR, WL and WR"
    ]
    assert w.warnings == (mixed if layout != "stereo" else [])
    peak, rms = audio_levels(dst)
    assert abs(rms - TONE_PEAK / np.sqrt(2)) < 0.05 * TONE_PEAK / np.sqrt(2)
    assert peak < 1.2 * TONE_PEAK


# --------------------------------------------------------------------------- 4: languages
def test_every_language_code_a_mov_can_name_survives_one(tmp_path: Path) -> None:
    """The table is FFmpeg's, measured: each code comes back out of a .mov as written
    (a code outside it came back as nothing), and each alias leads into it."""
    path = tmp_path / "lang.mov"
    for code in sorted(audio_mod.MOV_LANGUAGES):
        with av.open(str(path), "w") as c:
            s = c.add_stream("pcm_s16le", rate=8000)
            s.layout, s.metadata["language"] = "mono", code
            f = av.AudioFrame.from_ndarray(np.zeros((1, 8), np.int16), format="s16", layout="mono")
            f.sample_rate, f.pts = 8000, 0
            for p in [*s.encode(f), *s.encode()]:
                c.mux(p)
        with av.open(str(path)) as c:
            assert c.streams.audio[0].metadata.get("language") == code
    assert set(audio_mod.MOV_LANGUAGE_ALIASES.values()) <= audio_mod.MOV_LANGUAGES
    assert [audio_mod.mov_language(x) for x in ("nob", "fil", "deu", "mri")] == [
        "nor",
        "tgl",
        "ger",
        None,
    ]


def test_track_languages_in_a_mov_are_spelled_as_quicktime_does(tmp_path: Path) -> None:
    # Matroska's French "fre" and Czech "cze" were dropped from a .mov (its table spells
    # them "fra", "ces"), as was Swedish ("sve" there); Maori it cannot name: a warning.
    tone = make_clip(tmp_path / "tone.mp4", frames=8)
    langs = ["fre", "cze", "swe", "mri"]
    src = with_tracks(tmp_path / "langs.mkv", [tone] * 4, [{"language": x} for x in langs])
    info = probe(src)
    dst = tmp_path / "out.mov"
    with VideoWriter(dst, "mov", 64, 48, info.time_base, info.rate, info) as w:
        for i in range(8):
            w.write(np.zeros((48, 64, 3), np.uint8), i * round(Fraction(1, 25) / info.time_base))
    with av.open(str(dst)) as c:
        assert [a.metadata.get("language") for a in c.streams.audio] == ["fra", "ces", "sve", None]
    assert w.warnings == [
        'audio track 4 of 4: a .mov has no code for its language "mri"; left untagged'
    ]
    # read back, QuickTime's own "sve" is ISO's "swe" again (what an mp4 is tagged with)
    assert [t.language for t in probe(dst).audio_streams] == ["fra", "ces", "swe", None]


# --------------------------------------------------------------------------- broadcast quirks
def _ts_clip(
    path: Path,
    seconds: float,
    start: float = 0.0,
    change_at: float | None = None,
    fmt: str = "mpegts",
    sound: bool = True,
    pause: tuple[float, float] | None = None,
) -> Path:
    """An MPEG-TS clip (64x48, 25 fps) with MP2 sound; ``change_at``: the sound goes from
    mono to stereo there, as at a TV ad break; ``start``: where its clock starts;
    ``fmt`` "mpeg": MPEG-PS with MPEG-2 video, as a DVD's or a camcorder's; ``sound``
    False: no audio stream; ``pause``: seconds (from, until) without sound."""
    fps, rate, n = 25, 48000, round(seconds * 25)
    stereo = av.CodecContext.create("mp2", "w")
    stereo.sample_rate, stereo.layout, stereo.format = rate, "stereo", "s16"
    stereo.time_base = Fraction(1, rate)
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format=fmt) as c:
        if fmt == "mpegts":
            v = c.add_stream("libx264", rate=fps, options={"bf": "0"})
        else:
            v = c.add_stream("mpeg2video", rate=fps)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = c.add_stream("mp2", rate=rate, layout="mono") if sound else None
        t = round(start * rate)
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i, np.uint8), format="rgb24")
            f.pts, f.time_base = round(start * fps) + i, Fraction(1, fps)
            for p in v.encode(f):
                c.mux(p)
            while sound and t < round(start * rate) + (i + 1) * rate // fps:
                if pause is not None and pause[0] * rate <= t < pause[1] * rate:
                    t += 1152  # no sound here
                    continue
                two = change_at is not None and t >= change_at * rate
                samples = (rng.standard_normal((1, 1152 * (2 if two else 1))) * 3000).astype(
                    np.int16
                )
                af = av.AudioFrame.from_ndarray(
                    samples, format="s16", layout="stereo" if two else "mono"
                )
                af.sample_rate, af.pts, af.time_base = rate, t, Fraction(1, rate)
                t += 1152
                for p in (stereo if two else a).encode(af):
                    p.stream, p.time_base = a, Fraction(1, rate)
                    c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    return path


def test_sound_that_turns_stereo_midway_is_carried_whole(engine: Engine, tmp_path: Path) -> None:
    """The resampler re-encoding it was set up for the first layout and refused the second:
    'writing out.mp4 failed (Frame does not match AudioResampler setup.)', nothing kept."""
    src = _ts_clip(tmp_path / "tv.ts", 2.0, change_at=1.0)
    result = convert_video(engine, src, tmp_path / "out.mp4", ConvertConfig(fmt="mp4"))
    assert result.frames == 50
    assert audio_seconds(tmp_path / "out.mp4") == pytest.approx(audio_seconds(src), abs=0.03)


@pytest.mark.parametrize(
    ("start", "fmt", "container"),
    [
        (0.8, "mp4", "mpegts"),
        (0.8, "webm", "mpegts"),
        (3600.0, "png", "mpegts"),
        (0.0, "mp4", "mpeg"),
        (3600.0, "mp4", "mpeg"),
    ],
)
def test_recordings_joined_end_to_end_play_one_after_the_other(
    engine: Engine, tmp_path: Path, start: float, fmt: str, container: str
) -> None:
    """Two TS recordings appended (``cat a.ts b.ts``), the second's clock 0.2 s behind
    where the first ended, or an hour ahead. Read as stored, the first lost the second
    part's sound (the muxer refused sound for a time already written: 1.8 s of 2) and
    the second held the first part's last frame for an hour (a 3601 s output). MPEG-PS
    (.mpg, .vob) as well, whose packets mostly come without a byte position."""
    ext = "ts" if container == "mpegts" else "mpg"
    first = _ts_clip(tmp_path / f"a.{ext}", 1.0, fmt=container)
    second = _ts_clip(tmp_path / f"b.{ext}", 1.0, start=start, fmt=container)
    src = tmp_path / f"joined.{ext}"
    src.write_bytes(first.read_bytes() + second.read_bytes())
    dst = tmp_path / ("out" if fmt == "png" else f"out.{fmt}")
    result = convert_video(engine, src, dst, ConvertConfig(fmt=fmt))
    assert result.frames == 50
    assert not any("out-of-order" in w for w in result.warnings)
    assert any("clock jumps at 1.0 s" in w for w in result.warnings)
    if fmt == "png":
        with open(dst / "frames.csv") as f:
            times = [float(row.split(",")[3]) for row in list(f)[1:]]
        sound = dst / "audio.m4a"
    else:
        times = [float(t) for t in frame_times(dst)]
        sound = dst
    assert all(b > a for a, b in itertools.pairwise(times))
    # The second part follows the first: frame 26 a frame after frame 25, not an hour.
    assert times[25] - times[24] == pytest.approx(0.04, abs=0.02)
    # after the first part's longer stream: its sound may run a sound frame past its picture
    assert times[-1] - times[0] == pytest.approx(1.96, abs=0.05)
    assert audio_seconds(sound) == pytest.approx(2.0, abs=0.06)


def test_a_joined_part_passing_where_ffmpeg_unwraps_the_clock_is_one_part(
    engine: Engine, tmp_path: Path
) -> None:
    """FFmpeg unwraps MPEG's 33-bit clock by where the file began (100 s, less a minute):
    the second part, stored from 39.7 s, reads a wrap ahead until 40 s and then steps
    back by the wrap. That step was taken for a second join: "jumps 2 times", and a
    hole in the re-encoded sound filled with silence."""
    first = _ts_clip(tmp_path / "a.ts", 1.0, start=100.0)
    second = _ts_clip(tmp_path / "b.ts", 1.0, start=39.7)
    src = tmp_path / "joined.ts"
    src.write_bytes(first.read_bytes() + second.read_bytes())
    dst = tmp_path / "out.mp4"
    result = convert_video(engine, src, dst, ConvertConfig(fmt="mp4"))
    assert result.frames == 50
    assert any("clock jumps at 1.0 s" in w for w in result.warnings)
    times = [float(t) for t in frame_times(dst)]
    # each part in one piece (the second part's sound leads its picture by 20 ms)
    steps = [b - a for a, b in itertools.pairwise(times)]
    assert steps[:24] + steps[25:] == pytest.approx([0.04] * 48, abs=0.005)
    assert steps[24] == pytest.approx(0.07, abs=0.02)
    assert audio_seconds(dst) == pytest.approx(2.0, abs=0.06)


def test_a_joined_part_without_sound_is_silence_where_it_plays(
    engine: Engine, tmp_path: Path
) -> None:
    """Three recordings joined, the middle one without sound: its 1 s gap in the sound's
    clock was copied into the MP4, which keeps none, so players played the third part's
    sound under the second part's picture, 1 s early."""
    parts = [
        _ts_clip(tmp_path / "a.ts", 1.0),
        _ts_clip(tmp_path / "b.ts", 1.0, sound=False),
        _ts_clip(tmp_path / "c.ts", 1.0),
    ]
    src = tmp_path / "joined.ts"
    src.write_bytes(b"".join(p.read_bytes() for p in parts))
    dst = tmp_path / "out.mp4"
    result = convert_video(engine, src, dst, ConvertConfig(fmt="mp4"))
    assert result.frames == 75 and result.audio == "re-encoded"
    with av.open(str(dst)) as c:
        rate = c.streams.audio[0].codec_context.sample_rate
        sound = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
    assert len(sound) / rate == pytest.approx(3.0, abs=0.08)  # the gap is played, as silence
    level = [
        float(np.abs(sound[round(k * rate) : round((k + 0.5) * rate)]).mean())
        for k in (0.25, 1.25, 2.25)
    ]
    assert level[0] > 0.02 and level[1] < 0.001 and level[2] > 0.02


@pytest.mark.parametrize(
    ("fmt", "layout", "quiet"), [("fltp", "7.1", 0.0), ("s16", "stereo", 0), ("u8", "mono", 128)]
)
def test_a_gap_is_filled_with_true_silence_in_any_format(
    fmt: str, layout: str, quiet: float
) -> None:
    """The silence that fills a gap in re-encoded sound: for 7.1 in planes, PyAV lists a
    ninth plane that is not there and writing it crashed the process (exit 139); for
    unsigned 8-bit sound zero is full scale, not silence (a loud click and offset)."""
    made: list[av.AudioFrame] = []
    stub = type(
        "Pass", (), {"_encode": lambda self, out, frame: made.append(frame), "filled": 0.0}
    )()
    like = av.AudioFrame(format=fmt, layout=layout, samples=4)
    like.sample_rate = 48000
    audio_mod.AudioPass._silence(stub, None, like, 1.0, 2.5)  # 1.5 s: two frames
    assert [f.samples for f in made] == [48000, 24000]
    assert [f.pts for f in made] == [48000, 96000]
    assert stub.filled == 1.5  # counted for the note that says the pauses were filled
    dtype = {"fltp": np.float32, "s16": np.int16, "u8": np.uint8}[fmt]
    for f in made:
        # plane by plane: PyAV's to_ndarray of 7.1 in planes reads that ninth plane too
        planes = f.planes[: 8 if fmt == "fltp" else 1]
        values = np.concatenate([np.frombuffer(bytes(p), dtype) for p in planes])
        assert len(values) >= f.samples * (8 if fmt == "fltp" else 2 if fmt == "s16" else 1)
        assert (values == quiet).all()


def test_joined_sound_that_cannot_be_re_encoded_is_copied_not_lost(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Joined files' sound is re-encoded (to fill its gaps); where that cannot be done,
    it is copied with its gaps rather than left out of the output."""
    clip = make_clip(tmp_path / "c.mp4", frames=25, audio="aac")
    parts = []
    for k in range(2):  # the clip remuxed to TS twice, each clock from its start
        part = tmp_path / f"{k}.ts"
        with av.open(str(clip)) as src, av.open(str(part), "w", format="mpegts") as dst:
            streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
            for packet in src.demux():
                if packet.dts is not None:
                    packet.stream = streams[packet.stream.index]
                    dst.mux(packet)
        parts.append(part)
    src = tmp_path / "joined.ts"
    src.write_bytes(b"".join(p.read_bytes() for p in parts))
    real = audio_mod.plan_encoding

    def no_encoder(stream, info, container, copy=True):
        if not copy:
            raise audio_mod.AudioUnusable("the aac encoder would not open")
        return real(stream, info, container, copy)

    monkeypatch.setattr(audio_mod, "plan_encoding", no_encoder)
    dst = tmp_path / "out.mp4"
    result = convert_video(engine, src, dst, ConvertConfig(fmt="mp4"))
    assert result.frames == 50 and result.audio == "copied"
    assert audio_seconds(dst) == pytest.approx(2.0, abs=0.1)
    assert any("could only be copied, so its gaps are not" in w for w in result.warnings)


@pytest.mark.parametrize("container", ["mpegts", "matroska", "flv"])
def test_sound_that_pauses_is_silence_where_it_pauses(
    engine: Engine, tmp_path: Path, container: str
) -> None:
    """One recording (no join) whose AAC stops for a second: copied into MP4 the pause
    closed up and everything after it played a second early. Such a track is re-encoded
    with the pause as silence; one without a pause is still copied. MKV and FLV (a
    browser's or a streaming tool's recording) store each packet's time as well."""
    clip = make_clip(tmp_path / "c.mp4", frames=75, audio="aac")

    def as_ts(name: str, pause: tuple[float, float] | None) -> Path:
        ts = tmp_path / name
        with av.open(str(clip)) as inp, av.open(str(ts), "w", format=container) as out:
            streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
            for packet in inp.demux():
                if packet.dts is None:
                    continue
                seconds = float(packet.pts * packet.time_base)
                if pause and packet.stream.type == "audio" and pause[0] <= seconds < pause[1]:
                    continue  # no sound here
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
        return ts

    dst = tmp_path / "out.mp4"
    result = convert_video(engine, as_ts("pause.ts", (1.0, 2.0)), dst, ConvertConfig(fmt="mp4"))
    assert result.frames == 75 and result.audio == "re-encoded"
    assert not any("clock jumps" in w for w in result.warnings)  # a pause is no join
    # said, or the re-encode of a track that could be copied went unexplained
    assert any(
        "pauses (1.0 s in all); re-encoded with the pauses as silence" in w for w in result.warnings
    )
    assert audio_seconds(dst) == pytest.approx(3.0, abs=0.08)  # the pause played
    whole = tmp_path / "whole.mp4"
    kept = convert_video(engine, as_ts("whole.ts", None), whole, ConvertConfig(fmt="mp4"))
    assert kept.audio == "copied" and audio_seconds(whole) == pytest.approx(3.0, abs=0.08)


def test_sound_stamped_far_past_the_picture_is_left_out_not_filled(
    engine: Engine, tmp_path: Path
) -> None:
    """One audio packet of a 3 s MKV stamped at an hour (a damaged time): its pause was
    filled with an hour of silence, a 3 s video with a 3600 s sound track, and nothing
    said. Sound past the picture's end after a gap is left out, and said."""
    clip = make_clip(tmp_path / "c.mp4", frames=75, audio="aac")
    src = tmp_path / "stray.mkv"
    with av.open(str(clip)) as inp, av.open(str(src), "w", format="matroska") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        last = None
        for packet in inp.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
            if packet.stream.type == "audio":
                last = packet
        assert last is not None
        ticks = round(3600 / last.time_base)
        last.pts, last.dts = ticks, ticks
        out.mux(last)
    dst = tmp_path / "out.mp4"
    result = convert_video(engine, src, dst, ConvertConfig(fmt="mp4"))
    assert result.audio == "re-encoded"
    assert audio_seconds(dst) == pytest.approx(3.0, abs=0.1)
    assert any(
        "stamped at 3600.0 s, after a gap and past the picture's end" in w for w in result.warnings
    )


def test_pcm_re_encoded_to_fill_a_pause_stays_pcm_in_a_mov(engine: Engine, tmp_path: Path) -> None:
    """PCM that pauses, converted to .mov: it became AAC, a lossy copy of lossless sound
    that the .mov takes as it is."""
    clip = make_clip(tmp_path / "c.mov", frames=50, audio="pcm_s16le")
    src = tmp_path / "pause.mkv"
    with av.open(str(clip)) as inp, av.open(str(src), "w", format="matroska") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is None:
                continue
            seconds = float(packet.pts * packet.time_base)
            if packet.stream.type == "audio" and 0.8 <= seconds < 1.2:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    dst = tmp_path / "out.mov"
    result = convert_video(engine, src, dst, ConvertConfig(fmt="mov"))
    assert result.audio == "re-encoded"
    with av.open(str(dst)) as c:
        assert c.streams.audio[0].codec_context.name == "pcm_s16le"
    assert audio_seconds(dst) == pytest.approx(2.0, abs=0.05)
