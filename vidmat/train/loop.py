"""The training loop: deep supervision, AdamW + warmup/cosine, EMA, exact resume.

Design choices and why:

* Batches are a pure function of (seed, step): each sample has its own generator
  (:func:`vidmat.train.augment.sample_rng`), so a resumed run sees exactly the
  batches an uninterrupted one would, without pickling loader state.
* The learning rate is a pure function of the step (:func:`lr_at`); a run can be
  extended later by resuming with a larger ``--steps`` (the cosine stretches).
* An exponential moving average of the weights is what gets validated and
  exported: on a CPU budget the run rarely reaches the end of its schedule, and
  the EMA of a still-noisy run is much closer to a converged model.
* Checkpoints go to a run folder outside the repository (model, EMA, optimizer,
  scheduler, torch RNG, step, best score) and are replaced atomically.
* Every validated EMA is kept (``ema_stepN.safetensors``), not only the best: the
  shipped files are means of a start and a fine-tune's EMA at a chosen step, and
  the best on the 50 + 50 validation images is not always the step that holds up
  on the full sets and on video.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidmat.errors import VidmatError, warn
from vidmat.io.files import atomic_folder, atomic_output, atomic_write_text
from vidmat.model.u2net import HEAD_LAYERS, U2Net
from vidmat.signals import GROUP_SIGNALS, group_signals_held
from vidmat.train import AMP_MODES
from vidmat.train.augment import AugmentConfig, sample_rng, synthesize
from vidmat.train.data import (
    CachedSource,
    SourceSpec,
    by_reference,
    image_digest,
    list_pairs,
    load_backgrounds,
    load_source,
    opened,
    spread,
    write_pair,
)

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


#: The parts of U-2-Net a fine-tune can keep fixed, by the first word of their names
#: (the same in u2netp and u2net): the six encoder stages, the five decoder stages, and
#: the side convolutions with the fusing head (the model's own and any sized heads).
LAYER_GROUPS = {
    "encoder": tuple(f"stage{i}" for i in range(1, 7)),
    "decoder": tuple(f"stage{i}d" for i in range(1, 6)),
    "sides": (*HEAD_LAYERS, "sized_heads"),
}


def layer_group(name: str) -> str | None:
    """The :data:`LAYER_GROUPS` key of a parameter or module name, e.g. stage3.rebnconv1.bn_s1."""
    first = name.split(".", 1)[0]
    return next((g for g, firsts in LAYER_GROUPS.items() if first in firsts), None)


@dataclass
class TrainConfig:
    sources: list[SourceSpec]
    run_dir: Path
    backgrounds: Path | None = None
    val: list[Path] = field(default_factory=list)
    cache_dir: Path | None = None
    arch: str = "u2netp"
    size: int = 160
    #: Further input sides taken in turn with ``size`` (step s trains at
    #: ``(size, *mix_sizes)[s % n]``), so the weights hold up at every size they are
    #: run at: the GPU and convert use the spec's size, CPU live a smaller one.
    mix_sizes: tuple[int, ...] = ()
    batch: int = 8
    #: Samples per forward/backward pass; the step's ``batch`` is run through the model
    #: this many at a time and its gradients summed before one optimiser step (None:
    #: the whole batch at once). The samples are those of a run with this ``batch``, and
    #: with ``freeze_bn`` the step is that run's step, so a CPU (or a GPU short of
    #: memory) can follow a GPU recipe's batch of 32 exactly; without it BatchNorm
    #: normalises each pass by its own statistics, as at the smaller batch.
    micro_batch: int | None = None
    steps: int = 4000
    lr: float = 1e-3
    weight_decay: float = 1e-4
    iou_weight: float = 0.0  # soft-IoU term beside the deep-supervision BCE
    #: Sample synthesis: framing, photometrics and the composite switches (shadows,
    #: camouflage, a second person, graphics, ...). Their defaults keep the batches of
    #: runs started before each switch existed, so those runs resume exactly.
    aug: AugmentConfig = field(default_factory=AugmentConfig)
    warmup: int = 100
    min_lr_ratio: float = 0.02
    ema: float = 0.995
    seed: int = 0
    val_every: int = 100
    val_n: int = 50
    val_size: int | None = None  # defaults to ``size``
    ckpt_minutes: float = 4.0
    device: str = "cpu"
    threads: int | None = 2
    #: Processes that build batches ahead of the model (0: in the training process).
    #: A sample at 256 px costs about 6.5 ms of augmentation on one core here (`vidmat
    #: bench train`: a batch of 8 in 52 ms), so a GPU step of 32 in under 0.2 s waits on
    #: the data unless several cores build it. The workers are spawned
    #: (:data:`WORKER_START`): a script that runs a Trainer with workers needs the usual
    #: ``if __name__ == "__main__":`` guard, as for any spawned process.
    workers: int = 0
    #: Stop after this many minutes of training (checkpoint and export as at a
    #: SIGTERM); None runs to ``steps``. A GPU lease is counted in minutes.
    minutes: float | None = None
    #: NHWC activations: measured ~20 % faster per training step for u2netp on this CPU.
    channels_last: bool = True
    #: Mixed precision of the forward pass: "bf16", "off", or "auto" (bf16 on CUDA only).
    #: A CPU with AVX512-BF16 or AMX runs a u2netp step at 256 px in bf16 about 2.4x
    #: faster than in fp32 (session 20, this machine); one without emulates it, slower.
    amp: str = "auto"
    #: Let cuDNN time its convolution algorithms for each input shape on the first steps
    #: (CUDA only). Off by default until `vidmat bench train --cudnn-benchmark on,off`
    #: has shown a gain on a GPU: u2netp's small, dilated convolutions are where cuDNN's
    #: default choice can be slow.
    cudnn_benchmark: bool = False
    #: Keep BatchNorm's running statistics (and use them in the forward pass) while the
    #: weights train: for fine-tuning ``init`` at a batch far smaller than it was trained
    #: at. Re-estimating the shipped file's statistics alone on 100 CPU batches of 8, no
    #: weight changed, cut DAVIS rollerblade 0.497 -> 0.433 (session 32); a fine-tune with
    #: them kept still lost rollerblade, but gained val/ccp and the webcam hold-out.
    freeze_bn: bool = False
    init: str | None = None
    #: Weights the fused output is also trained toward (BCE against their probabilities
    #: on the same batch, weighted by ``anchor_weight``), run at ``anchor_size`` (None:
    #: their spec's size) and brought to the training size. Every CPU fine-tune of the
    #: shipped file lost val/ccp and the webcam hold-out while gaining what it aimed at;
    #: the anchor pulls it toward the file where the labels leave it free, and at the
    #: ``mix_sizes`` teaches what the file gives at its own size. Session 47: it lifted
    #: DAVIS's skater at 320 but did not keep val/ccp (that loss is in the trunk).
    anchor: str | None = None
    anchor_weight: float = 1.0
    anchor_size: int | None = None
    #: Layer groups (:data:`LAYER_GROUPS`) whose weights and BatchNorm statistics stay as
    #: ``init`` gave them. Session 47 found a CPU fine-tune's loss on photographs spread
    #: over the trunk, most in the encoder's middle stages.
    freeze: tuple[str, ...] = ()
    #: Names of source folders whose masks get their neck gaps closed and holes filled
    #: (VITON); filling CCP's holes would label the space inside a bent arm as person.
    close_gaps: tuple[str, ...] = ("viton",)
    cache_long_side: int = 320
    progress: bool = True
    name: str = "u2netp_person"

    def to_json(self) -> dict:
        d = asdict(self)
        d["sources"] = [f"{s.path}:{s.weight}:{s.composite}" for s in self.sources]
        return json.loads(json.dumps(d, default=str))


def size_at(step: int, cfg: TrainConfig) -> int:
    """Training input side at ``step``: ``size`` and the ``mix_sizes`` in turn."""
    sizes = (cfg.size, *cfg.mix_sizes)
    return sizes[step % len(sizes)]


def default_warmup(steps: int) -> int:
    """Warm-up steps of a new run without ``--warmup``: a tenth of the run, at most 100.

    A fixed 100 left a run of 100 steps or fewer still warming up at its end, its
    learning rate never at its peak nor decayed."""
    return min(100, steps // 10)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier at ``step``: linear warmup to 1 at the warmup's last step,
    then cosine to ``min_lr_ratio`` at the last step (``steps - 1``). The cosine began at
    1 again, holding the peak two steps, and was a step short of its floor at the end
    (0.069 for 0.02 with 10 steps)."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    # With a warmup its last step is the peak and the cosine starts a step below it;
    # without one, the cosine starts at the peak on step 0.
    first = cfg.warmup - 1 if cfg.warmup else 0
    t = min(1.0, (step - first) / max(1, cfg.steps - 1 - first))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def to_input(batch_rgb: np.ndarray) -> torch.Tensor:
    """uint8 (N,H,W,3) RGB -> normalised float (N,3,H,W); scale "255" then ImageNet mean/std."""
    x = batch_rgb.astype(np.float32) / 255.0
    x = (x - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def soft_iou(logit: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Each image's soft IoU of sigmoid(logit) with the target: (N, ...) -> (N,).

    ``smooth`` is added to both sums: 1 in training, so that an empty crop with an
    empty prediction scores 1 rather than 0/0; 0 in the head refit
    (:mod:`vidmat.train.head`), whose command must keep reproducing the shipped file."""
    p = torch.sigmoid(logit.float()).flatten(1)
    t = target.flatten(1)
    inter = (p * t).sum(1)
    union = (p + t - p * t).sum(1)
    return (inter + smooth) / (union + smooth).clamp_min(1e-6)


def soft_iou_loss(logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft IoU per image, averaged: rewards overlap directly and confident edges,
    where BCE alone settles for grey, blurry borders around a thin person."""
    return (1.0 - soft_iou(logit, target)).mean()


def deep_supervision_loss(
    logits: Sequence[torch.Tensor], target: torch.Tensor, iou_weight: float = 0.0
) -> torch.Tensor:
    """BCE summed over the fused and the six side outputs (U-2-Net paper, eq. 1),
    plus ``iou_weight`` x soft-IoU loss on each of them when asked for."""
    loss = cast(
        torch.Tensor, sum(F.binary_cross_entropy_with_logits(o.float(), target) for o in logits)
    )
    if iou_weight > 0:
        loss = loss + iou_weight * sum(soft_iou_loss(o, target) for o in logits)
    return loss


def anchor_loss(fused: torch.Tensor, anchor_logit: torch.Tensor) -> torch.Tensor:
    """BCE of the fused logits against the anchor's probabilities, the anchor's map
    resized to the fused one's size first (it may have run at another size)."""
    if anchor_logit.shape[-2:] != fused.shape[-2:]:
        anchor_logit = F.interpolate(
            anchor_logit.float(), size=fused.shape[-2:], mode="bilinear", align_corners=False
        )
    return F.binary_cross_entropy_with_logits(fused.float(), torch.sigmoid(anchor_logit.float()))


def batch_samples(
    seed: int,
    step: int,
    batch: int,
    size: int,
    sources: Sequence[CachedSource],
    bank: np.ndarray | None,
    aug: AugmentConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """The samples of one step: RGB uint8 (batch, size, size, 3), masks float32
    (batch, 1, size, size) in {0, 1}."""
    weights = np.array([s.spec.weight for s in sources], np.float64)
    weights /= weights.sum()
    imgs = np.zeros((batch, size, size, 3), np.uint8)
    masks = np.zeros((batch, 1, size, size), np.float32)
    for k in range(batch):
        imgs[k], masks[k, 0] = synthesize(
            sample_rng(seed, step, k), sources, weights, size, bank, aug
        )
    return imgs, masks


def make_batch(
    seed: int,
    step: int,
    batch: int,
    size: int,
    sources: Sequence[CachedSource],
    bank: np.ndarray | None,
    aug: AugmentConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's batch as the model takes it: normalised inputs and masks."""
    imgs, masks = batch_samples(seed, step, batch, size, sources, bank, aug)
    return to_input(imgs), torch.from_numpy(masks)


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """The forward pass's precision; the loss, optimiser, EMA and validation stay fp32."""
    if amp not in AMP_MODES:
        raise VidmatError(f"unknown mixed precision {amp!r}; choose one of {', '.join(AMP_MODES)}.")
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


#: How batch workers start, the same on every Python: spawned. Not fork, which copies a
#: process whose torch, OpenMP and progress-bar threads may hold locks the child then
#: waits on forever (Python 3.12 warns of it; 3.14 no longer forks by default on Linux).
#: Not forkserver either: its workers are the server's children and hold its lifeline
#: pipe, so when the trainer was killed (SIGKILL) the server and the workers, waiting on
#: a parent that never went away, stayed behind with 400 MB each. A spawned worker is
#: the trainer's child and ends when the trainer does. It starts in about a second (it
#: imports torch) and receives its data pickled, the caches by their files
#: (:class:`~vidmat.train.data.MappedFile`).
WORKER_START = "spawn"
#: prctl(2): the signal a process gets when the thread that created it ends.
PR_SET_PDEATHSIG = 1


def _start_worker(worker_id: int, trainer_pid: int) -> None:
    """Ctrl-C and a closed terminal (SIGHUP) reach the whole process group: workers ignore
    them, and the trainer finishes its step, checkpoints and shuts them down (no traceback
    per worker, and no worker that dies first and takes the run down with it). SIGTERM
    keeps torch's handling: it is how the trainer ends a worker that does not stop.

    A worker also ends with the trainer however it ends. torch's watchdog only notices
    the parent changing from the one it saw when the worker's loop started: a trainer
    killed while its workers were still importing torch left them waiting on init for
    good (270 MB each). On Linux the kernel kills the worker when the trainer (the
    thread that started it, which is the one iterating the loader) ends; everywhere,
    a worker whose trainer is already gone stops here.
    """
    for s in GROUP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != trainer_pid:  # it ended before the request above took effect
        os._exit(0)


class StepBatches(torch.utils.data.Dataset):
    """Item ``step`` is the batch of that step: a DataLoader over ``range(start, steps)``
    builds them in worker processes and still yields exactly the in-process batches."""

    def __init__(
        self,
        cfg: TrainConfig,
        sources: Sequence[CachedSource],
        bank: np.ndarray | None,
    ) -> None:
        self.cfg, self.sources, self.bank = cfg, list(sources), bank

    def __len__(self) -> int:
        return self.cfg.steps

    # The workers receive this object pickled: the caches go as their files, not their bytes.
    def __getstate__(self) -> dict[str, object]:
        return {**vars(self), "bank": by_reference(self.bank)}

    def __setstate__(self, state: dict[str, object]) -> None:
        vars(self).update(state, bank=opened(state["bank"]))

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        return make_batch(
            cfg.seed, step, cfg.batch, size_at(step, cfg), self.sources, self.bank, cfg.aug
        )


class EMA:
    """Exponential moving average of parameters; buffers (BN statistics) are copied."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        # Short warm-up of the decay so early averages are not dominated by random init.
        d = min(self.decay, (1 + step) / (10 + step))
        # One fused call each instead of ~800 small ones (462 parameters, 336 buffers in
        # u2netp): on a GPU every one of those was a kernel launch of its own.
        torch._foreach_lerp_(
            list(self.model.parameters()), [p.detach() for p in model.parameters()], 1 - d
        )
        if hasattr(torch, "_foreach_copy_"):  # torch >= 2.2
            torch._foreach_copy_(list(self.model.buffers()), list(model.buffers()))
        else:
            for e, b in zip(self.model.buffers(), model.buffers(), strict=True):
                e.copy_(b)


@dataclass
class ValSet:
    name: str
    images: np.ndarray  # (N,H,W,3) uint8
    masks: np.ndarray  # (N,H,W) uint8 0/255


def valset_names(roots: Sequence[Path]) -> list[str]:
    """Each --val root's name in the log: its folder's, with as many folders above it as
    it takes to tell it from the others (``A/val`` and ``B/val``: the second's scores
    replaced the first's under "val", and the mean IoU that picks the best step lost one)."""
    parts = [Path(r).resolve().parts for r in roots]
    if len(set(parts)) < len(parts):
        raise VidmatError("a --val folder is given twice; give each once.")
    depth = [1] * len(parts)
    while True:
        names = ["/".join(p[-d:]) for p, d in zip(parts, depth, strict=True)]
        clash = {n for n in names if names.count(n) > 1}
        if not clash:
            return names
        depth = [d + 1 if n in clash else d for n, d in zip(names, depth, strict=True)]


def held_in(val: Sequence[Path], data: Sequence[Path], n: int) -> list[str]:
    """What of each --val root is also training data, byte for byte, in words: such images
    score what was learnt, not what holds out. ../shared's val/viton repeats 193 of its 500
    photographs from train/viton under other names (20 of the 50 a run validates on),
    which nothing said."""
    if not data:
        return []
    # Only training files of a size some validation file has are read and hashed: the
    # check costs a directory listing, not a read of every training image at each start.
    val_images = [[ip for ip, _ in list_pairs(root)] for root in val]
    sizes = {ip.stat().st_size for images in val_images for ip in images}
    trained = {
        image_digest(ip)
        for root in data
        for ip, _ in list_pairs(root)
        if ip.stat().st_size in sizes
    }
    out = []
    for images, name in zip(val_images, valset_names(val), strict=True):
        # validation images are read only when some training image could be one of them
        seen = [bool(trained) and image_digest(ip) in trained for ip in images]
        shown = sum(seen[i] for i in spread(len(seen), n))
        if any(seen):
            out.append(
                f"{sum(seen)} of the {len(seen)} images of --val {name} are also training "
                f"images ({shown} of the {min(n, len(seen))} validated on); their scores "
                "are not held out."
            )
    return out


def load_valsets(roots: Sequence[Path], n: int, cache_dir: Path, progress: bool) -> list[ValSet]:
    out = []
    for root, name in zip(roots, valset_names(roots), strict=True):
        src = load_source(SourceSpec(root), cache_dir, 320, False, progress)
        idx = spread(len(src), n)
        out.append(ValSet(name, np.asarray(src.images[idx]), np.asarray(src.masks[idx])))
    return out


@torch.no_grad()
def validate(model: nn.Module, valsets: Sequence[ValSet], size: int, device: torch.device) -> dict:
    """Mean IoU@0.5 and MAE per set, at model input ``size`` (frame squashed to a square).

    The frame is resized and the matte brought back as the engine does (antialiased
    bilinear in, the logit interpolated out), so the best step is picked on the numbers
    ``vidmat eval`` gives, not on OpenCV's area resize and alpha interpolated."""
    from vidmat.core.engine import to_input_size, upsample_alpha
    from vidmat.train.metrics import iou, mae

    model.eval()
    mean = torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1)
    res: dict[str, Any] = {}
    for vs in valsets:
        ious, maes = [], []
        for i in range(0, len(vs.images), 8):
            imgs = vs.images[i : i + 8]
            h, w = imgs.shape[1:3]
            x = to_input_size(
                torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2), size
            )
            prob = model(((x / 255.0 - mean) / std).to(device))
            prob = upsample_alpha(prob.float(), h, w)[:, 0].cpu().numpy()
            for p, m in zip(prob, vs.masks[i : i + 8], strict=True):
                gt = m > 127
                ious.append(iou(p, gt))
                maes.append(mae(p, gt))
        res[vs.name] = {"iou": float(np.mean(ious)), "mae": float(np.mean(maes))}
    res["mean_iou"] = float(np.mean([v["iou"] for k, v in res.items() if k != "mean_iou"]))
    return res


#: What a training checkpoint holds (:meth:`Trainer.state`); "history" and "config" are
#: optional (older runs).
CHECKPOINT_KEYS = ("step", "model", "ema", "opt", "sched", "torch_rng", "best")


def read_checkpoint(path: Path, device: torch.device | str = "cpu", mmap: bool = False) -> dict:
    """A training checkpoint, read without running code from it: ``weights_only`` lets
    only tensors and plain values out of the pickle (a crafted file ran its code when a run
    resumed from it). Anything that is not a vidmat checkpoint is one sentence."""
    from vidmat.model.weights import TorchFileRefused, load_plain

    try:
        ck = load_plain(path, map_location=device, mmap=mmap)
    except TorchFileRefused as exc:
        reason = (
            "it holds Python objects other than tensors, which vidmat does not load: they "
            "could run code"
            if exc.objects
            else exc.reason
        )
        raise VidmatError(
            f"cannot read checkpoint {path} ({reason}); it is not a vidmat training checkpoint."
        ) from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise VidmatError(
            f"{path} is not a vidmat training checkpoint (no {', '.join(missing)}); resume "
            "from a run's last.pt, or start from weights with --init."
        )
    return ck


def _drop_log_after(path: Path, step: int) -> None:
    """Keep the log's lines up to ``step``, where a run resumes: after a kill -9 the steps
    since the last checkpoint were trained, logged and then trained again, so a log of a
    200-step run held 219 lines (steps 41-59 twice). A line that is not JSON is kept."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            rec_step = json.loads(line).get("step")
        except (ValueError, AttributeError):
            if not line.endswith("\n"):
                continue  # a line torn by the kill: the next record would be glued to it
            rec_step = None
        if not isinstance(rec_step, int) or rec_step <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if kept != lines:  # a line dropped, or a whole last record given its newline
        with atomic_output(path) as tmp:
            tmp.write_text("".join(kept))


def _atomic_torch_save(obj: object, path: Path) -> None:
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


class TrainingDiverged(VidmatError):
    """The loss or the weights stopped being numbers (too high a --lr): nothing more is
    saved or exported, so RUN/last.pt and the exports keep the last state that was sound."""


def check_exportable(model: nn.Module) -> None:
    """Refuse weights that are not numbers or that fp16 cannot hold (exports are fp16:
    a weight past 65504 is written as infinity, and eval then refuses the file)."""
    limit = torch.finfo(torch.float16).max
    for name, value in model.state_dict().items():
        if value.is_floating_point() and not bool(value.abs().le(limit).all()):
            raise TrainingDiverged(
                f"training diverged: weight {name} is no longer a number fp16 can hold"
            )


def export_weights(model: nn.Module, cfg: TrainConfig, path: Path, description: str) -> str:
    """Write safetensors (fp16) with the spec the engine needs; returns the sha256."""
    from vidmat.model.spec import WeightsSpec
    from vidmat.model.weights import own_head_size, save_weights, sha256_file

    check_exportable(model)

    spec = WeightsSpec(
        name=cfg.name,
        arch=cfg.arch,
        input_size=cfg.val_size or cfg.size,
        scale="255",
        file=path.name,
        description=description,
        head_size=own_head_size(model, cfg.val_size or cfg.size),
    )
    with atomic_output(path) as tmp:
        save_weights(model, spec, tmp, half=True)
    return sha256_file(path)


def cache_folder(cfg: TrainConfig) -> Path:
    """Where the decoded, resized data is cached: --cache, else beside the run folder."""
    return cfg.cache_dir or cfg.run_dir.parent / "cache"


def load_training_sources(cfg: TrainConfig) -> list[CachedSource]:
    """The --data roots, decoded and cached once (memory-mapped afterwards)."""
    return [
        load_source(
            s, cache_folder(cfg), cfg.cache_long_side, s.path.name in cfg.close_gaps, cfg.progress
        )
        for s in cfg.sources
    ]


def write_samples(cfg: TrainConfig, folder: Path) -> int:
    """Write the samples of steps 0 .. ``cfg.steps`` - 1, exactly as this run would draw
    them, to ``folder``/images and ``folder``/masks (PNG; masks 0 / 255) and return how
    many: to look at what a command line trains on, or to hand those very samples to
    ``python -m vidmat.train.head --data``. The folder appears only when complete."""
    from vidmat.progress import progress_bar

    sources = load_training_sources(cfg)
    bank = None
    if cfg.backgrounds is not None:
        bank = load_backgrounds(cfg.backgrounds, cache_folder(cfg))
    with (
        atomic_folder(folder) as tmp,
        progress_bar(
            total=cfg.steps * cfg.batch, desc="samples", unit="img", disable=not cfg.progress
        ) as bar,
    ):
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        for step in range(cfg.steps):
            imgs, masks = batch_samples(
                cfg.seed, step, cfg.batch, size_at(step, cfg), sources, bank, cfg.aug
            )
            for k in range(cfg.batch):
                stem = f"{step:06d}_{k:03d}"
                mask = (masks[k, 0] * 255).astype(np.uint8)
                if not write_pair(tmp, stem, imgs[k], mask):
                    raise VidmatError(
                        f"could not write sample {stem}.png to {folder} (disk full?)."
                    )
                bar.update(1)
    return cfg.steps * cfg.batch


def check_same_freeze(config: dict, freeze: Sequence[str], path: Path) -> None:
    """Refuse to resume a checkpoint with other ``--freeze`` groups: its optimiser holds
    the trainable parameters only, so another set would not load into it. The same
    groups named in another order are the same set of parameters."""
    saved = tuple(config.get("freeze", ()))
    if set(saved) != set(freeze):
        was = f"--freeze {','.join(saved)}" if saved else "no --freeze"
        raise VidmatError(f"checkpoint {path} was trained with {was}; resume it with the same.")


#: TrainConfig fields a resume may change. None of them changes which samples a step
#: draws, its loss or the learning rate of the steps already taken: ``steps`` stretches
#: the cosine ahead (README and model card: "Raise --steps to extend the cosine");
#: the others set how long, how fast or where the run goes and what it prints. The
#: device and ``amp`` change rounding only, and a run moved between a GPU and a CPU (the
#: model card's GPU workflow) changes both. ``arch`` and ``freeze`` are checked on their
#: own: with another value the checkpoint does not load at all.
RESUME_MAY_CHANGE = frozenset(
    {
        "steps",
        "minutes",
        "ckpt_minutes",
        "val_every",
        "device",
        "threads",
        "workers",
        "amp",
        "channels_last",
        "cudnn_benchmark",
        "progress",
        "run_dir",
        "cache_dir",
        "name",
        "arch",
        "freeze",
    }
)

#: The flags of AugmentConfig fields that have one; the rest show as ``aug.FIELD``.
_AUG_FLAGS = {
    "rotate_deg": "--rotate",
    "wide_shot": "--wide-shot",
    "shadow": "--shadow",
    "camouflage": "--camouflage",
    "second_person": "--second-person",
    "graphics": "--graphics",
    "sun_shadow": "--sun-shadow",
}
#: TrainConfig fields that no flag sets (a code change may still move their defaults).
_NO_FLAG = ("min_lr_ratio", "cache_long_side")


def _path_name(value: object) -> object:
    """A path setting by its last part: a run moved to another machine (the model card's
    GPU workflow: ``.pack/train/ccp`` there, ``../shared/data/train/ccp`` here) or
    started from another folder names the same data by another path."""
    return Path(str(value)).name if value is not None else None


def _resume_settings(config: Mapping[str, object]) -> dict[str, object]:
    """The settings in a run's ``config`` (:meth:`TrainConfig.to_json`) that decide its
    numbers, keyed by the flag that sets them and comparable across machines."""
    out: dict[str, object] = {}
    for key, value in config.items():
        if key in RESUME_MAY_CHANGE:
            continue
        # settings of a part the run does not have: no validation, no anchor (a run
        # started with --val-n 5 and no --val was refused its resume: "--val-n 5 (now 50)")
        if (key == "val_n" and not config.get("val")) or (
            key in ("anchor_weight", "anchor_size") and not config.get("anchor")
        ):
            continue
        if key == "aug" and isinstance(value, Mapping):
            for sub, v in value.items():
                out[_AUG_FLAGS.get(sub, f"aug.{sub}")] = v
            continue
        if key == "sources" and isinstance(value, list):
            # "PATH:WEIGHT:COMPOSITE"; the order matters (a sample draws a root by index)
            parts = [str(v).rsplit(":", 2) for v in value]
            value = [":".join([Path(p[0]).name, *p[1:]]) for p in parts]
        elif key == "val" and isinstance(value, list):
            value = sorted(Path(str(v)).name for v in value)  # the mean IoU is of the set
        elif key in ("backgrounds", "init", "anchor"):
            value = _path_name(value)
        elif key == "close_gaps" and isinstance(value, list):
            value = sorted(value)
        elif key == "val_size" and value == config.get("size"):
            value = None  # None validates at --size: a new --size alone is one difference
        elif key == "micro_batch" and value == config.get("batch"):
            value = None  # None runs the whole batch at once, as --micro-batch BATCH does
        flag = {"sources": "--data", "mix_sizes": "--mix-size"}.get(key)
        out[flag or (key if key in _NO_FLAG else "--" + key.replace("_", "-"))] = value
    return out


def _setting_text(value: object) -> str:
    if value is None or value == []:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def resume_differences(config: Mapping[str, object], cfg: TrainConfig) -> list[str]:
    """The settings of ``cfg`` that differ from those a checkpoint's ``config`` was
    trained with, each as 'FLAG OLD (now NEW)', in TrainConfig's order.

    A key the checkpoint lacks was added to TrainConfig after its run started; such
    keys default to what runs did before them, so the default stands in for it.
    ``sources`` has no default: a checkpoint without it has no --data to compare.
    """
    current = cfg.to_json()
    defaults = TrainConfig(sources=[], run_dir=Path()).to_json()
    del defaults["sources"]
    saved = {**defaults, **config}
    aug = config.get("aug")
    saved["aug"] = {**defaults["aug"], **(aug if isinstance(aug, Mapping) else {})}
    if "sources" not in config:
        del current["sources"]
    old, new = _resume_settings(saved), _resume_settings(current)
    return [
        f"{flag} {_setting_text(old.get(flag))} (now {_setting_text(value)})"
        for flag, value in new.items()
        if old.get(flag) != value
    ]


def check_resumable(
    config: Mapping[str, object], cfg: TrainConfig, path: Path, change_settings: bool = False
) -> list[str]:
    """Refuse to resume a checkpoint under settings that change the run's numbers.

    Batches are a function of (seed, step) and the settings, so a resume with another
    --size, --batch, --data, augmentation or learning rate no longer continues the run
    it names: it would be another run under the old run's name, its config.json
    rewritten. Changing a recipe mid-run is still done on purpose (TRAINING_HISTORY:
    "a change of flags mid-run was always SIGTERM ... and then a resume with the new
    flags"), so ``change_settings`` (``--change-settings``) lets it through. Returns the
    differences, for the caller to print when they were let through.
    """
    check_same_freeze(dict(config), cfg.freeze, path)
    diffs = resume_differences(config, cfg) if config else []
    if diffs and not change_settings:
        listed = diffs[0] if len(diffs) == 1 else ", ".join(diffs[:-1]) + " and " + diffs[-1]
        raise VidmatError(
            f"checkpoint {path} was trained with {listed}; resume it with its settings, name "
            "another --run folder for a new run, or add --change-settings to go on with the "
            "new ones on purpose."
        )
    return diffs


class Trainer:
    """Holds the state of one run; :meth:`run` trains until ``cfg.steps`` or ``stop()``."""

    def __init__(
        self,
        cfg: TrainConfig,
        sources: Sequence[CachedSource] | None = None,
        bank: np.ndarray | None = None,
        valsets: Sequence[ValSet] | None = None,
        model: nn.Module | None = None,
    ) -> None:
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
        cache = cache_folder(cfg)
        if sources is None:
            sources = load_training_sources(cfg)
        if bank is None and cfg.backgrounds is not None:
            bank = load_backgrounds(cfg.backgrounds, cache)
        if valsets is None:
            valsets = load_valsets(cfg.val, cfg.val_n, cache, cfg.progress) if cfg.val else []
            for line in held_in(cfg.val, [s.path for s in cfg.sources], cfg.val_n):
                warn(line)
        self.sources, self.bank, self.valsets = list(sources), bank, list(valsets)
        torch.manual_seed(cfg.seed)
        if model is None and cfg.init:
            from vidmat.model.weights import load_weights

            # the loaded model itself, so the heads a file keeps per input size come along
            # (vidmat train has checked that its architecture is cfg.arch)
            model, _ = load_weights(cfg.init)
        if model is None:
            from vidmat.model.u2net import build_model

            model = build_model(cfg.arch)
        self.fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        # Module.to takes memory_format (torch's stubs omit it).
        self.model = model.to(self.device, memory_format=self.fmt)  # type: ignore[call-overload]
        self.anchor: U2Net | None = None
        self.anchor_size = cfg.anchor_size
        if cfg.anchor:
            from vidmat.model.weights import load_weights

            anchor, spec = load_weights(cfg.anchor)
            anchor.to(self.device, memory_format=self.fmt)  # type: ignore[call-overload]
            self.anchor = anchor.eval()
            self.anchor.requires_grad_(False)
            self.anchor_size = cfg.anchor_size or spec.input_size
        self.frozen_bn = [
            m
            for name, m in self.model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and (cfg.freeze_bn or layer_group(name) in cfg.freeze)
        ]
        for name, prm in self.model.named_parameters():
            if layer_group(name) in cfg.freeze:
                prm.requires_grad_(False)
        self.opt = torch.optim.AdamW(
            [prm for prm in self.model.parameters() if prm.requires_grad],
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
        )
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_at(s, self.cfg))
        self.ema = EMA(self.model, cfg.ema)
        self.step = 0
        self.best = -1.0
        self.history: list[dict] = []
        self.losses: list[float] = []
        self._stop = False

    # -- checkpoints -------------------------------------------------------
    def state(self) -> dict:
        from vidmat.model.weights import own_head_size

        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.model.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "best": self.best,
            "history": self.history,
            "config": self.cfg.to_json(),
            "head_size": own_head_size(self.model, self.cfg.val_size or self.cfg.size),
        }

    def save(self, path: Path | None = None) -> Path:
        path = path or self.cfg.run_dir / "last.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_torch_save(self.state(), path)
        return path

    def load(self, path: Path, change_settings: bool = False) -> None:
        """Resume from checkpoint ``path``; see :func:`check_resumable` for
        ``change_settings``."""
        ck = read_checkpoint(path, self.device)
        config = ck.get("config")
        check_resumable(config if isinstance(config, dict) else {}, self.cfg, path, change_settings)
        try:
            self._load_state(ck)
        except torch.cuda.OutOfMemoryError:
            raise  # the GPU's memory, not the file
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError):
            # a state missing layers, a step that is not a number: written by something
            # else or damaged; a resume half-loaded from it must not go on
            raise VidmatError(
                f"checkpoint {path} is damaged: its saved state does not fit this run's model "
                "and optimiser; resume from another checkpoint or start a new --run."
            ) from None

    def _load_state(self, ck: Mapping[str, Any]) -> None:
        self.model.load_state_dict(ck["model"])
        self.ema.model.load_state_dict(ck["ema"])
        self.opt.load_state_dict(ck["opt"])
        self.sched.load_state_dict(ck["sched"])
        # Both brought back the saved run's --lr and --weight-decay (each group's values,
        # the schedule's base): a resume with --change-settings said "--lr 0.001 (now
        # 0.0001)" and went on at 0.001. This run's settings, and this run's schedule
        # (--steps may change on any resume) for the next step's rate.
        self.sched.base_lrs = [self.cfg.lr] * len(self.opt.param_groups)
        for group in self.opt.param_groups:
            group["initial_lr"] = self.cfg.lr
            group["weight_decay"] = self.cfg.weight_decay
            group["lr"] = self.cfg.lr * lr_at(self.sched.last_epoch, self.cfg)
        torch.set_rng_state(ck["torch_rng"].cpu())  # map_location moved it to the device
        self.step = int(ck["step"])
        self.best = float(ck["best"])
        self.history = list(ck.get("history", []))

    # -- training ----------------------------------------------------------
    def stop(self) -> None:
        self._stop = True

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of steps ``self.step`` .. ``cfg.steps - 1``, in order."""
        ds = StepBatches(self.cfg, self.sources, self.bank)
        steps = range(self.step, self.cfg.steps)
        if self.cfg.workers <= 0:
            yield from (ds[s] for s in steps)
            return
        loader = torch.utils.data.DataLoader(
            ds,
            batch_size=None,
            sampler=steps,
            num_workers=self.cfg.workers,
            prefetch_factor=4,
            pin_memory=self.device.type == "cuda",
            # Its own generator: the loader's seeding must not draw from the global
            # torch RNG that checkpoints save, or a run with workers would resume apart.
            generator=torch.Generator().manual_seed(self.cfg.seed),
            worker_init_fn=functools.partial(_start_worker, trainer_pid=os.getpid()),
            multiprocessing_context=WORKER_START,
        )
        batches = None
        try:
            with group_signals_held():  # the workers start here
                batches = iter(loader)
            yield from batches
        finally:
            # A Ctrl-C delivered as the workers start is raised here, and the traceback
            # kept the loader alive: its workers, still starting, read caches the caller
            # was already deleting (bench train's temporary one) and each printed a
            # traceback. They are shut down before the exception goes on.
            shutdown = getattr(batches, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()

    def anchor_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The anchor's fused logits for a batch, squashed to its size as the engine
        squashes a frame."""
        from vidmat.core.engine import to_input_size

        assert self.anchor is not None and self.anchor_size is not None
        x = to_input_size(x, self.anchor_size)
        with torch.no_grad(), autocast(self.device, self.cfg.amp):
            return self.anchor.forward_all(x.contiguous(memory_format=self.fmt))[0]

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> float:
        cfg = self.cfg
        self.model.train()
        for bn in self.frozen_bn:
            bn.eval()
        if batch is None:
            batch = StepBatches(cfg, self.sources, self.bank)[self.step]
        x, y = batch
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.fmt)
        y = y.to(self.device, non_blocking=True)
        self.opt.zero_grad(set_to_none=True)
        n = len(x)
        m = cfg.micro_batch or n
        loss = torch.zeros((), device=self.device)
        for i in range(0, n, m):
            xi, yi = x[i : i + m], y[i : i + m]
            with autocast(self.device, cfg.amp):
                logits = self.model.forward_all(xi)
            # Each pass's loss is a mean over its samples; weighting it by its share of
            # the batch makes the summed gradients those of the whole batch's mean.
            part = deep_supervision_loss(logits, yi, cfg.iou_weight)
            if self.anchor is not None and cfg.anchor_weight > 0:
                part = part + cfg.anchor_weight * anchor_loss(logits[0], self.anchor_logits(xi))
            part = part * (len(xi) / n)
            part.backward()
            loss += part.detach()
        value = float(loss)
        if not math.isfinite(value):  # before the step: the weights stay what they were
            raise TrainingDiverged(
                f"training diverged at step {self.step + 1}: the loss is {value}"
            )
        self.opt.step()
        self.sched.step()
        self.step += 1
        self.ema.update(self.model, self.step)
        self.losses.append(value)
        return value

    def _export_step(self, note: str) -> None:
        """This step's EMA as ``RUN/ema_stepN.safetensors``."""
        path = self.cfg.run_dir / f"ema_step{self.step}.safetensors"
        export_weights(self.ema.model, self.cfg, path, note)

    def run(self, on_log: Callable[[str], None] | None = None) -> dict:
        cfg = self.cfg
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cfg.run_dir / "config.json", json.dumps(cfg.to_json(), indent=2))
        log_path = cfg.run_dir / "log.jsonl"
        _drop_log_after(log_path, self.step)
        log_file = open(log_path, "a")  # noqa: SIM115 - closed in finally
        bar = None
        if cfg.progress:
            from vidmat.progress import progress_bar

            bar = progress_bar(total=cfg.steps, initial=self.step, unit="step")
        last_ckpt = time.monotonic()
        deadline = last_ckpt + cfg.minutes * 60 if cfg.minutes else math.inf
        smooth = None
        # a resumed run shows its last validation until the next, not "nan"
        val_iou = float(self.history[-1].get("mean_iou", math.nan)) if self.history else math.nan
        exported = self.step
        saved = self.step  # the step RUN/last.pt holds (0: none yet, or a fresh run's)
        diverged = False
        try:
            t0 = time.monotonic()
            for batch in self.batches():
                if self._stop or time.monotonic() > deadline:
                    break
                lr = self.opt.param_groups[0]["lr"]  # the step's own: the schedule moves on
                loss = self.train_step(batch)
                smooth = loss if smooth is None else 0.95 * smooth + 0.05 * loss
                rec = {
                    "step": self.step,
                    "loss": loss,
                    "lr": lr,
                    "sec": round(time.monotonic() - t0, 3),
                }
                if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                    note = f"step {self.step}"
                    if self.valsets:
                        res = validate(
                            self.ema.model, self.valsets, cfg.val_size or cfg.size, self.device
                        )
                        val_iou = res["mean_iou"]
                        rec["val"] = res
                        self.history.append({"step": self.step, **res})
                        note += f", val mean IoU {val_iou:.4f}"
                        if val_iou > self.best:
                            self.best = val_iou
                            rec["exported"] = export_weights(
                                self.ema.model, cfg, cfg.run_dir / "best.safetensors", note
                            )
                        if on_log:
                            on_log(f"step {self.step}: " + json.dumps(res))
                    self._export_step(note)
                    exported = self.step
                    check_exportable(self.model)
                    self.save()
                    saved, last_ckpt = self.step, time.monotonic()
                log_file.write(json.dumps(rec) + "\n")
                log_file.flush()
                if time.monotonic() - last_ckpt > cfg.ckpt_minutes * 60:
                    check_exportable(self.model)
                    self.save()
                    saved, last_ckpt = self.step, time.monotonic()
                if bar is not None:
                    bar.update(1)
                    shown = {"loss": f"{smooth:.3f}"}
                    if cfg.val:  # without --val it showed val_iou=nan the whole run
                        shown["val_iou"] = f"{val_iou:.3f}"
                    bar.set_postfix(shown)
                t0 = time.monotonic()
            if self.step > exported:  # stopped between validations: keep where it got to
                self._export_step(f"step {self.step} (stopped)")
        except TrainingDiverged as exc:
            diverged = True
            if saved:
                advice = (
                    f"{cfg.run_dir / 'last.pt'} holds step {saved}, from before it: resume "
                    "with a lower --lr and --change-settings"
                )
            else:
                advice = "nothing was saved; start again with a lower --lr or a longer --warmup"
            raise TrainingDiverged(f"{exc}; {advice}.") from None
        finally:
            if self.step > 0 and not diverged:
                self.save()
            log_file.close()
            if bar is not None:
                bar.close()
        return {"step": self.step, "best": self.best, "history": self.history}
