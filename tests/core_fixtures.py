"""Synthetic clips with known motion for the core tests (tiny, deterministic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

H, W = 48, 64


def background(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    """A textured static background (uint8 RGB) so frame differences mean something."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, size=(h // 4 + 1, w // 4 + 1, 3)).astype(np.uint8)
    return np.repeat(np.repeat(base, 4, 0), 4, 1)[:h, :w].copy()


def scene(
    x: int,
    y: int = 10,
    size: tuple[int, int] = (24, 16),
    bg: np.ndarray | None = None,
    colour: tuple[int, int, int] = (230, 60, 40),
    noise: float = 1.5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(frame uint8 (H,W,3), gt mask float (H,W)) with a 'person' rectangle at (x, y)."""
    bg = background() if bg is None else bg
    frame = bg.astype(np.float32).copy()
    gt = np.zeros(bg.shape[:2], np.float32)
    hh, ww = size
    gt[y : y + hh, x : x + ww] = 1.0
    frame[gt > 0] = colour
    rng = np.random.default_rng(seed)
    frame += rng.normal(0, noise, frame.shape)
    return np.clip(frame + 0.5, 0, 255).astype(np.uint8), gt


def flickery(gt: np.ndarray, seed: int, amount: float = 0.25) -> np.ndarray:
    """A per-frame prediction: soft, noisy, strongest noise at the edges."""
    rng = np.random.default_rng(seed)
    soft = np.clip(gt * 0.9 + 0.05, 0, 1)
    edge = np.zeros_like(gt)
    edge[1:-1, 1:-1] = (
        np.abs(np.diff(gt, axis=0))[:-1, 1:-1] + np.abs(np.diff(gt, axis=1))[1:-1, :-1]
    )
    edge = np.clip(edge + np.roll(edge, 1, 0) + np.roll(edge, 1, 1), 0, 1)
    noise = rng.normal(0, amount, gt.shape) * (0.3 + edge)
    return np.clip(soft + noise, 0, 1).astype(np.float32)


def t_alpha(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None]


def t_frame(f: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(f))


def flicker(seq: list[np.ndarray]) -> float:
    return float(np.mean([np.abs(a - b).mean() for a, b in zip(seq[1:], seq[:-1], strict=True)]))


def iou(a: np.ndarray, gt: np.ndarray) -> float:
    p, g = a >= 0.5, gt >= 0.5
    return float((p & g).sum() / max(1, (p | g).sum()))


def huge_png_header(path: Path, side: int = 60000) -> Path:
    """A 100-byte PNG whose header says side x side pixels: over OpenCV's 2^30-pixel
    limit, which it refuses with an exception (C++ assertion), not None."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    data = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data + chunk(b"IEND", b""))
    return path


def long_bmp_header(path: Path, width: int = 2_000_000) -> Path:
    """A BMP whose header says ``width`` x 1: over OpenCV's 2^20 side, refused as the
    pixel count is (a C++ assertion), where libpng refuses such a PNG first."""
    import struct

    row = (width * 3 + 3) // 4 * 4
    head = struct.pack("<2sIHHI", b"BM", (54 + row) & 0xFFFFFFFF, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, 1, 1, 24, 0, row & 0xFFFFFFFF, 2835, 2835, 0, 0)
    path.write_bytes(head + info + b"\0" * 100)
    return path
