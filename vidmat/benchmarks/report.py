"""One way to report a benchmark: a printed table and an optional JSON file."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vidmat.allocator import keep_freed_memory
from vidmat.io.files import atomic_write_text, is_stream, json_text


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Fixed-width text table; floats get 3 significant decimals."""
    if not rows:
        return "(no results)"
    cols = list(columns or rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 1000 else f"{v:.1f}"
        return "" if v is None else str(v)

    table = [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(t, widths, strict=True)) for t in table]
    return "\n".join(lines)


def random_weights(arch: str = "u2netp") -> str:
    """The name every benchmark records for untrained weights (speed does not depend on
    the values): one name, where convert's JSON said "random u2netp (speed only)" and
    live's "random-u2netp"."""
    return f"{arch}-random"


def environment() -> dict[str, Any]:
    """What the numbers were measured on: they mean little without it."""
    import torch

    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        # the machine's; each benchmark records the threads its rows ran with (torch's count
        # when the JSON is written is the last row's: 1 after --threads 2,1)
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
        # CPU timings are about a fifth slower without it (vidmat/allocator.py)
        "malloc_keeps_freed": keep_freed_memory(),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def report(
    name: str,
    rows: Sequence[Mapping[str, Any]],
    json_path: str | Path | None = None,
    columns: Sequence[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Print the table for ``rows`` and, when asked, write them with the environment as JSON."""
    print(format_table(rows, columns))
    payload: dict[str, Any] = {
        "benchmark": name,
        "environment": environment(),
        "results": list(rows),
    }
    if extra:
        payload.update(extra)
    if json_path:
        atomic_write_text(Path(json_path), json_text(payload, default=str))
        if not is_stream(Path(json_path)):  # not after the JSON, in the same stream
            print(f"wrote {json_path}")
    return payload
