"""A real headless ``vidmat live`` process stopped by ``kill`` (SIGTERM) or Ctrl-C while it
records: the recording is finalised under its name, as when it stops by itself, and no
temporary file is left (SIGTERM's default action used to end the process on the spot)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
from live_fixtures import make_clip


def _child_signals() -> None:
    # A shell starts background jobs with SIGINT ignored; a terminal user's process has it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_finalises_the_recording(tmp_path: Path, sig: signal.Signals) -> None:
    from vidmat.model import build_model
    from vidmat.model.weights import WeightsSpec, save_weights

    weights = tmp_path / "random.safetensors"
    save_weights(build_model("u2netp"), WeightsSpec(name="random", arch="u2netp"), weights)
    clip = make_clip(tmp_path / "cam.mp4", frames=60)
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "vidmat", "live", "--no-window", "--camera", str(clip)]
    cmd += ["--loop", "--record", str(out / "rec.mp4"), "--audio", "off", "--quiet"]
    cmd += ["--weights", str(weights), "--size", "32", "--threads", "1"]
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, text=True, preexec_fn=_child_signals, env=os.environ.copy()
    )
    deadline = time.monotonic() + 90
    while not list(out.glob(".rec.*")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.1)
    time.sleep(1.0)  # frames are being recorded into the temporary file now
    assert proc.poll() is None, "live ended before it could be stopped"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopping" in err
    assert [p.name for p in out.iterdir()] == ["rec.mp4"]
    with av.open(str(out / "rec.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) > 5
