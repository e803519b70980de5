"""Pasted-people scenes: where the people go, what counts as missed, and the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vidmat.errors import VidmatError
from vidmat.train.data import pair_folders
from vidmat.train.scenes import Scene, SceneConfig, build_scenes, main, score_scenes

SMALL = SceneConfig(width=320, height=90, scenes=6, seed=3)


def _backgrounds(folder: Path, n: int = 2) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        cv2.imwrite(str(folder / f"bg{i}.png"), rng.integers(0, 255, (50, 70, 3), np.uint8))
    return folder


@pytest.fixture
def sources(tmp_path: Path, make_people: Callable[..., Path]) -> tuple[list, list[Path]]:
    people = make_people(tmp_path / "people")
    pairs = pair_folders(people / "images", people / "masks")
    bgs = sorted(_backgrounds(tmp_path / "bg").iterdir())
    return pairs, bgs


def test_two_people_stand_in_the_outer_thirds_one_in_the_middle(sources) -> None:
    pairs, bgs = sources
    two = list(build_scenes(pairs, bgs, 2, SMALL))
    one = list(build_scenes(pairs, bgs, 1, SMALL))
    assert len(two) == len(one) == SMALL.scenes
    for s in two:
        assert s.image.shape == (90, 320, 3) and s.image.dtype == np.uint8
        left, right = s.people
        assert left.any() and right.any() and not (left & right).any()
        assert np.nonzero(left)[1].mean() < 320 / 2 < np.nonzero(right)[1].mean()
        for p in s.people:  # standing on the lower part of the frame, 35-75 % high
            rows = np.nonzero(p.any(axis=1))[0]
            assert 0.3 * 90 <= rows.size <= 0.76 * 90 and rows.max() >= 0.8 * 90
    for s in one:
        assert len(s.people) == 1
        assert 0.15 * 320 < np.nonzero(s.people[0])[1].mean() < 0.85 * 320
    # the person's block (200, 160, 120 in BGR on file) is pasted where its mask says
    s = two[0]
    assert np.abs(s.image[s.people[0]].astype(int) - (120, 160, 200)).max() <= 2


def test_a_seed_draws_the_same_scenes_and_another_seed_others(sources) -> None:
    pairs, bgs = sources
    a = [s.image for s in build_scenes(pairs, bgs, 2, SMALL)]
    b = [s.image for s in build_scenes(pairs, bgs, 2, SMALL)]
    c = [s.image for s in build_scenes(pairs, bgs, 2, SceneConfig(320, 90, 6, seed=4))]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    with pytest.raises(VidmatError, match="one or two people"):
        next(build_scenes(pairs, bgs, 3, SMALL))


def _predicting(masks: list[np.ndarray], size: int = 64) -> Callable[[np.ndarray], torch.Tensor]:
    """A stand-in model that returns the given masks, one per call, at ``size`` px."""
    it = iter(masks)

    def lowres(frames: np.ndarray) -> torch.Tensor:
        m = cv2.resize(next(it).astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(m)[None, None]

    return lowres


def test_scores_count_a_person_missed_below_a_tenth_of_their_pixels(sources) -> None:
    pairs, bgs = sources
    scenes = list(build_scenes(pairs, bgs, 2, SMALL))
    truth = [np.logical_or(*s.people) for s in scenes]
    right = score_scenes(_predicting(truth, 320), iter(scenes), 2)
    assert (right.scenes, right.people, right.missed) == (6, 12, 0)
    assert right.scene_iou > 0.9

    blank = score_scenes(_predicting([np.zeros((90, 320))] * 6), iter(scenes), 2)
    assert (blank.missed, blank.scene_iou) == (12, 0.0)

    # only the left person found: every right one is missed, the scene IoU about halves
    lefts = [s.people[0] for s in scenes]
    half = score_scenes(_predicting(lefts, 320), iter(scenes), 2)
    assert half.missed == 6 and 0.1 < half.scene_iou < 0.9


def test_a_person_hidden_behind_the_other_is_not_counted() -> None:
    hidden = np.zeros((10, 10), bool)
    seen = np.zeros((10, 10), bool)
    seen[2:8, 2:8] = True
    s = Scene(np.zeros((10, 10, 3), np.uint8), [hidden, seen])
    r = score_scenes(_predicting([seen], 10), iter([s]), 2)
    assert (r.people, r.missed) == (1, 0) and r.scene_iou == pytest.approx(1.0)


def test_cli_scores_a_weights_file_and_writes_json(
    tmp_path: Path, make_people: Callable[..., Path], tiny_weights: Path, capsys
) -> None:
    people = make_people(tmp_path / "people")
    bg = _backgrounds(tmp_path / "bg")
    out = tmp_path / "scenes.json"
    argv = ["--images", str(people / "images"), "--masks", str(people / "masks")]
    argv += ["--backgrounds", str(bg), "--weights", str(tiny_weights), "--scenes", "3"]
    argv += ["--no-progress"]
    assert main([*argv, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "people per scene" in printed and "of 6" in printed and "of 3" in printed
    body = json.loads(out.read_text())
    assert body["seed"] == 52 and body["size"] == 32
    assert [r["people_per_scene"] for r in body["results"]] == [2, 1]
    assert [r["people"] for r in body["results"]] == [6, 3]

    # an existing --json is kept without --overwrite; a missing folder is one sentence
    assert main([*argv, "--json", str(out)]) == 2  # as `vidmat` exits on a refused input
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--backgrounds", str(tmp_path / "nope")]) == 2  # the last one counts
    err = capsys.readouterr().err.strip()
    assert err.startswith("scenes: error:") and "nope" in err and "\n" not in err
    # the --json never replaces the weights it scores (it did with --overwrite)
    weights = tiny_weights.read_bytes()
    assert main([*argv, "--json", str(tiny_weights), "--overwrite"]) == 2
    assert "is the --weights file itself" in capsys.readouterr().err
    assert tiny_weights.read_bytes() == weights
    # numpy's generator refused a negative seed with a traceback; as `vidmat train --seed`
    assert main([*argv, "--seed", "-1"]) == 2
    assert capsys.readouterr().err == "scenes: error: --seed must be between 0 and 4294967295.\n"
