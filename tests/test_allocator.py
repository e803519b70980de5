"""glibc malloc tuning: a large freed block must stay in the heap for reuse, not be unmapped."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys

import pytest

from vidmat.allocator import OPT_OUT

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc" or not hasattr(ctypes.CDLL(None), "mallinfo2"),
    reason="needs glibc >= 2.33 (mallinfo2)",
)

# Run in a fresh interpreter: the tuning is process-wide and must start from glibc's defaults.
_PROBE = """
import ctypes
import numpy as np
from vidmat.allocator import keep_freed_memory

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
tuned = keep_freed_memory()
block = np.ones(64 << 20, np.uint8)
mapped_while_held = libc.mallinfo2().hblkhd
del block
heap_after_free = libc.mallinfo2().arena

from vidmat.benchmarks.report import environment  # what `vidmat bench` JSON records

print(int(tuned), mapped_while_held, heap_after_free, int(environment()["malloc_keeps_freed"]))
"""

BLOCK = 64 << 20


def _probe(**env: str) -> tuple[bool, int, int, bool]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != OPT_OUT}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return bool(int(out[0])), int(out[1]), int(out[2]), bool(int(out[3]))


def test_freed_block_stays_in_heap() -> None:
    tuned, mapped, heap_after_free, recorded = _probe()
    assert tuned and recorded
    assert mapped < BLOCK  # served from the heap, not from its own mapping
    assert heap_after_free >= BLOCK  # and still there after free, ready for the next frame


def test_opt_out_and_user_settings_leave_glibc_alone() -> None:
    for env in ({OPT_OUT: "1"}, {"MALLOC_TRIM_THRESHOLD_": "131072"}):
        tuned, mapped, _, recorded = _probe(**env)
        assert not tuned and not recorded
        assert mapped >= BLOCK  # glibc's default: a block this large gets its own mapping
