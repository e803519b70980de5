"""Refit the fused output head of a weights file on training data, the rest frozen.

    python -m vidmat.train.head weights/u2netp_person.safetensors \\
        --data ../shared/data/train/ccp --data ../shared/data/train/viton \\
        --data /work/vidmat-runs/pseudo/train --out /tmp/refit.safetensors

U2-Net's matte is ``sigmoid(w . sides + b)``: a 1x1 convolution (``outconv``, six
weights and a bias) over the six side outputs. vidmat's shipped files are means of
several fine-tunes (``vidmat.train.publish``), and the mean of heads that each learnt
to trust the sides differently is not the head that best fits the mean's sides (in
the session-40 file side 3 carried 0.48 of the weight; refitted it carries 0.07 and
side 1, the finest, 0.58). These seven numbers are refitted here with everything
else fixed: the model runs once over a spread of each source's images, exactly as the
engine runs it (whole image squashed to the input size), its side logits are kept,
and L-BFGS minimises deep supervision's BCE plus a soft-IoU term (BCE alone pulls
toward calibrated probabilities, the IoU term toward the 0.5 threshold the masks are
cut at) against the masks reduced to the same grid. Seven parameters fitted to 65,536
pixels in each of a thousand images cannot learn the images by heart, so the training
images can be used (for the session-40 file every validation set, none of which took part,
gained). Batch-norm statistics and every other tensor are copied unchanged.

Memory: the six side logits and the target are held for every image, 7 x size^2 floats
(1.8 MB at 256), so ``--per-source 500`` over three sources holds up to 2.7 GB.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidmat.argtypes import model_size, positive_int
from vidmat.errors import VidmatError
from vidmat.io.files import atomic_output, check_output_path
from vidmat.train.data import (
    SourceSpec,
    close_neck_gaps,
    gap_root_names,
    list_pairs,
    read_pair,
    spread,
)

Tensor = torch.Tensor


@dataclass(frozen=True)
class HeadFitConfig:
    """What the refit reads and how it weighs the sources."""

    sources: tuple[SourceSpec, ...]
    #: Images taken from each source, spread evenly over its sorted file list.
    per_source: int = 500
    #: Weight of the soft-IoU term beside the BCE.
    iou_weight: float = 1.0
    #: --data folder names whose masks have VITON's neck gaps, closed as training closes them.
    close_gaps: tuple[str, ...] = ("viton",)
    #: L-BFGS rounds of up to 100 iterations each.
    rounds: int = 3


@dataclass
class SourceSides:
    """One source's side logits (N, 6, s, s) and soft targets (N, 1, s, s) on the model grid."""

    name: str
    weight: float
    sides: Tensor
    targets: Tensor


def fused_logits(w: Tensor, b: Tensor, sides: Tensor) -> Tensor:
    """What ``outconv`` computes: (N, 6, s, s) side logits -> (N, 1, s, s) matte logits."""
    return (sides * w.view(1, 6, 1, 1)).sum(1, keepdim=True) + b


def head_loss(w: Tensor, b: Tensor, sources: Sequence[SourceSides], iou_weight: float) -> Tensor:
    """Mean over sources (by their weight) of each image's BCE + iou_weight * soft IoU loss."""
    total = w.new_zeros(())
    norm = sum(s.weight for s in sources)
    for s in sources:
        z = fused_logits(w, b, s.sides)
        per = F.binary_cross_entropy_with_logits(z, s.targets, reduction="none").mean((1, 2, 3))
        if iou_weight:
            p = torch.sigmoid(z)
            inter = (p * s.targets).sum((1, 2, 3))
            union = (p + s.targets - p * s.targets).sum((1, 2, 3)).clamp_min(1e-6)
            per = per + iou_weight * (1 - inter / union)
        total = total + s.weight / norm * per.mean()
    return total


def fit_head(
    sources: Sequence[SourceSides], w0: Tensor, b0: Tensor, iou_weight: float = 1.0, rounds: int = 3
) -> tuple[Tensor, Tensor]:
    """The head weights (6,) and bias (1,) minimising :func:`head_loss`, from (w0, b0).

    L-BFGS with a line search: seven parameters and a smooth loss, so it converges in
    tens of iterations where Adam would need a learning rate and a schedule.
    """
    w = w0.detach().float().clone().requires_grad_(True)
    b = b0.detach().float().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = head_loss(w, b, sources, iou_weight)
        loss.backward()
        return loss

    for _ in range(rounds):
        opt.step(closure)
    if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
        raise VidmatError("the head refit diverged (non-finite weights); nothing was written.")
    return w.detach(), b.detach()


def mean_iou(w: Tensor, b: Tensor, source: SourceSides) -> float:
    """Mean IoU@0.5 on the model grid: a quick before/after check, not the eval score."""
    with torch.no_grad():
        z = fused_logits(w, b, source.sides)
        p, t = z >= 0, source.targets >= 0.5
        inter = (p & t).sum((1, 2, 3)).float()
        union = (p | t).sum((1, 2, 3)).float()
        return float(torch.where(union > 0, inter / union.clamp_min(1), 1.0).mean())


def collect_sides(engine, cfg: HeadFitConfig, progress: bool = True) -> list[SourceSides]:
    """Run the frozen model once over each source's chosen images and keep the side logits."""
    from vidmat.progress import progress_bar

    chosen = []
    for spec in cfg.sources:
        pairs = list_pairs(spec.path)
        chosen.append((spec, [pairs[i] for i in spread(len(pairs), cfg.per_source)]))
    out = []
    size = engine.size
    with progress_bar(
        total=sum(len(p) for _, p in chosen), desc="side outputs", unit="img", disable=not progress
    ) as bar:
        for spec, pairs in chosen:
            sides = torch.empty(len(pairs), 6, size, size)
            targets = torch.empty(len(pairs), 1, size, size)
            for i, (ip, mp) in enumerate(pairs):
                img, mask = read_pair(ip, mp)
                if spec.path.name in cfg.close_gaps:
                    mask = close_neck_gaps(mask)
                with torch.inference_mode():
                    x = engine.preprocess(engine.to_device(img[None]))
                    logits = engine.model.forward_all(x)
                sides[i] = torch.cat(logits[1:], 1)[0].float().cpu()
                t = torch.from_numpy((mask > 127).astype(np.float32))[None, None]
                targets[i] = F.interpolate(t, size=(size, size), mode="area")[0]
                bar.update(1)
            out.append(SourceSides(spec.path.name, spec.weight, sides, targets))
    return out


def refit(
    src: Path,
    out: Path,
    cfg: HeadFitConfig,
    size: int | None = None,
    device: str = "cpu",
    threads: int | None = None,
    note: str = "",
    half: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write ``src`` with its head refitted to ``out``; return the fit's figures and sha256."""
    from vidmat.core.engine import Engine, EngineConfig
    from vidmat.model.weights import load_weights, save_weights, sha256_file

    check_output_path(out, overwrite)
    model, spec = load_weights(str(src))
    engine = Engine(
        copy.deepcopy(model),
        spec,
        EngineConfig(device=device, precision="fp32", size=size, threads=threads),
    )
    sources = collect_sides(engine, cfg, progress)
    # clones: the model's own tensors are overwritten with the fit below
    w0 = model.outconv.weight.detach().float().view(6).clone()
    b0 = model.outconv.bias.detach().float().view(1).clone()
    before = {s.name: mean_iou(w0, b0, s) for s in sources}
    with torch.no_grad():
        loss0 = float(head_loss(w0, b0, sources, cfg.iou_weight))
    w, b = fit_head(sources, w0, b0, cfg.iou_weight, cfg.rounds)
    with torch.no_grad():
        loss1 = float(head_loss(w, b, sources, cfg.iou_weight))
        model.outconv.weight.copy_(w.view_as(model.outconv.weight))
        model.outconv.bias.copy_(b.view_as(model.outconv.bias))
    desc = spec.description + (f"; {note}" if note else "")
    with atomic_output(out) as tmp:
        save_weights(
            model, replace(spec, name=out.stem, file=out.name, description=desc), tmp, half
        )
    return {
        "loss": (loss0, loss1),
        "iou": {s.name: (before[s.name], mean_iou(w, b, s)) for s in sources},
        "n": {s.name: len(s.sides) for s in sources},
        "head": (w0.tolist() + b0.tolist(), w.tolist() + b.tolist()),
        "sha256": sha256_file(out),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vidmat.train.head",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", type=Path, help="the weights file whose head is refitted")
    p.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="ROOT[:WEIGHT]",
        help="root with images/ and masks/, and its weight in the loss (default 1); repeat "
        "for several roots. Each root counts by its weight, not by its number of images",
    )
    p.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    p.add_argument(
        "--per-source",
        type=positive_int,
        default=500,
        metavar="N",
        help="images taken from each root, spread evenly over it (default 500)",
    )
    p.add_argument(
        "--iou-weight",
        type=float,
        default=1.0,
        help="weight of the soft-IoU term beside the BCE (default 1; 0 = BCE only)",
    )
    p.add_argument(
        "--close-gaps",
        default="viton",
        metavar="NAMES",
        help="comma-separated --data folder names whose neck gaps are closed, as "
        "`vidmat train --close-gaps` does (default: viton; 'none' for none)",
    )
    p.add_argument(
        "--size",
        type=model_size,
        default=None,
        help="input side to fit at (default: the file's own, which it keeps)",
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    p.add_argument("--note", default="", help="appended to the spec's description")
    p.add_argument("--fp32", action="store_true", help="store fp32 instead of fp16")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    try:
        if a.iou_weight < 0:
            raise VidmatError(f"--iou-weight must be >= 0, got {a.iou_weight}.")
        cfg = HeadFitConfig(
            sources=tuple(SourceSpec.parse(d) for d in a.data),
            per_source=a.per_source,
            iou_weight=a.iou_weight,
            close_gaps=gap_root_names(a.close_gaps),
        )
        res = refit(
            a.src,
            a.out,
            cfg,
            size=a.size,
            device=a.device,
            threads=a.threads,
            note=a.note,
            half=not a.fp32,
            overwrite=a.overwrite,
            progress=not a.no_progress,
        )
    except VidmatError as exc:
        raise SystemExit(f"head: error: {exc}") from None
    before, after = res["head"]
    print(f"loss {res['loss'][0]:.5f} -> {res['loss'][1]:.5f}")
    for name, (i0, i1) in res["iou"].items():
        print(f"  {name}: {res['n'][name]} images, IoU on the model grid {i0:.4f} -> {i1:.4f}")
    print("head (6 weights, bias):", " ".join(f"{v:.4f}" for v in before))
    print("                  now:", " ".join(f"{v:.4f}" for v in after))
    print(f"{a.out} sha256 {res['sha256']} ({a.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
