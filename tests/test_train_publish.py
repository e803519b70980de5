"""publish's command line: what it refuses (its own inputs, sizes the engine cannot run,
names vidmat cannot read) and what --size defaults to with --onto."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vidmat.errors import VidmatError
from vidmat.model.spec import WeightsSpec
from vidmat.model.u2net import build_model
from vidmat.model.weights import load_weights, save_weights, sha256_file
from vidmat.train.publish import main, publish


def _weights(path: Path, seed: int, size: int = 160) -> Path:
    torch.manual_seed(seed)
    save_weights(
        build_model("u2netp"), WeightsSpec(name="run", arch="u2netp", input_size=size), path
    )
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """A source and a base (input size 256, as the shipped file), both u2netp."""
    return _weights(tmp_path / "src.safetensors", 0), _weights(
        tmp_path / "base.safetensors", 1, 256
    )


def test_out_is_never_an_input_even_with_overwrite(
    tmp_path: Path,
    files: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`publish W --out W --overwrite` replaced its own input (the shipped weights were
    lost that way once); so did --out naming --onto's BASE, and a --as-head source."""
    src, base = files
    shas = {p: sha256_file(p) for p in files}
    monkeypatch.chdir(tmp_path)
    cases = [
        ([str(src), "--size", "256", "--out", str(src)], src, "source weights file"),
        ([str(src), "--size", "256", "--out", "./src.safetensors"], src, "source weights file"),
        ([str(base), str(src), "--size", "256", "--out", str(src)], src, "source weights file"),
        ([str(src), "--onto", str(base), "--layers", "stage5", "--out", str(base)], base, "--onto"),
        ([str(src), "--onto", str(base), "--as-head", "320", "--out", str(src)], src, "source"),
        ([str(src), "--onto", str(base), "--as-head", "320", "--out", str(base)], base, "--onto"),
    ]
    for argv, hit, said in cases:
        assert main([*argv, "--overwrite"]) == 2
        err = capsys.readouterr().err
        out = Path(argv[argv.index("--out") + 1])
        assert (
            err.startswith(f"publish: error: the --out {out} is the {said}")
            and err.count("\n") == 1
        ), err
        assert sha256_file(hit) == shas[hit]
    assert {p: sha256_file(p) for p in files} == shas
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.safetensors", "src.safetensors"]


@pytest.mark.parametrize("size", ["0", "-5", "100000", "255", "4096", "abc"])
def test_size_is_checked_as_the_engine_takes_it(
    tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], size: str
) -> None:
    """0, -5, 100000 and 255 were written into the file's spec; `vidmat convert` then failed
    with a --size message about a size the user never typed there."""
    out = tmp_path / "o.safetensors"
    with pytest.raises(SystemExit) as exc:
        main([str(files[0]), "--out", str(out), f"--size={size}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --size:" in err and "Traceback" not in err
    assert not out.exists()
    with pytest.raises(VidmatError, match="--size must be a multiple of 32 from 32 to 2048"):
        publish(files[0], out, size=int(size) if size.lstrip("-").isdigit() else 33)
    assert not out.exists()


def test_size_edges_are_accepted(tmp_path: Path, files: tuple[Path, Path]) -> None:
    for size in ("32", "2048"):
        out = tmp_path / f"o{size}.safetensors"
        assert main([str(files[0]), "--size", size, "--out", str(out)]) == 0
        assert load_weights(str(out))[1].input_size == int(size)


def test_as_head_beyond_the_engine_is_refused(
    tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src, base = files
    out = tmp_path / "o.safetensors"
    with pytest.raises(SystemExit) as exc:
        main([str(src), "--onto", str(base), "--as-head", "4096", "--out", str(out)])
    assert exc.value.code == 2 and "argument --as-head: must be at most 2048" in (
        capsys.readouterr().err
    )
    assert not out.exists()


def test_onto_without_size_keeps_the_base_input_size(
    tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's `publish SRC --onto BASE --layers stage5,stage6 --out FILE` failed with
    "--size is required"; with --onto the file keeps BASE's size unless --size says."""
    src, base = files
    out = tmp_path / "graft.safetensors"
    assert (
        main([str(src), "--onto", str(base), "--layers", "stage5,stage6", "--out", str(out)]) == 0
    )
    assert load_weights(str(out))[1].input_size == 256
    head = tmp_path / "head.safetensors"
    assert main([str(src), "--onto", str(base), "--as-head", "320", "--out", str(head)]) == 0
    assert load_weights(str(head))[1].input_size == 256
    sized = tmp_path / "sized.safetensors"
    argv = [str(src), "--onto", str(base), "--layers", "stage5", "--size", "192"]
    assert main([*argv, "--out", str(sized)]) == 0
    assert load_weights(str(sized))[1].input_size == 192
    capsys.readouterr()
    # without --onto there is no file to take it from: one sentence, nothing written
    plain = tmp_path / "plain.safetensors"
    assert main([str(src), "--out", str(plain)]) == 2
    assert capsys.readouterr().err == (
        "publish: error: --size is required without --onto: the input size the engine will "
        "run the file at (the shipped file uses 256).\n"
    )
    assert not plain.exists()


def test_an_out_not_named_safetensors_is_refused(
    tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`--out x.pth` was written as safetensors under a name vidmat then refused to load."""
    for name in ("x.pth", "x", "x.SAFETENSORS", "x.safetensors.tmp"):
        out = tmp_path / name
        assert main([str(files[0]), "--size", "256", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err == (
            f"publish: error: --out {out} must end in .safetensors: the file is written as "
            "safetensors, and vidmat reads a file by its suffix.\n"
        )
        assert not out.exists()


def test_errors_exit_2_as_vidmat_does(
    tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """publish, head, scenes and pack exited 1 on their error sentences, `vidmat` and
    pseudolabel 2."""
    out = tmp_path / "o.safetensors"
    out.write_bytes(b"older")
    assert main([str(files[0]), "--size", "256", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"publish: error: {out} already exists; pass --overwrite to replace it.\n"
    )
    assert out.read_bytes() == b"older"


def test_the_input_scaling_is_kept_and_never_mixed(
    tmp_path: Path, files: tuple[Path, Path]
) -> None:
    """An official checkpoint (scaled by its image's maximum) came out of publish marked
    as scaled by 255, so the engine fed the same weights other numbers."""
    official = tmp_path / "u2netp.pth"
    torch.manual_seed(2)
    torch.save(build_model("u2netp").state_dict(), official)
    out = tmp_path / "official.safetensors"
    publish(official, out, 320)
    spec = load_weights(out)[1]
    assert spec.scale == "max" and "official" in spec.description

    src, _ = files
    own = tmp_path / "own.safetensors"
    torch.manual_seed(3)
    save_weights(build_model("u2netp"), WeightsSpec(name="own", arch="u2netp", scale="255"), own)
    publish(own, tmp_path / "own_out.safetensors", 256)
    assert load_weights(tmp_path / "own_out.safetensors")[1].scale == "255"
    with pytest.raises(
        VidmatError,
        match=r"scale their input differently \(own.safetensors: "
        r"255, u2netp.pth: max\)",
    ):
        publish([own, official], tmp_path / "mixed.safetensors", 256)
    with pytest.raises(VidmatError, match="scale their input differently"):
        publish(own, tmp_path / "g.safetensors", onto=src, layers=["stage6"])
    assert not (tmp_path / "mixed.safetensors").exists()
