"""Progress bars: lively in a terminal, calm in a log."""

from __future__ import annotations

import itertools

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


def test_a_log_gets_plain_lines_without_terminal_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two bars (convert's total and per-file) into a file: one state per line, no codes."""
    import io

    log = io.StringIO()
    log.isatty = lambda: False  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stderr", log)
    total = progress_bar(total=4, desc="all", position=0)
    one = progress_bar(total=2, desc="one", position=1, leave=False)
    for bar in (one, total, one, total):
        bar.update(1)
        bar.refresh()
    total.refresh()  # drawn again unchanged: not a second line
    one.close()
    total.update(2)
    total.close()
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert all(line.strip() for line in lines)
    assert all(a != b for a, b in itertools.pairwise(lines))
    assert any(line.startswith("one:") for line in lines)
    assert lines[-1].startswith("all: 100%|##########| 4/4")
