"""Paired comparison of two `vidmat eval --json` results: differences, intervals, pairing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vidmat.errors import VidmatError
from vidmat.train.compare import (
    Item,
    compare_folders,
    compare_items,
    compare_results,
    items_of,
    load_result,
    main,
    setting_changes,
    ship_rule,
)


def _images(values: dict[str, float], metric: str = "iou") -> list[Item]:
    return [Item(k, "", {metric: v}) for k, v in values.items()]


def test_a_constant_gain_is_exact_and_counted() -> None:
    old = _images({"a": 0.5, "b": 0.6, "c": 0.7, "d": 0.8})
    new = _images({"a": 0.6, "b": 0.7, "c": 0.8, "d": 0.8005})
    c = compare_items(old, new)
    assert c.n == 4 and c.old == pytest.approx(0.65) and c.new == pytest.approx(0.725125)
    assert c.diff == pytest.approx((0.1 * 3 + 0.0005) / 4)
    # every resample mean lies between the smallest and largest difference
    assert 0.0005 - 1e-12 <= c.ci[0] <= c.diff <= c.ci[1] <= 0.1 + 1e-12
    assert (c.better, c.worse) == (3, 0)  # d moved by less than the tie margin
    assert c.verdict == "too few images to tell"  # four images: no verdict
    assert sorted(k for k, _ in c.moved) == ["a", "b", "c"]  # the three that moved most


def test_mae_going_up_is_worse() -> None:
    old = _images({f"{i}": 0.02 + 0.001 * i for i in range(8)}, "mae")
    new = _images({f"{i}": 0.03 + 0.001 * i for i in range(8)}, "mae")
    c = compare_items(old, new, "mae")
    assert c.diff == pytest.approx(0.01) and (c.better, c.worse) == (0, 8)
    assert "worse)" in c.describe()


def test_too_few_images_or_blocks_give_no_verdict() -> None:
    """Two 10-frame sequences are two blocks: every resample was the same, an interval of
    width zero, and a gain of 0.07 on 20 frames was called better."""
    old = [Item(f"s{k}/{i:05d}.jpg", f"s{k}", {"iou": 0.6}) for k in range(2) for i in range(10)]
    new = [Item(i.name, i.group, {"iou": 0.67}) for i in old]
    c = compare_items(old, new)
    assert c.units == 2 and c.ci[0] == c.ci[1]
    assert c.verdict == "too few blocks to tell" and "too few blocks to tell" in c.describe()
    three = compare_items(
        _images({"a": 0.5, "b": 0.6, "c": 0.7}), _images({"a": 0.6, "b": 0.7, "c": 0.8})
    )
    assert three.units == 3 and three.verdict == "too few images to tell"
    assert three.as_dict()["verdict"] == "too few images to tell"


def test_the_ship_rule_does_not_pass_over_a_set_too_small_to_judge(tmp_path: Path) -> None:
    # A 7-image set 0.3 worse and a large set better passed ("worse on none").
    small, big = [0.9] * 7, [0.5 + 0.005 * i for i in range(50)]
    old, new = tmp_path / "old", tmp_path / "new"
    _result(old / "256" / "small.json", small)
    _result(old / "256" / "big.json", big)
    _result(new / "256" / "small.json", [v - 0.3 for v in small])
    _result(new / "256" / "big.json", [v + 0.05 for v in big])
    rows, _, _ = compare_folders(old, new)
    assert ship_rule(rows) == (False, "fails: too few images or blocks to judge 256/small")


def test_interval_of_independent_images_matches_the_standard_error() -> None:
    rng = np.random.default_rng(1)
    d = rng.normal(0.003, 0.02, 400)
    old = _images({f"{i}": 0.8 for i in range(400)})
    new = _images({f"{i}": 0.8 + x for i, x in enumerate(d)})
    c = compare_items(old, new, rounds=4000)
    se = d.std(ddof=1) / np.sqrt(len(d))
    assert c.diff == pytest.approx(d.mean())
    assert (c.ci[1] - c.ci[0]) == pytest.approx(2 * 1.96 * se, rel=0.12)
    spread = compare_items(old, _images({f"{i}": 0.8 + 0.1 * (i % 2) - 0.05 for i in range(400)}))
    assert "no clear difference" in spread.describe()


def test_frames_are_resampled_in_blocks_so_runs_of_alike_frames_widen_the_interval() -> None:
    # a video whose difference holds for 10 frames at a time (neighbouring frames are alike)
    rng = np.random.default_rng(2)
    runs = np.repeat(rng.choice([-0.05, 0.06], 12), 10)
    frames = [Item(f"s/{i:05d}", "s", {"iou": 0.7 + x}) for i, x in enumerate(runs)]
    base = [Item(f"s/{i:05d}", "s", {"iou": 0.7}) for i in range(len(runs))]
    as_images = [Item(i.name, "", i.scores) for i in frames]
    blocked = compare_items(base, frames, block=10)
    single = compare_items([Item(i.name, "", i.scores) for i in base], as_images)
    assert blocked.diff == pytest.approx(single.diff)
    width = blocked.ci[1] - blocked.ci[0]
    assert width > 2.5 * (single.ci[1] - single.ci[0])
    assert blocked.unit == "blocks of 10 frames" and single.unit == "images resampled"
    # each sequence keeps its own frame count in every resample: two sequences of
    # constant (different) differences give a zero-width interval at their weighted mean
    two = [Item(f"a/{i}", "a", {"iou": 0.1}) for i in range(30)]
    two += [Item(f"b/{i}", "b", {"iou": 0.4}) for i in range(10)]
    zero = [Item(i.name, i.group, {"iou": 0.0}) for i in two]
    c = compare_items(zero, two)
    assert c.ci[0] == pytest.approx(c.ci[1]) == pytest.approx((30 * 0.1 + 10 * 0.4) / 40)


def test_items_are_paired_by_name_and_a_partial_overlap_is_said() -> None:
    old = _images({"a": 0.5, "b": 0.6, "c": 0.7})
    new = _images({"c": 0.9, "a": 0.5, "z": 0.1})
    c = compare_items(old, new)
    assert c.n == 2 and c.diff == pytest.approx(0.1)
    assert "2 paired (of 3 old, 3 new)" in c.describe()
    with pytest.raises(VidmatError, match="share no scored images"):
        compare_items(old, _images({"x": 0.1}))


def test_eval_json_shapes_for_images_and_sequences() -> None:
    images = {"iou": 0.5, "images": [{"image": "1.jpg", "iou": 0.5, "mae": 0.1}]}
    seqs = {
        "iou": 0.5,
        "sequences": [
            {"sequence": "hike", "frames": [{"image": "00000.jpg", "iou": 0.4, "mae": 0.2}]}
        ],
    }
    assert items_of(images) == [Item("1.jpg", "", {"iou": 0.5, "mae": 0.1})]
    assert items_of(seqs) == [Item("hike/00000.jpg", "hike", {"iou": 0.4, "mae": 0.2})]
    (iou, mae) = compare_results(images, {**images, "images": [{"image": "1.jpg", "iou": 0.7,
                                                                 "mae": 0.1}]})  # fmt: skip
    assert iou.diff == pytest.approx(0.2) and mae.diff == 0.0
    # images against sequences: "share no scored images" hid why
    with pytest.raises(
        VidmatError, match="the first result scored images and the second sequences; compare"
    ):
        compare_results(images, seqs)
    with pytest.raises(VidmatError, match="no per-image scores"):
        items_of({"iou": 0.5})
    with pytest.raises(VidmatError, match="malformed"):
        items_of({"images": [{"iou": 0.5}]})


def test_load_result_and_main_fail_with_one_sentence(tmp_path: Path, capsys) -> None:
    good = tmp_path / "old.json"
    good.write_text(json.dumps({"images": [{"image": "1.jpg", "iou": 0.5, "mae": 0.1}]}))
    new = tmp_path / "new.json"
    new.write_text(json.dumps({"images": [{"image": "1.jpg", "iou": 0.6, "mae": 0.1}]}))
    assert main([str(good), str(new)]) == 0
    out = capsys.readouterr().out
    assert "iou 0.5000 -> 0.6000: +0.1000" in out and "1.jpg +0.100" in out
    with pytest.raises(VidmatError, match="does not exist"):
        load_result(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(VidmatError, match="not a readable JSON file"):
        load_result(bad)
    assert main([str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("compare: error:") and "Traceback" not in err


def test_a_comparison_across_scoring_settings_is_named(tmp_path: Path, capsys) -> None:
    old = {"size": 320, "refine": False, "images": [{"image": "1.jpg", "iou": 0.5, "mae": 0.1}]}
    new = {"size": 256, "refine": False, "tta": True, "images": old["images"]}
    assert setting_changes(old, new) == ["size 320 -> 256"]  # tta unknown in old: not claimed
    assert setting_changes(old, old) == []
    (tmp_path / "a.json").write_text(json.dumps(old))
    (tmp_path / "b.json").write_text(json.dumps(new))
    assert main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    assert "(scored with size 320 -> 256):" in capsys.readouterr().out


def _result(path: Path, ious: list[float], size: int = 256) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [{"image": f"{k}.jpg", "iou": v, "mae": 1 - v} for k, v in enumerate(ious)]
    path.write_text(json.dumps({"size": size, "images": images}))


def test_folders_are_paired_by_name_and_read_by_the_ship_rule(tmp_path: Path, capsys) -> None:
    base = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9]  # MIN_UNITS images or more
    old, new = tmp_path / "old", tmp_path / "new"
    for size in ("256", "192"):
        _result(old / size / "ccp.json", base)
        _result(old / size / "viton.json", base)
    _result(new / "256" / "ccp.json", [v + 0.05 for v in base])  # better beyond any interval
    _result(new / "256" / "viton.json", base)  # the same: no clear difference
    _result(new / "320" / "ccp.json", base)  # no counterpart in old: said, not scored
    rows, unpaired, missing = compare_folders(old, new)
    assert [r.name for r in rows] == ["256/ccp", "256/viton"] and unpaired == ["320/ccp"]
    # what the baseline was scored on and the candidate was not: no pass over it
    assert missing == ["192/ccp", "192/viton"]
    assert ship_rule(rows, missing) == (
        False,
        "fails: no result for 192/ccp, 192/viton, which the baseline has",
    )
    assert main([str(old), str(new)]) == 1
    capsys.readouterr()
    _result(new / "192" / "ccp.json", base)
    _result(new / "192" / "viton.json", base)
    rows, unpaired, missing = compare_folders(old, new)
    assert [r.iou.verdict for r in rows] == [
        "no clear difference",
        "no clear difference",
        "better",
        "no clear difference",
    ]
    assert rows[2].mae.verdict == "better"  # MAE fell
    assert ship_rule(rows, missing) == (
        True,
        "passes: IoU worse on none, better on 1 of 4 (256/ccp)",
    )
    assert main([str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert "not compared (no result of that name" in out and "320/ccp" in out

    _result(new / "192" / "viton.json", [v - 0.05 for v in base])
    rows, _, _ = compare_folders(old, new)
    ok, why = ship_rule(rows)
    assert not ok and why == "fails: IoU worse beyond the interval on 192/viton"
    assert main([str(old), str(new)]) == 1
    capsys.readouterr()
    # a gain scored at another size (or with --refine) is not the weights' own: it passed
    _result(new / "192" / "viton.json", [v + 0.05 for v in base], size=320)
    rows, _, _ = compare_folders(old, new)
    assert ship_rule(rows) == (
        False,
        "fails: scored with other settings than the baseline on 192/viton (size 256 -> 320)",
    )
    assert main([str(old), str(new)]) == 1
    out = capsys.readouterr().out
    assert "192/viton [size 256 -> 320]" in out and "ship rule: fails" in out

    same = tmp_path / "same"
    _result(same / "256" / "ccp.json", base)
    assert ship_rule(compare_folders(old, same)[0])[0] is False  # better on none


def test_folder_errors_are_one_sentence(tmp_path: Path, capsys) -> None:
    old, empty, other = tmp_path / "old", tmp_path / "empty", tmp_path / "other"
    _result(old / "ccp.json", [0.5, 0.6])
    empty.mkdir()
    _result(other / "viton.json", [0.5, 0.6])
    with pytest.raises(VidmatError, match=r"holds no \.json results"):
        compare_folders(old, empty)
    with pytest.raises(VidmatError, match=r"no result in .* has a counterpart"):
        compare_folders(old, other)
    assert main([str(old), str(other)]) == 2
    assert main([str(old), str(old / "ccp.json")]) == 2
    err = capsys.readouterr().err
    assert "is not a folder" in err and "Traceback" not in err
