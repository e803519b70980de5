"""Training data: image/mask folders, a pre-resized uint8 cache, and background banks.

Decoding a 550x825 JPEG costs more than augmenting a 160 px crop of it, and on a
2-core CPU the training step itself is the budget, so every source is decoded
once, resized to a fixed size and kept as one uint8 ``.npy`` stack (memory-mapped)
in a cache folder outside the repository. The cache key holds the folder, the
file count and the size, so a changed folder or size builds a new cache.
"""

from __future__ import annotations

import hashlib
import math
import mmap
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from vidmat.errors import VidmatError, warn
from vidmat.io.cvlog import read_image_file
from vidmat.io.files import atomic_output, require_folder
from vidmat.io.formats import IMAGE_SUFFIXES


@dataclass(frozen=True)
class SourceSpec:
    """One training root ``PATH[:WEIGHT[:COMPOSITE]]``.

    ``weight`` is the relative probability of drawing a sample from this root;
    ``composite`` the probability that its person is cut out and pasted onto
    another background (near 1 for studio sets such as VITON, whose uniform grey
    would otherwise teach the model that grey means background).
    """

    path: Path
    weight: float = 1.0
    composite: float = 0.5

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        """``ROOT[:WEIGHT[:COMPOSITE]]`` as ``--data`` gives it.

        An empty root or an empty field after a ':' is refused here by name: ``Path("")``
        is the current folder, and an empty field would stay part of the path, so ``d:``
        would otherwise train on ``.`` or be reported as a missing folder ``d:``.
        """
        parts = text.split(":")
        head = parts[0] or "ROOT"
        # Allow paths that contain ':' by peeling numeric suffixes only.
        nums: list[float] = []
        while len(parts) > 1 and len(nums) < 2:
            if not parts[-1].strip():
                # The last field is COMPOSITE when a WEIGHT stands before it, else WEIGHT.
                names_composite = not nums and len(parts) > 2 and is_number(parts[-2])
                field = "COMPOSITE" if names_composite else "WEIGHT"
                example = f"{head}:1.0" if not (nums or names_composite) else f"{head}:1.0:0.5"
                # a trailing ':' may simply go; an empty WEIGHT before a COMPOSITE may not
                remedy = "" if nums else ", or leave out the last ':'"
                raise VidmatError(
                    f"--data {text!r}: the {field} after ':' is empty; give a number, "
                    f"e.g. {example}{remedy}."
                )
            try:
                nums.insert(0, float(parts[-1]))
            except ValueError:
                break
            parts.pop()
        if not ":".join(parts).strip():
            raise VidmatError(
                f"--data {text!r} names no training root; write ROOT[:WEIGHT[:COMPOSITE]], "
                "e.g. data/ccp:1.0:0.5."
            )
        path = Path(":".join(parts))
        weight = nums[0] if nums else 1.0
        composite = nums[1] if len(nums) > 1 else 0.5
        if weight <= 0:
            raise VidmatError(f"sampling weight of {path} must be positive, got {weight}.")
        if not 0.0 <= composite <= 1.0:
            raise VidmatError(f"composite probability of {path} must be in [0, 1].")
        return cls(path, weight, composite)


def parse_data_source(text: str, composite: bool = True) -> SourceSpec:
    """One ``--data ROOT[:WEIGHT[:COMPOSITE]]`` value, its folder checked; a mistyped
    WEIGHT or COMPOSITE is named. Shared by ``vidmat train`` and ``vidmat.train.head``, so
    a --data value means and is refused the same in both; ``composite`` False (the head
    refit, which pastes no one onto other backgrounds) refuses a COMPOSITE share.

    ``SourceSpec.parse`` keeps a field that is not a number as part of the path (paths
    may hold ':'), so ``ROOT:abc`` would otherwise be reported as a missing root (or as a
    root without images/ and masks/). A WEIGHT of inf or nan is refused here: it passes
    ``weight > 0`` (nan compares false) and then turns every loss or sampling share into
    nan.
    """
    try:
        spec, err = SourceSpec.parse(text), None
    except VidmatError as exc:
        spec, err = None, exc
    if spec is not None and spec.path.is_dir():
        if not composite and text.count(":") - str(spec.path).count(":") == 2:
            raise VidmatError(
                f"--data {text}: the refit takes ROOT[:WEIGHT]; a COMPOSITE share is vidmat "
                "train's (the refit pastes no one onto other backgrounds)."
            )
        if not math.isfinite(spec.weight):
            raise VidmatError(f"sampling weight of {spec.path} must be a finite number.")
        return spec
    if ":" in text and Path(text).is_dir():  # a folder named 'set:1', not set at weight 1
        return SourceSpec(Path(text))
    head, _, rest = text.partition(":")
    if rest and head and not Path(text).exists() and Path(head).is_dir():
        fields = rest.split(":")
        # an empty field is not a mistyped number: SourceSpec.parse names it
        bad = next((f for f in fields if f.strip() and not is_number(f)), None)
        if bad is not None:
            raise VidmatError(
                f"--data {text}: {bad!r} is not a number; after the root come "
                f"WEIGHT[:COMPOSITE], e.g. {head}:1.0:0.5."
            )
        if len(fields) > 2:
            raise VidmatError(
                f"--data {text} has {len(fields)} fields after the root; "
                "write ROOT[:WEIGHT[:COMPOSITE]]."
            )
    if err is not None:
        raise err
    assert spec is not None
    if spec.path.exists():
        raise VidmatError(
            f"training root {spec.path} is a file, not a folder with images/ and masks/."
        )
    raise VidmatError(f"training root {spec.path} does not exist.")


def is_number(text: str) -> bool:
    """Whether ``float`` takes ``text``: a WEIGHT or COMPOSITE field, not part of a path."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def root_folders(root: Path) -> tuple[Path, Path]:
    """The folders a training root is read from (its images and masks), and that nothing
    may be written into (caches, runs, results)."""
    return Path(root) / "images", Path(root) / "masks"


def list_pairs(root: Path) -> list[tuple[Path, Path]]:
    """Pairs ``root/images/X.*`` with ``root/masks/X.*`` by file stem."""
    require_folder(root, "training root")  # a missing one is not "without images/"
    images_dir, masks_dir = root_folders(root)
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise VidmatError(f"{root} must contain 'images' and 'masks' folders.")
    return pair_folders(images_dir, masks_dir)


def pair_folders(images_dir: Path, masks_dir: Path) -> list[tuple[Path, Path]]:
    """Image/mask pairs matched by stem; an image without a mask is an error, not a skip."""
    require_folder(images_dir, "image folder")
    require_folder(masks_dir, "mask folder")
    if images_dir.resolve() == masks_dir.resolve():  # photos scored as their own masks
        raise VidmatError(
            f"the images and the masks are both in {images_dir}; masks go in a folder of "
            "their own (ROOT/images and ROOT/masks)."
        )
    masks: dict[str, Path] = {}
    for p in sorted(masks_dir.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            if p.stem in masks:  # which one was taken depended on the folder's order
                raise VidmatError(
                    f"{masks[p.stem].name} and {p.name} in {masks_dir} are both masks of "
                    f"{p.stem}; keep one."
                )
            masks[p.stem] = p
    pairs = []
    seen: dict[str, Path] = {}
    for img in sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        if img.stem in seen:  # both scored (or trained) against the one mask
            raise VidmatError(
                f"{seen[img.stem].name} and {img.name} in {images_dir} share the stem "
                f"{img.stem}, so one mask would serve both; keep one, or rename one."
            )
        seen[img.stem] = img
        if img.stem not in masks:
            raise VidmatError(f"no mask for {img.name} in {masks_dir}.")
        pairs.append((img, masks[img.stem]))
    if not pairs:
        raise VidmatError(f"no images found in {images_dir}.")
    return pairs


def image_digest(path: Path) -> bytes:
    """A digest of a file's bytes: the same photo under two names has one digest."""
    return hashlib.blake2b(path.read_bytes(), digest_size=16).digest()


def spread(count: int, n: int) -> np.ndarray:
    """Indices of ``min(n, count)`` items spread evenly over ``count``, first and last included:
    a subset that samples the whole of a sorted folder (its sources, poses, lighting)."""
    return np.linspace(0, count - 1, min(n, count)).round().astype(int)


def read_pair(image: Path, mask: Path) -> tuple[np.ndarray, np.ndarray]:
    """An image (RGB) and its mask (0/255), refused when their sizes differ."""
    img, m = read_rgb(image), read_mask(mask)
    if m.shape != img.shape[:2]:
        raise VidmatError(
            f"mask {mask.name} is {m.shape[1]}x{m.shape[0]} px and its image "
            f"{image.name} {img.shape[1]}x{img.shape[0]} (width x height); they must match."
        )
    return img, m


def write_pair(
    root: Path, stem: str, rgb: np.ndarray, mask: np.ndarray, image_ext: str = ".png", *params: int
) -> bool:
    """Write ``root/images/<stem><image_ext>`` (RGB; ``params`` as cv2.imwrite takes them)
    and ``root/masks/<stem>.png`` (uint8 0/255), the layout :func:`list_pairs` reads.
    False when either cannot be written: cv2.imwrite reports a full disk that way, not
    by raising, so the caller says so."""
    return bool(
        cv2.imwrite(str(root / "images" / f"{stem}{image_ext}"), rgb[:, :, ::-1], list(params))
        and cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask)
    )


def read_rgb(path: Path) -> np.ndarray:
    img = read_image_file(path, cv2.IMREAD_COLOR)
    if img is None:
        raise VidmatError(f"cannot read image {path}.")
    _say_if_cut_short(path)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def jpeg_cut_short(data: bytes) -> bool:
    """True for JPEG data that stops before the end marker of its picture: a download or
    copy that stopped. The segments are walked from the start (an EXIF thumbnail's own
    end marker is inside one), through each scan to the marker after it (in scan data a
    0xFF byte is followed by 0x00, or by a restart marker), up to the picture's end marker;
    what follows it (a phone's motion photo appends its video there) is not looked at."""
    n = len(data)
    if data[:2] != b"\xff\xd8":
        return False
    i = 2
    while i + 1 < n:
        if data[i] != 0xFF:
            # stray bytes before a marker, which libjpeg skips ("extraneous bytes"): so here
            i = data.find(b"\xff", i)
            if i < 0:
                return True
            continue
        marker = data[i + 1]
        if marker == 0xD9:
            return False  # the picture's end
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            i += 1 if marker == 0xFF else 2  # fill byte, or a marker without a length
            continue
        if i + 3 >= n:
            return True
        i += 2 + ((data[i + 2] << 8) | data[i + 3])  # the segment, its length included
        if marker == 0xDA:  # a scan: its entropy-coded data runs to the next real marker
            while True:
                i = data.find(b"\xff", i)
                if i < 0 or i + 1 >= n:
                    return True
                if data[i + 1] == 0x00 or 0xD0 <= data[i + 1] <= 0xD7:
                    i += 2
                    continue
                break
    return True


def _say_if_cut_short(path: Path) -> None:
    """Warn of a truncated JPEG. cv2.imread reads it grey where it stops (imdecode refuses
    it), so it was trained on or scored as it was, with only libjpeg's "Premature end of
    JPEG file" on stderr, which names no file."""
    if path.suffix.lower() not in (".jpg", ".jpeg"):
        return
    try:
        data = path.read_bytes()
    except OSError:
        return  # missing or unreadable: the reader's own sentence says so
    if jpeg_cut_short(data):
        warn(f"{path} is cut short (a truncated JPEG); the part missing reads grey.")


#: The middle of a mask's scale by its depth: person above it.
_MIDDLE = {np.dtype(np.uint8): 127, np.dtype(np.uint16): 32767}


def read_mask(path: Path) -> np.ndarray:
    """Binary mask as uint8 0/255: person where the mask is above its middle (soft 0..255
    masks cut at 127, 16-bit ones at 32767), or where it is 1 in a 0/1 label mask.

    This is the one reader of masks (eval, training caches, head refit, pack), so the
    forms segmentation sets ship in work everywhere; each of these read as all
    background and scored IoU 0 or trained on empty labels without a word: 0/1 label
    masks cut at 127; palette PNGs of coloured labels (DAVIS, VOC: any object, where the
    index is not 0 nor VOC's 255 border) taken by their colours' grey, DAVIS's dark red
    a 38; 16-bit 0/1 masks shifted to 8 bits; a person drawn in the alpha channel alone,
    or a cut-out's alpha; a person drawn in a colour (red: grey 76) in an RGB PNG. A black-and-white mask saved indexed (a grey palette), or with
    a transparent margin, is read by its greys, as any other.
    """
    _say_if_cut_short(path)
    kind = _png_colour_type(path)
    if kind == 3:
        # OpenCV gives an indexed PNG's colours: greys are a black-and-white mask saved
        # indexed, read as any other; colours are labels (DAVIS, VOC), read by index
        bgr = read_image_file(path, cv2.IMREAD_COLOR)
        if bgr is not None and not (
            (bgr[..., 0] == bgr[..., 1]).all() and (bgr[..., 1] == bgr[..., 2]).all()
        ):
            indices = _palette_indices(path)  # any object, not VOC's 255 border
            return np.where((indices > 0) & (indices < 255), 255, 0).astype(np.uint8)
    # A grey PNG (its header says so) is read as grey at once; others may be coloured.
    grey = cv2.IMREAD_GRAYSCALE if kind in (0, 4) else cv2.IMREAD_COLOR
    m = read_image_file(path, grey | cv2.IMREAD_ANYDEPTH)
    if m is None:
        raise VidmatError(f"cannot read mask {path}.")
    if m.ndim == 3 and (m[..., 0] == m[..., 1]).all() and (m[..., 1] == m[..., 2]).all():
        m = m[..., 0]  # grey saved as colour (or a JPEG)
    elif m.ndim == 3:
        # A person drawn in a colour on black, by its brightest channel: read by its
        # grey, a red person (76) was all background, without a word.
        m = m.max(axis=2)
        middle = _MIDDLE.get(m.dtype, 0.5)
        # Marks but none above half: a label drawn dark (red 30, class 2). A JPEG of an
        # empty frame (noise of a few levels) is empty, as it always was.
        noise = middle // 4 if path.suffix.lower() in (".jpg", ".jpeg") else 1
        if noise < m.max() <= middle and kind not in (4, 6):
            raise VidmatError(
                f"mask {path} is coloured and none of it is brighter than half: vidmat reads "
                "the person where a mask is bright; save it white (or 1) on black."
            )
    if kind in (4, 6):
        # alpha that varies is the mask, unless the colour is one of two values (a
        # black-and-white mask with a transparent margin): a person drawn in alpha alone
        # over one colour, or a cut-out photo; an opaque mask (an empty frame's all-black)
        # is its colour
        raw = read_image_file(path, cv2.IMREAD_UNCHANGED)
        if raw is not None and raw.ndim == 3:
            alpha = raw[..., -1]
            if alpha.min() != alpha.max() and len(np.unique(m)) != 2:
                m = alpha
    if m.max() == 1:
        return np.where(m > 0, 255, 0).astype(np.uint8)
    middle = _MIDDLE.get(m.dtype, 0.5)
    return np.where(m > middle, 255, 0).astype(np.uint8)


def _png_colour_type(path: Path) -> int | None:
    """A PNG's colour type from its header (3 indexed, 4 and 6 with alpha); None for
    other files."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError:
        return None  # said by the reader that follows
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[25]


def _palette_indices(path: Path) -> np.ndarray:
    """The palette indices of an indexed PNG, which OpenCV turns into colours: through
    FFmpeg's PNG decoder (PyAV), imported here only, as training needs no PyAV."""
    try:
        import av
    except ImportError:
        raise VidmatError(
            f"{path} is a palette PNG, which vidmat reads with PyAV (pip install av), not "
            "installed here; or save the mask as a greyscale PNG."
        ) from None
    try:
        with av.open(str(path)) as c:
            frame = next(c.decode(video=0))
            indices = frame.to_ndarray()
    except (av.error.FFmpegError, OSError, ValueError, TypeError, StopIteration):
        raise VidmatError(f"cannot read mask {path}.") from None
    return indices[0] if isinstance(indices, tuple) else indices


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions fully enclosed by person (VITON's unfilled neck gaps).

    A flood fill from the border marks the true background; whatever background
    it cannot reach is a hole inside the person and becomes person.
    """
    m = (mask > 127).astype(np.uint8)
    h, w = m.shape
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = m
    flood = padded.copy()
    ff_mask = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(flood, ff_mask, (0, 0), 2)
    holes = flood[1:-1, 1:-1] == 0
    out = mask.copy()
    out[holes] = 255
    return out


#: ``--close-gaps`` when it is not given: VITON's masks, wherever a --data root is so named.
DEFAULT_GAP_ROOTS = ("viton",)


def gap_root_names(text: str | None, roots: Sequence[Path]) -> tuple[str, ...]:
    """``--close-gaps`` as folder names: 'viton,other' -> ('viton', 'other'); 'none' -> ();
    None (not given) -> the default. A name no --data root has is refused: a typo
    ('vitn') trained on VITON's unclosed masks without a word."""
    if text is None:
        return DEFAULT_GAP_ROOTS
    names = tuple(n for n in map(str.strip, text.split(",")) if n not in ("", "none"))
    known = {r.name for r in roots}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise VidmatError(
            f"--close-gaps names {', '.join(unknown)}, which no --data folder is called "
            f"(they are {', '.join(sorted(known))}); give folder names, or 'none'."
        )
    return names


#: Part of the cache key of roots whose gaps are closed: bump it when close_neck_gaps
#: changes, so a cache built with the old labels is not reused.
GAP_CLOSING_VERSION = 2


def close_neck_gaps(mask: np.ndarray) -> np.ndarray:
    """Close thin vertical gaps (face/collar) that open to the side, then fill holes.

    The closing runs on the mask padded with background: OpenCV's default border
    counts as person during the erosion, which turned background along the image edge
    next to a person (above a head near the top, between an arm and the torso at the
    bottom) into person in almost every VITON mask (version 1).
    """
    ky, kx = 9, 5
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kx, ky))
    padded = cv2.copyMakeBorder(mask, ky, ky, kx, kx, cv2.BORDER_CONSTANT, value=0)
    closed = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, k)[ky:-ky, kx:-kx]
    return fill_holes(closed)


@dataclass(frozen=True)
class MappedFile:
    """A read-only memory-mapped array, as another process opens it again: by its file.

    Why: ``vidmat train --workers`` hands its data to spawned processes, which receive
    it pickled (as under forkserver, Python 3.14's default on Linux), and a pickled
    ``np.memmap`` carries every byte (a cached root of 5,000 photos is about 1 GB, once
    per worker); fork, the default before, shared the pages instead.
    """

    filename: str
    offset: int
    dtype: str
    shape: tuple[int, ...]
    order: Literal["C", "F"]

    @classmethod
    def of(cls, array: object) -> MappedFile | None:
        """The file behind a whole array ``np.load(..., mmap_mode="r")`` returned; None for
        anything else (an array in memory, or a slice, whose offset memmap does not track)."""
        if not (
            isinstance(array, np.memmap)
            and isinstance(array.base, mmap.mmap)
            and array.filename is not None
            and array.mode == "r"
        ):
            return None
        if array.flags.c_contiguous or array.flags.f_contiguous:
            order: Literal["C", "F"] = "C" if array.flags.c_contiguous else "F"
            return cls(str(array.filename), int(array.offset), array.dtype.str, array.shape, order)
        return None

    def open(self) -> np.ndarray:
        return np.memmap(
            self.filename,
            dtype=np.dtype(self.dtype),
            mode="r",
            offset=self.offset,
            shape=self.shape,
            order=self.order,
        )


def by_reference(value: object) -> object:
    """``value`` to pickle: a memory-mapped array as its :class:`MappedFile`."""
    return MappedFile.of(value) or value


def opened(value: object) -> object:
    """The inverse of :func:`by_reference`, in the process that unpickles."""
    return value.open() if isinstance(value, MappedFile) else value


@dataclass
class CachedSource:
    """A whole root as uint8 arrays: images (N,H,W,3) RGB and masks (N,H,W) 0/255."""

    spec: SourceSpec
    images: np.ndarray
    masks: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def __getstate__(self) -> dict[str, object]:
        return {f.name: by_reference(getattr(self, f.name)) for f in fields(self)}

    def __setstate__(self, state: dict[str, object]) -> None:
        for name, value in state.items():
            setattr(self, name, opened(value))


#: Part of the cache key of training roots: bump it when :func:`read_mask` changes what
#: is cached. 2: 0/1 label masks are person where 1 (before, they were cached as all
#: background, and such a cache must not be reused).
#: 3: palette, 16-bit and alpha-only masks read as the person they hold (were background).
#: 4: grey palettes by their greys; alpha only where the colour is not a B/W mask.
#: 5: coloured (not palette) masks by their brightest channel, not their grey.
MASK_READING_VERSION = 5


def _cache_key(
    root: Path, files: list[Path], size: tuple[int, int], fix: bool, masks: bool = True
) -> str:
    """The cache's name for a folder's ``files``; ``masks``: a training root, not a
    background bank. Each file's name, size and modification time are part of it: a mask
    relabelled or an image replaced in place (the same count) trained on the old cache
    without a word. Checking them costs a stat per file (milliseconds for thousands)."""
    labels = f"gaps-v{GAP_CLOSING_VERSION}" if fix else "as-given"
    if masks:
        labels += f"|masks-v{MASK_READING_VERSION}"
    listing = hashlib.sha1()
    for f in files:
        try:
            st = f.stat()
            nbytes, mtime = st.st_size, st.st_mtime_ns
        except OSError:  # a dangling link: reading it says "cannot read image" next
            nbytes, mtime = -1, -1
        # not `size`, the cache's (H, W): reusing the name keyed the cache by the last
        # file's bytes, and a cache of another size was reused at the wrong size
        listing.update(f"{f.relative_to(root)}|{nbytes}|{mtime}\n".encode())
    text = f"{root.resolve()}|{len(files)}|{size}|{fix}|v2|{labels}|{listing.hexdigest()}"
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def cache_size(first: np.ndarray, long_side: int) -> tuple[int, int]:
    """(H, W) of the cache for a root: the first image's aspect, long side ``long_side``."""
    h, w = first.shape[:2]
    s = long_side / max(h, w)
    return max(8, round(h * s)), max(8, round(w * s))


def load_source(
    spec: SourceSpec,
    cache_dir: Path,
    long_side: int = 320,
    close_gaps: bool = False,
    progress: bool = True,
) -> CachedSource:
    """Decode, resize and cache a root once; later calls memory-map the cache."""
    pairs = list_pairs(spec.path)
    first = read_rgb(pairs[0][0])
    size = cache_size(first, long_side)
    key = _cache_key(spec.path, [f for pair in pairs for f in pair], size, close_gaps)
    img_file = cache_dir / f"{spec.path.name}-{key}-images.npy"
    mask_file = cache_dir / f"{spec.path.name}-{key}-masks.npy"
    shape = (len(pairs), *size)
    cached = _open_cache(img_file, mask_file, shape)
    if cached is None and (img_file.exists() or mask_file.exists()):
        warn(f"the cache of {spec.path} is damaged; building it again")
    if cached is None:
        h, w = size
        images = np.zeros((len(pairs), h, w, 3), np.uint8)
        masks = np.zeros((len(pairs), h, w), np.uint8)
        it = pairs
        if progress:
            from vidmat.progress import progress_bar

            it = progress_bar(pairs, desc=f"cache {spec.path.name}", unit="img")
        for i, (ip, mp) in enumerate(it):
            img, m = read_pair(ip, mp)  # a mask of another size is refused, as eval does
            if close_gaps:
                m = close_neck_gaps(m)
            images[i] = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
            mr = cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA)
            masks[i] = np.where(mr > 127, 255, 0).astype(np.uint8)
        # made only now: a root refused above (a mask of another size) leaves no folder
        cache_dir.mkdir(parents=True, exist_ok=True)
        _atomic_save(img_file, images)
        _atomic_save(mask_file, masks)
        cached = _open_cache(img_file, mask_file, shape)
        if cached is None:
            raise VidmatError(f"the cache {img_file} just written cannot be read back.")
    return CachedSource(spec, *cached)


def _open_cache(
    img_file: Path, mask_file: Path, shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray] | None:
    """A root's cached images and masks, memory-mapped; None when either is missing or
    damaged."""
    images = _open_array(img_file, (*shape, 3))
    masks = _open_array(mask_file, shape)
    return None if images is None or masks is None else (images, masks)


def _open_array(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """A cached uint8 array of ``shape``, memory-mapped; None when it is missing or damaged
    (a disk that filled up, a copy cut short): such a file ended training in a traceback
    (mmap length, EOFError, a broadcast error mid-run)."""
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError):
        return None
    return array if array.shape == shape and array.dtype == np.uint8 else None


def _atomic_save(path: Path, arr: np.ndarray) -> None:
    with atomic_output(path) as tmp:
        np.save(tmp, arr)


#: (H, W) every background is cover-fitted to.
BACKGROUND_SIZE = (288, 384)


def cover_size(shape: tuple[int, ...], size: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of an image of ``shape`` scaled to just cover ``size``, aspect kept."""
    h, w = size
    s = max(h / shape[0], w / shape[1])
    return max(h, round(shape[0] * s)), max(w, round(shape[1] * s))


def background_files(folder: Path) -> list[Path]:
    """The image files of a background folder, sorted; none is an error."""
    require_folder(folder, "background folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise VidmatError(f"no background images found in {folder}.")
    return files


def cover_crop(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` scaled to just cover ``size`` (H, W), then its centre cut to exactly that."""
    h, w = size
    ch, cw = cover_size(img.shape, size)
    r = cv2.resize(img, (cw, ch), interpolation=cv2.INTER_AREA)
    y0, x0 = (ch - h) // 2, (cw - w) // 2
    return r[y0 : y0 + h, x0 : x0 + w]


def load_backgrounds(
    folder: Path, cache_dir: Path, size: tuple[int, int] = BACKGROUND_SIZE
) -> np.ndarray:
    """Person-free background images, cover-fitted to ``size`` (H, W), as (N,H,W,3) uint8."""
    files = background_files(folder)
    key = _cache_key(folder, files, size, False, masks=False)
    cache_dir.mkdir(parents=True, exist_ok=True)
    f = cache_dir / f"backgrounds-{key}.npy"
    shape = (len(files), *size, 3)
    cached = _open_array(f, shape)
    if cached is None:
        if f.exists():
            warn(f"the cache of {folder} is damaged; building it again")
        h, w = size
        out = np.zeros((len(files), h, w, 3), np.uint8)
        for i, p in enumerate(files):
            out[i] = cover_crop(read_rgb(p), size)
        _atomic_save(f, out)
        cached = _open_array(f, shape)
        if cached is None:
            raise VidmatError(f"the cache {f} just written cannot be read back.")
    return cached
