"""Pseudo-labelling frames of a clip with an injected teacher (MediaPipe is training-only)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from convert_fixtures import make_clip

from vidmat.errors import VidmatError
from vidmat.train import pseudolabel
from vidmat.train.data import SourceSpec, list_pairs
from vidmat.train.pseudolabel import label_clips, main


def red_teacher(rgb: np.ndarray) -> np.ndarray:
    """Probability 0.9 on the clip's red square, 0.1 elsewhere."""
    return np.where(rgb[..., 0] > 150, 0.9, 0.1).astype(np.float32)


def test_frames_are_sampled_thresholded_and_readable_as_a_training_root(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", frames=12, audio=None)
    out = tmp_path / "pseudo"
    n = label_clips([clip], out, red_teacher, every=4, stop=0.5)
    assert n == 2  # frames 0 and 4 of the first half
    pairs = list_pairs(SourceSpec(out).path)
    assert [p[0].stem for p in pairs] == ["c_00000", "c_00004"]
    img = cv2.imread(str(pairs[0][0]))[:, :, ::-1]
    mask = cv2.imread(str(pairs[0][1]), cv2.IMREAD_GRAYSCALE)
    assert set(np.unique(mask)) <= {0, 255}
    agree = (mask > 127) == (img[..., 0] > 150)
    assert agree.mean() > 0.97


def test_frames_without_a_person_are_skipped(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", frames=6, audio=None)
    n = label_clips([clip], tmp_path / "p", lambda rgb: np.zeros(rgb.shape[:2]), every=1)
    assert n == 0


def test_cli_refuses_bad_sampling_in_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = make_clip(tmp_path / "c.mp4", frames=4, audio=None)
    for bad in (["--every", "0"], ["--from", "0.8", "--until", "0.5"]):
        with pytest.raises(SystemExit) as exc:
            main([str(clip), "--out", str(tmp_path / "p"), *bad])
        assert exc.value.code == 2
        assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_pairs_appear_only_when_all_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cv2.imwrite returns False on a full disk: one sentence and no folder, where the
    pairs written before were left looking like a complete set."""
    clip = make_clip(tmp_path / "c.mp4", frames=6, audio=None)
    out = tmp_path / "p"
    real = cv2.imwrite
    calls = iter(range(100))
    monkeypatch.setattr(cv2, "imwrite", lambda *a: next(calls) < 3 and real(*a))
    with pytest.raises(VidmatError, match=r"could not write c_00002 to .*p \(disk full\?\)"):
        label_clips([clip], out, red_teacher, every=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mp4"]
    monkeypatch.setattr(cv2, "imwrite", real)
    assert label_clips([clip], out, red_teacher, every=2) == 3
    with pytest.raises(VidmatError, match="already exists"):
        label_clips([clip], out, red_teacher, every=3)
    assert label_clips([clip], out, red_teacher, every=3, overwrite=True) == 2
    assert len(list((out / "masks").iterdir())) == 2
    assert json.loads((out / "PSEUDOLABELS.json").read_text())["pairs"] == 2
    # a hand-labelled root has the same images/ and masks/: not this tool's to replace
    mine = tmp_path / "mine"
    for sub in ("images", "masks"):
        (mine / sub).mkdir(parents=True)
        (mine / sub / "a.png").write_bytes(b"x")
    with pytest.raises(VidmatError, match="mine holds files vidmat cannot tell as its own"):
        label_clips([clip], mine, red_teacher, every=3, overwrite=True)
    assert sorted(p.name for p in (mine / "images").iterdir()) == ["a.png"]


def test_cli_refuses_an_existing_or_unwritable_out_in_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = make_clip(tmp_path / "c.mp4", frames=4, audio=None)
    (tmp_path / "old").mkdir()
    (tmp_path / "afile").write_text("x")
    for out, said in (
        ("old", "already exists"),
        ("afile/p", "is a file, not a folder"),
        # a missing parent is refused as every other tool refuses it; it used to be made
        ("no/such/p", f"output folder {tmp_path / 'no' / 'such'} does not exist."),
    ):
        assert main([str(clip), "--out", str(tmp_path / out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("pseudolabel: error: ") and said in err and err.count("\n") == 1
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "c.mp4", "old"]


def test_a_truncated_clip_is_labelled_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clip cut short was labelled as far as it decoded without a word, so a damaged
    download could become training data unnoticed."""
    full = make_clip(tmp_path / "full.mp4", frames=30, faststart=True, audio=None)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    monkeypatch.setattr(pseudolabel, "mediapipe_teacher", lambda: red_teacher)
    assert main([str(full), "--out", str(tmp_path / "a")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main([str(cut), "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    n = len(list_pairs(SourceSpec(tmp_path / "b").path))
    assert 0 < n < 6
    assert f"warning: {cut}: only " in err and err.count("warning:") == 1
    assert "frames could be decoded; labelled the frames that decode." in err


def test_clips_whose_pairs_would_share_names_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pairs are named <clip stem>_<frame>: sub1/c.mp4 and sub2/c.mp4 (or c.mp4 twice)
    wrote over each other's pairs while the count added both ("4 pairs written", 2 there)."""
    for sub in ("sub1", "sub2"):
        (tmp_path / sub).mkdir()
    one = make_clip(tmp_path / "sub1" / "c.mp4", frames=12, audio=None)
    two = make_clip(tmp_path / "sub2" / "c.mp4", frames=12, audio=None)
    monkeypatch.setattr(pseudolabel, "mediapipe_teacher", lambda: red_teacher)
    out = tmp_path / "o"
    for clips, said in (
        ([one, two], f"clips {one} and {two} would both write pairs named c_<frame>"),
        ([one, one], f"clip {one} is given twice"),
    ):
        assert main([*map(str, clips), "--out", str(out), "--every", "12"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("pseudolabel: error: ") and said in err and err.count("\n") == 1
        with pytest.raises(VidmatError, match=re.escape(said)):
            label_clips(clips, out, red_teacher, every=12)
    assert not out.exists()
    # clips of other names: the count printed is the pairs on disk
    other = tmp_path / "sub2" / "d.mp4"
    two.rename(other)
    assert main([str(one), str(other), "--out", str(out), "--every", "6"]) == 0
    assert capsys.readouterr().out == f"4 pairs written to {out}\n"
    assert len(list_pairs(out)) == 4


def test_an_out_that_holds_the_clips_is_refused_even_with_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replacing --out when done would delete the clips it had just read."""
    (tmp_path / "pl").mkdir()
    clip = make_clip(tmp_path / "pl" / "c.mp4", frames=4, audio=None)
    monkeypatch.setattr(pseudolabel, "mediapipe_teacher", lambda: red_teacher)
    for out in (tmp_path / "pl", tmp_path):
        assert main([str(clip), "--out", str(out), "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert f"--out {out} holds the clip {clip}" in err and err.count("\n") == 1
    assert sorted(p.name for p in (tmp_path / "pl").iterdir()) == ["c.mp4"]


def test_labelling_shows_its_progress_per_clip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Running the teacher over a folder of clips took minutes with nothing on the screen;
    each clip's bar counts the frames it samples (12 frames, every 4th of the first half)."""
    clip = make_clip(tmp_path / "c.mp4", frames=12, audio=None)
    monkeypatch.setattr(pseudolabel, "mediapipe_teacher", lambda: red_teacher)
    assert main([str(clip), "--out", str(tmp_path / "p"), "--every", "4", "--until", "0.5"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"^label c\.mp4: 100%.* 2/2 ", err, re.M), err
