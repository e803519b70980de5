"""``vidmat eval``: IoU, MAE, boundary F (and flicker/lag on sequences) of a model on labelled data."""

from __future__ import annotations

import argparse
import textwrap
import time
from pathlib import Path

from vidmat.errors import VidmatError

EPILOG = """\
examples:
  vidmat eval --images ../shared/data/val/ccp/images \\
      --masks ../shared/data/val/ccp/masks
  vidmat eval --sequences ../shared/data/video/davis --smoothing 0.7 \\
      --lookahead 8 --json davis.json
  vidmat eval --images DIR --masks DIR --weights new.safetensors \\
      --against old.json

IoU and boundary F threshold the alpha at 0.5; MAE compares the soft alpha with
the 0/1 mask. Flicker is the mean |alpha_t - alpha_t-1| over pixels whose ground
truth did not change; flicker_floor is what the ground truth itself scores once
taken down to the model's input size and back (a soft edge moving with the person
counts as flicker too), so no smoothing without lag gets far below it; lag is the
frame shift that best aligns mask and truth.

--against pairs each image (frame) with its score in an earlier --json result and
bootstraps the mean difference (frames in blocks of 10 consecutive ones, since
neighbours are nearly the same picture): on a set of 100 photographs a gap of
0.001 is usually inside that interval, i.e. not a difference the set can show.
"""


def scored_with(info: dict) -> str:
    """The options that change the scores, for the footer: results with and without
    --refine, --zoom, --tta or the gaps left out printed the same last line."""
    on = [name for name in ("refine", "zoom", "tta") if info.get(name)]
    if info.get("ignore_mask_gaps"):
        on.append("mask gaps ignored")
    if info.get("smoothing"):
        look = f", lookahead {info['lookahead']}" if info.get("lookahead") else ""
        on.append(f"smoothing {info['smoothing']:g}{look}")
    return f"; {', '.join(on)}" if on else ""


def add_parser(sub: argparse._SubParsersAction) -> None:
    from vidmat.commands._options import add_engine_options

    p = sub.add_parser(
        "eval",
        help="score weights on image/mask folders or annotated video sequences",
        description=textwrap.fill(
            "Measure mean IoU@0.5, MAE and boundary F-measure of the model on "
            "image/mask folders, and on sequences also temporal flicker and lag.",
            78,
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("data (give --images and --masks, or --sequences)")
    src.add_argument("--images", type=Path, metavar="DIR", help="folder of images")
    src.add_argument(
        "--masks",
        type=Path,
        metavar="DIR",
        help="folder of masks with the images' file stems, of the images' sizes (0 = "
        "background; person 255, or 1 in 0/1 label masks, 16-bit ones too; a palette "
        "PNG's non-zero indices; a cut-out's alpha)",
    )
    src.add_argument(
        "--sequences",
        type=Path,
        metavar="ROOT",
        help="folder of sequences ROOT/<seq>/images and ROOT/<seq>/masks",
    )
    p.add_argument(
        "--smoothing",
        type=float,
        default=0.0,
        metavar="S",
        help="temporal smoothing strength 0..1 for sequences (default 0 = off)",
    )
    p.add_argument(
        "--lookahead",
        type=int,
        default=0,
        metavar="K",
        help="with --smoothing: look K frames ahead (bidirectional, as convert does; default 0, "
        "convert's is 8)",
    )
    p.add_argument(
        "--refine",
        action="store_true",
        help="score the matte as `vidmat convert` writes it (its smoothing on its working "
        "grid, guided-filter edge refinement, tone snap) instead of the model's alpha "
        "upsampled to the image (its logit interpolated bilinearly; the default, comparable "
        "with other models' scores)",
    )
    p.add_argument(
        "--ignore-mask-gaps",
        action="store_true",
        help="with --images: leave out of the scores the background pixels that closing "
        "the masks' gaps would make person (VITON's parser leaves the neck between face and "
        "collar unlabelled; training closes it). The default scores the masks as given",
    )
    p.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="with --images: score only N images spread evenly over the folder (quick checks)",
    )
    p.add_argument(
        "--worst",
        type=int,
        default=5,
        metavar="N",
        help="name the N images (or sequence frames) with the lowest IoU (default 5, 0 = "
        "none); --json lists every image's (frame's) scores",
    )
    p.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="also write the results as JSON (- or /dev/stdout: after the table, on standard "
        "output); never over the weights or a file of the data",
    )
    p.add_argument(
        "--against",
        type=Path,
        metavar="OLD.json",
        help="compare with an earlier --json result on the same data: the mean paired "
        "difference per image (frame) with a 95%% bootstrap interval, and how many images "
        "got better or worse; an interval spanning 0 means the sets cannot tell the two apart",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_engine_options(p, workers=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from vidmat.benchmarks.report import format_table
    from vidmat.commands._options import engine_config_from_args
    from vidmat.core.engine import Engine, precision_name, side_by_side
    from vidmat.core.settings import MAX_LOOKAHEAD
    from vidmat.io.files import atomic_write_text, check_not_input, check_output_path, json_text
    from vidmat.train.compare import (
        compare_results,
        items_of,
        load_result,
        report,
        setting_changes,
    )
    from vidmat.train.evaluate import (
        engine_lowres,
        evaluate_images,
        evaluate_sequences,
        scored_names,
        summarize_rows,
        worst,
    )

    if args.sequences is None and (args.images is None or args.masks is None):
        raise VidmatError("give --images DIR and --masks DIR, or --sequences ROOT.")
    if args.sequences is not None and (args.images or args.masks):
        raise VidmatError("give either --images/--masks or --sequences, not both.")
    if not 0.0 <= args.smoothing <= 1.0:
        raise VidmatError("--smoothing must be between 0 and 1.")
    if args.smoothing > 0 and args.sequences is None:
        raise VidmatError("--smoothing only applies to --sequences.")
    if not 0 <= args.lookahead <= MAX_LOOKAHEAD:  # -1 ran the causal filter as if 0
        raise VidmatError(
            f"--lookahead must be between 0 and {MAX_LOOKAHEAD} frames, got {args.lookahead}."
        )
    if args.lookahead and (args.sequences is None or args.smoothing == 0):
        # accepted and ignored before
        raise VidmatError("--lookahead only applies to --sequences with --smoothing.")
    if args.ignore_mask_gaps and args.sequences is not None:
        raise VidmatError("--ignore-mask-gaps only applies to --images.")
    if args.limit is not None and args.sequences is not None:
        raise VidmatError("--limit only applies to --images (a sequence is scored whole).")
    if args.worst < 0:
        raise VidmatError("--worst must be 0 or more.")
    if args.limit is not None and args.limit < 1:
        raise VidmatError("--limit must be at least 1.")
    if args.json is not None:
        if args.against is not None:
            # --overwrite replaces an earlier result, never the baseline this run is
            # compared with: the comparison would be written over what it compared against
            check_not_input(args.json, args.against, "--json", "--against result")
        check_output_path(args.json, args.overwrite, stream_ok=True)
        _check_json_apart(args)
    baseline = load_result(args.against) if args.against is not None else None
    if baseline is not None:  # before minutes of scoring, not after them
        kind = "sequences" if args.sequences is not None else "images"
        other = "images" if kind == "sequences" else "sequences"
        if other in baseline and kind not in baseline:
            raise VidmatError(
                f"cannot compare with {args.against}: it scored {other}, this run scores "
                f"{kind}; give a result of --{kind}."
            )
        names = scored_names(args.images, args.masks, args.limit, args.sequences)
        if not names & {i.name for i in items_of(baseline)}:
            raise VidmatError(
                f"cannot compare with {args.against}: it scored none of the images this run "
                "scores (no file names in common): was it made on the same data?"
            )

    engine = Engine.from_config(side_by_side(engine_config_from_args(args)))
    lowres = engine_lowres(engine)
    t0 = time.perf_counter()
    info = {
        "weights": args.weights,
        "weights_name": engine.spec.name,
        "size": engine.size,
        "device": str(engine.device),
        # bf16 scores a little apart from fp32 (val/viton 0.9432 -> 0.9431 at 256): the
        # comparison names a change of precision as it does one of size
        "precision": precision_name(engine.dtype),
        "workers": engine.workers,
        "threads": torch.get_num_threads() if engine.device.type == "cpu" else None,
        "smoothing": args.smoothing,
        "lookahead": args.lookahead,
        "refine": args.refine,
        "tta": args.tta,
        "zoom": args.zoom,
    }
    if args.sequences is not None:
        overall, rows = evaluate_sequences(
            lowres, args.sequences, args.smoothing, args.lookahead, args.progress, args.refine
        )
        table = [
            *({k: v for k, v in r.items() if k != "frames"} for r in rows),
            {"sequence": "all", **overall},
        ]
        result = {**overall, **info, "data": str(args.sequences), "sequences": rows}
        items = [{**f, "image": f"{r['sequence']}/{f['image']}"} for r in rows for f in r["frames"]]
    else:
        overall, items = evaluate_images(
            lowres,
            args.images,
            args.masks,
            args.limit,
            args.progress,
            args.refine,
            ignore_gaps=args.ignore_mask_gaps,
            workers=engine.workers,
        )
        table = [{"data": args.images.parent.name or str(args.images), **overall}]
        info["ignore_mask_gaps"] = args.ignore_mask_gaps
        result = {**overall, **info, "data": str(args.images), "images": items}
    result["seconds"] = round(time.perf_counter() - t0, 2)
    print(format_table(summarize_rows(table)))
    if len(items) > 1:
        low = [f"{r['image']} {r['iou']:.3f}" for r in worst(items, args.worst)]
        if low:
            print("lowest IoU: " + ", ".join(low))
    print(
        f"weights {engine.spec.name} at {engine.size}x{engine.size} on {engine.device}, "
        f"{info['precision']}{scored_with(info)}"
    )
    unpaired: VidmatError | None = None
    if baseline is not None:
        try:
            comparisons = compare_results(baseline, result)
        except VidmatError as exc:  # the scores just made are still written below
            unpaired = VidmatError(f"cannot compare with {args.against}: {exc}")
        else:
            name = f"{args.against} ({baseline.get('weights_name', '?')})"
            print(report(comparisons, name, setting_changes(baseline, result)))
            result["against"] = {
                "file": str(args.against),
                "weights": baseline.get("weights"),
                **{c.metric: c.as_dict() for c in comparisons},
            }
    if args.json is not None:
        atomic_write_text(args.json, json_text(result))
    if unpaired is not None:
        raise unpaired
    return 0


def _check_json_apart(args: argparse.Namespace) -> None:
    """--json never replaces the weights or a picture or mask of the data."""
    from vidmat.io.files import check_results_apart
    from vidmat.model.weights import weights_file

    folders = (("--images folder", args.images), ("--masks folder", args.masks))
    check_results_apart(
        args.json,
        "--json",
        [("--weights file", weights_file(args.weights))],
        (*folders, ("--sequences folder", args.sequences)),
    )
