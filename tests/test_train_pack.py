"""Packing training folders for a GPU machine: the packed roots build the same training cache."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidmat.errors import VidmatError
from vidmat.train.data import SourceSpec, load_backgrounds, load_source
from vidmat.train.pack import main, pack


def _root(path: Path, n: int, hw: tuple[int, int], seed: int) -> Path:
    """Smooth photo-like images with an ellipse 'person' and its mask."""
    rng = np.random.default_rng(seed)
    (path / "images").mkdir(parents=True)
    (path / "masks").mkdir()
    h, w = hw
    for i in range(n):
        base = rng.integers(0, 255, (6, 8, 3)).astype(np.uint8)
        img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
        mask = np.zeros((h, w), np.uint8)
        centre = (int(rng.integers(w // 4, 3 * w // 4)), int(rng.integers(h // 4, 3 * h // 4)))
        cv2.ellipse(mask, centre, (w // 6, h // 3), 0, 0, 360, 255, -1)
        img[mask > 0] = (img[mask > 0] // 2 + 100).astype(np.uint8)
        cv2.imwrite(str(path / "images" / f"{i:03d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(path / "masks" / f"{i:03d}.png"), mask)
    return path


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
def test_packed_roots_build_the_same_cache(tmp_path: Path, fmt: str) -> None:
    big = _root(tmp_path / "data" / "train" / "ccp", 4, (480, 320), 0)  # shrunk to 320 x 213
    small = _root(tmp_path / "data" / "train" / "viton", 3, (128, 96), 1)  # kept: never enlarged
    val = _root(tmp_path / "data" / "val" / "ccp", 2, (480, 320), 2)  # same name, other parent
    scenes = tmp_path / "data" / "bg"
    scenes.mkdir()
    for i in range(2):
        cv2.imwrite(str(scenes / f"{i}.png"), np.full((600, 900, 3), 40 * (i + 1), np.uint8))
    out = tmp_path / "pack"
    manifest = pack([big, small, val], out, scenes, fmt=fmt, quality=90)

    assert manifest["roots"]["train/ccp"]["pairs"] == 4
    assert json.loads((out / "MANIFEST.json").read_text()) == manifest
    assert manifest["bytes"] == sum(
        p.stat().st_size for p in out.rglob("*.*") if p.name != "MANIFEST.json"
    )
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    img = cv2.imread(str(out / "train/ccp/images" / f"000.{fmt}"))
    assert img.shape[:2] == (320, 213)
    assert cv2.imread(str(out / "train/viton/images" / f"000.{fmt}")).shape[:2] == (128, 96)
    assert cv2.imread(str(out / "backgrounds" / f"0.{fmt}")).shape[:2] == (288, 432)

    for raw, gaps in ((big, False), (small, True), (val, False)):
        name = f"{raw.parent.name}/{raw.name}"
        a = load_source(SourceSpec(raw), tmp_path / "cache_raw", 320, gaps, False)
        b = load_source(SourceSpec(out / name), tmp_path / "cache_packed", 320, gaps, False)
        assert a.images.shape == b.images.shape
        assert np.array_equal(a.masks, b.masks), name
        assert np.abs(a.images.astype(int) - b.images).mean() < 3.0, name
    a = load_backgrounds(scenes, tmp_path / "cache_raw")
    b = load_backgrounds(out / "backgrounds", tmp_path / "cache_packed")
    assert a.shape == b.shape and np.abs(a.astype(int) - b).mean() < 3.0


def test_pack_refuses_clashes_and_replacing(tmp_path: Path) -> None:
    a = _root(tmp_path / "x" / "ccp", 1, (64, 48), 0)
    b = _root(tmp_path / "y" / "x" / "ccp", 1, (64, 48), 1)  # also packs as x/ccp
    with pytest.raises(VidmatError, match="two roots would be packed as x/ccp"):
        pack([a, b], tmp_path / "pack")
    assert not (tmp_path / "pack").exists()
    pack([a], tmp_path / "pack")
    before = (tmp_path / "pack" / "MANIFEST.json").read_text()
    with pytest.raises(VidmatError, match="--overwrite"):
        pack([b], tmp_path / "pack")
    assert (tmp_path / "pack" / "MANIFEST.json").read_text() == before
    pack([b], tmp_path / "pack", overwrite=True)
    # a folder of the user's own under that name is not replaced, --overwrite or not
    (tmp_path / "mine" / "docs").mkdir(parents=True)  # a MANIFEST.json of its own
    (tmp_path / "mine" / "MANIFEST.json").write_text('{"name": "my project"}')
    (tmp_path / "mine" / "docs" / "notes.txt").write_text("mine")
    with pytest.raises(VidmatError, match="mine holds files vidmat cannot tell as its own"):
        pack([b], tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "docs" / "notes.txt").read_text() == "mine"
    assert json.loads((tmp_path / "pack" / "MANIFEST.json").read_text())["roots"]["x/ccp"][
        "source"
    ] == str(b)


def test_pack_cli_errors_in_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "pack")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"pack: error: root {tmp_path / 'missing'} does not exist."
    broken = tmp_path / "broken"
    (broken / "images").mkdir(parents=True)
    (broken / "masks").mkdir()
    (broken / "images" / "a.jpg").write_bytes(b"not a jpeg")
    (broken / "masks" / "a.png").write_bytes(b"not a png")
    assert main([str(broken), "--out", str(tmp_path / "pack")]) == 2  # as `vidmat` exits
    assert "cannot read image" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]  # no pack, no leftovers


def test_pack_refuses_a_mask_of_another_size_as_training_does(tmp_path: Path) -> None:
    """Such a pair used to be resized (a shrunk image) or packed as it was; training and
    eval refuse it, so the pack does too, here rather than on the GPU machine."""
    root = _root(tmp_path / "data" / "ccp", 2, (480, 320), 0)
    cv2.imwrite(str(root / "masks" / "001.png"), np.zeros((48, 32), np.uint8))
    with pytest.raises(
        VidmatError, match=r"^mask 001.png is 32x48 px and its image 001.jpg 320x480"
    ):
        pack([root], tmp_path / "pack")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no pack, no leftovers


def test_pack_writes_0_1_label_masks_as_0_255(tmp_path: Path) -> None:
    root = _root(tmp_path / "data" / "ccp", 1, (64, 48), 0)
    mask = root / "masks" / "000.png"
    full = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(mask), full // 255)
    pack([root], tmp_path / "pack")
    packed = cv2.imread(str(tmp_path / "pack" / "data" / "ccp" / "masks" / "000.png"), 0)
    assert np.array_equal(packed, full)


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_pack_refuses_an_out_that_is_holds_or_lies_in_an_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--out the root itself, or a folder above it, was replaced by the pack with
    --overwrite (the data deleted); one inside a root or the backgrounds added to them."""
    root = _root(tmp_path / "victim" / "root", 2, (64, 48), 0)
    scenes = tmp_path / "bg"
    scenes.mkdir()
    cv2.imwrite(str(scenes / "0.png"), np.full((60, 90, 3), 40, np.uint8))
    (tmp_path / "victim" / "notes.txt").write_text("keep")
    before = _snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    cases = [
        (str(root), "is the root"),
        ("victim/root/.", "is the root"),  # resolved: the same folder written another way
        ("victim", "holds the root"),
        (str(tmp_path), "holds the root"),
        ("victim/root/images/pack", "lies inside the root"),
        ("bg", "is the background folder"),
        ("bg/pack", "lies inside the background folder"),
    ]
    for out, said in cases:
        argv = ["victim/root", "--backgrounds", "bg", "--out", out, "--overwrite"]
        assert main(argv) == 2, out
        err = capsys.readouterr().err
        assert err.startswith("pack: error: --out ") and said in err and err.count("\n") == 1
    assert _snapshot(tmp_path) == before  # nothing written, nothing removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bg", "victim"]
    # beside the inputs is fine
    assert main(["victim/root", "--backgrounds", "bg", "--out", "pack"]) == 0
    assert _snapshot(tmp_path / "victim") == {
        k.removeprefix("victim/"): v for k, v in before.items() if k.startswith("victim/")
    }


def test_pack_refuses_a_long_side_below_the_smallest_model_input(tmp_path: Path) -> None:
    root = _root(tmp_path / "data" / "ccp", 1, (64, 48), 0)
    for bad in (0, -5, 31):
        with pytest.raises(VidmatError, match=rf"--long-side must be at least 32.*got {bad}\."):
            pack([root], tmp_path / "pack", long_side=bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    pack([root], tmp_path / "pack", long_side=32)
    img = cv2.imread(str(tmp_path / "pack" / "data" / "ccp" / "images" / "000.jpg"))
    assert img.shape[:2] == (32, 24)


def test_a_root_named_without_its_parent_packs_inside_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pack ccp`` named the root ``/ccp`` (an empty parent name), and the pack was
    written to the absolute /ccp, outside --out; it is named by its absolute path."""
    _root(tmp_path / "data" / "ccp", 1, (64, 48), 0)
    monkeypatch.chdir(tmp_path / "data")
    manifest = pack([Path("ccp")], tmp_path / "pack")
    assert list(manifest["roots"]) == ["data/ccp"]
    assert (tmp_path / "pack" / "data" / "ccp" / "images" / "000.jpg").is_file()


def test_pack_shows_its_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Packing thousands of photos took minutes with nothing on the screen."""
    root = _root(tmp_path / "data" / "ccp", 3, (64, 48), 0)
    scenes = tmp_path / "bg"
    scenes.mkdir()
    cv2.imwrite(str(scenes / "0.png"), np.full((60, 90, 3), 40, np.uint8))
    assert main([str(root), "--backgrounds", str(scenes), "--out", str(tmp_path / "p")]) == 0
    err = capsys.readouterr().err
    assert re.search(r"^pack data/ccp: 100%.* 3/3 ", err, re.M), err
    assert re.search(r"^pack backgrounds: 100%.* 1/1 ", err, re.M), err


def test_what_a_killed_pack_left_is_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pack killed outright leaves its hidden temporary folder, of the pack's size; the
    next run now names it, as convert names its own (it removed a fixed name before)."""
    import os
    import time

    root = _root(tmp_path / "data" / "ccp", 2, (64, 48), 0)
    left = tmp_path / ".p.abcd1234.part"
    (left / "ccp").mkdir(parents=True)
    old = time.time() - 3600
    os.utime(left, (old, old))
    assert main([str(root), "--out", str(tmp_path / "p")]) == 0
    err = capsys.readouterr().err
    assert "pack: note: an unfinished output of p from a run that was killed lies beside it" in err
    assert left.exists()  # said, not deleted: another pack may still be writing it
