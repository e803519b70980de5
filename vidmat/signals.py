"""How vidmat stops when asked to: Ctrl-C (SIGINT) and ``kill`` (SIGTERM) alike.

A job manager, ``timeout`` or ``kill`` sends SIGTERM, whose default action ends the
process on the spot: a conversion would leave its temporary file behind and a live
recording would never be finalised. Inside :func:`interrupt_once` SIGTERM raises
:class:`Terminated` instead, a ``KeyboardInterrupt``, so every cleanup written for
Ctrl-C runs for it too, and the CLI still exits with SIGTERM's conventional code; the
first signal stops the job and later ones are ignored, so the stop of a job with worker
threads cannot itself be cut short.
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
def interrupt_once() -> Iterator[None]:
    """The first SIGINT or SIGTERM stops the work (SIGTERM as :class:`Terminated`, a
    ``KeyboardInterrupt``); any later one, until the block is left, is ignored.

    Two quick Ctrl-Cs are common. The second one used to land while the first one's cleanup
    was joining the worker threads: its ``KeyboardInterrupt`` cut the join short, and the
    interpreter exited with the encoder thread still inside OpenCV's PNG encoder. When that
    thread then asked for the GIL back, Python ended it with ``pthread_exit``, whose forced
    unwind through OpenCV's C++ frames aborted the whole process ("terminate called without
    an active exception", SIGABRT instead of exit 130). The handler ignores both signals
    from the moment it raises, so no second one can land between the raise and the cleanup
    either. The cleanup is bounded (threads are joined with a timeout); SIGKILL still
    ends a stuck process. A SIGINT that was ignored on entry (a shell's background job)
    stays ignored. Only the main thread may set signal handlers; elsewhere this does
    nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        for s in signals:
            signal.signal(s, signal.SIG_IGN)
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    previous = {
        s: signal.signal(s, handler)
        for s in signals
        if not (s == signal.SIGINT and signal.getsignal(s) == signal.SIG_IGN)
    }
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


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
