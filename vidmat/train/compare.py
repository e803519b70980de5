"""Is one weights file better than another on a validation set, or is it noise?

    vidmat eval --images ../shared/data/val/ccp/images --masks ../shared/data/val/ccp/masks \\
        --weights NEW.safetensors --against old_ccp.json
    python -m vidmat.train.compare old_ccp.json new_ccp.json
    python -m vidmat.train.compare old_results/ new_results/

Both read the per-image scores that ``vidmat eval --json`` writes, pair them by
image (or ``sequence/frame``) name and report the mean paired difference with a
95 % bootstrap interval, how many items got better or worse, and the items that
moved most. Given two folders, every result in the new one (``320/ccp.json``, ...)
is paired with the old one's of the same relative name, one line each, and the
ship rule the weights log declared in session 50 is read off them: a candidate
may replace the shipped file when its IoU is worse beyond the interval on none of
the sets and better beyond it on at least one (exit status 0 when it passes, 1
when it does not), so the verdict is not left to a hand-kept script.

The sets here are small (val/ccp is 100 photographs): one image gaining
0.04 moves the mean by 0.0004, and two fine-tunes a seed apart differ by more than
the gaps the ship rule was deciding on, so a difference whose interval spans zero
is not evidence either way.

Frames of a video are not independent draws (neighbours are nearly the same
picture), so for sequences the bootstrap resamples blocks of consecutive frames
within each sequence instead of single frames. On DAVIS (sessions 48-49's files
against the shipped one) the interval widened from single frames to blocks of 10 by
1.2-1.8 times and no further at 20; longer blocks leave too few per sequence.
Each sequence keeps its share in every resample, so the interval says whether two
files differ on these sequences beyond their frames' noise, not how they would
differ on other videos (DAVIS here is four).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidmat.errors import VidmatError
from vidmat.io.files import require_file
from vidmat.train.tools import run_tool

#: Fewest images, or blocks of frames, a verdict is drawn from.
MIN_UNITS = 8
#: Items whose score moved by less than this count as unchanged in better/worse.
TIE = 0.002
#: Consecutive frames resampled together when the items are video frames.
FRAME_BLOCK = 10


@dataclass(frozen=True)
class Item:
    """One scored image or frame; ``group`` is its sequence ("" for a photo)."""

    name: str
    group: str
    scores: dict[str, float]


@dataclass
class Comparison:
    """Paired difference new - old of one metric over the items both results scored."""

    metric: str
    n: int
    n_old: int
    n_new: int
    old: float
    new: float
    diff: float
    ci: tuple[float, float]
    better: int
    worse: int
    unit: str
    moved: list[tuple[str, float]] = field(default_factory=list)
    #: What the bootstrap resampled: images, or blocks of frames over all sequences.
    units: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "n": self.n,
            "old": self.old,
            "new": self.new,
            "diff": self.diff,
            "ci95": list(self.ci),
            "better": self.better,
            "worse": self.worse,
            "unit": self.unit,
            "units": self.units,
            "verdict": self.verdict,
            "moved": [{"image": k, "diff": v} for k, v in self.moved],
        }

    @property
    def verdict(self) -> str:
        """ "better", "worse" (beyond the interval; MAE's better is lower), "no clear
        difference", or "too few images to tell" / "too few blocks to tell" under
        :data:`MIN_UNITS` resampled units (two sequences of ten frames are two blocks:
        every resample was the same, an interval of width zero that called any change
        better)."""
        lo, hi = self.ci
        if self.units < MIN_UNITS:
            return f"too few {'blocks' if 'block' in self.unit else 'images'} to tell"
        if lo > 0 or hi < 0:
            return "better" if (lo > 0) == (self.metric != "mae") else "worse"
        return "no clear difference"

    def describe(self) -> str:
        """One line."""
        lo, hi = self.ci
        verdict = self.verdict
        whole = self.n == self.n_old == self.n_new
        partial = "" if whole else f" (of {self.n_old} old, {self.n_new} new)"
        return (
            f"{self.metric} {self.old:.4f} -> {self.new:.4f}: {self.diff:+.4f} "
            f"(95% interval {lo:+.4f} .. {hi:+.4f}, {self.unit}; {verdict}); "
            f"{self.n} paired{partial}, {self.better} better, {self.worse} worse by more than {TIE}"
        )


def items_of(result: dict[str, Any]) -> list[Item]:
    """The per-image (per-frame) scores of a ``vidmat eval --json`` result."""
    if not isinstance(result, dict):
        raise VidmatError("not a `vidmat eval --json` result.")
    keys = ("iou", "mae", "boundary_f")
    out: list[Item] = []
    try:
        if "images" in result:
            for r in result["images"]:
                out.append(Item(str(r["image"]), "", {k: float(r[k]) for k in keys if k in r}))
        elif "sequences" in result:
            for s in result["sequences"]:
                for f in s["frames"]:
                    name = f"{s['sequence']}/{f['image']}"
                    out.append(
                        Item(name, str(s["sequence"]), {k: float(f[k]) for k in keys if k in f})
                    )
        else:
            raise VidmatError(
                "it has no per-image scores ('images' or 'sequences'); write it with "
                "`vidmat eval --json`."
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise VidmatError(f"its per-image scores are malformed ({exc!r}).") from None
    return out


def load_result(path: Path) -> dict[str, Any]:
    """A ``vidmat eval --json`` file, with one clear sentence when it is not one."""
    require_file(path, "eval result")
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VidmatError(f"{path} is not a readable JSON file ({exc}).") from None
    try:
        items_of(data)
    except VidmatError as exc:
        raise VidmatError(f"{path} cannot be compared: {exc}") from None
    return data


def _resample_means(
    diffs: np.ndarray, groups: Sequence[str], block: int, rounds: int, seed: int
) -> tuple[np.ndarray, int]:
    """Bootstrap means of ``diffs``, resampled by blocks of consecutive items per group,
    and how many blocks there are to draw from over all groups.

    Each group keeps its own number of blocks, so a resample has the set's make-up
    (a long sequence is not replaced by copies of a short one). Photographs are one
    group ("") in blocks of 1: each image resampled singly.
    """
    rng = np.random.default_rng(seed)
    total = np.zeros(rounds)
    count = np.zeros(rounds)
    blocks = 0
    order = np.asarray(groups)
    for g in dict.fromkeys(groups):
        d = diffs[order == g]
        starts = np.arange(0, len(d), block)
        sums = np.add.reduceat(d, starts)
        sizes = np.diff(np.append(starts, len(d)))
        pick = rng.integers(0, len(sums), size=(rounds, len(sums)))
        total += sums[pick].sum(axis=1)
        count += sizes[pick].sum(axis=1)
        blocks += len(sums)
    return total / count, blocks


def compare_items(
    old: Sequence[Item],
    new: Sequence[Item],
    metric: str = "iou",
    *,
    block: int = FRAME_BLOCK,
    rounds: int = 10_000,
    seed: int = 0,
    top: int = 3,
) -> Comparison:
    """Paired comparison of ``metric`` over the items present in both, by name."""
    if block < 1:
        raise VidmatError("the frame block must be at least 1.")
    before = {i.name: i for i in old}
    common = [
        i
        for i in new
        if i.name in before and metric in i.scores and metric in before[i.name].scores
    ]
    if not common:
        raise VidmatError(
            f"the two results share no scored images (no {metric} under the same names): "
            "were they made on the same data?"
        )
    a = np.array([before[i.name].scores[metric] for i in common])
    b = np.array([i.scores[metric] for i in common])
    d = b - a
    groups = [i.group for i in common]
    frames = any(groups)
    means, units = _resample_means(d, groups, block if frames else 1, rounds, seed)
    lo, hi = np.percentile(means, [2.5, 97.5])
    sign = -1.0 if metric == "mae" else 1.0
    order = np.argsort(np.abs(d))[::-1][:top]
    return Comparison(
        metric=metric,
        n=len(common),
        n_old=len(old),
        n_new=len(new),
        old=float(a.mean()),
        new=float(b.mean()),
        diff=float(d.mean()),
        ci=(float(lo), float(hi)),
        better=int((sign * d > TIE).sum()),
        worse=int((sign * d < -TIE).sum()),
        unit=f"blocks of {block} frames" if frames else "images resampled",
        moved=[(common[k].name, float(d[k])) for k in order if d[k] != 0],
        units=units,
    )


def compare_results(
    old: dict[str, Any], new: dict[str, Any], metrics: Sequence[str] = ("iou", "mae")
) -> list[Comparison]:
    """One :class:`Comparison` per metric between two ``vidmat eval --json`` results."""
    kinds = ["sequences" if "sequences" in r else "images" for r in (old, new)]
    if kinds[0] != kinds[1]:  # said as eval --against says it, not "share no images"
        raise VidmatError(
            f"the first result scored {kinds[0]} and the second {kinds[1]}; compare results "
            "of the same kind."
        )
    a, b = items_of(old), items_of(new)
    return [compare_items(a, b, m) for m in metrics]


#: Settings of a result that change its scores; a comparison across them is said.
SETTINGS = (
    "size",
    "precision",
    "smoothing",
    "lookahead",
    "refine",
    "ignore_mask_gaps",
    "tta",
    "zoom",
)


def setting_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``"size 320 -> 256"`` for each scoring setting the two results differ in.

    Comparing across sizes is a fair question (what 320 costs against 256), but one
    made by mistake reads as a difference between weights, so it is named.
    """
    return [
        f"{k} {old[k]} -> {new[k]}" for k in SETTINGS if k in old and k in new and old[k] != new[k]
    ]


def report(comparisons: Sequence[Comparison], against: str, changes: Sequence[str] = ()) -> str:
    """The lines `vidmat eval --against` prints."""
    lines = [
        f"against {against}" + (f" (scored with {', '.join(changes)})" if changes else "") + ":"
    ]
    for c in comparisons:
        lines.append("  " + c.describe())
    moved = comparisons[0].moved if comparisons else []
    if moved:
        lines.append(
            f"  moved most ({comparisons[0].metric}): "
            + ", ".join(f"{k} {v:+.3f}" for k, v in moved)
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class SetComparison:
    """One result of a folder against the old folder's result of the same name."""

    name: str
    iou: Comparison
    mae: Comparison
    changes: list[str]


def result_files(folder: Path) -> dict[str, Path]:
    """The ``*.json`` files under ``folder`` by relative name (``320/ccp``)."""
    if not Path(folder).is_dir():
        raise VidmatError(f"{folder} is not a folder of `vidmat eval --json` results.")
    found = [
        Path(root, f)
        for root, _, files in os.walk(folder, followlinks=True)  # rglob skips linked folders
        for f in files
        if f.endswith(".json")
    ]
    return {p.relative_to(folder).with_suffix("").as_posix(): p for p in sorted(found)}


def compare_folders(old: Path, new: Path) -> tuple[list[SetComparison], list[str], list[str]]:
    """Each result in ``new`` against ``old``'s of the same name; the names of ``new``'s
    results that ``old`` has no counterpart for (not compared); and of ``old``'s that
    ``new`` lacks, which the ship rule does not pass over (a candidate never scored on
    DAVIS passed "worse on none")."""
    before, after = result_files(old), result_files(new)
    if not after:
        raise VidmatError(f"{new} holds no .json results.")
    rows: list[SetComparison] = []
    unpaired: list[str] = []
    for name, path in after.items():
        if name not in before:
            unpaired.append(name)
            continue
        a, b = load_result(before[name]), load_result(path)
        iou, mae = compare_results(a, b)
        rows.append(SetComparison(name, iou, mae, setting_changes(a, b)))
    if not rows:
        raise VidmatError(
            f"no result in {new} has a counterpart of the same name in {old} "
            f"(they hold {', '.join(after)} and {', '.join(before) or 'nothing'})."
        )
    missing = [name for name in before if name not in after]
    return rows, unpaired, missing


def ship_rule(rows: Sequence[SetComparison], missing: Sequence[str] = ()) -> tuple[bool, str]:
    """The rule of session 50 on IoU: worse beyond the interval on no set, better
    beyond it on at least one, and scored on every set the baseline was, with the same
    settings (size, precision, refinement...). Differences inside the intervals decide
    nothing."""
    worse = [r.name for r in rows if r.iou.verdict == "worse"]
    better = [r.name for r in rows if r.iou.verdict == "better"]
    unjudged = [r.name for r in rows if r.iou.units < MIN_UNITS]
    unlike = [f"{r.name} ({', '.join(r.changes)})" for r in rows if r.changes]
    if unlike:  # a gain from 64 -> 96 px or --refine passed as the weights' own
        return False, f"fails: scored with other settings than the baseline on {'; '.join(unlike)}"
    if worse:
        return False, f"fails: IoU worse beyond the interval on {', '.join(worse)}"
    if unjudged:  # a set too small to judge could hide a regression: no pass over it
        return False, f"fails: too few images or blocks to judge {', '.join(unjudged)}"
    if missing:  # as could a set not scored at all
        return False, f"fails: no result for {', '.join(missing)}, which the baseline has"
    if not better:
        return False, "fails: IoU better beyond the interval on no set"
    return (
        True,
        f"passes: IoU worse on none, better on {len(better)} of {len(rows)} ({', '.join(better)})",
    )


def folder_report(
    rows: Sequence[SetComparison], unpaired: Sequence[str], against: str, verdict: str
) -> str:
    """The table and the rule's ``verdict`` that ``compare OLD_DIR NEW_DIR`` prints."""
    from vidmat.benchmarks.report import format_table

    def cell(c: Comparison) -> str:
        lo, hi = c.ci
        return f"{c.new:.4f} {c.diff:+.4f} ({lo:+.4f} .. {hi:+.4f})"

    table = format_table(
        [
            {
                "result": r.name + (f" [{', '.join(r.changes)}]" if r.changes else ""),
                "n": r.iou.n,
                "IoU, diff (95% interval)": cell(r.iou),
                "IoU": r.iou.verdict,
                "MAE, diff (95% interval)": cell(r.mae),
                "MAE": r.mae.verdict,
            }
            for r in rows
        ]
    )
    lines = [f"against {against}:", table]
    if unpaired:
        lines.append(f"not compared (no result of that name in {against}): {', '.join(unpaired)}")
    lines.append("ship rule: " + verdict)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vidmat.train.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "old",
        type=Path,
        help="`vidmat eval --json` result of the baseline, or a folder of them",
    )
    p.add_argument(
        "new",
        type=Path,
        help="the candidate's result, or a folder of results named as the baseline's "
        "(exit status 0 when the candidate passes the ship rule, 1 when not)",
    )
    a = p.parse_args(argv)

    def body() -> int:
        if a.old.is_dir() or a.new.is_dir():
            rows, unpaired, missing = compare_folders(a.old, a.new)
            passes, verdict = ship_rule(rows, missing)
            print(folder_report(rows, unpaired, str(a.old), verdict))
            return 0 if passes else 1
        old, new = load_result(a.old), load_result(a.new)
        print(report(compare_results(old, new), str(a.old), setting_changes(old, new)))
        return 0

    return run_tool("compare", body)


if __name__ == "__main__":
    raise SystemExit(main())
