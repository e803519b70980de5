"""The CLI entry point, `vidmat info` and `vidmat bench model` as a user runs them."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vidmat.cli import COMMANDS, build_parser, main
from vidmat.commands.bench import TARGETS


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("info", "bench"):
        assert name in out


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    """A usage error, exit 2 as argparse's own: 1 is what --help calls an unexpected one."""
    assert main([]) == 2
    assert "usage: vidmat" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["live", "--nope"],
        ["convert", "clip.mp4", "--nope"],
        ["eval", "--nope"],
        ["info", "--nope"],
        ["bench", "live", "--nope"],
    ],
)
def test_unknown_option_shows_the_commands_own_usage(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    command = " ".join(a for a in argv if not a.startswith("-") and "." not in a)
    assert err.startswith(f"usage: vidmat {command} ")
    assert err.rstrip().endswith(f"vidmat {command}: error: unrecognized arguments: --nope")


def test_unknown_option_before_any_command_shows_the_top_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--nope"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: vidmat [-h]") and "unrecognized arguments: --nope" in err


def test_python_dash_m_works() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vidmat", "--version"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0 and proc.stdout.startswith("vidmat ")


def test_train_runs_where_pyav_and_qt_are_missing(tmp_path: Path) -> None:
    """A GPU machine for training may lack PyAV and Qt: `vidmat train` must not need them."""
    block = "import sys; sys.modules.update(av=None, PyQt6=None); from vidmat.cli import main; "
    train = [sys.executable, "-c", block + "sys.exit(main(sys.argv[1:]))", "train"]
    proc = subprocess.run([*train, "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "--workers" in proc.stdout
    missing = tmp_path / "nowhere"
    proc = subprocess.run(
        [*train, "--data", str(missing), "--run", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (proc.returncode, proc.stderr.strip()) == (
        2,
        f"vidmat: error: training root {missing} does not exist.",
    )
    # A command that does need PyAV fails there, in one sentence (it was ImportError's
    # traceback): the block above is real.
    for argv in (["info"], ["convert", str(missing / "x.mp4")]):
        proc = subprocess.run(
            [sys.executable, "-c", block + f"sys.exit(main({argv!r}))"],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 2 and proc.stderr.startswith(
            "vidmat: error: PyAV cannot be imported (import of av halted"
        ), proc.stderr
        assert proc.stderr.strip().endswith("pip install --force-reinstall --no-deps av")
        assert proc.stderr.count("\n") == 1


#: What a command's work needs and its --help must not load.
HEAVY_LIBRARIES = ("torch", "numpy", "cv2", "av", "PyQt6", "tqdm", "safetensors")


@pytest.mark.parametrize(
    "command",
    [
        [],
        *([name] for name in COMMANDS),
        *(["bench", target] for target in TARGETS),
    ],
    ids=lambda command: " ".join(command) or "vidmat",
)
def test_help_loads_no_heavy_library(command: list[str]) -> None:
    """`--help` is a page of text: it printed after torch's import, 1.3 s and 280 MB on the
    2-core CPU (several hundred MB more with a CUDA build), and a GPU machine without PyAV
    (the H200 has torch alone) could not even show `vidmat eval --help`. With all of these
    made unimportable, every command's help still prints, and it lists the options."""
    block = (
        f"import sys; sys.modules.update(dict.fromkeys({HEAVY_LIBRARIES!r})); "
        "from vidmat.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", block, *command, "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: {' '.join(['vidmat', *command])} ")
    assert "--help" in proc.stdout and proc.stderr == ""


def test_closed_output_pipe_ends_quietly() -> None:
    """`vidmat eval ... | head -3` closes the pipe before vidmat's last line: no traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before vidmat writes anything
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "vidmat", "info"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == ""


def test_output_to_a_full_disk_is_one_sentence(tmp_path: Path) -> None:
    """`vidmat info > /dev/full` ended in OSError's traceback, exit 1; and `bench --json`
    on a full disk did too, after the whole benchmark had run."""
    full = Path("/dev/full")
    if not full.exists():
        pytest.skip("no /dev/full here")
    with open(full, "w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "vidmat", "info"],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert proc.returncode == 2
    assert proc.stderr == "vidmat: error: writing failed (No space left on device).\n"


def test_results_that_cannot_be_saved_are_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vidmat.errors import VidmatError
    from vidmat.io.files import atomic_write_text

    def full(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    out = tmp_path / "x.json"
    with pytest.raises(VidmatError, match=r"^cannot write .*x.json \(No space left on device\)\.$"):
        atomic_write_text(out, "{}")
    assert list(tmp_path.iterdir()) == []


def test_native_bf16_is_read_from_torchs_cpu_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from vidmat.core.engine import cpu_has_native_bf16

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert cpu_has_native_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert cpu_has_native_bf16() is True
    # A torch without the private probes reads as "no", never as an error.
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert cpu_has_native_bf16() is False


def test_info_json_reports_cpu_and_weights(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["devices"][0]["name"] == "cpu"
    assert isinstance(info["devices"][0]["bf16_native"], bool)
    assert any(w["default"] for w in info["weights"])
    assert info["torch"]
    import av

    # FFmpeg's own release, not libavcodec's version number (62.28.102 for FFmpeg 8.1.2)
    assert info["ffmpeg"] == getattr(av, "ffmpeg_version_info", info["ffmpeg"])
    assert not info["ffmpeg"].startswith(str(av.library_versions["libavcodec"][0]) + ".")


def test_info_says_a_damaged_shipped_file_is_damaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A flipped bit or an emptied file read "installed" while every run refused it."""
    from vidmat.model import weights as W

    shipped = {path.name: path for _, path, present in W.available_weights() if present}
    if not shipped:
        pytest.skip("no shipped weights in this checkout")
    for name, path in shipped.items():
        (tmp_path / name).write_bytes(path.read_bytes())
    monkeypatch.setattr(W, "WEIGHTS_DIR", tmp_path)
    assert main(["info", "--json"]) == 0
    assert all(w["intact"] for w in json.loads(capsys.readouterr().out)["weights"])
    name = next(iter(shipped))
    data = bytearray((tmp_path / name).read_bytes())
    data[-1] ^= 1
    (tmp_path / name).write_bytes(bytes(data))
    assert main(["info"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if name in ln)
    assert "DAMAGED (fails its sha256 checksum; reinstall)" in line and "installed" not in line
    (tmp_path / name).unlink()
    assert main(["info"]) == 0
    assert "MISSING" in next(ln for ln in capsys.readouterr().out.splitlines() if name in ln)


def test_bench_model_writes_table_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "model",
            "--device",
            "cpu",
            "--sizes",
            "32",
            "--batches",
            "1,2",
            "--frame",
            "40x30",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--tta",
            "off,on",
            "--precisions",
            "fp32",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    assert "engine_ms" in capsys.readouterr().out
    payload = json.loads(out.read_text())
    rows = payload["results"]
    assert [(r["size"], r["batch"], r["tta"]) for r in rows] == [
        (32, 1, "off"),
        (32, 2, "off"),
        (32, 1, "on"),
        (32, 2, "on"),
    ]
    assert all(r["model_ms"] > 0 and r["engine_ms"] > 0 for r in rows)
    assert payload["environment"]["cuda"] in (True, False)


@pytest.mark.parametrize("asked", [["--precisions", "auto,fp32"], []])
def test_bench_model_times_auto_as_what_the_applications_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], asked: list[str]
) -> None:
    """`--precisions auto` timed eval's fp32 and named the row "auto", on a CPU where
    convert, demo and live run bf16; and by default such a CPU timed fp32 alone."""
    from vidmat.core.engine import app_precision
    from vidmat.core.settings import EngineConfig

    out = tmp_path / "bench.json"
    argv = ["bench", "model", "--device", "cpu", "--sizes", "32", "--frame", "40x30"]
    argv += ["--iters", "1", "--warmup", "0", *asked, "--json", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    runs = app_precision(EngineConfig(device="cpu", precision="auto")).precision
    want = ["fp32"] if runs == "auto" else [runs, "fp32"]  # fp32 once where auto is fp32
    assert [r["precision"] for r in json.loads(out.read_text())["results"]] == want


def test_user_errors_are_one_sentence_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "model", "--device", "tpu9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vidmat: error: unknown device") and "Traceback" not in err
    assert main(["bench", "model", "--device", "cpu", "--batches", "1,64"]) == 2
    err = capsys.readouterr().err
    assert "--batches 64 is above 32" in err and "Traceback" not in err


def test_help_pages_fit_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The descriptions of train, eval and live (raw text, for their examples) printed as
    one line of up to 210 characters. At 80 columns only an example or a table row may
    run a little over."""
    import argparse

    monkeypatch.setenv("COLUMNS", "80")

    def pages(parser: argparse.ArgumentParser, name: str):
        yield name, parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, p in action.choices.items():
                    yield from pages(p, f"{name} {sub}")

    for name, text in pages(build_parser(), "vidmat"):
        for line in text.splitlines():
            assert len(line) <= 92, (name, line)


def test_every_command_module_has_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert p.format_help().strip(), name


def test_shared_argument_types_parse_and_refuse() -> None:
    import argparse

    from vidmat.argtypes import (
        float_list,
        int_list,
        model_size,
        on_off_list,
        size_list,
        size_wxh,
        weights_name,
    )

    # each row once: '--sizes 64,64' timed one row twice
    assert int_list("64,32,64") == [64, 32] and float_list("0,0") == [0.0]
    assert on_off_list("on,on,off") == [True, False]
    assert size_list("64x48,64x48") == [(64, 48)]

    assert size_wxh("640x480") == (640, 480)
    assert size_list("640x480, 1920X1080") == [(640, 480), (1920, 1080)]
    assert int_list("1,32") == [1, 32] and float_list("0,0.5") == [0.0, 0.5]
    assert on_off_list("off,on") == [False, True] and on_off_list("ON") == [True]
    assert model_size("32") == 32 and model_size("2048") == 2048
    for bad, parse in (
        ("255", model_size),
        ("0", model_size),
        ("2080", model_size),  # a multiple of 32 the engine refuses
        ("640", size_wxh),
        ("0x480", size_wxh),
        ("a,b", int_list),
        ("x", float_list),
        ("yes", on_off_list),
        ("", on_off_list),
        ("", weights_name),
        (" ", weights_name),
    ):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)
    # a size out of range is said to be so, not "not WIDTHxHEIGHT"; 99999x99999 was taken
    assert size_wxh("16384x16384") == (16384, 16384)
    for bad in ("0x480", "99999x99999", "100000x100000", "16385x100"):
        with pytest.raises(argparse.ArgumentTypeError, match="is out of range: each side"):
            size_wxh(bad)


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--images", ".", "--masks", ".", "--weights", ""],
        ["bench", "convert", "--weights", ""],
        ["bench", "model", "--weights", ""],
        ["bench", "live", "--weights", " "],
        ["train", "--data", ".", "--run", "r", "--init", ""],
        ["train", "--data", ".", "--run", "r", "--anchor", " "],
    ],
)
def test_an_empty_weights_value_is_refused(
    argv: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch
) -> None:
    """``--weights ""`` (an unset shell variable) ran the default weights, or random ones
    in the benchmarks; --init and --anchor "" started from the default file."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    flag = argv[-2]
    assert f"error: argument {flag}: is empty; give a registered name, 'default' or a path" in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["tta", "zoom"])
@pytest.mark.parametrize("command", ["convert", "live", "eval", "demo"])
def test_tta_and_zoom_reach_the_engine_config(
    command: str, flag: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`--tta` (mirror averaging) and `--zoom` (a second look) on any command that runs
    the model reach its engine, off by default."""
    from vidmat.commands import _options
    from vidmat.errors import VidmatError

    monkeypatch.chdir(tmp_path)  # demo's default folder is relative to the working directory
    seen = []

    def refuse(cfg):
        seen.append(cfg)
        raise VidmatError("stop here.")

    monkeypatch.setattr(_options, "EngineConfig", lambda **kw: refuse(kw))
    demo = Path(__file__).parents[1] / "assets" / "demo.mp4"
    args = {
        "convert": [demo, "-o", tmp_path / "out.mp4"],
        "eval": ["--images", ".", "--masks", "."],
    }.get(command, [])
    for extra in ([], [f"--{flag}"]):
        main([command, *map(str, args), *extra, "--device", "cpu"])
    assert [cfg[flag] for cfg in seen] == [False, True]
    # the engine is refused before anything is written: no empty output folder is left
    assert not (tmp_path / "vidmat-demo-output").exists()


def test_a_name_that_is_not_utf8_is_shown_by_its_bytes(tmp_path: Path) -> None:
    # A Latin-1 name from an old camera: "caf\xe9.mp4" on disk. Python showed it as
    # caf\udce9.mp4 on stderr, and printing it to a strict stdout was a traceback.
    name = os.fsdecode(bytes(tmp_path) + b"/caf\xe9.mp4")
    err = subprocess.run(
        [sys.executable, "-m", "vidmat", "convert", name],
        capture_output=True,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
        check=False,
    ).stderr
    assert b"/caf\\xe9.mp4 does not exist." in err and b"udce9" not in err
    # stdout keeps the name's bytes (a script may read the path there), strict or not
    code = "from vidmat.cli import show_undecodable_bytes as s; s(); print('caf\\udce9')"
    for errors in ("strict", "surrogateescape"):
        env = {**os.environ, "PYTHONIOENCODING": f"utf-8:{errors}"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env)
        assert out.returncode == 0 and out.stdout == b"caf\xe9\n", out.stderr
