"""Pack training folders small enough to travel to a GPU machine.

    python -m vidmat.train.pack ../shared/data/train/ccp ../shared/data/train/viton \\
        PSEUDO/train ../shared/data/val/ccp ../shared/data/val/viton \\
        --backgrounds ../shared/data/backgrounds --out .pack

A GPU machine is reached by copying files to it, at most 64 MiB a call, and the
raw folders are larger than that. Training never sees them at full size anyway:
:func:`vidmat.train.data.load_source` caches every root at one size (long side
320) and the backgrounds cover-fitted to 288 x 384. So each image is written at
the size that cache would give it (never enlarged), re-encoded (JPEG, or WebP
for a third less), and each mask as a PNG. Training on the pack then builds the
same cache, up to the re-encoding.

``OUT/<parent>/<name>/{images,masks}`` keeps each root's folder name, which
``--close-gaps`` goes by (``viton``), and ``OUT/backgrounds`` holds the scenes.
The pack is derived from the data: keep it in an ignored folder, never commit it.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from vidmat.errors import VidmatError
from vidmat.io.files import (
    FolderKind,
    atomic_folder,
    check_out_apart,
    check_output_path,
    disk_bytes,
    json_record,
    require_folder,
)
from vidmat.progress import progress_bar
from vidmat.train.data import (
    BACKGROUND_SIZE,
    background_files,
    cache_size,
    cover_size,
    list_pairs,
    read_pair,
    read_rgb,
)
from vidmat.train.tools import note_leftover_folders, run_tool

#: The smallest --long-side: the smallest model input side (``argtypes.model_size``). Below
#: it every packed image holds fewer pixels than one model input, and the cache enlarges
#: it again to train's long side (320), so such a pack only throws detail away (0 or a
#: negative side used to pass and write 8x8 images).
MIN_LONG_SIDE = 32


def _encode(rgb: np.ndarray, fmt: str, quality: int) -> bytes:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    flag = cv2.IMWRITE_WEBP_QUALITY if fmt == "webp" else cv2.IMWRITE_JPEG_QUALITY
    ok, buf = cv2.imencode(f".{fmt}", bgr, [flag, quality])
    if not ok:
        raise VidmatError(f"OpenCV cannot encode {fmt} images here.")
    return buf.tobytes()


def _shrink(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``img`` at (H, W) = ``hw`` when that is smaller; else unchanged (the cache enlarges)."""
    h, w = hw
    if h * w >= img.shape[0] * img.shape[1]:
        return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def pack_root(root: Path, out: Path, long_side: int, fmt: str, quality: int, name: str) -> int:
    """Write ``root``'s pairs into ``out`` at the cache's size; returns the pairs written.
    ``name`` (the root's name in the pack) labels the progress bar."""
    pairs = list_pairs(root)
    hw = cache_size(read_rgb(pairs[0][0]), long_side)
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()

    def one(pair: tuple[Path, Path]) -> None:
        img_path, mask_path = pair
        # a mask of another size is refused here, as training refuses it, not on the GPU
        img, mask = read_pair(img_path, mask_path)
        small = _shrink(img, hw)
        if small is not img:
            mask = np.where(_shrink(mask, hw) > 127, 255, 0).astype(np.uint8)
        (out / "images" / f"{img_path.stem}.{fmt}").write_bytes(_encode(small, fmt, quality))
        _, png = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        (out / "masks" / f"{img_path.stem}.png").write_bytes(png.tobytes())

    with ThreadPoolExecutor() as pool:
        list(progress_bar(pool.map(one, pairs), total=len(pairs), desc=f"pack {name}", unit="img"))
    return len(pairs)


def pack_backgrounds(folder: Path, out: Path, fmt: str, quality: int) -> int:
    """Scenes shrunk to just cover :data:`BACKGROUND_SIZE`, as load_backgrounds fits them."""
    files = background_files(folder)
    out.mkdir(parents=True)

    def one(path: Path) -> None:
        img = read_rgb(path)
        small = _shrink(img, cover_size(img.shape, BACKGROUND_SIZE))
        (out / f"{path.stem}.{fmt}").write_bytes(_encode(small, fmt, quality))

    with ThreadPoolExecutor() as pool:
        list(
            progress_bar(
                pool.map(one, files), total=len(files), desc="pack backgrounds", unit="img"
            )
        )
    return len(files)


def packed_name(root: Path) -> str:
    """``parent/name`` of ``root`` in the pack, from its absolute path (symlinks kept, so a
    link named ``viton`` still packs as ``.../viton``, which ``--close-gaps`` goes by).

    From the path as typed, ``pack ccp`` gave ``/ccp`` (an empty parent name), and
    ``tmp / "/ccp"`` is the absolute ``/ccp``: the pack was written outside ``--out``.
    """
    full = Path(os.path.abspath(root))
    name = "/".join(part for part in (full.parent.name, full.name) if part)
    if not name:
        raise VidmatError(f"root {root} is the filesystem's root; name the folder to pack.")
    return name


def _is_pack(path: Path) -> bool:
    """An earlier pack: the MANIFEST.json this tool writes and the folders of its roots,
    nothing else (a folder of the user's with a MANIFEST.json of its own is not one)."""
    said = json_record(path / MANIFEST)
    return (
        said is not None
        and {"long_side", "format", "roots"} <= said.keys()
        and all(e.is_dir() or e.name == MANIFEST for e in path.iterdir())
    )


MANIFEST = "MANIFEST.json"

#: What --overwrite replaces.
PACK_FOLDER = FolderKind("a pack this tool wrote", _is_pack)


def pack(
    roots: Sequence[Path],
    out: Path,
    backgrounds: Path | None = None,
    long_side: int = 320,
    fmt: str = "jpg",
    quality: int = 90,
    overwrite: bool = False,
) -> dict:
    """Pack ``roots`` (and ``backgrounds``) into ``out``; returns the manifest it writes.

    Everything is written into a temporary folder beside ``out`` and renamed at the
    end, so an interrupted pack leaves no half-filled folder that looks complete.
    """
    if long_side < MIN_LONG_SIDE:
        raise VidmatError(
            f"--long-side must be at least {MIN_LONG_SIDE} (the smallest model input), "
            f"got {long_side}."
        )
    names = [packed_name(r) for r in roots]
    for name in names:
        if names.count(name) > 1:
            raise VidmatError(f"two roots would be packed as {name}; pack them separately.")
    inputs = [("root", r) for r in roots]
    if backgrounds is not None:
        inputs.append(("background folder", backgrounds))
    check_out_apart(
        out,
        inputs,
        "which the pack reads and must not replace or change; choose an --out outside the inputs.",
    )
    check_output_path(out, overwrite, folder=True, kind=PACK_FOLDER)
    with atomic_folder(out, overwrite, kind=PACK_FOLDER) as tmp:
        manifest: dict = {"long_side": long_side, "format": fmt, "quality": quality, "roots": {}}
        for root, name in zip(roots, names, strict=True):
            n = pack_root(root, tmp / name, long_side, fmt, quality, name)
            manifest["roots"][name] = {"source": str(root), "pairs": n}
        if backgrounds is not None:
            n = pack_backgrounds(backgrounds, tmp / "backgrounds", fmt, quality)
            manifest["backgrounds"] = {"source": str(backgrounds), "images": n}
        manifest["bytes"] = disk_bytes(tmp)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vidmat.train.pack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("roots", type=Path, nargs="+", help="training or validation roots")
    p.add_argument("--backgrounds", type=Path, help="folder of person-free scenes")
    p.add_argument("--out", type=Path, required=True, help="pack folder (keep it ignored)")
    p.add_argument(
        "--long-side",
        type=int,
        default=320,
        help=f"as train's cache (default 320; at least {MIN_LONG_SIDE})",
    )
    p.add_argument("--format", choices=("jpg", "webp"), default="jpg")
    p.add_argument("--quality", type=int, default=90, help="JPEG / WebP quality (default 90)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = p.parse_args(argv)
    return run_tool("pack", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    for r in args.roots:
        require_folder(r, "root")
    if args.backgrounds is not None:
        require_folder(args.backgrounds, "background folder")
    if not 1 <= args.quality <= 100:
        raise VidmatError("--quality must be between 1 and 100.")
    note_leftover_folders("pack", args.out)
    m = pack(
        args.roots,
        args.out,
        args.backgrounds,
        args.long_side,
        args.format,
        args.quality,
        args.overwrite,
    )
    for name, info in m["roots"].items():
        print(f"{name}: {info['pairs']} pairs")
    if "backgrounds" in m:
        print(f"backgrounds: {m['backgrounds']['images']} images")
    print(f"{args.out}: {m['bytes'] / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
