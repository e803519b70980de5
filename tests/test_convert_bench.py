"""``vidmat bench convert`` runs end to end on a tiny clip and writes the JSON it promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from convert_fixtures import make_clip

from vidmat.cli import main


@pytest.mark.slow
def test_bench_convert_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = make_clip(tmp_path / "src.mp4", frames=3, audio=None)
    out = tmp_path / "bench.json"
    args = ["bench", "convert", "--input", str(src), "--height", "32", "--frames", "5"]
    code = main(
        [*args, "--size", "32", "--json", str(out), "--device", "cpu", "--precision", "bf16"]
    )
    assert code == 0
    data = json.loads(out.read_text())
    runs = {r["run"]: r for r in data["results"]}
    assert runs["transcode"]["frames"] == runs["convert"]["frames"] == 5  # looped past 3
    assert data["clip"]["height"] == 32 and data["clip"]["width"] == 42
    # named as --precision and bench model name them ("float32" here, "bf16" there)
    assert data["precision"] == "bf16" and data["weights"] == "u2netp-random"
    ratio = runs["convert"]["fps"] / runs["transcode"]["fps"]
    assert data["ratio_convert_over_transcode"] == pytest.approx(ratio, rel=1e-3)
    assert data["rss_peak_mib"] >= data["rss_start_mib"] > 0
    assert "ratio convert/transcode" in capsys.readouterr().out
