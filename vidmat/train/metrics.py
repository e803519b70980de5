"""Evaluation metrics on numpy arrays (pure numpy + one OpenCV distance transform).

Conventions: ``pred`` is a soft alpha in [0, 1], ``gt`` a boolean (or 0/1) mask
of the same shape. IoU and boundary F threshold ``pred`` at 0.5. Both-empty
cases count as perfect (a frame with no person predicted as empty is right).
``valid`` (optional, boolean, same shape) marks the pixels that are scored at all:
pixels whose label is known to be unreliable are left out rather than counted for
or against the model (like the "void" label of VOC and DAVIS).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np


def _bin(a: np.ndarray, thr: float = 0.5) -> np.ndarray:
    a = np.asarray(a)
    return a > 0 if a.dtype == bool else a >= thr


def _scored(valid: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | bool:
    if valid is None:
        return True
    v = np.asarray(valid).astype(bool)
    if v.shape != shape:
        raise ValueError(f"valid mask is {v.shape}, prediction is {shape}")
    return v


def iou(
    pred: np.ndarray, gt: np.ndarray, thr: float = 0.5, valid: np.ndarray | None = None
) -> float:
    """Intersection over union of ``pred >= thr`` and ``gt`` (over ``valid`` pixels)."""
    p, g = _bin(pred, thr), np.asarray(gt).astype(bool)
    v = _scored(valid, p.shape)
    p, g = p & v, g & v
    union = np.logical_or(p, g).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(p, g).sum() / union)


def mae(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean absolute error between the soft alpha and the 0/1 ground truth (over ``valid``)."""
    err = np.abs(np.asarray(pred, np.float64) - np.asarray(gt, np.float64))
    if valid is None:
        return float(np.mean(err))
    v = _scored(valid, err.shape)
    return float(err[v].mean()) if np.any(v) else 0.0


def boundary(mask: np.ndarray) -> np.ndarray:
    """One-pixel inner boundary: mask pixels with a 4-neighbour outside the mask.

    The image's frame is no boundary, as in DAVIS's ``seg2bmap``: a person cut off by the
    frame (a webcam's torso) had the frame's edge counted as contour, so a matte of the
    whole frame scored F 0.57 against a lower-half label, where DAVIS scores 0.
    """
    m = np.asarray(mask).astype(bool)
    padded = np.pad(m, 1, mode="edge")
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return m & ~inner


def _within(src: np.ndarray, target: np.ndarray, tol: float) -> np.ndarray:
    """Which ``src`` pixels lie within ``tol`` (Euclidean) of a ``target`` pixel."""
    if not target.any():
        return np.zeros_like(src)
    dist = cv2.distanceTransform((~target).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return src & (dist <= tol)


def boundary_f(
    pred: np.ndarray,
    gt: np.ndarray,
    tol: float | None = None,
    thr: float = 0.5,
    valid: np.ndarray | None = None,
) -> float:
    """Boundary F-measure (DAVIS 'F'): boundary precision/recall within ``tol`` pixels.

    ``tol`` defaults to DAVIS's 0.8 % of the image diagonal, rounded up as DAVIS's own
    code does (at least 1 px). Boundary pixels outside ``valid``, or beside a pixel
    outside it, are not counted on either side: the rim of an ignored gap is where the
    label's boundary runs, and a prediction filling the gap was marked down there. They
    are still there to be matched: a prediction whose edge ran a pixel outside the rim
    had nothing within reach and scored below one that ignored nothing (0.92 against 1).
    """
    p_all, g_all = boundary(_bin(pred, thr)), boundary(np.asarray(gt).astype(bool))
    v = _scored(valid, p_all.shape)
    if not isinstance(v, bool):
        vp = np.pad(v, 1, constant_values=True)
        v = v & vp[:-2, 1:-1] & vp[2:, 1:-1] & vp[1:-1, :-2] & vp[1:-1, 2:]
    p, g = p_all & v, g_all & v
    if tol is None:
        h, w = p.shape
        tol = max(1.0, math.ceil(0.008 * np.hypot(h, w)))
    np_, ng = int(p.sum()), int(g.sum())
    if np_ == 0 and ng == 0:
        return 1.0
    if np_ == 0 or ng == 0:
        return 0.0
    precision = _within(p, g_all, tol).sum() / np_
    recall = _within(g, p_all, tol).sum() / ng
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def flicker(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> float:
    """Mean |alpha_t - alpha_{t-1}| over pixels whose ground truth did not change.

    Change that the ground truth also shows is motion, not flicker, so it is
    excluded; what is left is noise the viewer sees as shimmering. Averaged over
    frame pairs (each pair weighted equally). NaN for fewer than two frames.
    """
    vals = []
    for t in range(1, len(preds)):
        g0, g1 = np.asarray(gts[t - 1]).astype(bool), np.asarray(gts[t]).astype(bool)
        still = g0 == g1
        if not still.any():
            continue
        d = np.abs(np.asarray(preds[t], np.float64) - np.asarray(preds[t - 1], np.float64))
        vals.append(float(d[still].mean()))
    return float(np.mean(vals)) if vals else float("nan")


def lag(
    preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], max_lag: int = 3
) -> tuple[int, list[float]]:
    """Frames by which the predicted mask trails the ground truth.

    For each shift k in [-max_lag, max_lag] the mean IoU of ``pred[t]`` against
    ``gt[t - k]`` is computed over the frames where both exist; the lag is the
    shift with the best IoU (positive = the mask arrives late, as a too-strong
    temporal filter makes it). Ties go to the smallest |k|. Returns the lag and
    the IoU per shift (index 0 is k = -max_lag).
    """
    n = len(preds)
    scores: list[float] = []
    for k in range(-max_lag, max_lag + 1):
        vals = [iou(preds[t], gts[t - k]) for t in range(max(0, k), min(n, n + k))]
        scores.append(float(np.mean(vals)) if vals else float("nan"))
    arr = np.array(scores)
    best = np.nanmax(arr)
    ks = [k for k, s in zip(range(-max_lag, max_lag + 1), scores, strict=True) if s == best]
    return min(ks, key=abs), scores
