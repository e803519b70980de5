"""Scoring a model on image/mask folders and on annotated video sequences.

The engine is the same object the applications use, so the model is run exactly
as users run it (preprocessing, input size). By default its low-resolution alpha,
optionally smoothed over time (vidmat.core.smoothing), is upsampled as
:func:`vidmat.core.engine.upsample_alpha` does (its logit, bilinearly): the model's
own quality, comparable with other models' published scores. With ``refine=True``
the alpha goes through the same PostProcessor as ``vidmat convert`` (temporal
smoothing on its working grid, guided-filter upsampling, tone snap), so the scores
are those of the matte convert writes.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from vidmat.errors import VidmatError
from vidmat.io.files import require_folder
from vidmat.io.formats import IMAGE_SUFFIXES
from vidmat.train import metrics
from vidmat.train.data import (
    close_neck_gaps,
    pair_folders,
    read_pair,
    spread,
)

if TYPE_CHECKING:
    from vidmat.core.engine import Engine
    from vidmat.core.postprocess import PostProcessor

#: (frames uint8 (N,H,W,3)) -> low-res alpha (N,1,s,s) tensor in [0,1]
LowresFn = Callable[[np.ndarray], torch.Tensor]
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Scores:
    """Per-item metrics, aggregated by :meth:`summary`."""

    iou: list[float] = field(default_factory=list)
    mae: list[float] = field(default_factory=list)
    bf: list[float] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def add(
        self, pred: np.ndarray, gt: np.ndarray, name: str = "", valid: np.ndarray | None = None
    ) -> None:
        self.put(name, *measure(pred, gt, valid))

    def put(self, name: str, iou: float, mae: float, bf: float) -> None:
        """One item's scores, measured elsewhere (e.g. in a worker thread)."""
        self.iou.append(iou)
        self.mae.append(mae)
        self.bf.append(bf)
        self.names.append(name)

    def items(self) -> list[dict]:
        """One row per scored item, so a failure can be traced to its file."""
        return [
            {"image": n, "iou": i, "mae": m, "boundary_f": b}
            for n, i, m, b in zip(self.names, self.iou, self.mae, self.bf, strict=True)
        ]

    def summary(self) -> dict[str, float]:
        return {
            "iou": float(np.mean(self.iou)),
            "mae": float(np.mean(self.mae)),
            "boundary_f": float(np.mean(self.bf)),
            "n": len(self.iou),
        }


def measure(
    pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None
) -> tuple[float, float, float]:
    """IoU@0.5, MAE and boundary F of one alpha against its mask."""
    return (
        metrics.iou(pred, gt, valid=valid),
        metrics.mae(pred, gt, valid=valid),
        metrics.boundary_f(pred, gt, valid=valid),
    )


def in_order(fn: Callable[[T], R], items: Sequence[T], workers: int = 1) -> Iterator[R]:
    """``map(fn, items)`` on ``workers`` threads, results in order, at most 2 per thread
    waiting: the engine on a CPU runs two calls side by side faster than one call on
    both cores (see :attr:`vidmat.core.settings.EngineConfig.workers`), and reading and
    scoring images overlap with the model too."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="vidmat-eval") as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def upsample_lowres(low: torch.Tensor, h: int, w: int) -> np.ndarray:
    """A LowresFn's alpha at (h, w) as float numpy (N,h,w): the model's own matte, unrefined."""
    from vidmat.core.engine import upsample_alpha

    return upsample_alpha(low.float(), h, w)[:, 0].cpu().numpy()


def _postprocessor(smoothing: float = 0.0, lookahead: int = 0) -> PostProcessor:
    """Convert's matte path (alpha only: no despill; the mask view composites nothing)."""
    from vidmat.core.postprocess import PostProcessor
    from vidmat.core.settings import PostprocessConfig

    cfg = PostprocessConfig(smoothing=smoothing, lookahead=lookahead, despill=False)
    return PostProcessor(cfg, background="mask")


def _alpha_np(alpha: torch.Tensor) -> np.ndarray:
    return alpha[0, 0].float().cpu().numpy()


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from vidmat.progress import progress_bar

    return progress_bar(total=total, desc=desc, unit="img", disable=not enabled)


def evaluate_images(
    lowres: LowresFn,
    images_dir: Path,
    masks_dir: Path,
    limit: int | None = None,
    progress: bool = True,
    refine: bool = False,
    ignore_gaps: bool = False,
    workers: int = 1,
) -> tuple[dict[str, float], list[dict]]:
    """Mean IoU@0.5, MAE and boundary F over every image that has a mask, and per image.

    The per-image rows are what a mean hides: a handful of failures (a missed limb, a
    background object taken for the person) can cost more than every edge together.
    ``refine``: score the alpha after convert's guided-filter refinement instead of
    the upsampled model output. ``ignore_gaps``: leave out the pixels that
    :func:`gap_pixels` finds, where an automatic parser's mask is unreliable.
    ``workers``: images scored side by side (``lowres`` must allow calls from several
    threads, as the engine on a CPU does).
    """
    post = _postprocessor() if refine else None
    pairs = image_pairs(images_dir, masks_dir, limit)
    scores = Scores()

    def score(pair: tuple[Path, Path]) -> tuple[str, float, float, float]:
        ip, mp = pair
        img, mask = read_pair(ip, mp)
        gt = mask > 127
        low = lowres(img[None])
        pred = (
            upsample_lowres(low, *gt.shape)[0] if post is None else _alpha_np(post.refine(img, low))
        )
        return (ip.name, *measure(pred, gt, valid=~gap_pixels(mask) if ignore_gaps else None))

    with _progress(len(pairs), images_dir.parent.name or "images", progress) as bar:
        for row in in_order(score, pairs, workers):
            scores.put(*row)
            bar.update(1)
            bar.set_postfix(iou=f"{np.mean(scores.iou):.3f}")
    return scores.summary(), scores.items()


def gap_pixels(mask: np.ndarray) -> np.ndarray:
    """Background pixels that closing the mask's gaps turns into person.

    VITON's masks come from an automatic parser whose neck fill is incomplete: a gap
    between face and collar is labelled background although it is the person's neck,
    and so are holes in some garments. Training closes them (``--close-gaps``); scored
    as given, a model is marked wrong for seeing the neck. The same closing also fills
    real background enclosed by an arm, so these pixels are left out of the score
    (counted neither for nor against) rather than relabelled.
    """
    return (close_neck_gaps(mask) > 127) & (mask <= 127)


def image_pairs(
    images_dir: Path, masks_dir: Path, limit: int | None = None
) -> list[tuple[Path, Path]]:
    """The image/mask pairs :func:`evaluate_images` scores: all, or ``limit`` spread evenly."""
    pairs = pair_folders(images_dir, masks_dir)
    if limit:
        pairs = [pairs[i] for i in spread(len(pairs), limit)]
    return pairs


def scored_names(
    images_dir: Path | None, masks_dir: Path | None, limit: int | None, root: Path | None
) -> set[str]:
    """The names a run's ``--json`` will list its scores under (``img.png``, or
    ``sequence/frame.png``), known before any scoring: an ``--against`` result that shares
    none is refused up front instead of after the whole set was scored."""
    if root is not None:
        return {
            f"{s.name}/{ip.name}"
            for s in find_sequences(root)
            for ip, _ in pair_folders(s / "images", s / "masks")
        }
    assert images_dir is not None and masks_dir is not None
    return {ip.name for ip, _ in image_pairs(images_dir, masks_dir, limit)}


def find_sequences(root: Path) -> list[Path]:
    """Sequence folders under ``root``: each holds images/ and masks/."""
    require_folder(root, "sequence root")
    for p in sorted(root.iterdir()):  # half a sequence was left out without a word
        has = [(p / k).is_dir() for k in ("images", "masks")]
        if any(has) and not all(has):
            missing = "masks" if has[0] else "images"
            raise VidmatError(f"sequence {p} has no {missing}/ folder; add it or move {p} out.")
    seqs = sorted(p for p in root.iterdir() if (p / "images").is_dir() and (p / "masks").is_dir())
    if not seqs:
        if (root / "images").is_dir() and (root / "masks").is_dir():
            return [root]
        raise VidmatError(f"no sequences (folders with images/ and masks/) under {root}.")
    return seqs


def evaluate_sequence(
    lowres: LowresFn,
    seq: Path,
    smoothing: float = 0.0,
    lookahead: int = 0,
    batch: int = 4,
    bar: Any = None,
    refine: bool = False,
) -> dict[str, Any]:
    """Scores over the frames (and each frame's, under "frames") plus flicker and lag.

    ``refine``: the frames go through convert's PostProcessor (its smoothing with the
    same strength and look-ahead, then guided-filter refinement), not bilinear upsampling.
    """
    pairs = pair_folders(seq / "images", seq / "masks")
    # read_pair refuses a mask of another size than its frame (upsampled to the mask's,
    # the prediction was scored silently; with --refine, a traceback), and frames of
    # several sizes are a sequence no smoothing or flicker can follow
    read = [read_pair(ip, mp) for ip, mp in pairs]
    frames = [img for img, _ in read]
    gts = [m > 127 for _, m in read]
    h, w = gts[0].shape
    for (ip, _), g in zip(pairs, gts, strict=True):
        if g.shape != (h, w):
            raise VidmatError(
                f"{ip} is {g.shape[1]}x{g.shape[0]} px and {pairs[0][0].name} {w}x{h}: the "
                f"frames of a sequence ({seq.name}) must all be one size."
            )
    lows = []
    for i in range(0, len(frames), batch):
        lows.append(lowres(np.stack(frames[i : i + batch])).float().cpu())
        if bar is not None:
            bar.update(len(frames[i : i + batch]))
    low = torch.cat(lows, 0)
    if refine:
        post = _postprocessor(smoothing, lookahead)
        outs = [o for i, f in enumerate(frames) for o in post.push(f, low[i : i + 1])]
        preds = [_alpha_np(o.alpha) for o in outs + post.flush()]
    else:
        if smoothing > 0:
            from vidmat.core.smoothing import smooth_sequence

            low = smooth_sequence(low, torch.from_numpy(np.stack(frames)), smoothing, lookahead)
        preds = [upsample_lowres(low[i : i + 1], h, w)[0] for i in range(len(frames))]
    scores = Scores()
    for (ip, _), p, g in zip(pairs, preds, gts, strict=True):
        scores.add(p, g, ip.name)
    out: dict[str, Any] = dict(scores.summary())
    out["frames"] = scores.items()
    out["flicker"] = metrics.flicker(preds, gts)
    out["flicker_floor"] = metrics.flicker(_through_size(gts, (low.shape[-2], low.shape[-1])), gts)
    # One frame has no lag to find (nor flicker): it was 0, and pulled the mean over the
    # sequences toward it (1.0 over two sequences, 0.7 with a one-frame third).
    out["lag"] = metrics.lag(preds, gts)[0] if len(preds) > 1 else math.nan
    return out


def _through_size(gts: Sequence[np.ndarray], size: tuple[int, int]) -> list[np.ndarray]:
    """The ground truth as a perfect model at ``size`` would give it back (area down, up).

    Its flicker is the floor of the metric at that input size: a soft edge that moves with
    the person changes pixels whose ground truth did not, so even a perfect mask scores it.
    """
    h, w = gts[0].shape
    out = []
    for g in gts:
        small = torch.from_numpy(g.astype(np.float32))[None, None]
        small = F.interpolate(small, size=size, mode="area")
        out.append(upsample_lowres(small, h, w)[0])
    return out


def evaluate_sequences(
    lowres: LowresFn,
    root: Path,
    smoothing: float = 0.0,
    lookahead: int = 0,
    progress: bool = True,
    refine: bool = False,
) -> tuple[dict[str, float], list[dict]]:
    """Scores per sequence and overall (IoU/MAE/boundary F over all frames, flicker/lag per clip)."""
    seqs = find_sequences(root)
    n_total = sum(
        len([p for p in (s / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES])
        for s in seqs
    )
    rows = []
    with _progress(n_total, root.name, progress) as bar:
        for s in seqs:
            r = evaluate_sequence(lowres, s, smoothing, lookahead, bar=bar, refine=refine)
            rows.append({"sequence": s.name, **r})
    n = sum(r["n"] for r in rows)
    overall = {k: float(sum(r[k] * r["n"] for r in rows) / n) for k in ("iou", "mae", "boundary_f")}
    overall["flicker"] = _mean_of_known([r["flicker"] for r in rows])
    overall["flicker_floor"] = _mean_of_known([r["flicker_floor"] for r in rows])
    overall["lag"] = _mean_of_known([float(r["lag"]) for r in rows])
    overall["n"] = n
    return overall, rows


def _mean_of_known(values: list[float]) -> float:
    """The mean of the values that are not NaN (a one-frame sequence has no flicker);
    NaN, without numpy's empty-slice warning, when none is known."""
    known = [v for v in values if not math.isnan(v)]
    return float(np.mean(known)) if known else float("nan")


def engine_lowres(engine: Engine) -> LowresFn:
    """Adapter: the engine's model-resolution alpha for a uint8 batch."""

    def fn(frames: np.ndarray) -> torch.Tensor:
        return engine.predict_lowres(frames)

    return fn


def worst(items: Sequence[dict], n: int = 5) -> list[dict]:
    """The ``n`` lowest-IoU rows, worst first (ties keep their folder order)."""
    return sorted(items, key=lambda r: r["iou"])[:n]


#: Columns counted in frames. A sequence's lag is a whole frame shift (an int) and the
#: "all" row's is the mean over sequences (a float), which the table printed as ``1`` above
#: ``0.500``; one decimal on every row reads as frames and shows a mean's half frame.
_FRAME_COLUMNS = ("lag",)


def summarize_rows(rows: Sequence[dict]) -> list[dict]:
    """Rows for the printed table (numbers rounded for reading, JSON keeps full precision)."""

    def cell(key: str, v: Any) -> Any:
        if key in _FRAME_COLUMNS and isinstance(v, int | float) and not isinstance(v, bool):
            return f"{v:.1f}"
        return round(v, 4) if isinstance(v, float) else v

    return [{k: cell(k, v) for k, v in r.items()} for r in rows]
