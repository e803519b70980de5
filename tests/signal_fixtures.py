"""A real ``vidmat`` process stopped by a signal once it writes its temporary file: what
the convert and live signal tests share."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def terminal_user_signals() -> None:
    # A shell starts background jobs with SIGINT ignored, and nohup SIGHUP; a terminal
    # user's process has both.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def signal_once_writing(
    args: list[str], folder: Path, pattern: str, sig: signal.Signals, settle: float
) -> tuple[int, str]:
    """Run ``python -m vidmat ARGS``, wait until ``folder`` holds a file matching
    ``pattern`` (its temporary output) and ``settle`` seconds more, send ``sig``; return
    the exit status and stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidmat", *args],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=terminal_user_signals,
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 90
    while not list(folder.glob(pattern)) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.1)
    time.sleep(settle)  # frames are being written into the temporary file now
    assert proc.poll() is None, "the command finished before it could be stopped"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err
