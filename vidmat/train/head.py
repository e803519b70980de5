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

With ``--sides`` the six side convolutions (3x3, 64 -> 1 in u2netp: 3,462 numbers) and
the head's bias are refitted instead, the head's weights kept. Everything after the
decoder is linear (side convolutions, bilinear upsampling, the fusion), so a side's logit
at a pixel is its weights times the 3x3 patch of its input there (upsampled like its
output); those patches are kept at ``--pixels`` uniformly drawn pixels of each image and
the same loss is minimised over them. Unlike the head, these numbers can learn the
training pixels: unpenalised, the training IoU rose and the validation IoU fell, so a
ridge term (``--ridge``, each side's squared change relative to its size) holds them
near the file's own. ``--full-res`` draws those pixels from the image at its own
resolution instead and fits the logit as the engine upsamples it (still linear in the
sides: four grid neighbours, bilinearly weighted) to the mask's hard pixels there; on the
192 head (session 55) it gained val/ccp and lost DAVIS's small people, so it was not shipped.

A file that keeps a head per input size (``publish --as-head``) has the head it uses at
``--size`` refitted, the others untouched; sizes served by different heads are refused.
One set of sides fitted at 320 and 192 together gave up 192 (sessions 46, 53); refitted at
320 alone and kept as the 320 head (session 54), it gains 320 and leaves 192 as it was.

Memory: the six side logits and the target are held for every image, 7 x size^2 floats
(1.8 MB at 256), so ``--per-source 500`` over three sources holds up to 2.7 GB; with
``--sides``, 7 KB per sampled pixel (float16), 3.5 MB per image at 512 pixels.
"""

from __future__ import annotations

import argparse
import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from vidmat.argtypes import model_size, positive_int
from vidmat.errors import VidmatError
from vidmat.io.files import atomic_output, check_not_input, check_output_path
from vidmat.train.data import (
    SourceSpec,
    close_neck_gaps,
    gap_root_names,
    list_pairs,
    parse_data_source,
    read_pair,
    spread,
)
from vidmat.train.loop import soft_iou
from vidmat.train.tools import require_safetensors_out, run_tool

if TYPE_CHECKING:
    from vidmat.core.engine import Engine
    from vidmat.model.u2net import U2Net

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
    #: L-BFGS rounds of up to 100 iterations each (50 for the side refit).
    rounds: int = 3
    #: Refit the six side convolutions and the head's bias instead of the head's weights.
    sides: bool = False
    #: Pixels sampled per image for the side refit (uniformly, the same ones every call).
    pixels: int = 512
    #: Ridge weight on each side's change relative to its own size (side refit only).
    ridge: float = 1e-3
    #: Side refit: sample pixels of the image (the logit upsampled as the engine does)
    #: against the mask's own pixels, instead of the model grid against the reduced mask.
    full_res: bool = False


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


def image_losses(z: Tensor, targets: Tensor, iou_weight: float) -> Tensor:
    """Each image's BCE + iou_weight * soft-IoU loss over its pixels: (N, ...) -> (N,)."""
    z, targets = z.flatten(1), targets.flatten(1)
    per = F.binary_cross_entropy_with_logits(z, targets, reduction="none").mean(1)
    if iou_weight:
        per = per + iou_weight * (1 - soft_iou(z, targets, smooth=0.0))
    return per


def head_loss(w: Tensor, b: Tensor, sources: Sequence[SourceSides], iou_weight: float) -> Tensor:
    """Mean over sources (by their weight) of each image's BCE + iou_weight * soft IoU loss."""
    total = w.new_zeros(())
    norm = sum(s.weight for s in sources)
    for s in sources:
        per = image_losses(fused_logits(w, b, s.sides), s.targets, iou_weight)
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


def logit_iou(z: Tensor, targets: Tensor) -> float:
    """Mean over images of IoU@0.5 between logits and soft targets, (N, ...) each."""
    p, t = z.flatten(1) >= 0, targets.flatten(1) >= 0.5
    inter = (p & t).sum(1).float()
    union = (p | t).sum(1).float()
    return float(torch.where(union > 0, inter / union.clamp_min(1), 1.0).mean())


def mean_iou(w: Tensor, b: Tensor, source: SourceSides) -> float:
    """Mean IoU@0.5 on the model grid: a quick before/after check, not the eval score."""
    with torch.no_grad():
        return logit_iou(fused_logits(w, b, source.sides), source.targets)


def _inputs_and_targets(
    engine: Engine, cfg: HeadFitConfig, desc: str, progress: bool
) -> Iterator[tuple[int, SourceSpec, int, int, Tensor, Tensor, Tensor]]:
    """For each chosen image of each source: (source index, spec, image count, image index,
    the model input exactly as the engine makes it, the mask reduced to the model grid, the
    mask at the image's resolution; masks as float 0/1 (1, 1, h, w))."""
    from vidmat.progress import progress_bar

    chosen = []
    for spec in cfg.sources:
        pairs = list_pairs(spec.path)
        chosen.append((spec, [pairs[i] for i in spread(len(pairs), cfg.per_source)]))
    size = engine.size
    with progress_bar(
        total=sum(len(p) for _, p in chosen),
        desc=f"{desc} at {size}",
        unit="img",
        disable=not progress,
    ) as bar:
        for k, (spec, pairs) in enumerate(chosen):
            for i, (ip, mp) in enumerate(pairs):
                img, mask = read_pair(ip, mp)
                if spec.path.name in cfg.close_gaps:
                    mask = close_neck_gaps(mask)
                with torch.inference_mode():
                    x = engine.preprocess(engine.to_device(img[None]))
                t = torch.from_numpy((mask > 127).astype(np.float32))[None, None]
                grid = F.interpolate(t, size=(size, size), mode="area")
                yield k, spec, len(pairs), i, x, grid, t
                bar.update(1)


def collect_sides(engine: Engine, cfg: HeadFitConfig, progress: bool = True) -> list[SourceSides]:
    """Run the frozen model once over each source's chosen images and keep the side logits."""
    out: list[SourceSides] = []
    size = engine.size
    for k, spec, n, i, x, target, _ in _inputs_and_targets(engine, cfg, "side outputs", progress):
        if len(out) == k:
            out.append(
                SourceSides(
                    spec.path.name,
                    spec.weight,
                    torch.empty(n, 6, size, size),
                    torch.empty(n, 1, size, size),
                )
            )
        with torch.inference_mode():
            logits = engine.model.forward_all(x)
        out[k].sides[i] = torch.cat(logits[1:], 1)[0].float().cpu()
        out[k].targets[i] = target[0]
    return out


@dataclass
class SourceFeatures:
    """One source's side-convolution inputs at sampled pixels, and the targets there.

    ``feats[j]`` is (N, P, C_j * 9 + 1) float16: for each sampled pixel, the 3x3 patch of
    side j+1's input under it (bilinearly upsampled for sides 2-6, exactly as their
    outputs are, both being linear) followed by a 1, so that side j+1's logit there is
    ``feats[j][n, p] . [its weight, its bias]``. float16 halves the memory (6 GB for
    1,700 images at 512 pixels); the products are taken in float32.
    """

    name: str
    weight: float
    feats: list[Tensor]
    targets: Tensor  # (N, P)


def sampled_side_inputs(feats: Sequence[Tensor], py: Tensor, px: Tensor) -> list[Tensor]:
    """Side inputs (1, C_j, h_j, w_j) of one image -> (P, C_j * 9 + 1) at pixels (py, px)
    of side 1's grid; see :class:`SourceFeatures`."""
    h, w = feats[0].shape[2:]
    # pixel centres in grid_sample's [-1, 1] (align_corners=False): the source positions
    # F.interpolate(bilinear, align_corners=False) reads, clamped at the border as it does
    gx = (2 * px.float() + 1) / w - 1
    gy = (2 * py.float() + 1) / h - 1
    grid = torch.stack([gx, gy], -1).view(1, 1, -1, 2).to(feats[0].device)
    out = []
    for f in feats:
        f = f.float().contiguous()  # unfold of a channels-last map is several times slower
        patches = F.unfold(f, 3, padding=1).view(1, -1, *f.shape[2:])
        if f.shape[2:] == (h, w):
            v = patches[0][:, py, px]
        else:
            v = F.grid_sample(
                patches, grid, mode="bilinear", padding_mode="border", align_corners=False
            )[0, :, 0]
        out.append(torch.cat([v.T, v.new_ones(v.shape[1], 1)], 1).cpu())
    return out


def _bilinear_taps(pos: Tensor, full: int, grid: int) -> tuple[Tensor, Tensor, Tensor]:
    """Where F.interpolate(bilinear, align_corners=False) reads output pixel ``pos`` of
    ``full`` from a line of ``grid``: the two source pixels and the second one's weight."""
    src = ((pos.double() + 0.5) * (grid / full) - 0.5).clamp_min(0.0)
    lo = src.floor().long().clamp_max(grid - 1)
    return lo, (lo + 1).clamp_max(grid - 1), (src - lo).float()


def full_res_side_inputs(
    feats: Sequence[Tensor], fy: Tensor, fx: Tensor, height: int, width: int
) -> list[Tensor]:
    """:func:`sampled_side_inputs` at pixels (fy, fx) of the (height, width) image the
    engine upsamples the matte to: the model grid's four neighbours of each pixel, weighted
    as the bilinear upsampling of the logit weighs them, so that features x [weight, bias]
    is the upsampled logit there (upsampling being linear too)."""
    grid_h, grid_w = feats[0].shape[2:]
    y0, y1, ly = _bilinear_taps(fy, height, grid_h)
    x0, x1, lx = _bilinear_taps(fx, width, grid_w)
    taps = sampled_side_inputs(feats, torch.cat([y0, y0, y1, y1]), torch.cat([x0, x1, x0, x1]))
    weights = torch.stack([(1 - ly) * (1 - lx), (1 - ly) * lx, ly * (1 - lx), ly * lx])
    return [(t.view(4, len(fy), -1) * weights[..., None]).sum(0) for t in taps]


def collect_features(
    engine: Engine, cfg: HeadFitConfig, progress: bool = True
) -> list[SourceFeatures]:
    """Run the frozen model once over each source's chosen images and keep, at
    ``cfg.pixels`` uniformly drawn pixels of each (seeded: the same every call), what the
    side convolutions read there: pixels of the model's grid against the mask reduced to
    it, or with ``cfg.full_res`` pixels of the image against its mask's own hard pixels."""
    out: list[SourceFeatures] = []
    size = engine.size
    pixels = min(cfg.pixels, size * size)
    rng = np.random.default_rng(0)
    dims = [m.in_channels * 9 + 1 for m in _side_convs(engine.model)]
    for k, spec, n, i, x, target, full in _inputs_and_targets(engine, cfg, "side inputs", progress):
        if len(out) == k:
            feats = [torch.empty(n, pixels, d, dtype=torch.float16) for d in dims]
            out.append(SourceFeatures(spec.path.name, spec.weight, feats, torch.empty(n, pixels)))
        # the pixels are drawn from the mask the fit scores against: the grid's or the image's
        mask = full if cfg.full_res else target
        height, width = mask.shape[2:]
        if height * width < pixels:  # only an image smaller than the grid, with --full-res
            raise VidmatError(f"an image in {spec.path} has fewer than {pixels} pixels.")
        idx = torch.from_numpy(np.sort(rng.choice(height * width, pixels, replace=False)))
        fy, fx = idx // width, idx % width
        with torch.inference_mode():
            side_in = engine.model.side_inputs(x)
            if cfg.full_res:
                values = full_res_side_inputs(side_in, fy, fx, height, width)
            else:
                values = sampled_side_inputs(side_in, fy, fx)
        out[k].targets[i] = mask.reshape(-1)[idx]
        for f, v in zip(out[k].feats, values, strict=True):
            f[i] = v
    return out


def _side_convs(head: Any) -> list[torch.nn.Conv2d]:
    return [getattr(head, f"side{j}") for j in range(1, 7)]


def _fitted_head(model: U2Net, engines: Sequence[Engine]) -> Any:
    """The head (the model's own or a sized one) the engines' sizes all run through: Any,
    as its layers are registered by name (``side1`` .. ``side6``, ``outconv``)."""
    first, *rest = (model.head_for(e.size) for e in engines)
    if any(h is not first for h in rest):
        sizes = ", ".join(str(e.size) for e in engines)
        raise VidmatError(
            f"the file uses different heads at the sizes {sizes}; refit each head at its own "
            "sizes in separate runs."
        )
    return first


def side_logits_at_samples(u: Sequence[Tensor], b: Tensor, src: SourceFeatures) -> Tensor:
    """(N, P) fused logits for effective side weights ``u[j]`` (= head weight j x side j's
    [weight, bias]) and head bias ``b``; in chunks, so float32 copies stay small."""
    z = src.targets.new_zeros(src.targets.shape) + b
    for lo in range(0, len(z), _CHUNK):
        for f, uj in zip(src.feats, u, strict=True):
            z[lo : lo + _CHUNK] += f[lo : lo + _CHUNK].float() @ uj
    return z


_CHUNK = 64


def side_refit_loss(
    theta: Tensor,
    w: Tensor,
    v0: Sequence[Tensor],
    sources: Sequence[SourceFeatures],
    iou_weight: float,
    ridge: float,
) -> tuple[Tensor, Tensor]:
    """Loss and its gradient for ``theta`` = the six sides' [weight, bias] flattened, then the
    head bias; the head weights ``w`` fixed. The data term is :func:`head_loss`'s on the
    sampled pixels; ``ridge`` x each side's squared change relative to its size keeps the
    3,462 numbers near the file's own (unpenalised they learn the training pixels: the
    validation IoU fell while the training IoU rose). Each image's loss depends on its own
    pixels only, so one pass over chunks of images gives loss and gradient (summed by hand),
    each chunk's features converted to float32 once and never the whole set at a time."""
    theta = theta.detach()
    dims = [len(v) for v in v0]
    vs = list(torch.split(theta[:-1], dims))
    b = theta[-1:]
    u = [w[j] * vs[j] for j in range(6)]
    norm = sum(s.weight for s in sources)
    loss = theta.new_zeros(())
    grads = [torch.zeros_like(v) for v in vs]
    gb = theta.new_zeros(1)
    # float32 buffers reused chunk after chunk: a fresh allocation per chunk made each call
    # three times slower (page faults), more than the products themselves
    bufs: list[Tensor | None] = [None] * 6
    for s in sources:
        share = s.weight / norm / len(s.targets)  # the source's weight, spread over its images
        for lo in range(0, len(s.targets), _CHUNK):
            feats = []
            for j, f in enumerate(s.feats):
                chunk = f[lo : lo + _CHUNK]
                buf = bufs[j]
                if buf is None or buf.shape[1:] != chunk.shape[1:]:
                    buf = bufs[j] = torch.empty(_CHUNK, *chunk.shape[1:])
                feats.append(buf[: len(chunk)].copy_(chunk))
            z = sum(f @ uj for f, uj in zip(feats, u, strict=True)) + b
            z.requires_grad_(True)
            with torch.enable_grad():
                part = share * image_losses(z, s.targets[lo : lo + _CHUNK], iou_weight).sum()
                (gz,) = torch.autograd.grad(part, z)
            loss += part.detach()
            gb += gz.sum()
            g = gz.reshape(-1)
            for j, f in enumerate(feats):
                grads[j] += w[j] * (f.reshape(len(g), -1).T @ g)
    for j in range(6):
        scale = float(v0[j].square().sum().clamp_min(1e-12))
        d = vs[j] - v0[j]
        loss += ridge * d.square().sum() / scale
        grads[j] += 2 * ridge * d / scale
    return loss, torch.cat([*grads, gb])


def fit_sides(
    sources: Sequence[SourceFeatures],
    w: Tensor,
    v0: Sequence[Tensor],
    b0: Tensor,
    iou_weight: float = 1.0,
    ridge: float = 1e-3,
    rounds: int = 3,
) -> tuple[list[Tensor], Tensor]:
    """The sides' [weight, bias] vectors and the head bias minimising :func:`side_refit_loss`."""
    theta = torch.cat([*[v.float() for v in v0], b0.float()]).requires_grad_(True)
    opt = torch.optim.LBFGS(
        [theta], lr=1, max_iter=50, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        with torch.no_grad():
            loss, grad = side_refit_loss(theta, w, v0, sources, iou_weight, ridge)
        theta.grad = grad
        return loss

    for _ in range(rounds):
        opt.step(closure)
    if not torch.isfinite(theta).all():
        raise VidmatError("the side refit diverged (non-finite weights); nothing was written.")
    theta = theta.detach()
    return list(torch.split(theta[:-1], [len(v) for v in v0])), theta[-1:]


def refit(
    src: Path,
    out: Path,
    cfg: HeadFitConfig,
    sizes: Sequence[int | None] = (None,),
    device: str = "cpu",
    threads: int | None = None,
    note: str = "",
    half: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write ``src`` with its head (or, with ``cfg.sides``, its side convolutions and head
    bias) refitted to ``out``; return the fit's figures and sha256.

    Several ``sizes`` (None: the file's own) fit one set of numbers to the images run at
    each, every source counting once per size: for a file run at 256 by convert and at
    192 by live on a CPU."""
    from vidmat.core.engine import Engine
    from vidmat.core.settings import EngineConfig
    from vidmat.model.weights import load_weights, save_weights, sha256_file

    require_safetensors_out(out)
    # --overwrite replaces an output, never the file being refitted: writing the refit
    # over its source is how the shipped weights were once lost
    check_not_input(out, src, "--out", "source weights file")
    check_output_path(out, overwrite)
    model, spec = load_weights(str(src))
    engines = [
        Engine(
            copy.deepcopy(model),
            spec,
            EngineConfig(device=device, precision="fp32", size=size, threads=threads),
        )
        for size in dict.fromkeys(sizes)
    ]
    model.requires_grad_(False)
    head = _fitted_head(model, engines)
    sized = {id(h): int(k) for k, h in getattr(model, "sized_heads", {}).items()}
    res = (_refit_sides if cfg.sides else _refit_head)(model, engines, cfg, progress)
    # which of a file's heads per input size was refitted: --size 64 on the shipped file
    # refits its 192 head, and nothing said so
    res["head_size"] = sized.get(id(head), int(getattr(model, "head_size", spec.input_size)))
    res["head_sizes"] = sorted({int(getattr(model, "head_size", spec.input_size)), *sized.values()})
    desc = spec.description + (f"; {note}" if note else "")
    with atomic_output(out) as tmp:
        save_weights(
            model, replace(spec, name=out.stem, file=out.name, description=desc), tmp, half
        )
    return {**res, "sha256": sha256_file(out)}


def _per_size(engines: Sequence, collect: Callable, cfg: HeadFitConfig, progress: bool) -> list:
    """``collect(engine, cfg, progress)`` for each engine, the sources named ``name@size``
    when there are several sizes."""
    out = []
    for engine in engines:
        for s in collect(engine, cfg, progress):
            out.append(replace(s, name=f"{s.name}@{engine.size}") if len(engines) > 1 else s)
    return out


def _refit_head(
    model: U2Net, engines: Sequence[Engine], cfg: HeadFitConfig, progress: bool
) -> dict:
    """Fit ``outconv`` on the engines' side logits and write it into ``model``."""
    head = _fitted_head(model, engines)
    sources = _per_size(engines, collect_sides, cfg, progress)
    # clones: the model's own tensors are overwritten with the fit below
    w0 = head.outconv.weight.float().view(6).clone()
    b0 = head.outconv.bias.float().view(1).clone()
    before = {s.name: mean_iou(w0, b0, s) for s in sources}
    with torch.no_grad():
        loss0 = float(head_loss(w0, b0, sources, cfg.iou_weight))
    w, b = fit_head(sources, w0, b0, cfg.iou_weight, cfg.rounds)
    with torch.no_grad():
        loss1 = float(head_loss(w, b, sources, cfg.iou_weight))
        head.outconv.weight.copy_(w.view_as(head.outconv.weight))
        head.outconv.bias.copy_(b.view_as(head.outconv.bias))
    return {
        "loss": (loss0, loss1),
        "iou": {s.name: (before[s.name], mean_iou(w, b, s)) for s in sources},
        "n": {s.name: len(s.sides) for s in sources},
        "head": (w0.tolist() + b0.tolist(), w.tolist() + b.tolist()),
    }


def _refit_sides(
    model: U2Net, engines: Sequence[Engine], cfg: HeadFitConfig, progress: bool
) -> dict:
    """Fit the side convolutions and the head bias on sampled pixels; write them into ``model``."""
    head = _fitted_head(model, engines)
    sources = _per_size(engines, collect_features, cfg, progress)
    convs = _side_convs(head)
    w = head.outconv.weight.float().view(6).clone()
    b0 = head.outconv.bias.float().view(1).clone()
    v0 = [torch.cat([c.weight.reshape(-1), cast(Tensor, c.bias)]).float().clone() for c in convs]

    def figures(vs: Sequence[Tensor], b: Tensor) -> tuple[float, dict[str, float]]:
        """The data loss (no ridge) and each source's IoU, from one pass over the features."""
        u = [w[j] * vs[j] for j in range(6)]
        norm = sum(s.weight for s in sources)
        loss, iou = 0.0, {}
        for s in sources:
            z = side_logits_at_samples(u, b, s)
            loss += s.weight / norm * float(image_losses(z, s.targets, cfg.iou_weight).mean())
            iou[s.name] = logit_iou(z, s.targets)
        return loss, iou

    loss0, iou0 = figures(v0, b0)
    vs, b = fit_sides(sources, w, v0, b0, cfg.iou_weight, cfg.ridge, cfg.rounds)
    loss1, iou1 = figures(vs, b)
    with torch.no_grad():
        for c, v in zip(convs, vs, strict=True):
            c.weight.copy_(v[:-1].view_as(c.weight))
            cast(Tensor, c.bias).copy_(v[-1:])
        head.outconv.bias.copy_(b.view_as(head.outconv.bias))
    return {
        "loss": (loss0, loss1),
        "iou": {name: (iou0[name], iou1[name]) for name in iou0},
        "n": {s.name: len(s.targets) for s in sources},
        "moved": [float((v - v_0).norm() / v_0.norm()) for v, v_0 in zip(vs, v0, strict=True)],
        "head_bias": (float(b0), float(b)),
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
        default=None,
        metavar="NAMES",
        help="comma-separated --data folder names whose neck gaps are closed, as "
        "`vidmat train --close-gaps` does (default: viton; 'none' for none)",
    )
    p.add_argument(
        "--size",
        type=model_size,
        action="append",
        metavar="PX",
        help="input side to fit at (default: the file's own, which it keeps); repeat to fit "
        "one set of numbers at several sizes, each source counting once per size (e.g. "
        "--size 256 --size 192: convert's size and CPU live's); the time and memory add up. "
        "The sizes must share one head: a file with a head per size (publish --as-head, as "
        "the shipped one) is refitted one head a run, at that head's own size",
    )
    p.add_argument(
        "--sides",
        action="store_true",
        help="refit the six side convolutions (3,462 numbers for u2netp) and the head's bias "
        "instead of the head's seven numbers, the head's weights kept; on --pixels sampled "
        "pixels of each image, with a --ridge penalty toward the file's own values",
    )
    p.add_argument(
        "--pixels",
        type=positive_int,
        default=None,
        metavar="P",
        help="pixels per image the side refit samples (default 512; memory: images x P x "
        "7 KB, 6 GB for 1,700 images at 512)",
    )
    p.add_argument(
        "--ridge",
        type=float,
        default=None,
        help="side refit: weight of each side's squared change relative to its size "
        "(default 0.001; 0 lets the sides learn the training pixels)",
    )
    p.add_argument(
        "--full-res",
        action="store_true",
        help="with --sides: sample the pixels at each image's own resolution and fit the "
        "matte as the engine upsamples it (the logit interpolated from the model's grid) to "
        "the mask's hard pixels there, instead of the grid against the mask reduced to it",
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    p.add_argument("--note", default="", help="appended to the spec's description")
    p.add_argument("--fp32", action="store_true", help="store fp32 instead of fp16")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    return run_tool("head", lambda: _run(a))


def _run(a: argparse.Namespace) -> int:
    # nan passes a `< 0` test and inf passes any, and either reached L-BFGS, whose
    # traceback was all the user saw: a weight must be a finite number
    for flag, value in (("--iou-weight", a.iou_weight), ("--ridge", a.ridge)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise VidmatError(f"{flag} must be a finite number, 0 or more, got {value}.")
    # the side refit's own options do nothing to the head's seven numbers: refused, as
    # --full-res was, not ignored
    for flag, given in (("--full-res", a.full_res), ("--pixels", a.pixels), ("--ridge", a.ridge)):
        if given not in (None, False) and not a.sides:
            raise VidmatError(f"{flag} is an option of the side refit; give it with --sides.")
    sources = tuple(parse_data_source(d, composite=False) for d in a.data)
    cfg = HeadFitConfig(
        sources=sources,
        per_source=a.per_source,
        iou_weight=a.iou_weight,
        close_gaps=gap_root_names(a.close_gaps, [src.path for src in sources]),
        sides=a.sides,
        pixels=a.pixels if a.pixels is not None else HeadFitConfig.pixels,
        ridge=a.ridge if a.ridge is not None else HeadFitConfig.ridge,
        full_res=a.full_res,
    )
    res = refit(
        a.src,
        a.out,
        cfg,
        sizes=a.size or (None,),
        device=a.device,
        threads=a.threads,
        note=a.note,
        half=not a.fp32,
        overwrite=a.overwrite,
        progress=not a.no_progress,
    )
    if len(res["head_sizes"]) > 1:
        others = ", ".join(str(s) for s in res["head_sizes"] if s != res["head_size"])
        print(f"refitted the head for input size {res['head_size']} (the file's others: {others})")
    print(f"loss {res['loss'][0]:.5f} -> {res['loss'][1]:.5f}")
    where = "the sampled pixels" if a.sides else "the model grid"
    for name, (i0, i1) in res["iou"].items():
        print(f"  {name}: {res['n'][name]} images, IoU on {where} {i0:.4f} -> {i1:.4f}")
    if a.sides:
        print("sides moved (change / size):", " ".join(f"{v:.3f}" for v in res["moved"]))
        print("head bias: {:.4f} -> {:.4f}".format(*res["head_bias"]))
    else:
        before, after = res["head"]
        print("head (6 weights, bias):", " ".join(f"{v:.4f}" for v in before))
        print("                  now:", " ".join(f"{v:.4f}" for v in after))
    print(f"{a.out} sha256 {res['sha256']} ({a.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
