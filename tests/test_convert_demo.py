"""``vidmat demo``: the shipped clip is what assets/README.md says, and the command says
where its result is, refuses to overwrite it silently and leaves the clip untouched."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
from convert_fixtures import frame_times, make_clip, stub_engine

from vidmat.cli import main
from vidmat.commands import demo
from vidmat.core.engine import Engine
from vidmat.errors import VidmatError
from vidmat.io.video import probe
from vidmat.pipelines import convert as pipelines_convert


def test_shipped_demo_clip() -> None:
    info = probe(demo.DEMO_CLIP)
    assert demo.DEMO_CLIP.stat().st_size < 2_000_000
    assert (info.width, info.height) == (640, 360)
    assert info.rate == Fraction(24000, 1001) and info.frames == 96
    assert info.audio is not None and info.audio.codec == "aac"


def test_demo_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = make_clip(tmp_path / "demo.mp4", frames=6)
    before = clip.read_bytes()
    monkeypatch.setattr(demo, "DEMO_CLIP", clip)
    engine = stub_engine()
    monkeypatch.setattr(Engine, "from_config", classmethod(lambda cls, cfg: engine))
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--quiet"]) == 0
    out = capsys.readouterr().out
    result = tmp_path / "vidmat-demo-output" / "demo_green.mp4"
    assert f"result: {result}" in out
    assert frame_times(result) == frame_times(clip)
    # A second run refuses to replace the result unless told to.
    assert main(["demo", "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["demo", "--quiet", "--overwrite", "-o", "elsewhere", "--format", "webm"]) == 0
    assert (tmp_path / "elsewhere" / "demo_alpha.webm").is_file()
    assert clip.read_bytes() == before


def test_demo_failure_leaves_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = make_clip(tmp_path / "demo.mp4", frames=3)
    monkeypatch.setattr(demo, "DEMO_CLIP", clip)
    monkeypatch.setattr(Engine, "from_config", classmethod(lambda cls, cfg: stub_engine()))
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--quiet", "-o", "out", "--bg", "no-such-background"]) == 2
    err = capsys.readouterr().err
    assert "no-such-background" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    # A file name for -o, and a background for a matte, are refused before anything is made.
    assert main(["demo", "--quiet", "-o", "out.mp4"]) == 2
    assert "looks like a file name" in capsys.readouterr().err
    assert main(["demo", "--quiet", "-o", "out", "--format", "mask", "--bg", "blue"]) == 2
    assert "leave out --bg" in capsys.readouterr().err
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "out").exists()

    # A failure inside the conversion removes the folder this run made, and only that.
    def fail(*args: object, **kwargs: object) -> None:
        raise VidmatError("the encoder gave up.")

    monkeypatch.setattr(pipelines_convert, "convert_video", fail)  # demo imports it when run
    assert main(["demo", "--quiet", "-o", "out"]) == 2
    assert not (tmp_path / "out").exists()
    (tmp_path / "kept").mkdir()
    assert main(["demo", "--quiet", "-o", "kept"]) == 2
    assert (tmp_path / "kept").is_dir()
