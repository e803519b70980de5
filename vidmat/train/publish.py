"""Publish trained weights into ``weights/`` with the spec the engine will use.

    python -m vidmat.train.publish RUN/best.safetensors --size 256 \\
        --out weights/u2netp_person.safetensors --overwrite --note "step 400, val IoU ..."

The training run exports at its own validation size; the shipped file carries
the input size chosen after evaluation (``--size``), since the engine runs at
the size the file's spec names. Prints the sha256 to put in the registry.

Several sources publish their mean, tensor by tensor (batch-norm statistics too):
a fine-tune stays close enough to its starting weights that the two average into
a working model, and the mean can keep the gains of all (the files of sessions 12 and 13).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from vidmat.errors import VidmatError
from vidmat.io.files import atomic_output, check_output_path
from vidmat.model.weights import WeightsSpec, load_weights, save_weights, sha256_file


def mean_state(models: Sequence[torch.nn.Module]) -> dict[str, torch.Tensor]:
    """The element-wise mean of several models' floating tensors (integer buffers: the first's)."""
    states = [m.state_dict() for m in models]
    shapes = [{k: v.shape for k, v in s.items()} for s in states]
    if any(sh != shapes[0] for sh in shapes):
        raise VidmatError("the weights to average are not all of one architecture.")
    return {
        k: torch.stack([s[k].float() for s in states]).mean(0) if v.is_floating_point() else v
        for k, v in states[0].items()
    }


def publish(
    src: Path | Sequence[Path],
    out: Path,
    size: int,
    note: str = "",
    half: bool = True,
    overwrite: bool = False,
) -> str:
    check_output_path(out, overwrite)
    srcs = [src] if isinstance(src, Path) else list(src)
    loaded = [load_weights(str(p)) for p in srcs]
    model, spec = loaded[0]
    if len(loaded) > 1:
        model.load_state_dict(mean_state([m for m, _ in loaded]))
    new = WeightsSpec(
        name=out.stem,
        arch=spec.arch,
        input_size=size,
        scale="255",
        mean=spec.mean,
        std=spec.std,
        file=out.name,
        description=(
            "vidmat's own U-2-Net† person weights, CPU-trained (see weights/MODEL_CARD.md)"
            + (f"; {note}" if note else "")
        ),
    )
    with atomic_output(out) as tmp:
        save_weights(model, new, tmp, half=half)
    return sha256_file(out)


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m vidmat.train.publish",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", type=Path, nargs="+", help="weights file; several: publish their mean")
    p.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    p.add_argument(
        "--size",
        type=int,
        required=True,
        help="input side the engine will run the file at (its spec's input_size); the "
        "shipped file uses 256",
    )
    p.add_argument("--note", default="", help="appended to the spec's description")
    p.add_argument("--fp32", action="store_true", help="store fp32 instead of fp16")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    a = p.parse_args()
    try:
        sha = publish(a.src, a.out, a.size, a.note, half=not a.fp32, overwrite=a.overwrite)
    except VidmatError as exc:
        raise SystemExit(f"publish: error: {exc}") from None
    print(f"{a.out} sha256 {sha} ({a.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
