"""Publish trained weights into ``weights/`` with the spec the engine will use.

    python -m vidmat.train.publish RUN/best.safetensors --size 256 \\
        --out weights/u2netp_person.safetensors --overwrite --note "step 400, val IoU ..."

(``--out`` is never one of the files read, --overwrite or not: publish into a new file.)

The training run exports at its own validation size; the shipped file carries
the input size chosen after evaluation (``--size``), since the engine runs at
the size the file's spec names. Prints the sha256 to put in the registry.

Several sources publish their mean, tensor by tensor (batch-norm statistics too):
a fine-tune stays close enough to its starting weights that the two average into
a working model, and the mean can keep the gains of all (the files of sessions 12 and 13).

With ``--onto BASE --layers NAMES`` only the named layers come from the sources (their
mean) and every other tensor from BASE: a fine-tune's gain and its cost can sit in
different layers (session 51: the gain at 320 px in encoder stages 5-6, the webcam
hold-out's loss in the shallower stages and the decoder), and the shipped file of
session 51 is the session-45 file with a mean's stages 5 and 6, its sides then refitted.
With --onto, --size defaults to BASE's own input size.

With ``--onto BASE --as-head PX`` the sources' own side convolutions and fusion go into
BASE as a second head, the one the model uses for inputs nearer PX than BASE's own size
(``U2Net.head_for``): sides refitted at 320 alone (``vidmat.train.head --sides --size
320``) lift 320 without moving 192 and 256, where BASE's own head still serves.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from vidmat.argtypes import model_size
from vidmat.errors import VidmatError
from vidmat.io.files import atomic_output, check_not_input, check_output_path
from vidmat.model.spec import MAX_INPUT_SIZE, MIN_INPUT_SIZE, WeightsSpec
from vidmat.model.u2net import HEAD_LAYERS, U2Net
from vidmat.model.weights import load_weights, own_head_size, save_weights, sha256_file
from vidmat.train.loop import LAYER_GROUPS
from vidmat.train.tools import require_safetensors_out, run_tool


def _require_one_architecture(states: Sequence[dict[str, torch.Tensor]], what: str) -> None:
    """One sentence unless every state has the same tensor names and shapes."""
    shapes = [{k: v.shape for k, v in s.items()} for s in states]
    if all(sh == shapes[0] for sh in shapes):
        return
    odd = {k for sh in shapes for k in sh.keys() ^ shapes[0].keys()}
    if odd and all(k.startswith("sized_heads.") for k in odd):
        # a run's export beside the shipped file: both u2netp, one with heads per size
        sizes = sorted({int(k.split(".")[1]) for k in odd})
        raise VidmatError(
            f"{what} of one architecture, but some keep heads for input sizes "
            f"{', '.join(map(str, sizes))} that the others lack; give files with the same heads."
        )
    raise VidmatError(f"{what} not all of one architecture.")


def mean_state(models: Sequence[torch.nn.Module]) -> dict[str, torch.Tensor]:
    """The element-wise mean of several models' floating tensors (integer buffers: the first's)."""
    states = [m.state_dict() for m in models]
    _require_one_architecture(states, "the weights to average are")
    return {
        k: torch.stack([s[k].float() for s in states]).mean(0) if v.is_floating_point() else v
        for k, v in states[0].items()
    }


def graft_state(
    base: dict[str, torch.Tensor], donor: dict[str, torch.Tensor], layers: Sequence[str]
) -> dict[str, torch.Tensor]:
    """``base`` with the tensors of ``layers`` taken from ``donor``.

    A layer is the first word of a tensor's name (``stage5``, ``side1``, ``outconv``) or
    a group of them as ``--freeze`` names them (``encoder``, ``decoder``, ``sides``).
    """
    firsts = {f for name in layers for f in LAYER_GROUPS.get(name, (name,))}
    present = {k.split(".", 1)[0] for k in base}
    unknown = sorted(n for n in layers if n not in LAYER_GROUPS and n not in present)
    if unknown:
        raise VidmatError(
            f"--layers names {', '.join(unknown)}, which the model does not have; its layers "
            f"are {', '.join(sorted(present))} (or the groups {', '.join(LAYER_GROUPS)})."
        )
    _require_one_architecture([base, donor], "the --onto weights and the sources are")
    return {k: donor[k] if k.split(".", 1)[0] in firsts else v for k, v in base.items()}


def graft_head(base: U2Net, donor: dict[str, torch.Tensor], size: int) -> None:
    """Put ``donor``'s own side convolutions and fusion into ``base`` as the head it uses
    for inputs nearest ``size`` (replacing one it had for that size); the rest of ``base``,
    its own head included, is unchanged."""
    own = {k: v for k, v in donor.items() if k.split(".", 1)[0] in HEAD_LAYERS}
    _require_one_architecture(
        [own, {k: v for k, v in base.state_dict().items() if k in own}],
        "the --onto weights and the sources are",
    )
    base.add_sized_head(size).load_state_dict(own)


def publish(
    src: Path | Sequence[Path],
    out: Path,
    size: int | None = None,
    note: str = "",
    half: bool = True,
    overwrite: bool = False,
    onto: Path | None = None,
    layers: Sequence[str] = (),
    as_head: int | None = None,
) -> str:
    """Write ``src`` (their mean; with ``onto`` grafted into it) to ``out`` for input
    ``size``, and return the file's sha256. ``size`` None takes ``onto``'s own input size:
    grafting layers or a head into the shipped file keeps the size it runs at, so the
    README's ``--onto BASE --layers ...`` needs no --size; without ``onto`` there is no
    file to take it from (a run's exports carry its validation size, not the one to ship).
    """
    if as_head is not None and (onto is None or layers):
        raise VidmatError(
            "--as-head goes with --onto and without --layers: the sources' own head becomes "
            "the --onto file's head for that input size."
        )
    if as_head is None and bool(onto) != bool(layers):
        raise VidmatError(
            "--onto and --layers go together: the layers to take, and the file to put them in."
        )
    if size is None and onto is None:
        raise VidmatError(
            "--size is required without --onto: the input size the engine will run the "
            "file at (the shipped file uses 256)."
        )
    if size is not None and not (
        MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE and size % MIN_INPUT_SIZE == 0
    ):
        raise VidmatError(
            f"--size must be a multiple of 32 from {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE}, "
            f"got {size}."
        )
    require_safetensors_out(out)
    srcs = [src] if isinstance(src, Path) else list(src)
    # --overwrite replaces an output, never an input: publishing a file onto itself is
    # how the shipped weights were once lost
    for p in srcs:
        check_not_input(out, p, "--out", "source weights file")
    if onto is not None:
        check_not_input(out, onto, "--out", "--onto weights file")
    check_output_path(out, overwrite)
    loaded = [load_weights(str(p)) for p in srcs]
    if onto is not None:
        loaded_onto = load_weights(str(onto))
    # A mean or a graft across scalings has no one right way to scale its input: an
    # official checkpoint divides by the image's own maximum, vidmat's own files by 255.
    named = [*zip(srcs, loaded, strict=True)] + ([(onto, loaded_onto)] if onto else [])
    scales = {spec.scale for _, (_, spec) in named}
    if len(scales) > 1:
        raise VidmatError(
            "the weights scale their input differently ("
            + ", ".join(f"{p.name}: {s.scale}" for p, (_, s) in named)
            + "); publish files of one kind together."
        )
    model, spec = loaded[0]
    if len(loaded) > 1:
        model.load_state_dict(mean_state([m for m, _ in loaded]))
    if onto is not None:
        base, spec = loaded_onto
        if as_head is not None:
            graft_head(base, model.state_dict(), as_head)
        else:
            base.load_state_dict(graft_state(base.state_dict(), model.state_dict(), layers))
        model = base
    new = WeightsSpec(
        name=out.stem,
        arch=spec.arch,
        input_size=spec.input_size if size is None else size,
        head_size=own_head_size(model, spec.input_size if size is None else size),
        scale=spec.scale,
        mean=spec.mean,
        std=spec.std,
        file=out.name,
        description=(
            (
                "vidmat's own U-2-Net† person weights, CPU-trained (see weights/MODEL_CARD.md)"
                if spec.scale == "255"
                # not "official ... checkpoint" alone for a mean or graft of such files
                else spec.description
                + (f", the mean of {len(srcs)} files" if len(srcs) > 1 else "")
                + (f", grafted onto {onto.name}" if onto is not None else "")
            )
            + (f"; {note}" if note else "")
        ),
    )
    with atomic_output(out) as tmp:
        save_weights(model, new, tmp, half=half)
    return sha256_file(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vidmat.train.publish",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", type=Path, nargs="+", help="weights file; several: publish their mean")
    p.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    p.add_argument(
        "--size",
        type=model_size,
        help="input side the engine will run the file at (its spec's input_size; a "
        f"multiple of 32 from 32 to {MAX_INPUT_SIZE}); the shipped file uses 256. Required "
        "unless --onto is given, which it then defaults to BASE's",
    )
    p.add_argument(
        "--onto",
        type=Path,
        metavar="BASE",
        help="take only --layers from the sources (their mean) and every other tensor from "
        "this weights file",
    )
    p.add_argument(
        "--layers",
        type=lambda v: [x for x in v.split(",") if x],
        default=[],
        metavar="NAMES",
        help="comma-separated layers for --onto: first words of tensor names (stage1-stage6, "
        "stage5d-stage1d, side1-side6, outconv) or the groups encoder, decoder, sides; "
        "e.g. --layers stage5,stage6",
    )
    p.add_argument(
        "--as-head",
        type=model_size,
        metavar="PX",
        help="with --onto: keep the sources' own side convolutions and fusion in BASE as the "
        "head it uses for inputs nearer PX than its own size (its own head unchanged); e.g. "
        "a side refit at --size 320 alone, grafted with --as-head 320",
    )
    p.add_argument("--note", default="", help="appended to the spec's description")
    p.add_argument("--fp32", action="store_true", help="store fp32 instead of fp16")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    a = p.parse_args(argv)
    return run_tool("publish", lambda: _run(a))


def _run(a: argparse.Namespace) -> int:
    sha = publish(
        a.src,
        a.out,
        a.size,
        a.note,
        half=not a.fp32,
        overwrite=a.overwrite,
        onto=a.onto,
        layers=a.layers,
        as_head=a.as_head,
    )
    print(f"{a.out} sha256 {sha} ({a.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
