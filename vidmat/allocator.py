"""Keep freed memory in the process heap on glibc: reusing it is faster than returning it.

PyTorch's CPU allocator is plain ``malloc``, and glibc serves every large block (a
frame's activations are tens of MiB) from a fresh ``mmap`` and unmaps it on ``free``.
Each inference or training step so page-faults its working memory in again, zero-filled,
from the kernel: on the 2-core sandbox this project is built on that was a fifth of a
320-px CPU inference and a third of a 256-px training step, all of it system time (the
README's "GPU and CPU" has the measurements). With ``mmap`` for blocks turned off and the
heap never trimmed, freed blocks are reused as they are. The cost is that the process
holds its peak memory until it exits, which a tool working on one stream reaches within a
few frames anyway; glibc still falls back to ``mmap`` when the heap cannot grow.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys

# <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_NEVER = 2**31 - 1  # bytes of free heap top kept; mallopt takes an int

OPT_OUT = "VIDMAT_SYSTEM_MALLOC"
# glibc's own tunables: whoever set one has chosen, and we leave malloc alone.
_GLIBC_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


@functools.cache
def keep_freed_memory() -> bool:
    """Tune glibc malloc once at start-up; True when the settings took effect.

    Cached, so that benchmarks can record whether their timings had it without touching
    malloc again.
    """
    if os.environ.get(OPT_OUT) or any(name in os.environ for name in _GLIBC_SETTINGS):
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_NEVER))
