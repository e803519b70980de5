"""Progress bars for long work (convert, demo, eval, train): tqdm on stderr.

Into a terminal a bar redraws ten times a second; into a log file (stderr redirected, CI,
nohup) every 10 s, so a long job leaves a readable log instead of one line per frame.
"""

from __future__ import annotations

import re
import sys
from typing import Any, TextIO

from vidmat.errors import TERMINAL_CODES

#: Seconds between redraws when stderr is not a terminal.
LOG_INTERVAL = 10.0


def redraw_interval() -> float:
    stream = sys.stderr
    return 0.1 if stream is not None and stream.isatty() else LOG_INTERVAL


class LogLines:
    """A bar's stream for a log: each redraw a line of its own.

    tqdm draws for a terminal: ``\r`` to return to the line's start, cursor-up codes to
    reach a second bar, blanks to wipe one. In a file those become one endless line full
    of control codes, so here every state the bar draws is written as a plain line, the
    codes left out, and a line equal to the one before (a bar redrawn as it was) only once.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> int:
        for piece in re.split(r"[\r\n]", TERMINAL_CODES.sub("", text)):
            line = piece.rstrip()
            if line and line != self.last:
                self.stream.write(line + "\n")
                self.last = line
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable: Any = None, **kwargs: Any) -> Any:
    """A ``tqdm`` bar with vidmat's defaults (``kwargs`` as for tqdm); into a log, plain
    ASCII lines (:class:`LogLines`)."""
    from tqdm import tqdm

    interval = redraw_interval()
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", interval)
    if interval == LOG_INTERVAL and sys.stderr is not None and "file" not in kwargs:
        kwargs["file"] = LogLines(sys.stderr)
        kwargs.setdefault("ascii", True)
    return tqdm(iterable, **kwargs)
