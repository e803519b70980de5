"""A real ``vidmat convert`` process stopped by Ctrl-C (SIGINT) or ``kill`` (SIGTERM) while it
writes: exit 130 (143 for SIGTERM), one line, no traceback, and nothing left in the output folder."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from convert_fixtures import make_clip
from signal_fixtures import signal_once_writing


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from vidmat.model import build_model
    from vidmat.model.weights import WeightsSpec, save_weights

    d = tmp_path_factory.mktemp("signals")
    weights = d / "random.safetensors"
    save_weights(build_model("u2netp"), WeightsSpec(name="random", arch="u2netp"), weights)
    clip = make_clip(d / "long.mp4", frames=1500, audio=None)
    return weights, clip


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_write_leaves_nothing(
    setup: tuple[Path, Path], tmp_path: Path, sig: signal.Signals
) -> None:
    weights, clip = setup
    args = ["convert", str(clip), "-o", str(tmp_path / "x.mp4")]
    args += ["--weights", str(weights), "--size", "32", "--quiet", "--threads", "1"]
    code, err = signal_once_writing(args, tmp_path, ".x.*", sig, settle=0.5)
    assert code == 128 + sig, err  # 130 for Ctrl-C, 143 for kill
    word = "interrupted" if sig == signal.SIGINT else "terminated"
    assert word in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
