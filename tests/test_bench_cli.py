"""Bad ``vidmat bench`` options end in one sentence and exit code 2, before any timing.

Each case here once ended in a traceback at the end of a run (a JSON path in /proc, a
zero batch), looped for minutes (``--frames 0``, ``--rss-every 0``) or was accepted and
timed regardless (``--sizes 33``). All are refused before weights, clips or frames are made.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vidmat.cli import main

_THREADS = torch.get_num_threads()

#: mkstemp in /proc fails even for root: the folder probe must catch it before timing.
UNWRITABLE_JSON = "/proc/vidmat-bench.json"
needs_proc = pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")


def _refused(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``vidmat ARGV``: exit code 2, ``message`` on one stderr line, no traceback."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert message in err, err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("vidmat: error: "), err
    return captured.out


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from convert_fixtures import make_clip

    return make_clip(tmp_path_factory.mktemp("bench") / "good.mp4", frames=3, audio=None)


MODEL = ["bench", "model", "--device", "cpu", "--frame", "40x30", "--warmup", "0"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sizes", "64", "--batches", "0", "--iters", "1"], "--batches must be 1 or more, got 0"),
        (["--sizes", "32", "--iters", "0"], "--iters must be 1 or more, got 0"),
        (["--sizes", "33", "--iters", "1"], "--sizes must be a multiple of 32, at least 32"),
        (["--sizes", "32", "--iters", "1", "--threads", "0"], "--threads must be 1 or more"),
        (["--sizes", "32", "--iters", "1", "--workers", "1,0"], "--workers must be 1 or more"),
        (["--sizes", "32", "--precisions", "fp32,fp16"], "fp16 needs a CUDA device"),
        (["--sizes", "32", "--graph", "on,off"], "--graph on needs CUDA"),
        pytest.param(
            ["--sizes", "32", "--iters", "1", "--json", UNWRITABLE_JSON],
            "output folder /proc is not writable",
            marks=needs_proc,
        ),
    ],
)
def test_bench_model_refuses_bad_options(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _refused([*MODEL, *extra], message, capsys)
    assert "model" not in out  # no row was timed


TRAIN = ["bench", "train", "--device", "cpu", "--batches", "2", "--warmup", "0"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sizes", "33", "--iters", "1"], "--sizes must be a multiple of 32, at least 32"),
        (["--sizes", ","], "--sizes names no size"),
        (["--sizes", "32", "--iters", "0"], "--iters must be 1 or more, got 0"),
        (["--sizes", "32", "--warmup", "-1"], "--warmup must be 0 or more, got -1"),
        (["--sizes", "32", "--batches", "100000"], "--batches must be at most 1024"),
        (["--sizes", "32", "--backgrounds", "/no/such"], "--backgrounds goes with --data"),
        pytest.param(
            ["--sizes", "32", "--json", UNWRITABLE_JSON],
            "output folder /proc is not writable",
            marks=needs_proc,
        ),
    ],
)
def test_bench_train_refuses_bad_sizes_counts_and_json(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _refused([*TRAIN, *extra], message, capsys)


def test_bench_train_reads_data_as_vidmat_train_does(
    tmp_path: Path, make_people, capsys: pytest.CaptureFixture[str]
) -> None:
    """--data ROOT:nan reached the sampler ("Probabilities contain NaN", a traceback)."""
    root = make_people(tmp_path / "ds")
    argv = [*TRAIN, "--sizes", "32", "--iters", "1"]
    _refused([*argv, "--data", f"{root}:nan"], f"sampling weight of {root} must be", capsys)
    _refused([*argv, "--data", f"{root}:abc"], "'abc' is not a number", capsys)
    # its --json and --cache never go into the data's own folders
    mask = root / "masks" / "0.png"
    before = mask.read_bytes()
    json_over = [*argv, "--data", str(root), "--json", str(mask), "--overwrite"]
    _refused(json_over, f"--json {mask} is a file in the --data folder {root / 'masks'}", capsys)
    assert mask.read_bytes() == before
    cache = root / "images" / "c"
    _refused(
        [*argv, "--data", str(root), "--cache", str(cache)], f"--cache {cache} lies inside", capsys
    )
    assert not cache.exists()


POST = ["bench", "postprocess", "--sizes", "64x48", "--smoothing", "0", "--warmup", "0"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--devices", "tpu", "--frames", "1"], "--devices: unknown device 'tpu'"),
        pytest.param(
            ["--devices", "cuda", "--frames", "1"], "no CUDA GPU is usable here", marks=no_cuda
        ),
        (["--devices", "cpu", "--backgrounds", "nope", "--frames", "1"], "background 'nope'"),
        (["--devices", "cpu", "--frames", "0"], "--frames must be 1 or more, got 0"),
        (["--devices", "cpu", "--frames", "1", "--warmup", "-1"], "--warmup must be 0 or more"),
        (["--devices", "cpu", "--frames", "1", "--lowres", "0"], "--lowres must be 1 or more"),
        (["--devices", "cpu", "--frames", "1", "--lowres", "100000"], "--lowres must be at most"),
        (["--devices", "cpu", "--frames", "1", "--sizes", ","], "--sizes names no size"),
        (["--devices", "cpu", "--frames", "1", "--json", ""], "--json names no file"),
        (["--devices", "cpu", "--frames", "1", "--smoothing", "2"], "smoothing must be between"),
        pytest.param(
            ["--devices", "cpu", "--frames", "1", "--json", UNWRITABLE_JSON],
            "output folder /proc is not writable",
            marks=needs_proc,
        ),
    ],
)
def test_bench_postprocess_refuses_bad_options(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _refused([*POST, *extra], message, capsys)
    assert "ms" not in out  # refused before the first row


def test_bench_postprocess_times_file_backgrounds_and_replaces_its_json(
    tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An image or video file given as a background is opened as convert opens it and timed;
    an earlier JSON is replaced with --overwrite."""
    import cv2
    import numpy as np

    image = tmp_path / "bg.png"
    cv2.imwrite(str(image), np.full((30, 40, 3), 90, np.uint8))
    out = tmp_path / "post.json"
    out.write_text("old")
    argv = [*POST, "--devices", "cpu", "--frames", "1", "--json", str(out)]
    assert main([*argv, "--backgrounds", f"{image},{clip},green", "--overwrite"]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["background"] for r in rows] == [str(image), str(clip), "green"]
    assert all(r["ms_median"] > 0 for r in rows)
    assert "Traceback" not in capsys.readouterr().err


def _convert(clip: Path, *extra: str) -> list[str]:
    argv = ["bench", "convert", "--input", str(clip), "--height", "32", "--size", "32"]
    return [*argv, "--device", "cpu", *extra]


def test_bench_convert_refuses_a_file_as_keep_folder(
    tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine")
    argv = _convert(clip, "--frames", "5", "--keep", str(afile))
    out = _refused(argv, f"--keep {afile} is a file; name a folder", capsys)
    assert afile.read_text() == "mine" and "making" not in out


def test_bench_convert_keeps_earlier_clips_and_never_replaces_its_input(
    tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--keep wrote over the clips of an earlier run, and over --input itself when it lay
    there under a kept clip's name (its md5 changed, 60 frames became 8)."""
    keep = tmp_path / "keep"
    keep.mkdir()
    src = keep / "source_32p.mp4"
    src.write_bytes(clip.read_bytes())
    argv = ["bench", "convert", "--input", str(src), "--height", "32", "--size", "32"]
    argv += ["--device", "cpu", "--frames", "3", "--keep", str(keep), "--overwrite"]
    _refused(argv, f"the kept clip {src} is the --input itself", capsys)
    assert src.read_bytes() == clip.read_bytes()
    keep2 = tmp_path / "keep2"
    argv = _convert(clip, "--frames", "3", "--keep", str(keep2))
    assert main(argv) == 0
    made = {p.name: p.stat().st_mtime_ns for p in keep2.iterdir()}
    assert set(made) == {"source_32p.mp4", "transcode.mp4", "convert.mp4"}
    capsys.readouterr()
    _refused(argv, "already exists; pass --overwrite", capsys)
    assert {p.name: p.stat().st_mtime_ns for p in keep2.iterdir()} == made
    assert main([*argv, "--overwrite"]) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--frames", "-5"], "--frames must be 1 or more, got -5"),
        (["--frames", "999999999999"], "--frames must be at most 100000"),
        (["--frames", "5", "--batch", "0"], "--batch must be 1 or more, got 0"),
        (["--frames", "5", "--rss-every", "0"], "--rss-every must be more than 0, got 0"),
        (["--frames", "5", "--bg", "nope"], "background 'nope'"),
        (["--frames", "5", "--height", "143"], "--height must be even (H.264 stores even sizes)"),
        pytest.param(
            ["--frames", "5", "--keep", "/proc/vidmat-keep"],
            "cannot make the --keep folder /proc/vidmat-keep",
            marks=needs_proc,
        ),
        pytest.param(
            ["--frames", "5", "--json", UNWRITABLE_JSON],
            "output folder /proc is not writable",
            marks=needs_proc,
        ),
    ],
)
def test_bench_convert_refuses_before_printing_anything(
    extra: list[str], message: str, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _refused(_convert(clip, *extra), message, capsys) == ""


def test_bench_convert_refuses_a_missing_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.mp4"
    assert _refused(_convert(missing), f"--input {missing} does not exist", capsys) == ""


LIVE = ["bench", "live", "--device", "cpu", "--resolution", "96x64", "--size", "32"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seconds", "0"], "--seconds must be more than 0, got 0"),
        (["--seconds", "nan"], "--seconds must be more than 0, got nan"),
        (["--warmup", "inf"], "--warmup must be a finite number"),
        (["--rss-every", "0"], "--rss-every must be more than 0, got 0"),
        (["--fps", "0"], "--fps must be between 1 and 240, got 0"),
        (["--size", "33"], "--size must be a multiple of 32, at least 32"),
        (["--threads", "0"], "--threads must be 1 or more, got 0"),
        (["--infer-every", "0"], "--infer-every must be 1 or more, got 0"),
        (["--model-nice", "-1"], "--model-nice must be from 0 to 19, got -1"),
        (["--model-nice", "20"], "--model-nice must be from 0 to 19, got 20"),
        (["--camera", "/nonexistent/cam.mp4"], "--camera /nonexistent/cam.mp4 does not exist"),
        (["--bg", "nope"], "background 'nope'"),
        pytest.param(
            ["--json", UNWRITABLE_JSON], "output folder /proc is not writable", marks=needs_proc
        ),
    ],
)
def test_bench_live_refuses_bad_options(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _refused([*LIVE, *extra], message, capsys) == ""


def test_bench_live_refuses_a_rate_for_a_camera_file(
    clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--fps 10 with --camera FILE was timed at the file's own rate without a word."""
    argv = [*LIVE, "--camera", str(clip), "--fps", "10"]
    assert _refused(argv, "--fps sets the synthetic clip's rate", capsys) == ""


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([*MODEL, "--sizes", "32", "--iters", "1"], id="model"),
        pytest.param([*TRAIN, "--sizes", "32", "--iters", "1"], id="train"),
        pytest.param([*POST, "--devices", "cpu", "--frames", "1"], id="postprocess"),
        pytest.param(["bench", "convert", "--height", "32", "--frames", "2"], id="convert"),
        pytest.param([*LIVE, "--seconds", "0.1"], id="live"),
    ],
)
def test_every_bench_refuses_an_existing_json_without_overwrite(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An earlier result (often the baseline of a comparison) is kept, as `vidmat eval --json`
    keeps it: refused in one sentence before anything is made or timed."""
    out = tmp_path / "old.json"
    out.write_text("old")
    message = f"{out} already exists; pass --overwrite to replace it."
    assert _refused([*argv, "--json", str(out)], message, capsys) == ""
    assert out.read_text() == "old"


def test_a_bench_json_never_replaces_the_weights_it_times(
    tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json W --overwrite, W the --weights file: the scores went over the weights."""
    before = tiny_weights.read_bytes()
    argv = [*MODEL, "--weights", str(tiny_weights), "--sizes", "32", "--iters", "1"]
    message = f"the --json {tiny_weights} is the --weights file itself; choose another --json name."
    assert _refused([*argv, "--json", str(tiny_weights), "--overwrite"], message, capsys) == ""
    assert tiny_weights.read_bytes() == before


def test_every_bench_target_offers_overwrite(capsys: pytest.CaptureFixture[str]) -> None:
    """The flag is added to each target in one place, so a new target gets it too."""
    from vidmat.commands.bench import TARGETS

    for target in TARGETS:
        with pytest.raises(SystemExit) as exc:
            main(["bench", target, "--help"])
        assert exc.value.code == 0
        assert "--overwrite" in capsys.readouterr().out, target


def test_bench_model_names_weights_given_by_path_after_the_file(
    tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The JSON named a path-loaded file by the name inside it (the shipped file's "H2")."""
    renamed = tmp_path / "person_v3.safetensors"
    renamed.write_bytes(tiny_weights.read_bytes())  # its spec still says "tiny"
    out = tmp_path / "model.json"
    argv = [*MODEL, "--weights", str(renamed), "--sizes", "32", "--iters", "1", "--json", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    assert json.loads(out.read_text())["weights"] == "person_v3"


def test_bench_model_compares_threads_and_workers_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model.json"
    argv = [*MODEL, "--sizes", "32", "--batches", "2", "--iters", "1"]
    argv += ["--threads", "1,2", "--workers", "1,2", "--precisions", "fp32", "--json", str(out)]
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(_THREADS)  # the bench sets torch's process-wide count
    capsys.readouterr()
    rows = json.loads(out.read_text())["results"]
    assert [(r["threads"], r["workers"]) for r in rows] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(r["batch"] == 2 and r["engine_ms"] > 0 for r in rows)


def _option_help(argv: list[str], option: str) -> str:
    """The help text ``option`` has in the (sub)command ``argv``, as argparse holds it."""
    import argparse

    from vidmat.cli import build_parser

    parser = build_parser()
    for name in argv:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    action = next(a for a in parser._actions if option in a.option_strings)
    assert action.help is not None
    return action.help


def test_bench_live_infer_every_says_what_live_says() -> None:
    """bench live said "sync mode: ..." although the value applies in both modes, as
    live's own help says: one help text serves both."""
    live = _option_help(["live"], "--infer-every")
    bench = _option_help(["bench", "live"], "--infer-every")
    assert bench == live and "async mode" in live and not bench.startswith("sync mode")


def test_bench_model_refuses_an_arch_its_weights_are_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --arch u2net --weights u2netp.pth timed u2netp and said nothing of --arch.
    from vidmat.model.u2net import build_model

    weights = tmp_path / "u2netp.pth"
    torch.save(build_model("u2netp").state_dict(), weights)
    argv = ["bench", "model", "--device", "cpu", "--arch", "u2net", "--weights", str(weights)]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"vidmat: error: --weights {weights} holds u2netp weights, not u2net; leave --arch out "
        "with --weights.\n"
    )


def test_a_source_clip_cut_short_leaves_nothing_under_its_name(
    tmp_path: Path, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while `bench convert --keep DIR` made its source left source_240p.mp4 cut
    short (644 of 3000 frames), which the next run took for a whole clip."""
    from vidmat.benchmarks.convert import make_source
    from vidmat.io.video import VideoWriter

    real = VideoWriter.write
    written = [0]

    def stopped_midway(self, *args, **kwargs):
        if written[0] == 80:  # past the encoder's look-ahead: packets are in the file
            raise KeyboardInterrupt
        written[0] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(VideoWriter, "write", stopped_midway)
    with pytest.raises(KeyboardInterrupt):
        make_source(clip, tmp_path / "source_32p.mp4", 32, 100)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(VideoWriter, "write", real)
    assert make_source(clip, tmp_path / "source_32p.mp4", 32, 10)["frames"] == 10
    assert [p.name for p in tmp_path.iterdir()] == ["source_32p.mp4"]
