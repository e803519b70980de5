"""How vidmat stops when asked to: Ctrl-C (SIGINT) and ``kill`` (SIGTERM) alike.

A job manager, ``timeout`` or ``kill`` sends SIGTERM, whose default action ends the
process on the spot: a conversion would leave its temporary file behind and a live
recording would never be finalised. Inside :func:`sigterm_as_interrupt` SIGTERM raises
:class:`Terminated` instead, a ``KeyboardInterrupt``, so every cleanup written for
Ctrl-C runs for it too, and the CLI still exits with SIGTERM's conventional code.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be; the CLI exits 128 + SIGTERM for it."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C: stop cleanly, keep no partial file.

    Only the main thread may set signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def no_interrupts() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM while threads are joined and a recording is finalised
    (seconds): a second signal must not leave a half-written file."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
