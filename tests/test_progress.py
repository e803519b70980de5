"""Progress bars: lively in a terminal, calm in a log."""

from __future__ import annotations

import pytest

from vidmat.progress import LOG_INTERVAL, progress_bar


def test_bars_redraw_calmly_into_a_log(monkeypatch: pytest.MonkeyPatch) -> None:
    class Stream:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

        def write(self, text: str) -> int:
            return len(text)

        def flush(self) -> None:
            pass

    for tty, interval in ((True, 0.1), (False, LOG_INTERVAL)):
        monkeypatch.setattr("sys.stderr", Stream(tty))
        bar = progress_bar(total=3)
        assert bar.mininterval == interval
        bar.close()
