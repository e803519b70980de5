"""What the model and its weights are, without torch: names, input sides, preprocessing.

Kept apart from :mod:`vidmat.model.weights` and :mod:`vidmat.model.u2net` so that the
command line can state these in ``--help`` without importing torch (a second or more,
and several hundred MB with a CUDA build, for a page of text).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields

ARCHITECTURES = ("u2netp", "u2net")

#: The input sides the network runs: five halvings need a multiple of 32, and above 2048
#: px a frame costs more memory than any use of a person matte is worth (the engine, the
#: CLI's --size and a published file's sizes all hold to this range).
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 32, 2048

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class WeightsSpec:
    """A weights file together with the preprocessing it was trained with."""

    name: str
    arch: str
    input_size: int = 320
    #: "max": image / image.max() (official U-2-Net); "255": image / 255.
    scale: str = "max"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    activation: str = "sigmoid"
    file: str | None = None
    sha256: str | None = None
    description: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False)
    #: The input side the file's own output head serves, where it is not ``input_size``:
    #: a file with sized heads fine-tuned at another size trained the head nearest that
    #: size, and relabelling its own head with the new size put an untrained head there.
    head_size: int | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.arch!r}")
        if self.scale not in ("max", "255"):
            raise ValueError(f"unknown scale {self.scale!r}")
        if self.activation != "sigmoid":
            raise ValueError(f"unknown activation {self.activation!r}")
        # A file's spec is read from its metadata: a size the engine cannot run failed later
        # as "--size N is out of range" though no --size was given, or as int()'s traceback.
        size = self.input_size
        if not (
            isinstance(size, int)
            and not isinstance(size, bool)
            and MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE
            and size % 32 == 0
        ):
            raise ValueError(
                f"input size {size!r} is not a multiple of 32 from {MIN_INPUT_SIZE} to "
                f"{MAX_INPUT_SIZE}"
            )
        head = self.head_size
        if head is not None and not (
            isinstance(head, int) and not isinstance(head, bool) and 1 <= head <= MAX_INPUT_SIZE
        ):
            raise ValueError(f"head size {head!r} is not a side from 1 to {MAX_INPUT_SIZE}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if not (
                isinstance(v, tuple)
                and len(v) == 3
                and all(isinstance(x, (int, float)) and math.isfinite(x) for x in v)
                and (name == "mean" or all(x > 0 for x in v))
            ):
                raise ValueError(f"{name} {v!r} is not three finite numbers")

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("sha256")  # a file cannot contain its own checksum
        if d["head_size"] is None:  # as before the field: older vidmat reads the file
            d.pop("head_size")
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WeightsSpec:
        d = json.loads(text)
        d["mean"] = tuple(d["mean"])
        d["std"] = tuple(d["std"])
        # a field a later vidmat added: this one reads what it knows of the file
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _official(name: str, arch: str, description: str) -> WeightsSpec:
    return WeightsSpec(name=name, arch=arch, scale="max", description=description)


#: Specs of official checkpoints, keyed by their usual file stem; applied when a user passes one.
OFFICIAL_SPECS: dict[str, WeightsSpec] = {
    "u2netp": _official("u2netp", "u2netp", "official U-2-Net† salient-object checkpoint"),
    "u2net": _official("u2net", "u2net", "official U-2-Net salient-object checkpoint"),
    "u2net_human_seg": _official(
        "u2net_human_seg", "u2net", "official U-2-Net human segmentation checkpoint"
    ),
}

DEFAULT_WEIGHTS = "u2netp_person"

#: Weights shipped in ``weights/``. The name is what ``--weights NAME`` accepts.
REGISTRY: dict[str, WeightsSpec] = {
    "u2netp_person": WeightsSpec(
        name="u2netp_person",
        arch="u2netp",
        input_size=256,
        scale="255",
        file="u2netp_person.safetensors",
        sha256="d6194e896f2e821bc00a5673ff926011320fdee381f1f55ac5f5fcc9e5e97f2c",
        description="vidmat's own U-2-Net† person weights (see weights/MODEL_CARD.md)",
    ),
}
