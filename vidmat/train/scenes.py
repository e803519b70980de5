"""Does the model find every person when there are two? Pasted scenes say.

The validation sets hold one person an image, and the model was trained mostly on such
photographs, so a second person (a webcam call with two people, a street) is a failure
case the sets do not score. This builds scenes from an image/mask folder: people cut out
by their masks and pasted into person-free background photos, two to a scene (one in
each outer third) or one (anywhere in the middle), each 35-75 % of the scene's height.
A person counts as missed when under 10 % of their pixels come out as person; the scene
IoU is that of the union of the people. The scenes are drawn from ``--seed``, so two
weights files are scored on the same scenes; they are built in memory and never written
(the people come from data that must not leave ``../shared``).

    python -m vidmat.train.scenes --images ../shared/data/val/ccp/images \\
        --masks ../shared/data/val/ccp/masks --backgrounds ../shared/data/backgrounds \\
        --weights u2netp_person --size 256

The sets of sessions 31, 42 and 43 were made by scripts that were lost with their folders,
so their counts are not comparable with this tool's (other random scenes); compare files
on the same ``--seed`` only.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from vidmat.argtypes import model_size, positive_int, weights_name
from vidmat.errors import VidmatError
from vidmat.io.files import atomic_write_text, check_output_path, check_results_apart
from vidmat.model.weights import weights_file
from vidmat.train.data import background_files, cover_crop, pair_folders, read_pair, read_rgb
from vidmat.train.evaluate import LowresFn, upsample_lowres
from vidmat.train.metrics import iou
from vidmat.train.tools import run_tool


@dataclass(frozen=True)
class SceneConfig:
    """How the scenes are drawn. The defaults are the model card's (session 52 on)."""

    width: int = 640
    height: int = 360
    #: scenes of each kind (one person, two people)
    scenes: int = 100
    seed: int = 52
    #: a pasted person's height as a fraction of the scene's, drawn uniformly
    min_height: float = 0.35
    max_height: float = 0.75
    #: a person is missed when less than this fraction of their pixels is found
    miss_below: float = 0.1


@dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    people: list[np.ndarray]  # one (H, W) bool mask per person, as visible in the scene


@dataclass
class SceneScores:
    people_per_scene: int
    scenes: int
    people: int
    missed: int
    scene_iou: float


def _cut_out(img: np.ndarray, mask: np.ndarray, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The person's bounding box scaled to ``height`` px: RGB float and alpha in [0, 1]."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise VidmatError("a mask with no person in it cannot be pasted.")
    crop = img[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    m = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    width = max(1, round(crop.shape[1] * height / crop.shape[0]))
    rgb = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)
    alpha = cv2.resize(m.astype(np.float32) / 255, (width, height), interpolation=cv2.INTER_AREA)
    return rgb, alpha


def build_scenes(
    pairs: Sequence[tuple[Path, Path]],
    backgrounds: Sequence[Path],
    people_per_scene: int,
    cfg: SceneConfig = SceneConfig(),
) -> Iterator[Scene]:
    """``cfg.scenes`` scenes of ``people_per_scene`` (1 or 2) people, drawn from ``cfg.seed``.

    One generator per kind of scene, so the one-person scenes do not change when the
    number of two-person ones does.
    """
    if people_per_scene not in (1, 2):
        raise VidmatError("scenes hold one or two people.")
    rng = np.random.default_rng([cfg.seed, people_per_scene])
    slots = [(0.05, 0.33), (0.67, 0.95)] if people_per_scene == 2 else [(0.2, 0.8)]
    h, w = cfg.height, cfg.width
    for _ in range(cfg.scenes):
        scene = cover_crop(read_rgb(backgrounds[int(rng.integers(len(backgrounds)))]), (h, w))
        scene = scene.astype(np.float32)
        people: list[np.ndarray] = []
        for lo, hi in slots:
            img, mask = read_pair(*pairs[int(rng.integers(len(pairs)))])
            ph = int(h * rng.uniform(cfg.min_height, cfg.max_height))
            rgb, alpha = _cut_out(img, mask, ph)
            pw = alpha.shape[1]
            x = int(np.clip(rng.uniform(lo, hi) * w - pw // 2, 0, max(0, w - pw)))
            y = max(0, h - ph - int(rng.uniform(0.0, 0.15) * h))
            rgb, alpha = rgb[: h - y, : w - x], alpha[: h - y, : w - x]
            region = scene[y : y + alpha.shape[0], x : x + alpha.shape[1]]
            region[:] = rgb * alpha[..., None] + region * (1.0 - alpha[..., None])
            person = np.zeros((h, w), bool)
            person[y : y + alpha.shape[0], x : x + alpha.shape[1]] = alpha > 0.5
            for earlier in people:  # the later person hides the earlier where they overlap
                earlier &= ~person
            people.append(person)
        yield Scene(scene.round().astype(np.uint8), people)


def score_scenes(
    lowres: LowresFn, scenes: Iterator[Scene], people_per_scene: int, miss_below: float = 0.1
) -> SceneScores:
    """Missed people and mean scene IoU (alpha >= 0.5, as ``vidmat eval`` scores, against
    the union of the people)."""
    n = people = missed = 0
    ious: list[float] = []
    for s in scenes:
        h, w = s.image.shape[:2]
        low = lowres(s.image[None])
        pred = upsample_lowres(low, h, w)[0] >= 0.5
        for person in s.people:
            size = int(person.sum())
            if size == 0:  # wholly hidden behind the other
                continue
            people += 1
            missed += int((pred & person).sum() < miss_below * size)
        ious.append(iou(pred, np.logical_or.reduce(s.people)))
        n += 1
    return SceneScores(people_per_scene, n, people, missed, float(np.mean(ious)) if ious else 0.0)


def run(args: argparse.Namespace) -> list[SceneScores]:
    from vidmat.core.engine import Engine
    from vidmat.core.settings import EngineConfig

    if not 0 <= args.seed < 2**32:  # as `vidmat train --seed`: a traceback outside it
        raise VidmatError(f"--seed must be between 0 and {2**32 - 1}.")
    pairs = pair_folders(args.images, args.masks)
    backgrounds = background_files(args.backgrounds)
    if args.json is not None:
        check_output_path(args.json, args.overwrite, stream_ok=True)
        check_results_apart(
            args.json,
            "--json",
            [("--weights file", weights_file(args.weights))],
            [
                ("--images folder", args.images),
                ("--masks folder", args.masks),
                ("--backgrounds folder", args.backgrounds),
            ],
        )
    cfg = SceneConfig(scenes=args.scenes, seed=args.seed)
    engine = Engine.from_config(
        EngineConfig(weights=args.weights, device=args.device, size=args.size, threads=args.threads)
    )
    from vidmat.progress import progress_bar

    results = []
    for k in (2, 1):
        scenes = progress_bar(
            build_scenes(pairs, backgrounds, k, cfg),
            total=cfg.scenes,
            desc=f"{k} per scene",
            unit="scene",
            disable=not args.progress,
        )
        results.append(score_scenes(engine.predict_lowres, scenes, k, cfg.miss_below))
    print(f"weights {engine.spec.name} at {engine.size}x{engine.size}, seed {cfg.seed}")
    print("people per scene | scenes | people missed | scene IoU")
    for r in results:
        print(f"{r.people_per_scene} | {r.scenes} | {r.missed} of {r.people} | {r.scene_iou:.3f}")
    if args.json is not None:
        info = {"weights": args.weights, "size": engine.size, **asdict(cfg)}
        body = {**info, "results": [asdict(r) for r in results]}
        atomic_write_text(args.json, json.dumps(body, indent=2) + "\n")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vidmat.train.scenes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--images", type=Path, required=True, help="folder of one-person images")
    p.add_argument("--masks", type=Path, required=True, help="their masks (same file stems)")
    p.add_argument(
        "--backgrounds", type=Path, required=True, help="folder of person-free background photos"
    )
    p.add_argument(
        "--weights", type=weights_name, default="u2netp_person", help="registered name or a file"
    )
    p.add_argument("--size", type=model_size, default=None, help="model input side in px")
    p.add_argument("--scenes", type=positive_int, default=100, help="scenes of each kind (100)")
    p.add_argument("--seed", type=int, default=52, help="draws the scenes (default 52; 0 or more)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    p.add_argument("--json", type=Path, help="also write the counts as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    a = p.parse_args(argv)

    def body() -> int:
        run(a)
        return 0

    return run_tool("scenes", body)


if __name__ == "__main__":
    raise SystemExit(main())
