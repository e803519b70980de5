"""Metrics against values computed by hand, and `vidmat eval` end to end on generated folders."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vidmat.cli import main
from vidmat.errors import VidmatError
from vidmat.train import metrics


def test_iou_and_mae_by_hand() -> None:
    gt = np.array([[1, 1, 0, 0]], bool)
    pred = np.array([[0.9, 0.4, 0.6, 0.0]], np.float32)
    # pred >= 0.5 -> [1,0,1,0]: intersection 1, union 3
    assert metrics.iou(pred, gt) == pytest.approx(1 / 3)
    # |0.9-1| + |0.4-1| + |0.6-0| + 0 = 0.1 + 0.6 + 0.6 = 1.3 over 4 pixels
    assert metrics.mae(pred, gt) == pytest.approx(1.3 / 4)
    empty = np.zeros((3, 3))
    assert metrics.iou(empty, empty.astype(bool)) == 1.0


def test_metrics_leave_out_pixels_outside_valid() -> None:
    gt = np.array([[1, 1, 0, 0]], bool)
    pred = np.array([[0.9, 0.4, 0.6, 0.0]], np.float32)
    valid = np.array([[1, 1, 0, 1]], bool)
    # pixel 2 (a false positive) is not scored: intersection 1, union 2
    assert metrics.iou(pred, gt, valid=valid) == pytest.approx(1 / 2)
    # (0.1 + 0.6 + 0) over the 3 scored pixels
    assert metrics.mae(pred, gt, valid=valid) == pytest.approx(0.7 / 3)
    assert metrics.iou(pred, gt, valid=np.ones_like(valid)) == metrics.iou(pred, gt)
    with pytest.raises(ValueError):
        metrics.iou(pred, gt, valid=np.ones((2, 2), bool))
    # boundary pixels outside valid count on neither side: a prediction that adds a
    # square next to the person loses boundary precision unless that area is left out
    person = np.zeros((20, 20), bool)
    person[5:15, 2:8] = True
    extra = person.copy()
    extra[5:15, 12:18] = True
    assert metrics.boundary_f(extra.astype(np.float32), person, tol=1) < 0.7
    keep = np.ones_like(person)
    keep[:, 10:] = False
    assert metrics.boundary_f(extra.astype(np.float32), person, tol=1, valid=keep) == 1.0


def test_boundary_f_by_hand() -> None:
    gt = np.zeros((20, 20), bool)
    gt[5:15, 5:15] = True
    assert metrics.boundary_f(gt.astype(np.float32), gt, tol=1) == 1.0
    # Shifted right by 3 px; both boundaries are 36-pixel rings. Pixels of the shifted
    # ring within 1 px of the gt ring: on each of its top/bottom rows cols 8..14 (on the
    # gt ring) and col 15 (1 px from the gt corner) = 8, x2 = 16; on its left side (col 8)
    # rows 6 and 13 (1 px from the gt top/bottom rows) = 2. Precision 18/36; by symmetry
    # recall 18/36, so F = 0.5.
    shifted = np.zeros_like(gt)
    shifted[5:15, 8:18] = True
    assert metrics.boundary_f(shifted.astype(np.float32), gt, tol=1) == pytest.approx(0.5)
    assert metrics.boundary_f(np.zeros((20, 20)), gt) == 0.0


def test_boundary_f_leaves_an_ignored_gap_out_and_rounds_its_tolerance_up() -> None:
    """With the gap ignored, a prediction filling it scored IoU 1 and MAE 0 but boundary
    F 0.93 (the label's boundary runs along the gap's rim). The default tolerance is
    DAVIS's ceil(0.8 % of the diagonal): round gave 1 px at 100x100, DAVIS 2."""
    gt = np.zeros((100, 100), bool)
    gt[10:90, 20:80] = True
    gt[30:40, 45:55] = False  # an enclosed, unlabelled gap
    valid = np.ones_like(gt)
    valid[30:40, 45:55] = False
    filled = np.zeros((100, 100), np.float32)
    filled[10:90, 20:80] = 1.0
    assert metrics.boundary_f(filled, gt, valid=valid) == 1.0
    assert metrics.boundary_f(filled, gt) < 0.95  # counted, the gap's rim is missed
    shifted = np.zeros((100, 100), np.float32)
    shifted[12:92, 20:80] = 1.0  # 2 px down: within ceil(1.13) = 2 px, not round's 1
    assert metrics.boundary_f(shifted, gt, valid=valid) == 1.0


def test_the_image_frame_is_no_boundary_as_in_davis() -> None:
    """A person cut off by the frame: the frame's edge counted as contour, so a matte of
    the whole frame scored F 0.57 against a lower-half label (DAVIS's seg2bmap: 0), and a
    torso found a third of the way 0.51 (DAVIS 0.33)."""
    gt = np.zeros((60, 40), bool)
    gt[30:, :] = True  # the lower half: one contour, its top row
    assert metrics.boundary_f(np.ones((60, 40), np.float32), gt) == 0.0
    assert metrics.boundary(gt).sum() == 40  # the row at 30, no frame
    third = np.zeros((60, 40), np.float32)
    third[50:, :] = 1.0  # a contour 20 px below the true one: none of it within reach
    assert metrics.boundary_f(third, gt) == 0.0
    assert metrics.boundary_f(gt.astype(np.float32), gt) == 1.0


def test_an_edge_just_outside_an_ignored_gap_is_matched() -> None:
    """The label's boundary along an ignored gap's rim is not counted, but it was also
    taken away as a target: a prediction whose hole is a pixel wider than the gap had no
    label edge within reach there and scored F 0.92, below the 1.0 it scores with nothing
    ignored."""
    gt = np.zeros((100, 100), bool)
    gt[10:90, 20:80] = True
    gt[30:40, 45:55] = False
    valid = np.ones_like(gt)
    valid[30:40, 45:55] = False
    wider = gt.astype(np.float32)
    wider[29:41, 44:56] = 0.0  # the hole 1 px wider all round
    assert metrics.boundary_f(wider, gt, tol=2) == 1.0
    assert metrics.boundary_f(wider, gt, tol=2, valid=valid) == 1.0


def test_boundary_ring() -> None:
    m = np.zeros((5, 5), bool)
    m[1:4, 1:4] = True
    b = metrics.boundary(m)
    assert b.sum() == 8 and not b[2, 2]


def test_flicker_ignores_pixels_where_truth_moves() -> None:
    gts = [np.array([[1, 0, 0]], bool), np.array([[1, 1, 0]], bool)]
    preds = [np.array([[1.0, 0.0, 0.2]]), np.array([[0.8, 1.0, 0.0]])]
    # still pixels: 0 and 2 -> |0.8-1| and |0-0.2| -> mean 0.2 (pixel 1 moved, ignored)
    assert metrics.flicker(preds, gts) == pytest.approx(0.2)
    assert np.isnan(metrics.flicker(preds[:1], gts[:1]))


def test_lag_detects_a_trailing_mask() -> None:
    gts = []
    for t in range(10):
        g = np.zeros((8, 32), bool)
        g[2:6, 2 * t : 2 * t + 6] = True
        gts.append(g)
    late = [gts[max(0, t - 2)].astype(np.float32) for t in range(10)]
    assert metrics.lag(late, gts)[0] == 2
    assert metrics.lag([g.astype(np.float32) for g in gts], gts)[0] == 0


def _write_pair(folder: Path, name: str, img: np.ndarray, mask: np.ndarray) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "images" / f"{name}.png"), img)
    cv2.imwrite(str(folder / "masks" / f"{name}.png"), mask)


def test_eval_images_and_sequences_cli(tmp_path: Path, tiny_weights: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    for i in range(2):
        mask = np.zeros((24, 40), np.uint8)
        mask[4:20, 10:25] = 255
        _write_pair(
            tmp_path / "imgs", f"{i:03d}", rng.integers(0, 255, (24, 40, 3), np.uint8), mask
        )
        for seq in ("a", "b"):
            _write_pair(
                tmp_path / "seqs" / seq,
                f"{i:05d}",
                rng.integers(0, 255, (24, 40, 3), np.uint8),
                mask,
            )
    out = tmp_path / "r.json"
    code = main([
        "eval", "--images", str(tmp_path / "imgs/images"), "--masks", str(tmp_path / "imgs/masks"),
        "--weights", str(tiny_weights), "--device", "cpu", "--json", str(out), "--no-progress",
    ])  # fmt: skip
    assert code == 0
    res = json.loads(out.read_text())
    assert res["n"] == 2 and 0.0 <= res["iou"] <= 1.0 and 0.0 <= res["mae"] <= 1.0
    assert res["size"] == 32 and res["refine"] is False
    assert [r["image"] for r in res["images"]] == ["000.png", "001.png"]
    assert res["iou"] == pytest.approx(np.mean([r["iou"] for r in res["images"]]))
    assert "lowest IoU: 00" in capsys.readouterr().out
    assert res["ignore_mask_gaps"] is False and res["tta"] is False and res["zoom"] is False
    code = main([
        "eval", "--sequences", str(tmp_path / "seqs"), "--weights", str(tiny_weights),
        "--ignore-mask-gaps", "--no-progress",
    ])  # fmt: skip
    assert code == 2 and "only applies to --images" in capsys.readouterr().err
    code = main([
        "eval", "--sequences", str(tmp_path / "seqs"), "--weights", str(tiny_weights),
        "--limit", "3", "--no-progress",
    ])  # fmt: skip
    assert code == 2 and "--limit only applies to --images" in capsys.readouterr().err

    code = main([
        "eval", "--images", str(tmp_path / "imgs/images"), "--masks", str(tmp_path / "imgs/masks"),
        "--weights", str(tiny_weights), "--device", "cpu", "--json", str(out), "--overwrite",
        "--refine", "--no-progress",
    ])  # fmt: skip
    assert code == 0
    ref = json.loads(out.read_text())
    assert ref["refine"] is True and ref["n"] == 2 and ref["mae"] != res["mae"]

    out2 = tmp_path / "s.json"
    code = main([
        "eval", "--sequences", str(tmp_path / "seqs"), "--weights", str(tiny_weights),
        "--device", "cpu", "--json", str(out2), "--no-progress",
    ])  # fmt: skip
    assert code == 0
    res = json.loads(out2.read_text())
    assert res["n"] == 4 and len(res["sequences"]) == 2
    assert res["flicker"] >= 0.0 and res["flicker_floor"] >= 0.0
    frames = res["sequences"][0]["frames"]
    assert [f["image"] for f in frames] == ["00000.png", "00001.png"]
    assert res["sequences"][0]["iou"] == pytest.approx(np.mean([f["iou"] for f in frames]))
    printed = capsys.readouterr().out
    assert "all" in printed and "lowest IoU: " in printed and "frames" not in printed
    assert printed.split("lowest IoU: ")[-1][:2] in ("a/", "b/")

    # with temporal smoothing (causal and bidirectional) the same scores are produced
    for extra in (["--smoothing", "0.7"], ["--smoothing", "0.7", "--lookahead", "1"]):
        code = main([
            "eval", "--sequences", str(tmp_path / "seqs"), "--weights", str(tiny_weights),
            "--device", "cpu", "--json", str(out2), "--overwrite", "--no-progress", *extra,
        ])  # fmt: skip
        assert code == 0
        sm = json.loads(out2.read_text())
        assert sm["n"] == 4 and sm["smoothing"] == 0.7 and 0.0 <= sm["iou"] <= 1.0

    # the existing JSON is not overwritten without --overwrite
    code = main(["eval", "--sequences", str(tmp_path / "seqs"), "--weights", str(tiny_weights),
                 "--json", str(out2), "--no-progress"])  # fmt: skip
    assert code == 2


def _table(printed: str) -> list[dict[str, str]]:
    """The rows of the table `vidmat eval` prints, cell by column name."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if set(line.replace(" ", "")) == {"-"}) - 1
    cols = lines[start].split()
    rows = []
    for line in lines[start + 2 :]:
        cells = line.split()
        if len(cells) != len(cols):
            break
        rows.append(dict(zip(cols, cells, strict=True)))
    return rows


def test_eval_sequences_table_prints_lag_alike_on_every_row(
    tmp_path: Path, tiny_weights: Path, capsys
) -> None:
    """A sequence's lag (whole frames, an int) printed as ``0`` and the "all" row's (their
    mean, a float) as ``0.000`` in one column; both now read in frames to one decimal."""
    from vidmat.train.evaluate import summarize_rows

    rng = np.random.default_rng(0)
    mask = np.zeros((24, 40), np.uint8)
    mask[4:20, 10:25] = 255
    for seq in ("a", "b"):
        for i in range(3):
            img = rng.integers(0, 255, (24, 40, 3), np.uint8)
            _write_pair(tmp_path / "seqs" / seq, f"{i:05d}", img, mask)
    out = tmp_path / "s.json"
    code = main([
        "eval", "--sequences", str(tmp_path / "seqs"), "--weights", str(tiny_weights),
        "--device", "cpu", "--json", str(out), "--no-progress",
    ])  # fmt: skip
    assert code == 0
    rows = _table(capsys.readouterr().out)
    assert [r["sequence"] for r in rows] == ["a", "b", "all"]
    res = json.loads(out.read_text())
    lags = [*(s["lag"] for s in res["sequences"]), res["lag"]]
    assert [r["lag"] for r in rows] == [f"{v:.1f}" for v in lags]
    # the JSON keeps the values themselves: whole frames per sequence, their mean overall
    assert all(isinstance(s["lag"], int) for s in res["sequences"])
    assert isinstance(res["lag"], float)
    # a mean between whole frames shows its half frame; other floats keep 3 decimals
    shown = summarize_rows([{"lag": 1, "iou": 0.91234}, {"lag": 0.5, "iou": 0.9}])
    assert shown == [{"lag": "1.0", "iou": 0.9123}, {"lag": "0.5", "iou": 0.9}]


def test_eval_names_weights_given_by_path_after_the_file(
    tmp_path: Path, tiny_weights: Path, capsys
) -> None:
    """A file eval'd by path was reported under the name inside it (the shipped file's
    "H2"); the printed line and the JSON now name the file the user passed."""
    renamed = tmp_path / "person_v3.safetensors"
    renamed.write_bytes(tiny_weights.read_bytes())  # its spec still says "tiny"
    mask = np.zeros((24, 40), np.uint8)
    mask[4:20, 10:25] = 255
    _write_pair(tmp_path / "imgs", "000", np.full((24, 40, 3), 90, np.uint8), mask)
    out = tmp_path / "r.json"
    code = main([
        "eval", "--images", str(tmp_path / "imgs/images"), "--masks", str(tmp_path / "imgs/masks"),
        "--weights", str(renamed), "--device", "cpu", "--json", str(out), "--no-progress",
    ])  # fmt: skip
    assert code == 0
    assert "weights person_v3 at 32x32 on cpu" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["weights_name"] == "person_v3" and res["weights"] == str(renamed)


def test_eval_images_names_each_image_and_the_worst(tmp_path: Path) -> None:
    from vidmat.train.evaluate import evaluate_images, worst

    # the "model" returns the truth, except on image 001 where it misses the right half
    def half_blind(frames: np.ndarray) -> torch.Tensor:
        low = _perfect_at_8(frames)
        if frames[0, 0, 0, 1] == 1:
            low[..., 4:] = 0.0
        return low

    for i in range(3):
        img = np.zeros((40, 40, 3), np.uint8)
        img[8:32, 8:32] = 255
        img[0, 0, 1] = i
        _write_pair(tmp_path, f"{i:03d}", img, img[..., 0])
    overall, items = evaluate_images(
        half_blind, tmp_path / "images", tmp_path / "masks", progress=False
    )
    assert [r["image"] for r in items] == ["000.png", "001.png", "002.png"]
    assert items[0]["iou"] == items[2]["iou"] > 0.9
    assert items[1]["iou"] == pytest.approx(0.5, abs=0.05) and items[1]["mae"] > items[0]["mae"]
    assert overall["iou"] == pytest.approx(np.mean([r["iou"] for r in items]))
    assert [r["image"] for r in worst(items, 2)] == ["001.png", "000.png"]
    assert worst(items, 0) == []


def test_eval_images_side_by_side_keeps_order_and_scores(tmp_path: Path) -> None:
    """Two workers: the images meet inside the model (a barrier both must pass), and the
    rows come back in file order with the scores one worker gives."""
    import threading

    from vidmat.train.evaluate import evaluate_images

    barrier = threading.Barrier(2, timeout=10)
    threads: set[str] = set()

    def answer(frames: np.ndarray) -> torch.Tensor:
        threads.add(threading.current_thread().name)
        low = _perfect_at_8(frames)
        low[..., : 2 * (int(frames[0, 0, 0, 1]) % 4)] = 0.0  # a different miss per image
        return low

    def meeting(frames: np.ndarray) -> torch.Tensor:
        if frames[0, 0, 0, 1] < 2:  # the first two images arrive together
            barrier.wait()
        return answer(frames)

    for i in range(7):
        img = np.zeros((40, 40, 3), np.uint8)
        img[8:32, 8:32] = 255
        img[0, 0, 1] = i
        _write_pair(tmp_path, f"{i:03d}", img, img[..., 0])
    folders = (tmp_path / "images", tmp_path / "masks")
    overall, items = evaluate_images(meeting, *folders, progress=False, workers=2)
    assert len(threads) == 2 and all(t.startswith("vidmat-eval") for t in threads)
    threads.clear()
    assert evaluate_images(answer, *folders, progress=False) == (overall, items)
    assert threads == {threading.current_thread().name}
    assert [r["image"] for r in items] == [f"{i:03d}.png" for i in range(7)]
    assert len({r["iou"] for r in items}) == 4


def test_in_order_hands_back_results_in_order_and_raises_the_first_error() -> None:
    import time

    from vidmat.train.evaluate import in_order

    def slow_first(i: int) -> int:
        time.sleep(0.05 if i == 0 else 0.0)
        if i == 5:
            raise ValueError("five")
        return i * i

    assert list(in_order(slow_first, range(5), workers=3)) == [0, 1, 4, 9, 16]
    assert list(in_order(slow_first, range(5))) == [0, 1, 4, 9, 16]
    got = []
    with pytest.raises(ValueError, match="five"):
        for r in in_order(slow_first, range(9), workers=2):
            got.append(r)
    assert got == [0, 1, 4, 9, 16]


def _person_with_neck_gap() -> np.ndarray:
    """A head over a torso, joined only by thin straps: the neck between them unlabelled."""
    m = np.zeros((60, 40), np.uint8)
    m[4:20, 12:28] = 255  # head
    m[24:58, 4:36] = 255  # torso
    m[20:24, 12:14] = m[20:24, 26:28] = 255  # the parser's strip beside the neck
    return m


def test_gap_pixels_finds_the_unlabelled_neck_only() -> None:
    from vidmat.train.evaluate import gap_pixels

    m = _person_with_neck_gap()
    gaps = gap_pixels(m)
    assert gaps[20:24, 14:26].all()  # the neck
    assert not gaps[m > 127].any()  # never a person pixel
    assert not gaps[:, :2].any() and not gaps[:3].any()  # open background stays scored
    assert gap_pixels(np.zeros((10, 10), np.uint8)).sum() == 0


def test_eval_ignore_gaps_scores_a_filled_neck_as_right(tmp_path: Path) -> None:
    from vidmat.train.evaluate import evaluate_images

    m = _person_with_neck_gap()
    full = m.copy()
    full[20:24, 12:28] = 255  # the person as a model that sees the neck finds it
    img = np.repeat(full[..., None], 3, axis=2)
    _write_pair(tmp_path, "000", img, m)

    def truth_of_image(frames: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((frames[..., 0] > 127).astype(np.float32))[:, None]

    as_given, _ = evaluate_images(
        truth_of_image, tmp_path / "images", tmp_path / "masks", progress=False
    )
    ignoring, _ = evaluate_images(
        truth_of_image, tmp_path / "images", tmp_path / "masks", progress=False, ignore_gaps=True
    )
    assert as_given["iou"] < 0.99 and as_given["mae"] > 0.0
    assert ignoring["iou"] == 1.0 and ignoring["mae"] < 1e-6


def test_eval_needs_data(capsys) -> None:
    assert main(["eval"]) == 2
    assert "--images" in capsys.readouterr().err


def test_flicker_floor_is_what_a_perfect_lowres_mask_scores(tmp_path: Path) -> None:
    from vidmat.train.evaluate import evaluate_sequence

    def perfect_at_8(frames: np.ndarray) -> torch.Tensor:  # the truth, at 8x8
        g = torch.from_numpy((frames[..., 0] > 127).astype(np.float32))[:, None]
        return torch.nn.functional.interpolate(g, size=(8, 8), mode="area")

    def run(seq: Path, move: int) -> dict[str, float]:
        for i in range(5):
            img = np.zeros((40, 40, 3), np.uint8)
            img[10:30, 5 + move * i : 20 + move * i] = 255
            _write_pair(seq, f"{i:05d}", img, img[..., 0])
        return evaluate_sequence(perfect_at_8, seq)

    still = run(tmp_path / "still", 0)
    assert still["flicker"] == 0.0 and still["flicker_floor"] == 0.0
    moving = run(tmp_path / "moving", 3)
    # the soft 8x8 edge moves with the square: pixels whose truth stayed still change
    assert moving["flicker_floor"] > 0.005
    assert moving["flicker"] == pytest.approx(moving["flicker_floor"], rel=1e-6)


def _perfect_at_8(frames: np.ndarray) -> torch.Tensor:
    """A model that returns the truth (white pixels) taken down to 8x8."""
    g = torch.from_numpy((frames[..., 0] > 127).astype(np.float32))[:, None]
    return torch.nn.functional.interpolate(g, size=(8, 8), mode="area")


def test_refine_scores_the_matte_convert_writes(tmp_path: Path) -> None:
    from vidmat.train.evaluate import evaluate_images

    # a white square whose edges fall inside the 8x8 cells: bilinear upsampling leaves them
    # soft, convert's guided filter snaps them back to the frame's edges
    img = np.zeros((40, 40, 3), np.uint8)
    img[11:29, 7:23] = 255
    _write_pair(tmp_path, "00000", img, img[..., 0])
    plain, _ = evaluate_images(
        _perfect_at_8, tmp_path / "images", tmp_path / "masks", progress=False
    )
    refined, _ = evaluate_images(
        _perfect_at_8, tmp_path / "images", tmp_path / "masks", progress=False, refine=True
    )
    assert refined["n"] == plain["n"] == 1
    assert refined["mae"] < 0.5 * plain["mae"]
    assert refined["iou"] > plain["iou"]


def test_refine_on_sequences_scores_every_frame_through_the_lookahead(tmp_path: Path) -> None:
    from vidmat.train.evaluate import evaluate_sequence

    for i in range(6):
        img = np.zeros((40, 40, 3), np.uint8)
        img[11:29, 7 + 2 * i : 23 + 2 * i] = 255
        _write_pair(tmp_path / "seq", f"{i:05d}", img, img[..., 0])
    plain = evaluate_sequence(_perfect_at_8, tmp_path / "seq", smoothing=0.7, lookahead=3)
    refined = evaluate_sequence(
        _perfect_at_8, tmp_path / "seq", smoothing=0.7, lookahead=3, refine=True
    )
    # the look-ahead holds frames back; flush() must hand every one of them to the scores
    assert refined["n"] == plain["n"] == 6
    assert refined["iou"] > plain["iou"] and refined["mae"] < plain["mae"]
    assert refined["flicker"] < plain["flicker"]


def test_eval_against_an_earlier_result(tmp_path: Path, tiny_weights: Path, capsys) -> None:
    rng = np.random.default_rng(3)
    for i in range(3):
        mask = np.zeros((24, 40), np.uint8)
        mask[4:20, 10:25] = 255
        _write_pair(tmp_path / "d", f"{i}", rng.integers(0, 255, (24, 40, 3), np.uint8), mask)
    data = ["--images", str(tmp_path / "d/images"), "--masks", str(tmp_path / "d/masks")]
    common = ["--device", "cpu", "--no-progress"]
    old = tmp_path / "old.json"
    assert main(["eval", *data, "--weights", str(tiny_weights), "--json", str(old), *common]) == 0
    # other weights on the same images: the paired difference is the difference of the means
    from vidmat.model.spec import WeightsSpec
    from vidmat.model.u2net import build_model
    from vidmat.model.weights import save_weights

    torch.manual_seed(1)
    other = tmp_path / "other.safetensors"
    spec = WeightsSpec(name="other", arch="u2netp", input_size=32, scale="255", file=other.name)
    save_weights(build_model("u2netp"), spec, other)
    new = tmp_path / "new.json"
    capsys.readouterr()
    code = main([
        "eval", *data, "--weights", str(other), "--json", str(new), "--against", str(old), *common,
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    a, b = json.loads(old.read_text()), json.loads(new.read_text())
    got = b["against"]["iou"]
    assert got["n"] == 3 and got["diff"] == pytest.approx(b["iou"] - a["iou"])
    assert got["ci95"][0] <= got["diff"] <= got["ci95"][1]
    assert b["against"]["mae"]["diff"] == pytest.approx(b["mae"] - a["mae"])
    assert f"against {old} (tiny):" in printed and "3 paired" in printed
    # scored at another size than the baseline: said, since it reads as the weights' doing
    code = main(["eval", *data, "--weights", str(tiny_weights), "--size", "64",
                 "--against", str(old), *common])  # fmt: skip
    assert (
        code == 0
        and f"against {old} (tiny) (scored with size 32 -> 64):" in capsys.readouterr().out
    )
    # and in another precision: bf16 scores a little apart from fp32, not the weights
    assert a["precision"] == "fp32"
    code = main(["eval", *data, "--weights", str(tiny_weights), "--precision", "bf16",
                 "--against", str(old), *common])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "(scored with precision fp32 -> bf16):" in out
    assert "at 32x32 on cpu, bf16" in out
    # a baseline made on other images: said in one sentence
    elsewhere = {"images": [{"image": "other.png", "iou": 0.5, "mae": 0.1}]}
    (tmp_path / "elsewhere.json").write_text(json.dumps(elsewhere))
    kept = tmp_path / "kept.json"
    code = main(["eval", *data, "--weights", str(other), "--json", str(kept),
                 "--against", str(tmp_path / "elsewhere.json"), *common])  # fmt: skip
    err = capsys.readouterr().err
    # said before the set is scored (it was said after, and the scores written anyway)
    assert code == 2 and "it scored none of the images this run scores" in err
    assert "Traceback" not in err and not kept.exists()
    # a baseline that is not an eval result stops before the model runs, in one sentence
    bad = tmp_path / "bad.json"
    bad.write_text('{"iou": 0.5}')
    code = main(["eval", *data, "--weights", str(other), "--against", str(bad), *common])
    err = capsys.readouterr().err
    assert code == 2 and "cannot be compared" in err and "Traceback" not in err


def test_eval_reads_0_1_label_masks_as_0_255_ones(tmp_path: Path) -> None:
    """0/1 label masks (1 = person) score as their 0/255 version, images and sequences
    alike; cut at 127 they read as all background and scored IoU 0 without a word."""
    from vidmat.train.data import read_mask
    from vidmat.train.evaluate import evaluate_images, evaluate_sequence

    for i in range(2):
        img = np.zeros((40, 40, 3), np.uint8)
        img[8 + i : 30, 6:24] = 255
        _write_pair(tmp_path / "255", f"{i:05d}", img, img[..., 0])
        _write_pair(tmp_path / "01", f"{i:05d}", img, img[..., 0] // 255)
    assert cv2.imread(str(tmp_path / "01/masks/00000.png"), cv2.IMREAD_GRAYSCALE).max() == 1
    assert np.array_equal(
        read_mask(tmp_path / "01/masks/00000.png"), read_mask(tmp_path / "255/masks/00000.png")
    )
    as_255, rows_255 = evaluate_images(
        _perfect_at_8, tmp_path / "255/images", tmp_path / "255/masks", progress=False
    )
    as_01, rows_01 = evaluate_images(
        _perfect_at_8, tmp_path / "01/images", tmp_path / "01/masks", progress=False
    )
    assert as_255["iou"] > 0.5  # the 8x8 model blurs the edges; all background scores 0
    assert as_01 == as_255 and rows_01 == rows_255
    seq_255 = evaluate_sequence(_perfect_at_8, tmp_path / "255")
    seq_01 = evaluate_sequence(_perfect_at_8, tmp_path / "01")
    assert seq_255["iou"] > 0.5
    assert seq_01 == seq_255


def test_soft_masks_are_still_cut_at_the_middle(tmp_path: Path) -> None:
    """Only a mask whose maximum is 1 is a label mask: 0..255 masks keep their cut at 127."""
    from vidmat.train.data import read_mask

    soft = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (4, 1))
    cv2.imwrite(str(tmp_path / "soft.png"), soft)
    assert np.array_equal(read_mask(tmp_path / "soft.png"), np.where(soft > 127, 255, 0))
    faint = np.zeros((4, 4), np.uint8)
    faint[1, 1] = 2  # not a label mask: still all background
    cv2.imwrite(str(tmp_path / "faint.png"), faint)
    assert read_mask(tmp_path / "faint.png").max() == 0


def _indexed_png(path: Path, indices: np.ndarray, colours: dict[int, tuple[int, int, int]]) -> Path:
    """An indexed (palette) PNG by FFmpeg's encoder; PyAV's palette rows are A, R, G, B."""
    import av

    palette = np.zeros((256, 4), np.uint8)
    palette[:, 0] = 255
    for i, rgb in colours.items():
        palette[i, 1:] = rgb
    frame = av.VideoFrame.from_ndarray((indices, palette), format="pal8")
    with av.open(str(path), "w", format="image2") as c:
        s = c.add_stream("png", rate=1)
        s.width, s.height, s.pix_fmt = indices.shape[1], indices.shape[0], "pal8"
        for p in [*s.encode(frame), *s.encode()]:
            c.mux(p)
    assert path.read_bytes()[25] == 3  # indexed
    bgr = cv2.imread(str(path))
    for i, rgb in colours.items():  # the colours are what was meant
        if (indices == i).any():
            assert tuple(bgr[indices == i][0][::-1]) == rgb
    return path


def test_masks_in_every_form_datasets_ship_read_as_their_person(tmp_path: Path) -> None:
    """A palette PNG (DAVIS: index 1 drawn dark red, grey 38), a 16-bit 0/1 mask and a
    person in the alpha channel alone each read as all background, silently."""
    from vidmat.train.data import read_mask

    person = np.zeros((20, 30), bool)
    person[5:15, 10:20] = True
    want = np.where(person, 255, 0).astype(np.uint8)
    # coloured labels: index 1 dark red (DAVIS), 255 VOC's void border, read by index
    indices = person.astype(np.uint8)
    indices[0, :] = 255
    pal = _indexed_png(tmp_path / "pal.png", indices, {1: (128, 0, 0), 255: (224, 224, 192)})
    cv2.imwrite(str(tmp_path / "m16.png"), person.astype(np.uint16))
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 3] = want  # the person in alpha alone, over one colour
    cv2.imwrite(str(tmp_path / "alpha.png"), rgba)
    cutout = np.full((20, 30, 4), 60, np.uint8)  # a cut-out photo: dark colours, alpha
    cutout[..., 0] = np.arange(30, dtype=np.uint8)[None, :]
    cutout[..., 3] = want
    cv2.imwrite(str(tmp_path / "cutout.png"), cutout)
    for path in (pal, tmp_path / "m16.png", tmp_path / "alpha.png", tmp_path / "cutout.png"):
        assert np.array_equal(read_mask(path), want), path.name
    cv2.imwrite(str(tmp_path / "soft16.png"), (person * 40000).astype(np.uint16))
    assert np.array_equal(read_mask(tmp_path / "soft16.png"), want)  # cut at 32767
    # a black-and-white mask saved indexed (PIL's convert("P"), GIMP): by its greys, the
    # person at index 255 or white listed first, not by the index rule of coloured labels
    for white in (255, 0):
        idx = np.where(person, white, 255 - white).astype(np.uint8)
        bw = _indexed_png(
            tmp_path / f"bw{white}.png", idx, {white: (255,) * 3, 255 - white: (0,) * 3}
        )
        assert np.array_equal(read_mask(bw), want), white
    # an opaque black-and-white RGBA mask with a transparent margin is its colours, and an
    # opaque all-black one (a frame without a person) is all background
    margin = np.zeros((20, 30, 4), np.uint8)
    margin[..., :3] = want[..., None]
    margin[2:-2, 2:-2, 3] = 255
    cv2.imwrite(str(tmp_path / "margin.png"), margin)
    assert np.array_equal(read_mask(tmp_path / "margin.png"), want)
    empty = np.zeros((20, 30, 4), np.uint8)
    empty[..., 3] = 255
    cv2.imwrite(str(tmp_path / "empty.png"), empty)
    assert read_mask(tmp_path / "empty.png").max() == 0
    # a person drawn red on black in an RGB PNG (grey 76: it read as all background), and
    # one too dark to tell, refused rather than read as nobody
    red = np.zeros((20, 30, 3), np.uint8)
    red[person] = (0, 0, 255)  # BGR
    cv2.imwrite(str(tmp_path / "red.png"), red)
    assert np.array_equal(read_mask(tmp_path / "red.png"), want)
    for dark in ((0, 0, 60), (0, 0, 30), (1, 2, 0)):  # red 60, red 30, a class-2 label
        red[person] = dark
        cv2.imwrite(str(tmp_path / "dim.png"), red)
        with pytest.raises(VidmatError, match="coloured and none of it is brighter than half"):
            read_mask(tmp_path / "dim.png")
    # an empty frame saved as a colour JPEG: a few levels of noise, no person, no error
    noise = np.random.default_rng(0).integers(0, 6, (20, 30, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "empty.jpg"), noise)
    assert read_mask(tmp_path / "empty.jpg").max() == 0


def test_eval_json_is_never_its_against_baseline(
    tmp_path: Path, tiny_weights: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--json e1.json --against e1.json --overwrite` replaced the baseline it compared with."""
    mask = np.zeros((24, 40), np.uint8)
    mask[4:20, 10:25] = 255
    _write_pair(tmp_path / "d", "0", np.full((24, 40, 3), 90, np.uint8), mask)
    data = ["--images", str(tmp_path / "d/images"), "--masks", str(tmp_path / "d/masks")]
    common = ["--weights", str(tiny_weights), "--device", "cpu", "--no-progress"]
    base = tmp_path / "e1.json"
    assert main(["eval", *data, *common, "--json", str(base)]) == 0
    before = base.read_bytes()
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    for json_out in (str(base), "./e1.json"):
        argv = ["eval", *data, *common, "--json", json_out, "--against", str(base)]
        assert main([*argv, "--overwrite"]) == 2
        captured = capsys.readouterr()
        assert captured.err == (
            f"vidmat: error: the --json {Path(json_out)} is the --against result itself; "
            "choose another --json name.\n"
        )
        assert captured.out == ""  # refused before the model runs
    assert base.read_bytes() == before
    other = tmp_path / "e2.json"
    assert main(["eval", *data, *common, "--json", str(other), "--against", str(base)]) == 0
    assert json.loads(other.read_text())["against"]["file"] == str(base)


def test_a_one_frame_sequence_writes_strict_json(
    tmp_path: Path, tiny_weights: Path, recwarn: pytest.WarningsRecorder
) -> None:
    # Its flicker is unknown: written as NaN, which JSON.parse and jq refuse, after a
    # numpy "Mean of empty slice" warning. Now null, quietly.
    mask = np.zeros((24, 40), np.uint8)
    mask[4:20, 10:25] = 255
    image = np.random.default_rng(0).integers(0, 255, (24, 40, 3), np.uint8)
    _write_pair(tmp_path / "seqs" / "one", "00000", image, mask)
    out = tmp_path / "s.json"
    code = main([
        "eval", "--sequences", str(tmp_path / "seqs"), "--weights", str(tiny_weights),
        "--device", "cpu", "--json", str(out), "--no-progress",
    ])  # fmt: skip
    assert code == 0
    text = out.read_text()
    assert "NaN" not in text
    res = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert res["flicker"] is None and res["sequences"][0]["flicker"] is None
    # nor a lag: it was 0, and pulled the mean over sequences toward it (1.0 -> 0.7)
    assert res["lag"] is None and res["sequences"][0]["lag"] is None
    assert not [w for w in recwarn if "empty slice" in str(w.message)]


def test_lookahead_without_sequences_is_refused(
    tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It was accepted and did nothing, while --smoothing was refused there.
    argv = ["eval", "--images", str(tmp_path), "--masks", str(tmp_path), "--lookahead", "8"]
    assert main([*argv, "--weights", str(tiny_weights)]) == 2
    err = capsys.readouterr().err
    assert err == "vidmat: error: --lookahead only applies to --sequences with --smoothing.\n"
    seqs = [
        "eval",
        "--sequences",
        str(tmp_path),
        "--lookahead",
        "8",
        "--weights",
        str(tiny_weights),
    ]
    assert main(seqs) == 2  # without --smoothing it looks ahead at nothing
    assert "--lookahead only applies" in capsys.readouterr().err
    for k in ("-1", "31"):  # -1 ran the causal filter and was recorded as -1 in the JSON
        assert main([*seqs[:3], "--smoothing", "0.5", "--lookahead", k, *seqs[5:]]) == 2
        assert f"--lookahead must be between 0 and 30 frames, got {k}." in capsys.readouterr().err


def test_a_sequence_without_masks_is_named_not_skipped(
    tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mask = np.zeros((24, 40), np.uint8)
    image = np.zeros((24, 40, 3), np.uint8)
    _write_pair(tmp_path / "seqs" / "a", "00000", image, mask)
    (tmp_path / "seqs" / "b" / "images").mkdir(parents=True)
    argv = ["eval", "--sequences", str(tmp_path / "seqs"), "--weights", str(tiny_weights)]
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"vidmat: error: sequence {tmp_path / 'seqs' / 'b'} has no masks/ folder; "
        f"add it or move {tmp_path / 'seqs' / 'b'} out.\n"
    )


def test_against_a_result_of_the_other_kind_is_refused_before_scoring(
    tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    # It scored every sequence first (minutes on DAVIS), then failed.
    mask = np.zeros((24, 40), np.uint8)
    _write_pair(tmp_path / "seqs" / "a", "00000", np.zeros((24, 40, 3), np.uint8), mask)
    photos = tmp_path / "photos.json"
    photos.write_text(json.dumps({"iou": 0.9, "mae": 0.02, "n": 1, "images": []}))

    def never(*args, **kwargs):
        raise AssertionError("scored before the check")

    monkeypatch.setattr("vidmat.train.evaluate.evaluate_sequences", never)
    argv = ["eval", "--sequences", str(tmp_path / "seqs"), "--weights", str(tiny_weights)]
    assert main([*argv, "--against", str(photos), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"vidmat: error: cannot compare with {photos}: it scored images, this run scores "
        "sequences; give a result of --sequences.\n"
    )


def test_a_sequence_of_mismatched_sizes_is_one_sentence(tmp_path: Path) -> None:
    """Masks half the frames' size were scored against an upsampled prediction without a
    word (with --refine, a traceback), and frames of two sizes ended in np.stack's."""
    from vidmat.train.evaluate import evaluate_sequence

    frame = np.zeros((48, 64, 3), np.uint8)
    frame[10:30, 10:30] = 255
    for i in range(2):
        _write_pair(tmp_path / "half", f"{i:05d}", frame, frame[::2, ::2, 0])
    for refine in (False, True):
        with pytest.raises(VidmatError, match=r"mask 00000.png is 32x24 px and its image"):
            evaluate_sequence(_perfect_at_8, tmp_path / "half", refine=refine)
    _write_pair(tmp_path / "mixed", "00000", frame, frame[..., 0])
    _write_pair(tmp_path / "mixed", "00001", frame[:40], frame[:40, :, 0])
    with pytest.raises(VidmatError, match=r"00001.png is 64x40 px and 00000.png 64x48: the"):
        evaluate_sequence(_perfect_at_8, tmp_path / "mixed")


def test_two_files_of_one_stem_are_refused(tmp_path: Path) -> None:
    """a.png and a.jpg as masks: the one taken depended on the folder's order; two images
    of one stem were both scored against its one mask."""
    from vidmat.train.data import pair_folders

    img = np.zeros((8, 8, 3), np.uint8)
    _write_pair(tmp_path / "m", "a", img, img[..., 0])
    cv2.imwrite(str(tmp_path / "m" / "masks" / "a.jpg"), img[..., 0])
    with pytest.raises(VidmatError, match=r"a.jpg and a.png in .* are both masks of a; keep"):
        pair_folders(tmp_path / "m" / "images", tmp_path / "m" / "masks")
    _write_pair(tmp_path / "i", "a", img, img[..., 0])
    cv2.imwrite(str(tmp_path / "i" / "images" / "a.jpg"), img)
    with pytest.raises(VidmatError, match=r"a.jpg and a.png in .* share the stem a"):
        pair_folders(tmp_path / "i" / "images", tmp_path / "i" / "masks")


def test_tiff_masks_pair_and_one_folder_for_both_is_refused(tmp_path: Path) -> None:
    """.tif masks (16-bit ones are common) gave "no mask for 0.png" though vidmat reads
    TIFF elsewhere; --images X --masks X scored the photos as their own masks (IoU 0.09)."""
    from vidmat.train.data import pair_folders

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "0.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "masks" / "0.tif"), np.full((8, 8), 65535, np.uint16))
    ((image, mask),) = pair_folders(tmp_path / "images", tmp_path / "masks")
    assert (image.name, mask.name) == ("0.png", "0.tif")
    from vidmat.train.data import read_mask

    assert read_mask(mask).min() == 255
    with pytest.raises(VidmatError, match="masks go in a folder of their own"):
        pair_folders(tmp_path / "images", tmp_path / "images" / ".")


def _cut_jpeg(path: Path, image: np.ndarray, progressive: bool = False) -> tuple[Path, Path]:
    """``path`` written whole beside a copy cut to half its bytes (``cut_<name>``)."""
    flags = [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)]
    ok, data = cv2.imencode(".jpg", image, flags)
    assert ok
    path.write_bytes(data.tobytes() + b"\0\0")  # padding after the end, as some cameras write
    cut = path.with_name(f"cut_{path.name}")
    cut.write_bytes(data.tobytes()[: data.size // 2])
    return path, cut


def test_a_jpeg_cut_short_is_told_from_a_whole_one(tmp_path: Path) -> None:
    from vidmat.train.data import jpeg_cut_short

    rng = np.random.default_rng(0)
    image = cv2.resize(rng.integers(0, 255, (8, 8, 3), np.uint8), (96, 64))
    for progressive in (False, True):
        whole, cut = _cut_jpeg(tmp_path / f"p{progressive}.jpg", image, progressive)
        assert not jpeg_cut_short(whole.read_bytes())
        assert jpeg_cut_short(cut.read_bytes())
    # an EXIF thumbnail ends with its own end marker, before the picture's first scan
    thumb = cv2.imencode(".jpg", image[:8, :8])[1]
    raw = cut.read_bytes()
    app1 = b"\xff\xe1" + (len(thumb.tobytes()) + 2).to_bytes(2, "big") + thumb.tobytes()
    assert jpeg_cut_short(raw[:2] + app1 + raw[2:])
    png = cv2.imencode(".png", image)[1]
    assert not jpeg_cut_short(png.tobytes()) and not jpeg_cut_short(b"")
    # stray bytes before a marker, which libjpeg skips: still told whole from cut
    raw = whole.read_bytes()
    app0_end = 4 + int.from_bytes(raw[4:6], "big")
    stray = raw[:app0_end] + b"\x00\x00" + raw[app0_end:]
    assert not jpeg_cut_short(stray) and jpeg_cut_short(stray[: len(stray) // 2])
    # a phone's motion photo: a video appended after the picture's end, markers and all
    video = np.random.default_rng(1).integers(0, 256, 200_000, np.uint8).tobytes()
    assert not jpeg_cut_short(whole.read_bytes() + b"\xff\xda\x00\x08" + video)


def test_eval_names_a_jpeg_cut_short(
    tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A truncated photo in a set read grey where it stopped and was scored as it was;
    only libjpeg's "Premature end of JPEG file" appeared, naming no file."""
    from vidmat.train.data import read_mask

    img = np.random.default_rng(0).integers(0, 80, (120, 120, 3), np.uint8)  # detail to cut
    img[24:90, 18:72] = 255
    for i in range(2):
        _write_pair(tmp_path / "set", f"{i:05d}", img, np.where(img[..., 0] == 255, 255, 0))
    run = [
        "eval", "--images", str(tmp_path / "set/images"), "--masks", str(tmp_path / "set/masks"),
        "--weights", str(tiny_weights), "--device", "cpu", "--no-progress",
    ]  # fmt: skip
    assert main(run) == 0
    assert "warning" not in capsys.readouterr().err
    whole, cut = _cut_jpeg(tmp_path / "set/images/00001.jpg", img)
    (tmp_path / "set/images/00001.png").unlink()
    cut.replace(whole)
    assert main(run) == 0
    err = capsys.readouterr().err
    said = f"vidmat: warning: {whole} is cut short (a truncated JPEG); the part missing reads grey."
    assert err.count("vidmat: warning:") == 1 and said in err, err
    mask_whole, mask_cut = _cut_jpeg(tmp_path / "m.jpg", img[..., 0])
    read_mask(mask_whole)
    assert "cut short" not in capsys.readouterr().err
    read_mask(mask_cut)
    assert f"{mask_cut} is cut short" in capsys.readouterr().err
    with pytest.raises(VidmatError, match="cannot read"):  # a traceback of the check's read
        read_mask(tmp_path / "missing.jpg")


def test_the_eval_footer_names_the_options_that_change_the_scores(
    tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With and without --refine, --tta or the gaps left out, two printed results ended
    with the same line; only the JSON told them apart."""
    img = np.zeros((40, 40, 3), np.uint8)
    img[8:30, 6:24] = 255
    _write_pair(tmp_path / "set", "00000", img, img[..., 0])
    run = [
        "eval", "--images", str(tmp_path / "set/images"), "--masks", str(tmp_path / "set/masks"),
        "--weights", str(tiny_weights), "--device", "cpu", "--no-progress",
    ]  # fmt: skip
    assert main(run) == 0
    assert capsys.readouterr().out.rstrip().endswith("x32 on cpu, fp32")
    assert main([*run, "--refine", "--tta", "--ignore-mask-gaps"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("fp32; refine, tta, mask gaps ignored")
    for seq in ("a",):
        _write_pair(tmp_path / "seqs" / seq, "00000", img, img[..., 0])
        _write_pair(tmp_path / "seqs" / seq, "00001", img, img[..., 0])
    seqs = ["eval", "--sequences", str(tmp_path / "seqs"), "--weights", str(tiny_weights)]
    assert main([*seqs, "--no-progress", "--smoothing", "0.7", "--lookahead", "4"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("fp32; smoothing 0.7, lookahead 4")
