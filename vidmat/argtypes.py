"""argparse value types shared by the commands and benchmarks, so a size reads the same everywhere."""

from __future__ import annotations

import argparse
import re
from typing import TypeVar

from vidmat.model.spec import MAX_INPUT_SIZE, MIN_INPUT_SIZE

_T = TypeVar("_T")

_WXH = re.compile(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*")

#: The largest side a frame size may have: 16384, H.264's and VP9's limit (8K is 7680).
#: 99999x99999 was taken, and each frame then asked for 30 GB.
MAX_SIDE = 16384


def size_wxh(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480)."""
    m = _WXH.fullmatch(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 640x480")
    w, h = int(m.group(1)), int(m.group(2))
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
        raise argparse.ArgumentTypeError(
            f"{text!r} is out of range: each side from 1 to {MAX_SIDE} pixels"
        )
    return w, h


def _once(values: list[_T]) -> list[_T]:
    """Each value once, in the order given: the benchmarks' lists are the rows they time,
    and '--sizes 64,64' timed one row twice."""
    return list(dict.fromkeys(values))


def size_list(text: str) -> list[tuple[int, int]]:
    """'640x480,1920x1080' -> [(640, 480), (1920, 1080)]."""
    return _once([size_wxh(item) for item in text.split(",") if item.strip()])


def int_list(text: str) -> list[int]:
    """'1,32,128' -> [1, 32, 128]."""
    try:
        return _once([int(t) for t in text.split(",") if t.strip()])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def float_list(text: str) -> list[float]:
    """'0,0.5' -> [0.0, 0.5]."""
    try:
        return _once([float(t) for t in text.split(",") if t.strip()])
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0,0.5, got {text!r}") from None


def on_off_list(text: str) -> list[bool]:
    """'on,off' -> [True, False]: the settings a benchmark times, each switch in turn."""
    words = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not words or any(w not in ("on", "off") for w in words):
        raise argparse.ArgumentTypeError(f"expected on, off or on,off, got {text!r}")
    return _once([w == "on" for w in words])


def positive_int(text: str) -> int:
    """A count that must be at least 1 (threads, batches, frames)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def model_size(text: str) -> int:
    """A model input side: U2-Net halves it five times, so a multiple of 32, at least 32."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of pixels, got {text!r}"
        ) from None
    if value < MIN_INPUT_SIZE or value % MIN_INPUT_SIZE:
        raise argparse.ArgumentTypeError(
            f"must be a multiple of 32, at least 32 (e.g. 192, 256, 320), got {value}"
        )
    if value > MAX_INPUT_SIZE:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_INPUT_SIZE}, the largest input the model runs, got {value}"
        )
    return value


def weights_name(text: str) -> str:
    """A --weights, --init or --anchor value: a registered name, 'default' or a path.

    An empty value (an unset shell variable, ``--weights ""``) used to mean the default
    weights, so a typo in a script silently ran other weights than it named.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "is empty; give a registered name, 'default' or a path to a weights file"
        )
    return text
