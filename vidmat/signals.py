"""How vidmat stops when asked to: Ctrl-C (SIGINT), ``kill`` (SIGTERM) and a closed
terminal (SIGHUP) alike.

A job manager, ``timeout`` or ``kill`` sends SIGTERM, and a terminal window that closes or
an SSH session that drops sends SIGHUP; the default action of both ends the process on the
spot: a conversion would leave its temporary file behind, a live recording would never be
finalised and a training run would lose the steps since its last checkpoint. Inside
:func:`interrupt_once` they raise :class:`Terminated` instead, a ``KeyboardInterrupt``, so
every cleanup written for Ctrl-C runs for them too, and the CLI still exits with the
signal's conventional code (143, 129); the first signal stops the job and later ones are
ignored, so the stop of a job with worker threads cannot itself be cut short.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

#: The signals that stop a job cleanly (SIGHUP exists on POSIX only).
STOP_SIGNALS: tuple[int, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
#: Those a terminal sends to every process of its group (Ctrl-C, a hang-up); SIGTERM is
#: sent to one process, and is how a parent ends a child that does not stop by itself.
GROUP_SIGNALS: tuple[int, ...] = tuple(s for s in STOP_SIGNALS if s != signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C would be; the CLI exits 128 + the signal."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def what(self) -> str:
        """What the CLI says: "terminated" (kill) or "hung up" (closed terminal)."""
        return "terminated" if self.signum == signal.SIGTERM else "hung up"


def stop_exception(signum: int) -> KeyboardInterrupt:
    """The exception a stop signal raises: Ctrl-C's own, or :class:`Terminated`."""
    stop_signal_received(signum)
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def stop_signal_received(signum: int) -> None:
    """What every handler of a stop signal does first: after a hang-up the terminal is
    gone, and the output that still comes goes nowhere (:func:`silence_a_closed_terminal`)."""
    if signum == getattr(signal, "SIGHUP", None):
        silence_a_closed_terminal()


def silence_a_closed_terminal() -> None:
    """Point stdout and stderr at the null device where they were a terminal, which has
    hung up: every write to it fails (EIO), and a line printed while the job stops (a
    training run's "stopped at step N", live's "stopping...") would turn a clean stop
    into an OSError, exit code 1 and maybe a lost checkpoint. Files and pipes keep
    getting the output."""
    for stream in (sys.stdout, sys.stderr):
        try:
            fd = stream.fileno()
            if os.isatty(fd):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, fd)
                os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass  # no real file behind it (a test's capture): nothing to silence


def caught_signals() -> tuple[int, ...]:
    """:data:`STOP_SIGNALS` that are not ignored now. One ignored on entry stays ignored:
    SIGINT in a shell's background job, SIGHUP under ``nohup``, whose users asked for
    exactly that."""
    return tuple(s for s in STOP_SIGNALS if signal.getsignal(s) != signal.SIG_IGN)


def stopped(program: str, exc: KeyboardInterrupt) -> int:
    """Say how ``program`` was stopped ("interrupted", "terminated", "hung up") on one
    line and return the status it exits with (128 + the signal): one ending for ``vidmat``
    and the training tools, where each had its own copy."""
    signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
    what = exc.what if isinstance(exc, Terminated) else "interrupted"
    with contextlib.suppress(OSError):  # after a hang-up the terminal may be gone
        print(f"{program}: {what}", file=sys.stderr)
    return 128 + int(signum)


def ignore_stop_signals() -> None:
    """Ignore every later stop signal: the process is on its way out after the first.

    :func:`interrupt_once` puts the old handlers back when its block ends, but the exit
    still has work to do (the interpreter joins the model's thread pool), and a second
    Ctrl-C there cut that join short: a traceback, or the SIGABRT its docstring tells of.
    """
    if threading.current_thread() is threading.main_thread():
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)


@contextlib.contextmanager
def interrupt_once() -> Iterator[None]:
    """The first stop signal stops the work (SIGTERM and SIGHUP as :class:`Terminated`, a
    ``KeyboardInterrupt``); any later one, until the block is left, is ignored.

    Two quick Ctrl-Cs are common. The second one used to land while the first one's cleanup
    was joining the worker threads: its ``KeyboardInterrupt`` cut the join short, and the
    interpreter exited with the encoder thread still inside OpenCV's PNG encoder. When that
    thread then asked for the GIL back, Python ended it with ``pthread_exit``, whose forced
    unwind through OpenCV's C++ frames aborted the whole process ("terminate called without
    an active exception", SIGABRT instead of exit 130). The handler ignores both signals
    from the moment it raises, so no second one can land between the raise and the cleanup
    either. The cleanup is bounded (threads are joined with a timeout); SIGKILL still
    ends a stuck process. A signal ignored on entry stays ignored (:func:`caught_signals`).
    Only the main thread may set signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = caught_signals()

    def handler(signum: int, frame: Any) -> None:
        for s in signals:
            signal.signal(s, signal.SIG_IGN)
        raise stop_exception(signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@contextlib.contextmanager
def group_signals_held() -> Iterator[None]:
    """Processes started inside this block never get Ctrl-C (SIGINT) or a hang-up (SIGHUP),
    which a terminal sends to every process of its group: they inherit both blocked, past
    ``exec``. This process gets any that came meanwhile when the block ends.

    Why: ``train --workers`` spawns batch workers and Python's resource tracker, and a
    hang-up killed the tracker at once (Python protects it from SIGINT and SIGTERM only),
    so the stopping trainer printed a traceback for every semaphore it then released.
    The parent still stops them itself. SIGTERM is left alone: it is how a parent ends a
    child that does not stop by itself. POSIX only; elsewhere this does nothing.
    """
    held = GROUP_SIGNALS
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        # The tracker starts on a process's first semaphore, and Python unblocks SIGINT
        # around that start: it is started here, before any, and the mask put back.
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def stops_deferred() -> Iterator[None]:
    """A stop signal that comes inside the block acts when the block ends, as it would
    have acted before it: for a step that must not be cut in half. Ctrl-C while an old
    frame folder was swapped for the new one and deleted left a hidden copy of 45,000
    frames (or, between the two renames, no output at the name at all). Only the main
    thread may set signal handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)

    previous = {s: signal.signal(s, handler) for s in caught_signals()}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
        if received:
            signal.raise_signal(received[0])  # now, to the handler it would have met


@contextlib.contextmanager
def no_interrupts() -> Iterator[None]:
    """Ignore the stop signals while threads are joined and a recording is finalised
    (seconds): a second signal must not leave a half-written file."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
