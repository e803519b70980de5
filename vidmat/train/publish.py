"""Publish trained weights into ``weights/`` with the spec the engine will use.

    python -m vidmat.train.publish RUN/best.safetensors --size 320 \\
        --out weights/u2netp_person.safetensors --note "step 400, val IoU ..."

The training run exports at its own validation size; the shipped file carries
the input size chosen after evaluation (``--size``), since the engine runs at
the size the file's spec names. Prints the sha256 to put in the registry.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from vidmat.model.weights import WeightsSpec, load_weights, save_weights, sha256_file


def publish(src: Path, out: Path, size: int, note: str = "", half: bool = True) -> str:
    model, spec = load_weights(str(src))
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
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.safetensors")
    save_weights(model, new, tmp, half=half)
    os.chmod(tmp, 0o644)  # the temporary file is created private; the shipped file is not
    os.replace(tmp, out)
    return sha256_file(out)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("src", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--note", default="")
    p.add_argument("--fp32", action="store_true", help="store fp32 instead of fp16")
    a = p.parse_args()
    sha = publish(a.src, a.out, a.size, a.note, half=not a.fp32)
    print(f"{a.out} sha256 {sha} ({a.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
