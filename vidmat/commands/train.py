"""``vidmat train``: train U2-Net† person weights from image/mask folders, resumable."""

from __future__ import annotations

import argparse
import dataclasses
import math
import signal
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidmat.argtypes import weights_name
from vidmat.errors import VidmatError, warn
from vidmat.io.files import check_out_apart, check_output_folder, folder_lock, require_folder
from vidmat.model.spec import MAX_INPUT_SIZE
from vidmat.signals import caught_signals, stop_exception, stop_signal_received
from vidmat.train import AMP_MODES

if TYPE_CHECKING:
    from types import FrameType

    from vidmat.train.augment import AugmentConfig
    from vidmat.train.loop import TrainConfig

EPILOG = """\
example (CPU, resumable; re-run the same command to continue from RUN/last.pt):
  vidmat train --data ../shared/data/train/ccp:1.0:0.5 \\
      --data ../shared/data/train/viton:1.0:0.9 \\
      --backgrounds ../shared/data/backgrounds --val ../shared/data/val/ccp \\
      --val ../shared/data/val/viton --run /work/vidmat-runs/cpu160 \\
      --size 160 --batch 8

Each --data root holds images/ and masks/ (same file stems and sizes; masks
0 = background, 255 = person, or 0/1 label masks; palette PNGs by index).
WEIGHT is the relative probability of drawing from that root, COMPOSITE the
probability that its person is pasted onto another background.
Each validation writes that step's EMA weights to RUN/ema_stepN.safetensors and
the best so far (by mean val IoU) to RUN/best.safetensors; either can be shipped
or averaged with python -m vidmat.train.publish.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train person-segmentation weights (resumable)",
        description=textwrap.fill(
            "Train U2-Net† on image/mask folders with compositing and video-style "
            "augmentation, deep-supervision BCE, AdamW with warmup + cosine, an EMA of the "
            "weights, periodic validation and exact resume from checkpoints.",
            78,
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="ROOT[:WEIGHT[:COMPOSITE]]",
        help="training root with images/ and masks/; repeat for several roots",
    )
    p.add_argument(
        "--backgrounds",
        type=Path,
        metavar="DIR",
        help="person-free images to composite people onto",
    )
    p.add_argument(
        "--val",
        action="append",
        type=Path,
        default=[],
        metavar="ROOT",
        help="validation root with images/ and masks/; repeatable",
    )
    p.add_argument(
        "--run",
        type=Path,
        metavar="DIR",
        help="run folder for checkpoints, log and best weights (keep it outside the repo); "
        "required except with --write-samples",
    )
    p.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help="folder for the pre-resized uint8 data cache, kept for later runs (default: "
        "RUN/../cache, or beside the --write-samples folder)",
    )
    p.add_argument(
        "--arch",
        default="u2netp",
        choices=("u2netp", "u2net"),
        help="u2netp (default, 1.13 M parameters, what vidmat ships) or the full u2net",
    )
    p.add_argument(
        "--size", type=int, default=160, help="training input side in pixels (default 160)"
    )
    p.add_argument(
        "--mix-size",
        type=int,
        action="append",
        default=[],
        metavar="PX",
        help="also train at this input side, taking it in turn with --size step by step "
        "(repeatable), e.g. --size 256 --mix-size 192 for weights run at both",
    )
    p.add_argument(
        "--val-size", type=int, help="validation / exported input size (default: --size)"
    )
    p.add_argument("--batch", type=int, default=8, help="samples per optimiser step (default 8)")
    p.add_argument(
        "--micro-batch",
        type=int,
        metavar="N",
        help="run each step's batch through the model N samples at a time and sum the "
        "gradients (default: all at once); N divides --batch. With --freeze-bn, "
        "--batch 32 --micro-batch 8 trains exactly as --batch 32 does, in the memory of 8",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=4000,
        help="total optimiser steps (default 4000); resume with a larger value to extend a run",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=1e-3,
        help="AdamW's peak learning rate, reached after --warmup and then decayed on a "
        "cosine to the last step (default 1e-3; fine-tunes here used 6e-5 to 1.2e-4)",
    )
    p.add_argument(
        "--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default 1e-4)"
    )
    p.add_argument(
        "--iou-weight",
        type=float,
        default=0.0,
        help="weight of a soft-IoU loss on every output beside the BCE (default 0: BCE only)",
    )
    p.add_argument(
        "--shadow",
        type=float,
        default=0.0,
        metavar="P",
        help="share of the people pasted onto other scenes that cast a shadow there, which "
        "the mask leaves background (default 0)",
    )
    p.add_argument(
        "--camouflage",
        type=float,
        default=0.0,
        metavar="P",
        help="share of the people pasted onto other scenes whose scene takes on the colour of "
        "a part of them, a garment or the skin (default 0); the batches are otherwise those of "
        "a run without it",
    )
    p.add_argument(
        "--second-person",
        type=float,
        default=0.0,
        metavar="P",
        help="share of the people pasted onto other scenes that get a second person behind "
        "them, at its own place and scale, both labelled person (default 0); the batches are "
        "otherwise those of a run without it",
    )
    p.add_argument(
        "--graphics",
        type=float,
        default=0.0,
        metavar="P",
        help="share of the people pasted onto other scenes whose scene gets bold graphics "
        "painted on it, as a mural, poster or patterned wall (lettering, shapes, stripes; "
        "default 0); the batches are otherwise those of a run without it",
    )
    p.add_argument(
        "--sun-shadow",
        type=float,
        default=0.0,
        metavar="P",
        help="share of the people pasted onto other scenes that stand in sunlight: a hard, "
        "dark shadow laid on the ground from their feet, left background (default 0; it "
        "replaces --shadow's soft one where both come, and needs the feet in the frame); the "
        "batches are otherwise those of a run without it",
    )
    p.add_argument(
        "--rotate",
        type=float,
        default=12.0,
        metavar="DEG",
        help="largest tilt of a sample, either way, in degrees (default 12); a run with "
        "another value draws the same batches but for the angle",
    )
    p.add_argument(
        "--wide-shot",
        type=float,
        default=1.5,
        metavar="X",
        help="widest frame a pasted person is shown in, as X times the photo's longer side "
        "(default 1.5: a standing person fills at least about 0.6 of the frame's height; "
        "3 shows them down to about 0.3); the batches are those of a run without it but "
        "for the framing",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="steps of linear learning-rate warm-up, below --steps (default: a tenth of "
        "--steps, at most 100; a resumed run keeps its own)",
    )
    p.add_argument(
        "--ema", type=float, default=0.995, help="EMA decay of the weights (default 0.995)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the initial weights and of every batch (default 0); the same seed "
        "gives the same run",
    )
    p.add_argument(
        "--val-every", type=int, default=100, help="validate every N steps (default 100)"
    )
    p.add_argument("--val-n", type=int, default=None, help="images per --val root (default 50)")
    p.add_argument(
        "--ckpt-minutes",
        type=float,
        default=4.0,
        help="write RUN/last.pt at least this often, in minutes (default 4)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument(
        "--minutes",
        type=float,
        metavar="M",
        help="stop after M minutes of training, checkpointed and exported as at Ctrl-C "
        "(for a timed GPU lease; pick --steps so the cosine ends near then)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="processes that build batches ahead of the model (default 0: in the training "
        "process, right for a 2-core CPU); on a GPU machine most of its cores, e.g. 12 "
        "(`vidmat bench train` says whether the GPU waits on them). The batches are the "
        "same either way",
    )
    p.add_argument(
        "--cudnn-benchmark",
        action="store_true",
        help="let cuDNN time its convolution algorithms per input shape (CUDA only; "
        "compare with `vidmat bench train --cudnn-benchmark on,off` first)",
    )
    p.add_argument(
        "--freeze-bn",
        action="store_true",
        help="keep BatchNorm's running statistics from --init and use them while training "
        "(for a fine-tune at a batch much smaller than the one --init was trained at, "
        "e.g. 8 on a CPU after 32 on a GPU)",
    )
    p.add_argument(
        "--freeze",
        default="",
        metavar="GROUPS",
        help="comma-separated layer groups whose weights (and BatchNorm statistics) keep "
        "their --init values: encoder (stages 1-6), decoder (stages 5d-1d), sides (the side "
        "convolutions and the fusing head); e.g. --freeze encoder fine-tunes the decoder "
        "and sides only",
    )
    p.add_argument(
        "--amp",
        choices=AMP_MODES,
        default="auto",
        help="mixed precision of the forward pass (default auto: bf16 on CUDA, fp32 on a "
        "CPU); bf16 on a CPU with AVX512-BF16 or AMX trains about 2.4x faster (measured on "
        "an AMD EPYC with AVX512-BF16), on other CPUs it is slower",
    )
    p.add_argument(
        "--no-channels-last",
        dest="channels_last",
        action="store_false",
        help="keep NCHW activations (channels-last is ~20%% faster on CPU)",
    )
    p.add_argument(
        "--init",
        type=weights_name,
        metavar="WEIGHTS",
        help="start from these weights instead of random",
    )
    p.add_argument(
        "--anchor",
        type=weights_name,
        metavar="WEIGHTS",
        help="also train the fused output toward these weights' output on the same batch "
        "(BCE against their probabilities): pulls a fine-tune toward a shipped file where the "
        "labels leave it free, and with --mix-size teaches the other sizes what the file "
        "gives at its own. The anchor runs on every pass: a quarter more time a step on 2 CPU "
        "cores (256, 320 and 192 px in turn)",
    )
    p.add_argument(
        "--anchor-weight",
        type=float,
        default=None,
        metavar="W",
        help="weight of the --anchor term beside the seven outputs' BCE (default 1)",
    )
    p.add_argument(
        "--anchor-size",
        type=int,
        metavar="PX",
        help="input side the --anchor runs at, each batch squashed to it (default: the "
        "size in the anchor's spec, 256 for the shipped file)",
    )
    p.add_argument(
        "--resume",
        type=Path,
        metavar="CKPT",
        help="checkpoint to resume from (default: RUN/last.pt when it exists)",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start from step 0, and stop with an error rather than overwrite an existing "
        "RUN/last.pt (without it, a run folder holding last.pt resumes from it)",
    )
    p.add_argument(
        "--change-settings",
        action="store_true",
        help="resume even though settings that decide the run's numbers (--size, --batch, "
        "--data, --lr, the augmentation, ...) differ from the checkpoint's, to change a "
        "recipe mid-run on purpose; without it such a resume is refused, as the run would "
        "no longer be the one it continues (--steps, --minutes, --device, --threads and "
        "--workers may change either way)",
    )
    p.add_argument(
        "--close-gaps",
        default=None,
        metavar="NAMES",
        help="comma-separated --data folder names whose masks have VITON-style neck gaps "
        "to close and holes to fill (default: viton; 'none' for none). Other roots keep "
        "their holes: the space between an arm and the torso is background",
    )
    p.add_argument(
        "--write-samples",
        type=Path,
        metavar="DIR",
        help="do not train: write the samples of steps 0 .. --steps - 1 (--steps x --batch "
        "images, exactly as this command line would draw them) to DIR/images and DIR/masks, "
        "to look at the augmentation or to hand to python -m vidmat.train.head --data",
    )
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar, for the logs of background runs (validations are printed "
        "either way, and every step goes to RUN/log.jsonl)",
    )
    p.set_defaults(func=run)


#: The switches that are shares of the composited samples, by their argparse names.
_SHARES = ("shadow", "camouflage", "second_person", "graphics", "sun_shadow")


def augment_config(args: argparse.Namespace) -> AugmentConfig:
    """The sample synthesis the switches ask for; out-of-range values are refused."""
    from vidmat.train.augment import AugmentConfig

    for name in _SHARES:
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise VidmatError(f"--{name.replace('_', '-')} must be between 0 and 1.")
    if not 0.45 < args.wide_shot <= 10.0:
        raise VidmatError("--wide-shot must be above 0.45 and at most 10.")
    if not 0.0 <= args.rotate <= 90.0:
        raise VidmatError("--rotate must be between 0 and 90 degrees.")
    return AugmentConfig(
        rotate_deg=args.rotate,
        wide_shot=args.wide_shot,
        **{name: getattr(args, name) for name in _SHARES},
    )


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The run the command line describes, checked before any data is read.

    Only plain values and the existence of the input folders are checked here; the
    output folders are probed last, in :func:`run`, so nothing is written for a
    command line that is refused for another reason.
    """
    from vidmat.core.engine import select_device
    from vidmat.train.data import gap_root_names, parse_data_source
    from vidmat.train.loop import LAYER_GROUPS, TrainConfig, default_warmup

    if args.run is None and args.write_samples is None:
        raise VidmatError("--run DIR is required: the run folder for checkpoints, log and weights.")
    sources = [parse_data_source(d) for d in args.data]
    for v in args.val:
        require_folder(v, "validation root")
    if args.backgrounds is not None:
        require_folder(args.backgrounds, "background folder")
    # the engine's range: a run at 4096 trained and then failed at its first export
    top = MAX_INPUT_SIZE
    for size in (args.size, *args.mix_size):
        if size < 32 or size % 32 or size > top:
            raise VidmatError(f"--size and --mix-size must be multiples of 32 from 32 to {top}.")
    if args.val_size is not None and (
        args.val_size < 32 or args.val_size % 32 or args.val_size > top
    ):
        raise VidmatError(f"--val-size must be a multiple of 32 from 32 to {top}.")
    if args.batch < 1 or args.steps < 1:
        raise VidmatError("--batch and --steps must be positive.")
    if args.micro_batch is not None and not (
        1 <= args.micro_batch <= args.batch and args.batch % args.micro_batch == 0
    ):
        raise VidmatError("--micro-batch must be a positive divisor of --batch.")
    if not (math.isfinite(args.lr) and args.lr > 0):  # NaN and inf too
        raise VidmatError("--lr must be a positive number.")
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        raise VidmatError("--weight-decay must be 0 or more.")
    if not (math.isfinite(args.iou_weight) and args.iou_weight >= 0):
        raise VidmatError("--iou-weight must be 0 or more.")
    if args.warmup is not None and args.warmup < 0:
        raise VidmatError("--warmup must be 0 or more steps.")
    if args.warmup is not None and 0 < args.steps <= args.warmup and args.write_samples is None:
        # The learning rate would still be climbing at the last step: no peak, no decay.
        raise VidmatError(
            f"--warmup {args.warmup} is not below --steps {args.steps}: the learning rate "
            "would still be rising at the last step and never decay; give a shorter --warmup."
        )
    if not 0.0 <= args.ema < 1.0:
        raise VidmatError("--ema must be at least 0 and below 1.")
    if not 0 <= args.seed < 2**32:  # numpy's generators take no more (a traceback above it)
        raise VidmatError(f"--seed must be between 0 and {2**32 - 1}.")
    if args.val_every < 1:
        raise VidmatError("--val-every must be at least 1 step.")
    if args.val_n is not None and args.val_n < 1:
        raise VidmatError("--val-n must be at least 1 image.")
    if not args.ckpt_minutes > 0:  # inf: only at validations and the end; NaN refused
        raise VidmatError("--ckpt-minutes must be positive.")
    if args.threads < 1:
        raise VidmatError("--threads must be at least 1.")
    if args.minutes is not None and args.minutes <= 0:
        raise VidmatError("--minutes must be positive.")
    if args.workers < 0:
        raise VidmatError("--workers must be 0 or more.")
    if args.freeze_bn and args.init is None:
        raise VidmatError("--freeze-bn keeps the statistics of --init weights; give --init.")
    freeze = tuple(g.strip() for g in args.freeze.split(",") if g.strip())
    unknown = [g for g in freeze if g not in LAYER_GROUPS]
    if unknown:
        raise VidmatError(f"--freeze knows {', '.join(LAYER_GROUPS)}, not {', '.join(unknown)}.")
    if freeze and args.init is None:
        raise VidmatError("--freeze keeps layers as --init gave them; give --init.")
    if set(freeze) == set(LAYER_GROUPS):
        raise VidmatError("--freeze leaves nothing to train; name at most two groups.")
    if args.anchor_weight is not None and not (
        math.isfinite(args.anchor_weight) and args.anchor_weight >= 0
    ):
        raise VidmatError("--anchor-weight must be 0 or more.")
    if args.anchor_size is not None and (args.anchor_size < 32 or args.anchor_size % 32):
        raise VidmatError("--anchor-size must be a multiple of 32, at least 32.")
    # Options that would do nothing here are refused, not ignored: a --val-n saved with a
    # run that has no --val even refused its resume later ("--val-n 5 (now 50)").
    _refuse_unused(
        args,
        [
            (
                "val_n",
                not args.val,
                "--val-n counts images of each --val root; add --val ROOT, or leave it out.",
            ),
            (
                "anchor_weight",
                args.anchor is None,
                "--anchor-weight weighs the --anchor term; add --anchor FILE, or leave it out.",
            ),
            (
                "anchor_size",
                args.anchor is None,
                "--anchor-size is the side --anchor runs at; add --anchor FILE, or leave it out.",
            ),
            *(
                (
                    name,
                    args.write_samples is not None,
                    f"--write-samples writes samples and trains nothing; leave {flag} out.",
                )
                for name, flag in (
                    ("resume", "--resume"),
                    ("fresh", "--fresh"),
                    ("val", "--val"),
                    ("minutes", "--minutes"),
                )
            ),
        ],
    )
    # torch.device("cuda") on a CPU-only build fails deep in the first .to() with an
    # AssertionError; select_device says so in one sentence (and resolves "auto").
    device = select_device(args.device)
    if args.cudnn_benchmark and device.type != "cuda":
        raise VidmatError(
            f"--cudnn-benchmark times cuDNN's algorithms on CUDA, and this run is on {device}; "
            "leave it out."
        )
    return TrainConfig(
        sources=sources,
        # --write-samples needs no run folder; the default cache goes beside DIR then.
        run_dir=args.run if args.run is not None else args.write_samples,
        backgrounds=args.backgrounds,
        val=list(args.val),
        cache_dir=args.cache,
        arch=args.arch,
        size=args.size,
        mix_sizes=tuple(args.mix_size),
        batch=args.batch,
        micro_batch=args.micro_batch,
        steps=args.steps,
        lr=args.lr,
        weight_decay=args.weight_decay,
        iou_weight=args.iou_weight,
        aug=augment_config(args),
        warmup=args.warmup if args.warmup is not None else default_warmup(args.steps),
        ema=args.ema,
        seed=args.seed,
        val_every=args.val_every,
        val_n=args.val_n if args.val_n is not None else 50,
        val_size=args.val_size,
        ckpt_minutes=args.ckpt_minutes,
        device=str(device),
        threads=args.threads,
        workers=args.workers,
        minutes=args.minutes,
        channels_last=args.channels_last,
        amp=args.amp,
        cudnn_benchmark=args.cudnn_benchmark,
        freeze_bn=args.freeze_bn,
        freeze=freeze,
        init=args.init,
        anchor=args.anchor,
        anchor_weight=args.anchor_weight if args.anchor_weight is not None else 1.0,
        anchor_size=args.anchor_size,
        close_gaps=gap_root_names(args.close_gaps, [src.path for src in sources]),
        progress=args.progress,
    )


def _check_init_arch(init: str, arch: str) -> None:
    """Refuse --init weights of the other architecture before any data is read.

    Trainer would load them only after caching the data, and then fail with dozens of
    size-mismatch lines from load_state_dict. Loading them once more here costs a
    second or two (u2net: 176 MB) against minutes of data caching.
    """
    from vidmat.model.weights import load_weights

    _, spec = load_weights(init)
    if spec.arch != arch:
        raise VidmatError(
            f"--init {init} holds {spec.arch} weights, not {arch}; pass --arch {spec.arch}."
        )


def _check_anchor(anchor: str) -> None:
    """Load the --anchor once before any data is read, so that a missing or wrong file
    is one sentence now rather than after minutes of caching. Any architecture will do:
    the full u2net can teach u2netp."""
    from vidmat.model.weights import load_weights

    load_weights(anchor)


def _check_resume(
    path: Path, cfg: TrainConfig, change_settings: bool, own_warmup: bool
) -> tuple[int | None, list[str], TrainConfig]:
    """Refuse a checkpoint of the other architecture, of other --freeze groups or of
    other settings (see :func:`vidmat.train.loop.check_resumable`), or an unreadable one,
    up front; return its step (None when it holds none), the settings
    ``change_settings`` let change and the config to go on with.

    With ``own_warmup`` (no --warmup given) the run keeps the warm-up it started with:
    the default follows --steps, which a resume raises to extend the run.

    The checkpoint is memory-mapped, so only its small config is actually read here.
    """
    from vidmat.train.loop import check_resumable, read_checkpoint

    try:
        ck = read_checkpoint(path, mmap=True)
    except VidmatError:  # mmap needs torch's zip format; older files load whole
        ck = read_checkpoint(path)

    config = ck.get("config")
    config = config if isinstance(config, dict) else {}
    if own_warmup and isinstance(config.get("warmup"), int):
        cfg = dataclasses.replace(cfg, warmup=config["warmup"])
    saved = config.get("arch")
    if saved is not None and saved != cfg.arch:
        raise VidmatError(
            f"checkpoint {path} is of a {saved} run, not {cfg.arch}; pass --arch {saved} "
            "to resume it, or name another --run folder."
        )
    changed = check_resumable(config, cfg, path, change_settings)
    step = ck.get("step")
    return (int(step) if isinstance(step, int) else None), changed, cfg


def _check_steps_left(path: Path, step: int, steps: int) -> bool:
    """Whether a run at ``step`` has steps left to train under ``--steps``.

    At exactly --steps the run is finished: re-running its command (the documented way
    to resume, which a script may repeat until the run is done) succeeds with nothing
    to do, exit 0, and leaves the run's files as they are. Past --steps the command
    line asks for a shorter run than the one that exists, a slip or a fresh run meant;
    exit 0 would let a script take it for a trained --steps run, so it is refused.
    """
    if step > steps:
        raise VidmatError(
            f"checkpoint {path} is already at step {step}, past --steps {steps}, so nothing "
            f"was trained; pass --steps above {step} to go on, or name another --run folder "
            "for a new run."
        )
    if step == steps:
        print(
            f"{path} is already at step {step} of --steps {steps}; nothing was trained "
            "(raise --steps to go on).",
            flush=True,
        )
        return False
    return True


def _refuse_unused(args: argparse.Namespace, cases: list[tuple[str, bool, str]]) -> None:
    """Refuse the first option given (not None, not False, not empty) whose case holds:
    (its dest, whether it would go unused, the sentence that says so)."""
    for dest, unused, why in cases:
        if unused and getattr(args, dest) not in (None, False, []):
            raise VidmatError(why)


def _note_heads_left(model: Any, cfg: TrainConfig) -> None:
    """Say which of an --init file's heads per input size this run does not train: they
    go into its exports as they were, fitted to the body before it, and a model run at
    their sizes uses them (the shipped file trained at 64 px trained its 192 head alone)."""
    sized = getattr(model, "sized_heads", None)
    if not sized:
        return
    trained = {id(model.head_for(s)) for s in (cfg.size, *cfg.mix_sizes)}
    heads = {int(model.head_size): model, **{int(k): h for k, h in sized.items()}}
    left = sorted(size for size, head in heads.items() if id(head) not in trained)
    if left:
        sizes = ", ".join(str(s) for s in left)
        warn(
            f"--init {cfg.init} has heads for input sizes {sizes} that a run at "
            f"{'/'.join(str(s) for s in (cfg.size, *cfg.mix_sizes))} px does not train; they "
            "are exported as they were, fitted to the body before this run: refit them "
            "afterwards (python -m vidmat.train.head --sides --size S), or train at their "
            "sizes too (--mix-size)."
        )


def _check_no_other_run(run: Path, resume: Path | None) -> None:
    """Refuse a run folder holding a run's weights that this run does not go on from: a
    fresh start there (its last.pt deleted or moved), or a --resume of another folder's
    checkpoint. They were overwritten (best.safetensors by a worse one), mixed with the new
    run's exports and its log cut to the new run's steps, without a word. A checkpoint of
    the folder's own (RUN/last.pt, a copy beside it) goes on with its run."""
    if not run.is_dir() or (resume is not None and resume.resolve().parent == run.resolve()):
        return
    found = sorted(
        p.name
        for p in run.iterdir()
        if p.name == "best.safetensors"
        or (p.name.startswith("ema_step") and p.suffix == ".safetensors")
    )
    if not found:
        return
    listed = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    why = (
        "but no last.pt to go on from"
        if resume is None
        else f"and --resume {resume} is another folder's checkpoint"
    )
    raise VidmatError(
        f"--run {run} holds a run's weights ({listed}) {why}; name another --run folder, "
        "or move them out first."
    )


def _check_cache_folder(cfg: TrainConfig, args: argparse.Namespace) -> None:
    from vidmat.train.loop import cache_folder

    if args.cache is not None:
        check_output_folder(args.cache, f"--cache {args.cache}")
    else:
        cache = cache_folder(cfg)
        beside = "--run" if args.run is not None else "--write-samples"
        check_output_folder(cache, f"the data cache {cache} (default beside {beside}; see --cache)")
    # Nothing is written into the folders training reads (a cache in DATA/images added
    # 1.6 MB of .npy there); a run or cache beside them in a root is fine.
    from vidmat.train.data import root_folders

    read = [
        (f"{option} folder", folder)
        for option, roots in (("--data", [s.path for s in cfg.sources]), ("--val", cfg.val))
        for root in roots
        for folder in root_folders(root)
    ]
    if cfg.backgrounds is not None:
        read.append(("--backgrounds folder", cfg.backgrounds))
    why = "which training reads; name a folder outside it."
    beside = "--run" if args.run is not None else "--write-samples"
    cache_name = (
        "--cache" if args.cache is not None else f"the data cache (default beside {beside})"
    )
    check_out_apart(cache_folder(cfg), read, why, cache_name, holding=False)
    if args.run is not None:
        check_out_apart(args.run, read, why, "--run", holding=False)
    # A root itself is refused too (`--run data` for `--data data`): the run's files in it
    # travel with the data; a folder of their own beside images/ and masks/ is fine.
    roots = [("--data", s.path) for s in cfg.sources] + [("--val", v) for v in cfg.val]
    for option, folder in ((cache_name, cache_folder(cfg)), ("--run", args.run)):
        for what, root in roots:
            if folder is not None and Path(folder).resolve() == Path(root).resolve():
                raise VidmatError(
                    f"{option} {folder} is the {what} root {root}; name a folder of its own "
                    "(beside its images/ and masks/ is fine)."
                )


def _write_samples(cfg: TrainConfig, args: argparse.Namespace) -> int:
    """``--write-samples DIR``: the run's first samples as PNG folders; no run folder."""
    from vidmat.train.loop import write_samples

    out = args.write_samples
    if out.exists():
        raise VidmatError(f"{out} already exists; --write-samples writes a new folder.")
    check_output_folder(out, f"--write-samples {out}")
    _check_cache_folder(cfg, args)
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    n = write_samples(cfg, out)
    print(f"wrote {n} samples to {out}/images and {out}/masks", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    """Train, after every check that can fail has passed: caching the data takes minutes,
    and a refused command line leaves nothing behind in the run folder."""
    from vidmat.train.loop import Trainer

    cfg = train_config(args)
    if args.write_samples is not None:
        return _write_samples(cfg, args)
    last = args.run / "last.pt"
    resume = args.resume
    if args.fresh and resume is not None:  # it resumed, and wrote over RUN/last.pt
        raise VidmatError("--fresh starts a run from nothing, --resume goes on with one; give one.")
    if resume is None and last.exists():
        if args.fresh:
            raise VidmatError(f"{last} exists; pick another --run folder for a fresh run.")
        resume = last
    if resume is not None and resume.is_dir():
        raise VidmatError(f"checkpoint {resume} is a folder; name its last.pt (or another .pt).")
    if resume is not None and not resume.is_file():
        raise VidmatError(f"checkpoint {resume} does not exist.")
    if cfg.init is not None:
        _check_init_arch(cfg.init, cfg.arch)
    changed: list[str] = []
    if resume is not None:
        step, changed, cfg = _check_resume(
            resume, cfg, args.change_settings, own_warmup=args.warmup is None
        )
        if step is not None and not _check_steps_left(resume, step, cfg.steps):
            return 0
    if cfg.anchor is not None:
        _check_anchor(cfg.anchor)
    _check_no_other_run(args.run, resume)
    # Last, as they touch the disk: the folders Trainer writes to.
    check_output_folder(args.run, f"--run {args.run}")
    _check_cache_folder(cfg, args)
    busy = (
        f"another vidmat train is running in {args.run} (it holds {args.run / '.lock'}); "
        "let it finish or stop it, or name another --run folder."
    )
    with folder_lock(args.run, busy):
        trainer = Trainer(cfg)
        if resume is not None:
            trainer.load(resume, change_settings=args.change_settings)
            print(f"resumed from {resume} at step {trainer.step}", flush=True)
            if changed:  # in the log of the run: from here on it is not the one it started as
                print(f"changed on resume: {', '.join(changed)}", flush=True)
        else:
            _note_heads_left(trainer.model, cfg)

        stopped_by: list[int] = []  # the first signal that stopped the run

        # finish the current step, checkpoint, exit
        def _stop(signum: int, frame: FrameType | None) -> None:
            stop_signal_received(signum)
            stopped_by.append(signum)
            trainer.stop()

        previous = {sig: signal.signal(sig, _stop) for sig in caught_signals()}
        try:
            result = trainer.run(on_log=lambda s: print(s, flush=True))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        last = args.run / "last.pt"
        # Stopped before its first step (workers still starting), a new run has no checkpoint.
        saved = f"checkpoint {last}" if last.is_file() else "no checkpoint yet"
        print(
            f"stopped at step {result['step']}; {_best_text(result['best'], bool(cfg.val))}; {saved}",
            flush=True,
        )
        if stopped_by:
            # Checkpointed above; the CLI turns this into "vidmat: interrupted" and exit code
            # 130 (Ctrl-C), "vidmat: terminated" and 143 (kill) or "vidmat: hung up" and 129
            # (a closed terminal), as convert and demo end, so a script can tell a stopped
            # run from a finished one.
            raise stop_exception(stopped_by[0])
        return 0


def _best_text(best: float, has_val: bool) -> str:
    """The best validation score for the closing line. Trainer keeps -1 until a validation
    has run (an IoU is never negative); that placeholder is no score to show."""
    if best >= 0:
        return f"best val mean IoU {best:.4f}"
    return "no validation yet" if has_val else "no validation (no --val)"
