"""A real headless ``vidmat live`` process stopped by ``kill`` (SIGTERM) or Ctrl-C while it
records: the recording is finalised under its name, as when it stops by itself, and no
temporary file is left (SIGTERM's default action used to end the process on the spot)."""

from __future__ import annotations

import signal
from pathlib import Path

import av
import pytest
from live_fixtures import make_clip
from signal_fixtures import signal_once_writing


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_finalises_the_recording(tmp_path: Path, sig: signal.Signals) -> None:
    from vidmat.model.spec import WeightsSpec
    from vidmat.model.u2net import build_model
    from vidmat.model.weights import save_weights

    weights = tmp_path / "random.safetensors"
    save_weights(build_model("u2netp"), WeightsSpec(name="random", arch="u2netp"), weights)
    clip = make_clip(tmp_path / "cam.mp4", frames=60)
    out = tmp_path / "out"
    out.mkdir()
    args = ["live", "--no-window", "--camera", str(clip), "--loop"]
    args += ["--record", str(out / "rec.mp4"), "--audio", "off", "--quiet"]
    args += ["--weights", str(weights), "--size", "32", "--threads", "1"]
    code, err = signal_once_writing(args, out, ".rec.*", sig, settle=1.0)
    # Finalised and summarised, then the exit status of a stopped run, as convert's.
    assert code == 128 + sig, err
    assert "Traceback" not in err and "stopping" in err and "wrote" in err
    word = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}.get(sig, "hung up")
    assert err.endswith(f"vidmat: {word}\n")
    assert [p.name for p in out.iterdir()] == ["rec.mp4"]
    with av.open(str(out / "rec.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) > 5
