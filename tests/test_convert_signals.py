"""A real ``vidmat convert`` process stopped by Ctrl-C (SIGINT) or ``kill`` (SIGTERM) while it
writes: exit 130 (143 for SIGTERM), one line, no traceback, and nothing left in the output folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from convert_fixtures import make_clip


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from vidmat.model import build_model
    from vidmat.model.weights import WeightsSpec, save_weights

    d = tmp_path_factory.mktemp("signals")
    weights = d / "random.safetensors"
    save_weights(build_model("u2netp"), WeightsSpec(name="random", arch="u2netp"), weights)
    clip = make_clip(d / "long.mp4", frames=1500, audio=None)
    return weights, clip


def _child_signals() -> None:
    # A shell starts background jobs with SIGINT ignored; a terminal user's process has it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_write_leaves_nothing(
    setup: tuple[Path, Path], tmp_path: Path, sig: signal.Signals
) -> None:
    weights, clip = setup
    cmd = [sys.executable, "-m", "vidmat", "convert", str(clip), "-o", str(tmp_path / "x.mp4")]
    cmd += ["--weights", str(weights), "--size", "32", "--quiet", "--threads", "1"]
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, text=True, preexec_fn=_child_signals, env=os.environ.copy()
    )
    deadline = time.monotonic() + 90
    while not list(tmp_path.glob(".x.*")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.1)
    time.sleep(0.5)  # frames are being encoded into the temporary file now
    assert proc.poll() is None, "the conversion finished before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err  # 130 for Ctrl-C, 143 for kill
    word = "interrupted" if sig == signal.SIGINT else "terminated"
    assert word in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
