"""``vidmat info``: what this installation can use, for bug reports and first checks."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

from vidmat import __version__


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="versions, compute devices and available weights",
        description="Print vidmat's version, its libraries, the compute devices torch sees and "
        "the weights that are installed. Paste this into bug reports.",
    )
    p.add_argument("--json", action="store_true", help="print the same as JSON")
    p.set_defaults(func=run)


def collect() -> dict[str, Any]:
    import av
    import cv2
    import numpy as np
    import torch

    from vidmat.core.engine import cpu_has_native_bf16
    from vidmat.model.spec import DEFAULT_WEIGHTS
    from vidmat.model.weights import available_weights
    from vidmat.ui import qt_version

    devices: list[dict[str, Any]] = [
        {
            "name": "cpu",
            "description": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "bf16_native": cpu_has_native_bf16(),
        }
    ]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append(
                {
                    "name": f"cuda:{i}",
                    "description": props.name,
                    "memory_gib": round(props.total_memory / 2**30, 1),
                    "capability": f"{props.major}.{props.minor}",
                }
            )
    weights = [
        {
            "name": spec.name,
            "default": spec.name == DEFAULT_WEIGHTS,
            "arch": spec.arch,
            "input_size": spec.input_size,
            "installed": present,
            # a damaged or emptied file read "installed" while every run refused it
            "intact": _intact(spec.sha256, path) if present else None,
            "path": str(path),
        }
        for spec, path, present in available_weights()
    ]
    return {
        "vidmat": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "pyav": av.__version__,
        # FFmpeg's release (8.1.2), not libavcodec's own number (62.28.102), which it showed
        "ffmpeg": getattr(av, "ffmpeg_version_info", None)
        or "libavcodec " + ".".join(str(v) for v in av.library_versions.get("libavcodec", ())),
        "qt": qt_version(),
        "devices": devices,
        "weights": weights,
    }


def _intact(sha256: str | None, path: Path) -> bool | None:
    """Whether a shipped file still has its published sha256 (None: none is published, or
    it cannot be read); its 2.3 MB hash in a few milliseconds."""
    from vidmat.model.weights import sha256_file

    if not sha256:
        return None
    try:
        return sha256_file(path) == sha256
    except OSError:
        return None


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key in (
        "vidmat",
        "python",
        "platform",
        "torch",
        "torch_cuda",
        "cudnn",
        "numpy",
        "opencv",
        "pyav",
        "ffmpeg",
        "qt",
    ):
        print(f"{key:>10}: {info[key] if info[key] is not None else '-'}")
    print("devices:")
    for d in info["devices"]:
        extra = (
            f", {d['memory_gib']} GiB, sm {d['capability']}"
            if "memory_gib" in d
            else f", {d['threads']} threads"
            + (
                ", bf16 in hardware (convert, demo and live use it; eval with --precision bf16)"
                if d["bf16_native"]
                else ""
            )
        )
        print(f"  {d['name']}: {d['description']}{extra}")
    print("weights:")
    for w in info["weights"]:
        state = (
            "MISSING"
            if not w["installed"]
            else "DAMAGED (fails its sha256 checksum; reinstall)"
            if w["intact"] is False
            else "installed"
        )
        default = " (default)" if w["default"] else ""
        print(f"  {w['name']}{default}: {w['arch']} at {w['input_size']}px, {state} — {w['path']}")
    print("  or any official U-2-Net checkpoint on disk: --weights /path/to/u2netp.pth")
    return 0
