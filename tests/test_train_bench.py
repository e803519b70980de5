"""`vidmat bench train` on a tiny size: every part of a step timed, rows and JSON as promised."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vidmat.benchmarks.train import generated_sources
from vidmat.cli import main
from vidmat.train.augment import AugmentConfig, sample_rng, synthesize


def _bench(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "bench.json"
    argv = ["bench", "train", "--device", "cpu", "--sizes", "32", "--batches", "2,3"]
    argv += ["--iters", "1", "--warmup", "0", "--json", str(out), *extra]
    assert main(argv) == 0
    return json.loads(out.read_text())


def test_bench_train_times_each_part_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = _bench(tmp_path, "--amp", "off", "--channels-last", "on,off")
    rows = payload["results"]
    assert [(r["batch"], r["nhwc"]) for r in rows] == [(2, "on"), (2, "off"), (3, "on"), (3, "off")]
    for r in rows:
        assert r["workers"] == 0 and r["loader_ms"] is None  # CPU default: in process
        assert r["batch_ms"] > 0 and r["step_ms"] > 0 and r["run_ms"] > 0
        assert r["run_img_s"] == pytest.approx(r["batch"] * 1000 / r["run_ms"])
        # in process, the slower side is whichever of building and training costs more
        assert r["bound"] == ("data" if r["batch_ms"] > r["step_ms"] else "model")
    assert payload["data"] == "generated" and payload["environment"]["cuda"] in (True, False)
    out = capsys.readouterr().out
    assert "step_ms" in out and "bound" in out


def test_bench_train_with_worker_processes_times_the_loader(tmp_path: Path) -> None:
    rows = _bench(tmp_path, "--workers", "1", "--batches", "2")["results"]
    assert len(rows) == 1 and rows[0]["workers"] == 1 and rows[0]["loader_ms"] > 0


def test_bench_train_compares_worker_counts_on_one_step_time(tmp_path: Path) -> None:
    # One row per count, in the order given; the step (no loader in it) is timed once.
    rows = _bench(tmp_path, "--workers", "0,1", "--batches", "2", "--amp", "off")["results"]
    assert [r["workers"] for r in rows] == [0, 1]
    assert rows[0]["loader_ms"] is None and rows[1]["loader_ms"] > 0
    assert rows[0]["step_ms"] == rows[1]["step_ms"] and rows[0]["batch_ms"] == rows[1]["batch_ms"]
    assert all(r["run_ms"] > 0 for r in rows)


def test_generated_scenes_hold_a_person_the_augmentation_can_use() -> None:
    """Shadows and camouflage need person pixels: the generated data must exercise them."""
    sources, bank = generated_sources(n=4)
    src = sources[0]
    assert src.images.shape == (4, 320, 213, 3) and bank.ndim == 4
    for img, mask in zip(src.images, src.masks, strict=True):
        person = mask > 127
        assert 0.05 < person.mean() < 0.5
        assert not np.array_equal(img[person].mean(0), img[~person].mean(0))
    cfg = AugmentConfig(shadow=1.0, camouflage=1.0)
    labels = [
        synthesize(sample_rng(0, 0, k), sources, np.ones(1), 64, bank, cfg)[1] for k in range(6)
    ]
    assert all(lab.shape == (64, 64) for lab in labels) and any(lab.any() for lab in labels)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--amp", "fp8"], "unknown --amp 'fp8'"),
        (["--workers", "-1"], "--workers must be 0 or more"),
        (["--workers", "2,-1"], "--workers must be 0 or more"),
        (["--batches", "0"], "--batches must be 1 or more"),
    ],
)
def test_bench_train_refuses_bad_settings(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "train", "--device", "cpu", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bench_train_refuses_a_cache_that_is_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It was a FileExistsError traceback; vidmat train says the same sentence.
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    assert main(["bench", "train", "--device", "cpu", "--cache", str(cache)]) == 2
    err = capsys.readouterr().err
    assert err == f"vidmat: error: --cache {cache} is a file, not a folder.\n"
