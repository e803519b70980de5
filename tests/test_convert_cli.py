"""``vidmat convert`` as a user runs it: bad inputs get one sentence, a non-zero exit, no
traceback and no stray file, while the good inputs beside them still convert."""

from __future__ import annotations

import errno
import os
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from convert_fixtures import (
    audio_only_file,
    cover_art_audio,
    frame_times,
    make_clip,
    read_alphas,
    stub_engine,
    track_seconds,
    truncated_clip,
    with_tracks,
    zero_frame_file,
)

from vidmat.cli import main
from vidmat.core.engine import Engine
from vidmat.core.settings import EngineConfig
from vidmat.io.audio import track_title
from vidmat.io.formats import FORMATS


@pytest.fixture(autouse=True)
def _stub_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command run here gets the stub model instead of loading weights."""
    engine = stub_engine()
    monkeypatch.setattr(Engine, "from_config", classmethod(lambda cls, cfg: engine))


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("src") / "good.mp4", frames=8)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["convert", "--quiet", *[str(a) for a in args]])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    return code, out, err


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


BAD_INPUTS = {
    "missing": (lambda d: d / "nope.mp4", "does not exist"),
    "empty folder": (lambda d: ((d / "empty").mkdir(), d / "empty")[1], "contains no videos"),
    "zero bytes": (
        lambda d: (d / "zero.mp4").write_bytes(b"") == 0 and d / "zero.mp4",
        "0 bytes",
    ),
    "text as mp4": (
        lambda d: (d / "notes.mp4").write_text("not a video\n" * 50) and d / "notes.mp4",
        "not a video file",
    ),
    "audio only": (lambda d: audio_only_file(d / "tone.m4a"), "audio only"),
    # its picture was converted as 1 frame and called "truncated or damaged"
    "audio with cover art": (
        lambda d: cover_art_audio(d / "song.m4a"),
        "has audio and a cover picture only, no video.",
    ),
    "zero frames": (lambda d: zero_frame_file(d / "blank.mkv"), "no video frames"),
    # `cat clip.mp4 | vidmat convert /dev/stdin` was "is empty (0 bytes)"
    "a pipe": (
        lambda d: (os.mkfifo(d / "pipe.mp4"), d / "pipe.mp4")[1],
        "is a pipe or device, not a file; vidmat reads video files",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_each_bad_input_one_sentence(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, message = BAD_INPUTS[case]
    bad = make(tmp_path)
    before = listing(tmp_path)
    code, _, err = run_cli([bad], capsys)
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert any(message in ln and ln.startswith("vidmat: error:") for ln in lines), err
    assert listing(tmp_path) == before  # no stray or partial file


def test_nothing_to_convert_shows_no_bar_and_no_fps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["convert", str(tmp_path / "nope.mp4")])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.strip() == f"vidmat: error: {tmp_path / 'nope.mp4'} does not exist."
    assert out.strip() == "converted 0 of 1 input; 1 failed"


def test_good_inputs_convert_while_bad_ones_fail(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.mp4").write_bytes(good.read_bytes())
    (src / "broken.mp4").write_text("garbage")
    (src / "b.mp4").write_bytes(good.read_bytes())
    out = tmp_path / "out"
    code, _, err = run_cli([src, tmp_path / "missing.mov", "-o", f"{out}/"], capsys)
    assert code == 2
    assert listing(out) == {"a_green.mp4", "b_green.mp4"}
    assert frame_times(out / "a_green.mp4") == frame_times(good)
    assert "broken.mp4 is not a video file" in err and "missing.mov does not exist" in err
    assert "2 failed" in err  # the summary still comes out under --quiet when something failed


def test_overwrite_rules(good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dst = tmp_path / "o.mp4"
    dst.write_bytes(b"keep me")
    code, _, err = run_cli([good, "-o", dst], capsys)
    assert code == 2 and "--overwrite" in err and dst.read_bytes() == b"keep me"
    code, _, _ = run_cli([good, "-o", dst, "--overwrite"], capsys)
    assert code == 0 and len(frame_times(dst)) == 8
    assert listing(tmp_path) == {"o.mp4"}
    assert oct(dst.stat().st_mode & 0o777) != oct(0o600)  # not left private like a temp file


def test_output_same_as_input(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "same.mp4"
    src.write_bytes(good.read_bytes())
    code, _, err = run_cli([src, "-o", src, "--overwrite"], capsys)
    assert code == 2 and "is the input itself" in err
    assert src.read_bytes() == good.read_bytes()


def test_unwritable_output_folder(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):  # root ignores modes: fail where the file is created
            import tempfile

            def refuse(*a, **k):
                raise PermissionError(errno.EACCES, "Permission denied")

            monkeypatch.setattr(tempfile, "mkstemp", refuse)
        code, _, err = run_cli([good, "-o", locked / "x.mp4"], capsys)
    finally:
        locked.chmod(0o755)
    assert code == 2 and "not writable" in err
    assert listing(locked) == set()


def test_disk_full_leaves_nothing(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from vidmat.io import video

    real = video.VideoWriter.write

    def write(self, image, pts, duration=0):
        if self.frames == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, image, pts, duration)

    monkeypatch.setattr(video.VideoWriter, "write", write)
    code, _, err = run_cli([good, "-o", tmp_path / "full.mp4"], capsys)
    assert code == 2 and "disk is full" in err
    assert listing(tmp_path) == set()


def test_ctrl_c_leaves_no_partial_file(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine.from_config(None)
    real = engine.predict_lowres
    calls = {"n": 0}

    def interrupted(frames):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(frames)

    monkeypatch.setattr(engine, "predict_lowres", interrupted)
    code = main(["convert", "--quiet", str(good), "-o", str(tmp_path / "x.webm")])
    _, err = capsys.readouterr()
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    assert listing(tmp_path) == set()


def test_truncated_file_converts_what_decodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut = truncated_clip(tmp_path)
    code = main(["convert", str(cut)])
    out, err = capsys.readouterr()
    assert code == 2
    n = len(frame_times(tmp_path / "cut_green.mp4"))
    assert 0 < n < 30
    assert f"only {n} of 30 frames could be decoded" in err
    assert f"the {n} frames that decoded were converted to" in err and "Traceback" not in err
    assert "1 truncated or damaged" in out


def test_odd_size_is_padded_and_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = make_clip(tmp_path / "odd.mp4", width=63, height=47, frames=4, audio=None)
    code = main(["convert", str(src)])
    _, err = capsys.readouterr()
    assert code == 0 and "padded to 64x48" in err
    with av.open(str(tmp_path / "odd_green.mp4")) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (64, 48)


def test_format_from_output_suffix_and_vfr_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = make_clip(tmp_path / "vfr.mp4", pts=[0, 40, 200, 210, 500], time_base=Fraction(1, 1000))
    code, _, _ = run_cli([src, "-o", tmp_path / "cut.webm", "--lookahead", "2"], capsys)
    assert code == 0
    with av.open(str(tmp_path / "cut.webm")) as c:
        assert c.streams.video[0].codec_context.name == "vp9"
        assert c.streams.audio[0].codec_context.name == "opus"
    times = frame_times(tmp_path / "cut.webm")
    assert [round(float(t), 3) for t in times] == [0.0, 0.04, 0.2, 0.21, 0.5]


def test_mp4_transparent_is_refused(good: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli([good, "-o", tmp_path / "t.mp4", "--bg", "transparent"], capsys)
    assert code == 2 and "cannot carry transparency" in err
    assert listing(tmp_path) == set()


def test_glob_and_png_sequence(good: Path, tmp_path: Path, capsys) -> None:
    for name in ("x1.mp4", "x2.mp4"):
        (tmp_path / name).write_bytes(good.read_bytes())
    code, _, _ = run_cli([str(tmp_path / "x*.mp4"), "--format", "png"], capsys)
    assert code == 0
    assert {"x1_alpha", "x2_alpha"} <= listing(tmp_path)
    assert len(list((tmp_path / "x1_alpha").glob("frame_*.png"))) == 8


def test_still_image_to_rgba_png(tmp_path: Path, capsys) -> None:
    import cv2
    from convert_fixtures import square_frame

    src = tmp_path / "portrait.webp"
    cv2.imwrite(str(src), square_frame(0, 64, 48)[:, :, ::-1], [cv2.IMWRITE_WEBP_QUALITY, 100])
    code, _, _ = run_cli([src], capsys)
    assert code == 0
    rgba = cv2.imread(str(tmp_path / "portrait_alpha.png"), cv2.IMREAD_UNCHANGED)
    assert rgba.shape == (48, 64, 4) and rgba[..., 3].min() == 0 and rgba[..., 3].max() == 255


def test_an_unreadable_picture_is_one_sentence_and_the_batch_goes_on(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A still (or --bg picture) without read permission gave a PermissionError traceback,
    exit 1, and the inputs after it were never converted. (Root reads any file, so the
    refusal is made by the file system call itself here.)"""
    import cv2
    from convert_fixtures import square_frame

    locked, good = tmp_path / "locked.png", tmp_path / "good.png"
    for p in (locked, good):
        cv2.imwrite(str(p), square_frame(0, 64, 48)[:, :, ::-1])
    read = Path.read_bytes

    def refuse(self: Path) -> bytes:
        if self.name == "locked.png":
            raise PermissionError(13, "Permission denied", str(self))
        return read(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    code, _, err = run_cli([locked, good, "-o", tmp_path / "out"], capsys)
    assert code == 2
    assert f"vidmat: error: {locked} cannot be read (permission denied)." in err
    assert listing(tmp_path / "out") == {"good_alpha.png"}
    clip = make_clip(tmp_path / "c.mp4", frames=2, audio=None)
    code, _, err = run_cli([clip, "--bg", locked, "-o", tmp_path / "c_out.mp4"], capsys)
    assert code == 2 and err == f"vidmat: error: {locked} cannot be read (permission denied).\n"


def test_an_output_suffix_no_format_has_is_named_as_such(tmp_path: Path, capsys) -> None:
    """-o y.mkv, no --format: "--format mp4 writes .mp4 files" spoke of an option not given."""
    clip = make_clip(tmp_path / "c.mp4", frames=2, audio=None)
    code, _, err = run_cli([clip, "-o", tmp_path / "y.mkv"], capsys)
    assert code == 2 and err == (
        "vidmat: error: vidmat does not write .mkv files; name the output y.mp4 (or .mov or "
        ".webm, which keep alpha), or y.mkv/ for a folder.\n"
    )
    code, _, err = run_cli([clip, "-o", tmp_path / "y.mkv", "--format", "webm"], capsys)
    assert code == 2 and "--format webm writes .webm files; name the output y.webm." in err


def test_sound_a_trim_hid_before_the_start_stays_hidden_in_webm(tmp_path: Path, capsys) -> None:
    """An MP4 trimmed without re-encoding keeps a second of picture and sound before its
    start, hidden by its edit list. Copied into WebM (which stores no time before 0) the
    hidden Opus packets moved the whole output a second later, that second playing first."""
    if "libopus" not in av.codecs_available:
        pytest.skip("no Opus encoder in this PyAV")
    src = tmp_path / "trimmed.mp4"
    with av.open(str(src), "w") as c:
        v = c.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = c.add_stream("libopus", rate=48000, layout="stereo")
        for i in range(75):  # -1 s .. 2 s
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 80, np.uint8), "rgb24")
            f.pts = i - 25
            for pk in v.encode(f):
                c.mux(pk)
        for pk in v.encode():
            c.mux(pk)
        for k in range(0, 3 * 48000, 960):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1920), np.int16), "s16", "stereo")
            f.sample_rate, f.pts, f.time_base = 48000, k - 48000, Fraction(1, 48000)
            for pk in a.encode(f):
                c.mux(pk)
        for pk in a.encode():
            c.mux(pk)
    code, _, _ = run_cli([src, "--format", "webm", "-o", tmp_path / "o.webm"], capsys)
    assert code == 0
    with av.open(str(tmp_path / "o.webm")) as c:
        first = next(c.decode(video=0))
        assert float(first.pts * first.time_base) < 0.05  # was 1.0
        assert c.duration / 1e6 == pytest.approx(2.0, abs=0.1)  # was 3.0


def test_an_audio_packet_the_decoder_refuses_is_counted_when_re_encoding(
    tmp_path: Path, capsys
) -> None:
    """Copied, a damaged audio packet is left out with a warning; re-encoded (AAC into
    WebM's Opus) it was left out in silence."""
    src = make_clip(tmp_path / "c.mp4", frames=50, audio="aac", audio_seconds=2.0)
    data = bytearray(src.read_bytes())
    with av.open(str(src)) as c:
        packet = [p for p in c.demux(audio=0) if p.size][40]
        pos, size = packet.pos, packet.size
    data[pos : pos + size] = b"\xff" * size
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    code, _, err = run_cli([bad, "--format", "webm", "-o", tmp_path / "o.webm"], capsys)
    assert code == 0
    assert "bad.mp4: 1 damaged or out-of-order audio packet(s) left out" in err


def test_a_bad_background_video_is_named_as_the_background(tmp_path: Path, capsys) -> None:
    """Beside an input video, "empty.mp4 is empty (0 bytes)." did not say which file."""
    clip = make_clip(tmp_path / "c.mp4", frames=2, audio=None)
    (tmp_path / "empty.mp4").write_bytes(b"")
    song = cover_art_audio(tmp_path / "song.m4a")
    for bg, said in (
        (tmp_path / "empty.mp4", f"the background {tmp_path / 'empty.mp4'} is empty (0 bytes)."),
        (song, f"the background {song} has audio and a cover picture only, no video."),
    ):
        code, _, err = run_cli([clip, "--bg", bg, "-o", tmp_path / "o.mp4"], capsys)
        assert code == 2 and err == f"vidmat: error: {said}\n"


def test_a_cut_out_still_keeps_its_own_transparency(tmp_path: Path, capsys) -> None:
    """An RGBA photo with a transparent band: the matte alone made its hidden pixels
    visible again (alpha up to 255 in the band, as for the opaque picture)."""
    import cv2
    from convert_fixtures import square_frame

    bgr = square_frame(0, 64, 48)[:, :, ::-1]
    bgra = np.dstack([bgr, np.full((48, 64), 255, np.uint8)])
    bgra[:, 20:30, 3] = 0  # the band
    src = tmp_path / "cut.png"
    cv2.imwrite(str(src), bgra)
    assert run_cli([src], capsys)[0] == 0
    rgba = cv2.imread(str(tmp_path / "cut_alpha.png"), cv2.IMREAD_UNCHANGED)
    assert rgba[:, 20:30, 3].max() == 0 and rgba[..., 3].max() > 0
    assert run_cli([src, "--format", "mask"], capsys)[0] == 0
    mask = cv2.imread(str(tmp_path / "cut_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask[:, 20:30].max() == 0 and mask.max() > 0
    opaque = tmp_path / "opaque.png"
    cv2.imwrite(str(opaque), np.dstack([bgr, np.full((48, 64), 255, np.uint8)]))
    plain = tmp_path / "plain.png"
    cv2.imwrite(str(plain), bgr)
    assert run_cli([opaque, plain], capsys)[0] == 0
    a = cv2.imread(str(tmp_path / "opaque_alpha.png"), cv2.IMREAD_UNCHANGED)
    b = cv2.imread(str(tmp_path / "plain_alpha.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(a, b)  # an all-opaque alpha changes nothing
    code, _, err = run_cli([src, "--bg", "blue", "-o", tmp_path / "c.png"], capsys)
    assert code == 0 and "its own transparency is not used for a composite" in err


def test_a_still_to_a_mask_is_a_grey_png(tmp_path: Path, capsys) -> None:
    """--format mask on a photo wrote an RGB PNG of three equal channels; the mask video
    is grey, and so is the matte of a still now."""
    import cv2
    from convert_fixtures import square_frame

    src = tmp_path / "p.png"
    cv2.imwrite(str(src), square_frame(0, 64, 48)[:, :, ::-1])
    code, _, _ = run_cli([src, "--format", "mask"], capsys)
    assert code == 0
    out = cv2.imread(str(tmp_path / "p_mask.png"), cv2.IMREAD_UNCHANGED)
    assert out.shape == (48, 64) and out.dtype == np.uint8 and out.max() > out.min()


def test_help_says_where_formats_play(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    text = capsys.readouterr().out
    for word in (
        "ProRes 4444",
        "VP9",
        "Safari",
        "mp4 has no alpha",
        "--overwrite",
        "--lookahead",
    ):
        assert word in text


def convert_help(capsys: pytest.CaptureFixture[str]) -> str:
    """``vidmat convert --help`` with its line wrapping undone."""
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_help_states_the_limits_the_checks_use(good: Path, tmp_path: Path, capsys) -> None:
    """--lookahead, --grow, --size and --crf had limits only an error message told."""
    import argparse

    from vidmat.argtypes import model_size

    text = convert_help(capsys)
    top = re.search(r"the causal filter live uses; 0\.\.(\d+) \(default", text)
    grow = re.search(r"off the edge; -(\d+)\.\.(\d+) \(default", text)
    size = re.search(r"a multiple of 32 from (\d+) to (\d+)", text)
    h264 = re.search(
        r"mp4 and mask \(H\.264: 0\.\.(\d+), default 18\) and webm \(VP9: 0\.\.(\d+)", text
    )
    assert top and grow and size and h264, text
    out = tmp_path / "x.mp4"
    cases = [
        (["--lookahead", top[1]], 0),
        (["--lookahead", str(int(top[1]) + 1)], 2),
        (["--grow", f"-{grow[1]}"], 0),
        (["--grow", str(int(grow[2]) + 1)], 2),
        (["--crf", h264[1]], 0),
        (["--crf", str(int(h264[1]) + 1)], 2),
        (["--crf", h264[2], "--format", "webm"], 0),
        (["--crf", str(int(h264[2]) + 1), "--format", "webm"], 2),
    ]
    for opts, want in cases:
        dst = out.with_suffix(".webm") if "webm" in opts else out
        code, _, err = run_cli([good, "-o", dst, "--overwrite", *opts], capsys)
        assert code == want, (opts, err)
    lo, hi = int(size[1]), int(size[2])
    assert model_size(str(lo)) == lo and model_size(str(hi)) == hi
    for bad in (lo - 32, lo + 16, hi + 32):
        with pytest.raises(argparse.ArgumentTypeError):
            model_size(str(bad))


def test_crf_says_which_formats_it_sets_and_is_not_checked_where_ignored(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--crf was checked against 0..51 for mov and png, then silently ignored there."""
    text = convert_help(capsys)
    assert "mov (ProRes 4444, fixed quality) and png (lossless) ignore it" in text
    for fmt, dst in (("mov", tmp_path / "x.mov"), ("png", tmp_path / "frames")):
        code = main(["convert", str(good), "--format", fmt, "--crf", "99", "-o", str(dst)])
        err = capsys.readouterr().err
        assert code == 0, err
        assert f"note: --crf has no effect on --format {fmt}" in err
    code = main(["convert", str(good), "--crf", "20", "-o", str(tmp_path / "x.mp4")])
    assert code == 0 and "--crf" not in capsys.readouterr().err


def test_output_name_without_a_suffix_is_what_help_says(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-o NAME without a suffix: a folder of default names, but for png the frame folder."""
    text = convert_help(capsys)
    assert "a name without a suffix (-o takes -> takes/clip_green.mp4)" in text
    assert "-o NAME without a suffix is that frame folder itself (NAME/frame_000001.png)" in text
    code, _, err = run_cli([good, "-o", tmp_path / "takes"], capsys)
    assert code == 0 and listing(tmp_path / "takes") == {"good_green.mp4"}, err
    code, _, err = run_cli([good, "-o", tmp_path / "NAME", "--format", "png"], capsys)
    assert code == 0 and "frame_000001.png" in listing(tmp_path / "NAME"), err
    # The same command again is that frame folder, not a folder to put another one in.
    before = listing(tmp_path / "NAME")
    code, _, err = run_cli([good, "-o", tmp_path / "NAME", "--format", "png"], capsys)
    assert code == 2 and "already exists; pass --overwrite" in err
    code, _, err = run_cli(
        [good, "-o", tmp_path / "NAME", "--format", "png", "--overwrite"], capsys
    )
    assert code == 0 and listing(tmp_path / "NAME") == before, err


def test_overwrite_never_replaces_a_folder_of_the_users_own(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A project folder that holds a frames.csv among its files was taken for an earlier
    frame folder, and --overwrite, as the refusal advised, deleted it whole (a --bg
    picture in it too). Now it is a folder to write into, the user's files untouched."""
    proj = tmp_path / "proj"
    (proj / "photos").mkdir(parents=True)
    (proj / "frames.csv").write_text("x\n")
    (proj / "thesis.docx").write_text("thesis")
    before = listing(proj)
    code, _, err = run_cli([good, "-o", proj, "--format", "png", "--overwrite"], capsys)
    assert code == 0, err
    assert listing(proj) == before | {"good_alpha"}
    assert (proj / "thesis.docx").read_text() == "thesis"
    assert "frame_000001.png" in listing(proj / "good_alpha")


def test_an_output_name_too_long_is_one_sentence(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-o of 258 bytes: OSError 'File name too long' came as a traceback from the first
    look at it (is it a folder?)."""
    code, _, err = run_cli([good, "-o", tmp_path / ("é" * 127 + ".mp4")], capsys)
    assert code == 2 and "is too long for the file system." in err
    assert err.count("\n") == 1 and list(tmp_path.iterdir()) == []


def test_a_video_suffix_for_png_frames_says_what_to_change(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-o out.mp4 --format png was told to "name the output out.mp4 for a video"."""
    code, _, err = run_cli([good, "-o", tmp_path / "out.mp4", "--format", "png"], capsys)
    assert code == 2 and err.endswith(
        "give -o a folder name such as out, not out.mp4, or leave out --format png to write "
        "out.mp4.\n"
    )
    code, _, err = run_cli([good, "-o", tmp_path / "out.png"], capsys)
    assert code == 2 and err.endswith(
        "give -o a folder name such as out, not out.png, or name the output out.mp4 for a video.\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_while_outputs_are_checked_leaves_no_folder(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The -o folder is made before the outputs are checked (0.6 s for 3,000 inputs); a
    Ctrl-C there left it behind, empty, as the cleanup only covered the conversion."""
    import vidmat.pipelines.convert as pipeline

    real, calls = pipeline.check_paths, []

    def check_then_interrupt(*args: object, **kwargs: object) -> None:
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "check_paths", check_then_interrupt)
    second = tmp_path / "b.mp4"
    second.write_bytes(good.read_bytes())
    code = main(["convert", str(good), str(second), "-o", str(tmp_path / "new" / "sub") + "/"])
    assert code == 130 and len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.mp4"]


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp"])
def test_a_damaged_still_is_vidmats_sentence_alone(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], suffix: str
) -> None:
    """A still cut in half printed "libpng error: ...", "[ERROR:0@2.1] global
    loadsave.cpp ... imdecode_" or "TIFF_Error ..." before vidmat's own sentence."""
    import cv2

    whole = tmp_path / f"whole{suffix}"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(whole), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    cut = tmp_path / f"cut{suffix}"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert main(["convert", "--quiet", str(cut)]) == 2
    err = capfd.readouterr().err
    assert err.splitlines() == [
        f"vidmat: error: {cut} is not an image that can be read (corrupt or another format).",
        "converted 0 of 1 input; 1 failed",
    ]


def test_folder_outputs_are_what_help_says_for_any_count_of_inputs(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """-o v1.mp4/ was a folder for one input and "cannot all be written to the one file"
    for two; a still with --format png and -o cut was told to name it cut.png, where
    without --format it went into cut/; -o . inside an old frame folder failed after the
    whole conversion (EBUSY)."""
    import cv2

    second = tmp_path / "b.mp4"
    second.write_bytes(good.read_bytes())
    code, _, err = run_cli([good, second, "-o", f"{tmp_path / 'v1.mp4'}/"], capsys)
    assert code == 0 and listing(tmp_path / "v1.mp4") == {"good_green.mp4", "b_green.mp4"}, err
    still = tmp_path / "p.jpg"
    cv2.imwrite(str(still), np.zeros((48, 64, 3), np.uint8))
    code, _, err = run_cli([still, "--format", "png", "-o", tmp_path / "cut"], capsys)
    assert code == 0 and listing(tmp_path / "cut") == {"p_alpha.png"}, err
    frames = tmp_path / "frames"
    code, _, err = run_cli([good, "--format", "png", "-o", frames], capsys)
    assert code == 0, err
    monkeypatch.chdir(frames)
    code, _, err = run_cli([good, "--format", "png", "-o", ".", "--overwrite"], capsys)
    assert code == 2 and "is the current folder or holds it, which cannot be replaced" in err


def test_help_says_what_is_not_carried_over_and_every_exit_status(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = convert_help(capsys)
    assert "subtitle and data streams, chapters and the file's own metadata (title" in text
    for status in ("0 every input converted", "2 an input failed", "1 an unexpected error"):
        assert status in text
    for code, name in ((130, "SIGINT"), (143, "SIGTERM"), (141, "SIGPIPE")):
        assert re.search(rf"{code}:? [^;]*\({name}", text), code
    # What the help says is dropped is dropped: the container's title.
    titled = tmp_path / "titled.mkv"
    with av.open(str(good)) as src, av.open(str(titled), "w") as dst:
        dst.metadata["title"] = "Take one"
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    code, _, err = run_cli([titled], capsys)
    assert code == 0, err
    with av.open(str(tmp_path / "titled_green.mp4")) as c:
        assert "title" not in c.metadata and len(c.streams) == 1


def test_lookahead_out_of_range_is_one_sentence(good: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli([good, "-o", tmp_path / "x.mp4", "--lookahead", "99"], capsys)
    assert code != 0 and "lookahead must be between 0 and 30" in err
    assert "Traceback" not in err and listing(tmp_path) == set()


def test_several_inputs_to_one_file_refused(good: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli([good, good.parent / "other.mp4", "-o", tmp_path / "one.mp4"], capsys)
    assert code == 2 and "give -o a folder" in err
    assert listing(tmp_path) == set()


def test_background_image_and_bad_background(good: Path, tmp_path: Path, capsys) -> None:
    import cv2

    bg = tmp_path / "magenta.png"
    cv2.imwrite(str(bg), np.full((10, 10, 3), (255, 0, 255), np.uint8))  # BGR magenta
    out = tmp_path / "out"
    code, _, _ = run_cli([good, "--bg", bg, "-o", f"{out}/"], capsys)
    assert code == 0
    with av.open(str(out / "good_composite.mp4")) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert np.abs(first[2, -3].astype(int) - (255, 0, 255)).max() < 12  # no person in the corner
    code, _, err = run_cli([good, "--bg", tmp_path / "nope.jpg", "-o", f"{out}/"], capsys)
    assert code == 2 and err.count("vidmat: error:") == 1 and "nope.jpg" in err


def test_a_picture_over_opencvs_pixel_limit_is_one_sentence(
    good: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A PNG whose header says 60000x60000 (or a real gigapixel panorama): OpenCV raises
    instead of returning nothing, and both --bg and a still input ended in its
    traceback (exit 1)."""
    from core_fixtures import huge_png_header

    huge = huge_png_header(tmp_path / "huge.png")
    said = f"vidmat: error: {huge} is larger than OpenCV reads (its header says over 2^30"
    assert main(["convert", "--quiet", str(good), "--bg", str(huge), "-o", f"{tmp_path}/o/"]) == 2
    err = capfd.readouterr().err
    assert err.startswith(said) and "Traceback" not in err and err.count("\n") == 1
    assert main(["convert", "--quiet", str(huge), "-o", f"{tmp_path}/o/"]) == 2
    err = capfd.readouterr().err
    assert err.startswith(said) and "Traceback" not in err


def test_output_over_the_background_file_is_refused_even_with_overwrite(
    good: Path, tmp_path: Path, capsys
) -> None:
    import cv2

    bg_video = tmp_path / "bgv.mp4"
    bg_video.write_bytes(good.read_bytes())
    bg_image = tmp_path / "bgi.png"
    cv2.imwrite(str(bg_image), np.full((10, 10, 3), 200, np.uint8))
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((12, 16, 3), 90, np.uint8))
    before = {p: p.read_bytes() for p in (bg_video, bg_image, photo)}
    for src, bg in ((good, bg_video), (photo, bg_image)):
        code, _, err = run_cli([src, "--bg", bg, "-o", bg, "--overwrite"], capsys)
        assert code == 2 and f"the output {bg} is the --bg file itself" in err
    assert {p: p.read_bytes() for p in before} == before
    assert listing(tmp_path) == {"bgv.mp4", "bgi.png", "photo.png"}


def test_output_over_the_weights_file_is_refused_even_with_overwrite(
    good: Path, tmp_path: Path, capsys
) -> None:
    """``-o w.mp4 --overwrite --weights w.mp4`` wrote the video over the checkpoint, and
    the default name did too (``--weights clip_green.mp4``); the input beside it converts."""
    weights = tmp_path / "w.mp4"
    weights.write_bytes(b"a checkpoint (the model is stubbed here)")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(good.read_bytes())
    named = tmp_path / "clip_green.mp4"
    named.write_bytes(weights.read_bytes())
    kept = weights.read_bytes()
    for args in (["-o", weights, "--weights", weights], ["--weights", named]):
        code, _, err = run_cli([clip, *args, "--overwrite"], capsys)
        out = args[1] if args[0] == "-o" else named
        assert code == 2 and f"the output {out} is the --weights file itself" in err
    assert weights.read_bytes() == kept and named.read_bytes() == kept
    assert listing(tmp_path) == {"w.mp4", "clip.mp4", "clip_green.mp4"}


def test_two_inputs_for_one_output_are_named_and_nothing_is_made(
    good: Path, tmp_path: Path, capsys
) -> None:
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "clip.mp4").write_bytes(good.read_bytes())
    out = tmp_path / "out"
    a, b = tmp_path / "a/clip.mp4", tmp_path / "b/clip.mp4"
    code, _, err = run_cli([a, b, "-o", out], capsys)
    errors = [ln for ln in err.splitlines() if ln.startswith("vidmat: error:")]
    assert code == 2 and len(errors) == 2 and "converted 0 of 2 inputs; 2 failed" in err
    dst = out / "clip_green.mp4"
    assert f"{a} and {b} would both be written to {dst}" in errors[0]
    assert f"{b} and {a} would both be written to {dst}" in errors[1]
    # The same suffix: the example name takes the folder that tells them apart.
    assert f"-o {out / 'clip_a_green.mp4'}" in errors[0]
    assert f"-o {out / 'clip_b_green.mp4'}" in errors[1]
    assert not out.exists()


def test_a_name_clash_fails_those_inputs_and_the_others_convert(
    good: Path, tmp_path: Path, capsys
) -> None:
    """take1.mp4 and take1.mov in one folder both want take1_green.mp4. That used to stop the
    whole batch, other.mp4 too, and advise separate runs, whose second one then failed
    with "already exists"."""
    from vidmat.commands.convert import expand_inputs

    src = tmp_path / "takes"
    src.mkdir()
    for name in ("take1.mp4", "take1.mov", "other.mp4"):
        (src / name).write_bytes(good.read_bytes())
    code, _, err = run_cli([src], capsys)
    assert code == 2 and "converted 1 of 3 inputs" in err and "2 failed" in err
    assert listing(src) == {"take1.mp4", "take1.mov", "other.mp4", "other_green.mp4"}
    errors = [ln for ln in err.splitlines() if ln.startswith("vidmat: error:")]
    dst = src / "take1_green.mp4"
    assert errors[0].startswith(f"vidmat: error: {src / 'take1.mov'} and {src / 'take1.mp4'}")
    assert errors[1].startswith(f"vidmat: error: {src / 'take1.mp4'} and {src / 'take1.mov'}")
    assert len(errors) == 2 and all(f"both be written to {dst}" in e for e in errors)
    # The advice works as given, and converting the folder again leaves its results out.
    for line in errors:
        m = re.search(r"convert (\S+) in a run of its own, adding -o (\S+) to the same", line)
        assert m is not None, line
        code, _, err = run_cli([m[1], "-o", m[2]], capsys)
        assert code == 0, err
    assert {"take1_mov_green.mp4", "take1_mp4_green.mp4"} < listing(src)
    assert len(frame_times(src / "take1_mov_green.mp4")) == 8
    jobs, skipped = expand_inputs([str(src)])
    assert [j.src.name for j in jobs] == ["other.mp4", "take1.mov", "take1.mp4"]
    assert {p.name for p in skipped} == {
        "other_green.mp4",
        "take1_mov_green.mp4",
        "take1_mp4_green.mp4",
    }


def test_an_output_that_is_another_input_is_refused_even_with_overwrite(
    good: Path, tmp_path: Path, capsys
) -> None:
    """clip.mp4 and clip_green.mp4 named together: the first one's default output is the
    second input, which --overwrite used to replace. Named inputs are converted, not
    skipped as earlier outputs, so the second converts and the first is refused."""
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(good.read_bytes())
    other = tmp_path / "clip_green.mp4"
    other.write_bytes(good.read_bytes())
    before = other.read_bytes()
    code, _, err = run_cli([clip, other, "--overwrite"], capsys)
    assert code == 2 and "converted 1 of 2 inputs" in err, err
    assert f"the output of {clip}, {other}, would replace {other}, another input" in err
    assert other.read_bytes() == before
    assert (tmp_path / "clip_green_green.mp4").exists()


def test_failed_run_removes_the_folder_it_made(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    code, _, _ = run_cli([bad, "-o", tmp_path / "made" / "here/"], capsys)
    assert code == 2 and listing(tmp_path) == {"bad.mp4"}


def test_output_suffix_must_match_format(good: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli([good, "-o", tmp_path / "o.mp4", "--format", "webm"], capsys)
    assert code == 2 and "name the output o.webm" in err
    code, _, err = run_cli([good, "-o", tmp_path / "o.mov", "--format", "png"], capsys)
    assert code == 2 and "into a folder" in err
    # An image or unknown name for a video was written as H.264 under that name.
    code, _, err = run_cli([good, "-o", tmp_path / "o.png"], capsys)
    assert code == 2 and "into a folder" in err and "o.mp4" in err
    code, _, err = run_cli([good, "-o", tmp_path / "o.final"], capsys)
    assert code == 2 and "name the output o.mp4" in err
    assert listing(tmp_path) == set()


def test_still_image_output_is_named_as_an_image(tmp_path: Path, capsys) -> None:
    import cv2
    from convert_fixtures import square_frame

    src = tmp_path / "in" / "photo.jpg"
    src.parent.mkdir()
    cv2.imwrite(str(src), square_frame(0, 64, 48)[:, :, ::-1])
    out = tmp_path / "out"
    out.mkdir()
    # A .webp name asks for no video format, so --bg transparent is no mp4 refusal.
    code, _, err = run_cli([src, "-o", out / "cut.webp", "--bg", "transparent"], capsys)
    assert code == 0, err
    rgba = cv2.imread(str(out / "cut.webp"), cv2.IMREAD_UNCHANGED)
    assert rgba.shape == (48, 64, 4) and rgba[..., 3].min() == 0
    for name in ("cut.mov", "cut.mp4"):
        code, _, err = run_cli([src, "-o", out / name], capsys)
        assert code == 2 and "a still image is written as an image" in err
    assert listing(out) == {"cut.webp"}


def test_progress_is_one_bar_for_one_file_and_adds_a_file_bar_for_several(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["convert", str(good), "-o", str(tmp_path / "one.mp4")]) == 0
    err = capsys.readouterr().err
    assert "converting" in err and "good.mp4:" not in err  # no second bar saying the same
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (src / name).write_bytes(good.read_bytes())
    assert main(["convert", str(src), "-o", f"{tmp_path / 'out'}/"]) == 0
    err = capsys.readouterr().err
    assert "all 2 files" in err and "a.mp4:" in err and "b.mp4:" in err


def test_unwritable_outputs_are_refused_before_the_model_loads(
    good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    def no_engine(cls: type, cfg: object) -> Engine:
        raise AssertionError("the model was loaded for outputs that cannot be written")

    monkeypatch.setattr(Engine, "from_config", classmethod(no_engine))
    afile = tmp_path / "afile"
    afile.write_bytes(b"x")
    code, _, err = run_cli([good, "-o", afile / "x.mp4"], capsys)
    assert code == 2 and f"{afile} is a file, not a folder to write x.mp4 into" in err
    taken = tmp_path / "good_green.mp4"
    taken.mkdir()
    code, _, err = run_cli([good, "-o", tmp_path, "--overwrite"], capsys)
    assert code == 2 and "is a folder; name a file to write instead" in err
    assert taken.is_dir() and afile.read_bytes() == b"x"


def _audio_seconds(path: Path) -> float:
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        samples = sum(f.samples for p in c.demux(a) for f in p.decode())
        return samples / a.codec_context.sample_rate


def test_mp3_in_avi_is_copied_or_reencoded_whole(tmp_path: Path, capsys) -> None:
    """An old DivX-style AVI: MPEG-4 video, MP3 audio whose decoder numbers its frames
    (time base 1152/44100) and calls itself mp3float."""
    src = make_clip(
        tmp_path / "old.avi", codec="mpeg4", audio="libmp3lame", sample_rate=44100, frames=25
    )
    code, _, _ = run_cli([src, "-o", tmp_path / "o.mp4"], capsys)
    assert code == 0
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert c.streams.audio[0].codec_context.name.startswith("mp3")  # copied, not AAC
    code, _, _ = run_cli([src, "-o", tmp_path / "o.webm"], capsys)  # re-encoded to Opus
    assert code == 0
    assert abs(_audio_seconds(tmp_path / "o.webm") - _audio_seconds(src)) < 0.05


def test_audio_that_outlasts_the_picture_is_no_truncation(tmp_path: Path, capsys) -> None:
    """Matroska gives no frame count, and its duration is the longest stream's."""
    src = make_clip(tmp_path / "talk.mkv", frames=12, audio="libopus", audio_seconds=2.0)
    code, _, err = run_cli([src, "-o", tmp_path / "o.mp4"], capsys)
    assert code == 0 and "truncated" not in err
    assert len(frame_times(tmp_path / "o.mp4")) == 12
    assert _audio_seconds(tmp_path / "o.mp4") > 1.9


def test_folder_scan_takes_every_known_video_and_image_suffix(tmp_path: Path) -> None:
    from vidmat.commands.convert import expand_inputs

    names = ["a.gif", "b.ts", "c.webm", "d.JPG", "e.MTS", "f.m2ts", "g.3gp", "notes.txt"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    jobs, skipped = expand_inputs([str(tmp_path)])
    assert skipped == []
    assert sorted(j.src.name for j in jobs) == names[:-1]  # camcorder files were left out
    assert [j.is_image for j in sorted(jobs, key=lambda j: j.src.name)] == [False] * 3 + [True] + [
        False
    ] * 3


def test_inputs_a_shell_or_a_pattern_expands_are_taken_as_a_folder_scan(tmp_path: Path) -> None:
    """`vidmat convert t/*` unquoted (the shell names each entry) converted the frames of
    the earlier clip_alpha/ into it and refused clip.mp4; quoted, a README and an empty
    folder it matched were 2 failed inputs; clip_green-2.mp4, a result kept under that
    name, was converted as a source; and a file named and found by a folder was said to
    be left out, then converted."""
    from vidmat.commands.convert import expand_inputs

    t = tmp_path / "t"
    frames = t / "clip_alpha"
    frames.mkdir(parents=True)
    (t / "empty").mkdir()
    for name in ("clip.mp4", "clip_green.mp4", "clip_green-2.mp4", "README.txt"):
        (t / name).write_bytes(b"x")
    for name in ("frame_000001.png", "frames.csv"):
        (frames / name).write_bytes(b"x")
    # the shell's expansion of t/*: every entry named
    named = [str(p) for p in sorted(t.iterdir()) if p.suffix != ".txt" and p.name != "empty"]
    jobs, skipped = expand_inputs(named)
    assert [j.src.name for j in jobs if j.error is None] == sorted(
        ["clip.mp4", "clip_green.mp4", "clip_green-2.mp4"]
    )  # named files are converted whatever their names
    assert [p.name for p in skipped] == ["clip_alpha"]
    # quoted: the pattern's matches as a folder scan takes them
    jobs, skipped = expand_inputs([f"{t}/*"])
    assert [(j.src.name, j.error) for j in jobs] == [("clip.mp4", None)]
    assert sorted(p.name for p in skipped) == [
        "clip_alpha", "clip_green-2.mp4", "clip_green.mp4",
    ]  # fmt: skip
    jobs, _ = expand_inputs([f"{t}/*.txt"])
    assert [j.error for j in jobs] == [f"{t}/*.txt: no video or image matches this pattern."]
    # named and found by its folder: converted, so not among those left out
    jobs, skipped = expand_inputs([str(t / "clip_green.mp4"), str(t)])
    assert {j.src.name for j in jobs} == {"clip_green.mp4", "clip.mp4"}
    assert [p.name for p in skipped] == ["clip_green-2.mp4"]


def test_a_folder_converted_again_leaves_out_its_own_outputs(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "clips"
    src.mkdir()
    for name in ("a.mp4", "keep_green.mp4"):  # no "keep" clip: this one is a source
        (src / name).write_bytes(good.read_bytes())
    code, _, err = run_cli([src], capsys)
    assert code == 0 and listing(src) == {
        "a.mp4", "keep_green.mp4", "a_green.mp4", "keep_green_green.mp4",
    }  # fmt: skip
    assert main(["convert", str(src), "--format", "png"]) == 0
    err = capsys.readouterr().err
    assert "left out 2 earlier output(s)" in err and "a_green.mp4" in err
    made = {"a_alpha", "keep_green_alpha"}
    assert listing(src) == {"a.mp4", "keep_green.mp4", "a_green.mp4", "keep_green_green.mp4"} | made
    # Again as a pattern, which also matches the PNG folders, with --overwrite: only the
    # sources are converted, none of their results.
    before = {p: p.stat().st_mtime_ns for p in src.iterdir()}
    code, _, _ = run_cli([f"{src}/*", "--overwrite"], capsys)
    assert code == 0 and set(before) == set(src.iterdir())
    assert {p.name for p, t in before.items() if p.stat().st_mtime_ns != t} == {
        "a_green.mp4", "keep_green_green.mp4",
    }  # fmt: skip
    # A file the user names is converted whatever its name.
    code, _, _ = run_cli([src / "a_green.mp4", "-o", tmp_path / "named.mp4"], capsys)
    assert code == 0 and (tmp_path / "named.mp4").is_file()


@pytest.mark.parametrize(
    ("fmt", "codecs", "note"),
    [
        ("mp4", ["aac", "aac"], "audio 2 tracks: 1 copied, 1 re-encoded"),
        ("mov", ["aac", "pcm_s16le"], "audio 2 tracks copied"),
        ("webm", ["opus", "opus"], "audio 2 tracks re-encoded"),
        ("png", ["aac", "aac"], "audio 2 tracks: 1 copied, 1 re-encoded to audio.m4a"),
    ],
)
def test_every_audio_track_is_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str, codecs: list[str], note: str
) -> None:
    """A recording with the microphone and the desktop sound on tracks of their own keeps
    both, each with its name and language, in its place, 5.1 re-encoded as 5.1 (it was
    mixed to stereo). (Before, all tracks but the first were dropped.)"""
    mic = make_clip(tmp_path / "mic.mp4", frames=12)  # AAC mono
    desk = make_clip(tmp_path / "desk.mov", frames=12, audio="pcm_s16le", audio_layout="5.1")
    src = with_tracks(
        tmp_path / "rec.mkv",
        [mic, desk],
        [{"title": "Mic", "language": "eng"}, {"title": "Desktop", "language": "deu"}],
    )
    dst = tmp_path / ("out" if fmt == "png" else f"out{FORMATS[fmt][0]}")
    code = main(["convert", str(src), "--format", fmt, "-o", str(dst)])  # not --quiet
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"{src} -> {dst} (12 frames, " in err and f", {note})\n" in err
    assert "mixed down" not in err and "warning" not in err
    audio = dst / "audio.m4a" if fmt == "png" else dst
    with av.open(str(audio)) as c:
        tracks = c.streams.audio
        assert [a.codec_context.name for a in tracks] == codecs
        assert [a.codec_context.channels for a in tracks] == [1, 6]
        if codecs[1] != "pcm_s16le":  # a MOV's copied PCM keeps no layout name
            assert tracks[1].codec_context.layout.name == "5.1"
        # QuickTime's language table knows German as "ger" only ("deu" was dropped).
        german = "ger" if fmt == "mov" else "deu"
        assert [a.metadata.get("language") for a in tracks] == ["eng", german]
        assert [track_title(a.metadata) for a in tracks] == ["Mic", "Desktop"]
    for got, want in zip(track_seconds(audio), track_seconds(src), strict=True):
        assert abs(got - want) < 0.03


def test_a_background_for_a_mask_is_refused_before_its_file_is_looked_for(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--format mask --bg missing.jpg said the file did not exist, hiding that a matte
    takes no background at all (the user would look for the file, then fail again)."""
    code, _, err = run_cli([good, "--format", "mask", "--bg", tmp_path / "missing.jpg"], capsys)
    assert code == 2
    assert err.strip() == (
        "vidmat: error: --format mask writes the matte alone, with no background; leave out --bg."
    )


def test_the_bar_over_an_mkv_has_a_total_and_ends_full(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = with_tracks(tmp_path / "c.mkv", [make_clip(tmp_path / "c.mp4", frames=12)], [{}])
    assert main(["convert", str(src), "-o", str(tmp_path / "o.mp4")]) == 0
    err = capsys.readouterr().err
    assert "0/12 [" in err and "100%" in err and "12/12 [" in err


@pytest.mark.parametrize("fmt", ["webm", "mov"])
def test_track_names_from_an_mp4_are_carried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """MP4 and MOV name a track in their own places, as "name" (what a title becomes
    there) or as the handler name (ffmpeg -metadata:s:a handler_name=...), and every
    output lost them; the muxer's generic handler name ("SoundHandler") names nothing."""
    mic = make_clip(tmp_path / "mic.mp4", frames=8)
    src = with_tracks(
        tmp_path / "rec.mp4",
        [mic, mic, mic],
        [{"handler_name": "Commentary"}, {"title": "Mic"}, {}],
    )
    with av.open(str(src)) as c:
        names = [dict(a.metadata) for a in c.streams.audio]
    assert names[1].get("name") == "Mic" and names[2].get("handler_name") == "SoundHandler"
    dst = tmp_path / f"out{FORMATS[fmt][0]}"
    code, _, err = run_cli([src, "--format", fmt, "-o", dst], capsys)
    assert code == 0, err
    with av.open(str(dst)) as c:
        assert [track_title(a.metadata) for a in c.streams.audio] == ["Commentary", "Mic", None]


class _GhostRed(torch.nn.Module):
    """The red square certain (1.0), everything else a faint ghost (0.3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x[:, :1] > 0.0, 1.0, 0.3)


def test_matte_options_shape_the_written_alpha(
    good: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--threshold/--contrast drop the ghost, --grow widens the person, --feather softens."""
    from vidmat.model.spec import WeightsSpec

    spec = WeightsSpec(name="ghost", arch="u2netp", input_size=32, scale="255")
    engine = Engine(_GhostRed(), spec, EngineConfig(device="cpu", size=32))
    monkeypatch.setattr(Engine, "from_config", classmethod(lambda cls, cfg: engine))

    def alphas(name: str, *opts: str) -> np.ndarray:
        out = tmp_path / name
        code, _, err = run_cli(
            [good, "--format", "png", "--smoothing", "0", "-o", out, *opts], capsys
        )
        assert code == 0, err
        return np.stack(read_alphas(out)).astype(np.float32) / 255

    plain = alphas("plain")
    ghost = (plain > 0.2) & (plain < 0.4)
    assert ghost.mean() > 0.5  # most of the frame is the 0.3 ghost as the model gave it
    hard = alphas("hard", "--threshold", "0.8", "--contrast", "2")
    assert hard[ghost].max() == 0.0  # 0.4 -> 0.25 by the move to 0.8, then 0 at contrast 2
    solid = plain > 0.99
    assert solid.any() and hard[solid].min() == 1.0  # the person stays whole
    grown = alphas("grown", "--threshold", "0.6", "--contrast", "inf", "--grow", "3")
    cut = alphas("cut", "--threshold", "0.6", "--contrast", "inf")
    assert set(np.unique(cut)) <= {0.0, 1.0} and grown.sum() > cut.sum()
    assert (grown >= cut).all()
    soft = alphas("soft", "--threshold", "0.6", "--contrast", "inf", "--feather", "3")
    assert ((soft > 0) & (soft < 1)).sum() > ((cut > 0) & (cut < 1)).sum()


@pytest.mark.parametrize(
    ("opts", "words"),
    [
        (["--threshold", "1.5"], "threshold must be between 0 and 1"),
        (["--contrast", "nan"], "contrast must be > 0"),
        (["--feather", "-1"], "feather must be between 0 and 100 pixels, got -1."),
        (["--feather", "1e10"], "feather must be between 0 and 100 pixels"),  # was a traceback
        (["--grow", "500"], "grow or shrink by at most 100 pixels"),
        (["--crf", "60"], "--crf must be between 0 and 51 for mp4"),
        (["--format", "mask", "--bg", "blue"], "--format mask writes the matte alone"),
    ],
)
def test_matte_options_out_of_range_are_one_sentence(
    good: Path, tmp_path: Path, capsys, opts: list[str], words: str
) -> None:
    code, _, err = run_cli([good, "-o", tmp_path / "x.mp4", *opts], capsys)
    assert code == 2 and words in err and listing(tmp_path) == set()


def test_an_empty_output_name_is_refused_and_stills_say_their_format(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-o "" (a script's empty variable) silently meant the default place; --format mp4
    with a still wrote a transparent PNG without a word about the format asked for."""
    import cv2

    code, _, err = run_cli([good, "-o", ""], capsys)
    assert code == 2 and "-o was given an empty name" in err
    assert listing(good.parent) == {"good.mp4"}
    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), np.full((32, 48, 3), 90, np.uint8))
    assert main(["convert", str(photo), "--format", "mp4"]) == 0
    err = capsys.readouterr().err
    assert "note: stills are written as transparent PNGs whatever --format says" in err
    assert (tmp_path / "photo_alpha.png").exists()
