"""Bounded hand-over between threads that drops the OLDEST item instead of blocking.

Why not ``queue.Queue``: a live pipeline must never let latency grow. When the
consumer (the model) is slower than the producer (the camera), the frame worth
processing next is the newest one; a FIFO that blocks or grows would show the
user a picture from seconds ago. So ``put`` never blocks: it evicts the oldest
item and counts it, and the count becomes the "dropped frames" figure.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class QueueClosed(Exception):
    """Raised by :meth:`LatestQueue.get` once the queue is closed and empty."""


class LatestQueue(Generic[T]):
    """A thread-safe queue of at most ``maxsize`` items; a full ``put`` drops the oldest."""

    def __init__(self, maxsize: int = 1) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.put_count = 0
        self.dropped = 0
        self.max_depth = 0

    def put(self, item: T) -> T | None:
        """Add ``item``; returns the evicted oldest item (or None). Never blocks.

        Putting into a closed queue is silently ignored, so a producer racing a
        shutdown does not need its own lock.
        """
        evicted: T | None = None
        with self._cond:
            if self._closed:
                return None
            if len(self._items) >= self.maxsize:
                evicted = self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self.put_count += 1
            self.max_depth = max(self.max_depth, len(self._items))
            self._cond.notify()
        return evicted

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item; None after ``timeout`` seconds with nothing to take.

        Raises :class:`QueueClosed` when the queue is closed and drained, which
        is how consumers learn that the producer is done.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    raise QueueClosed
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._items.popleft()

    def get_nowait(self) -> T | None:
        with self._cond:
            return self._items.popleft() if self._items else None

    def close(self) -> None:
        """No more puts; wakes every waiting consumer."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def clear(self) -> int:
        """Drop what is waiting (not counted as dropped frames); returns how many."""
        with self._cond:
            n = len(self._items)
            self._items.clear()
            return n

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
