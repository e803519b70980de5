"""Progress bars for long work (convert, demo, eval, train): tqdm on stderr.

Into a terminal a bar redraws ten times a second; into a log file (stderr redirected, CI,
nohup) every 10 s, so a long job leaves a readable log instead of one line per frame.
"""

from __future__ import annotations

import sys
from typing import Any

#: Seconds between redraws when stderr is not a terminal.
LOG_INTERVAL = 10.0


def redraw_interval() -> float:
    stream = sys.stderr
    return 0.1 if stream is not None and stream.isatty() else LOG_INTERVAL


def progress_bar(iterable: Any = None, **kwargs: Any) -> Any:
    """A ``tqdm`` bar with vidmat's defaults (``kwargs`` as for tqdm)."""
    from tqdm import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", redraw_interval())
    return tqdm(iterable, **kwargs)
