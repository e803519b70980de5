"""What goes behind the person: background descriptions, the CLI spec parser, colour names.

A :class:`Background` is a plain description (no tensors, no files). The
:class:`vidmat.core.composite.Compositor` turns it into device buffers once per
resolution. Kinds:

=============  ====================================================================
``color``      solid colour, ``rgb=(r, g, b)``; greenscreen ``#00B140`` by default
``image``      a still picture, ``image`` = uint8 RGB array (H, W, 3), cover-fit
``video``      ``frame_at(t_seconds) -> RGB array`` (a callable the pipeline supplies,
               it owns decoding and looping) or ``frames`` (a sequence of RGB arrays
               looped at ``fps``); the frame shown follows the output timestamp
``blur``       the frame itself blurred behind the person; ``blur`` is the Gaussian
               sigma in pixels for a 720-line frame (scaled with frame height)
``transparent`` RGBA output: colour = (despilled) frame, A = alpha
``mask``       greyscale matte view (alpha as white on black, 3 channels)
``file``       an unresolved path from :func:`parse_background`; the io layer
               (:func:`vidmat.io.images.load_background`) turns it into image/video
=============  ====================================================================

The core stays pure: :func:`parse_background` never touches the filesystem, so
anything that is not a colour/blur/transparent/mask keyword becomes ``file``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from vidmat.errors import VidmatError

BackgroundKind = Literal["color", "image", "video", "blur", "transparent", "mask", "file"]

#: Chroma-key green used by broadcast greenscreens; what ``green`` means here.
GREENSCREEN: tuple[int, int, int] = (0x00, 0xB1, 0x40)
#: Chroma-key blue; what ``blue`` means here.
BLUESCREEN: tuple[int, int, int] = (0x00, 0x47, 0xBB)
DEFAULT_BLUR = 20.0

#: Names a user is likely to type. ``green``/``blue`` are keying colours, not CSS's.
COLOR_NAMES: dict[str, tuple[int, int, int]] = {
    "green": GREENSCREEN,
    "greenscreen": GREENSCREEN,
    "chroma": GREENSCREEN,
    "blue": BLUESCREEN,
    "bluescreen": BLUESCREEN,
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "red": (255, 0, 0),
    "lime": (0, 255, 0),
    "navy": (0, 0, 128),
    "grey": (128, 128, 128),
    "gray": (128, 128, 128),
    "lightgrey": (211, 211, 211),
    "lightgray": (211, 211, 211),
    "darkgrey": (64, 64, 64),
    "darkgray": (64, 64, 64),
    "silver": (192, 192, 192),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "aqua": (0, 255, 255),
    "magenta": (255, 0, 255),
    "fuchsia": (255, 0, 255),
    "orange": (255, 165, 0),
    "purple": (128, 0, 128),
    "pink": (255, 192, 203),
    "brown": (165, 42, 42),
    "teal": (0, 128, 128),
    "olive": (128, 128, 0),
    "maroon": (128, 0, 0),
    "beige": (245, 245, 220),
}


@dataclass(frozen=True, eq=False)
class Background:
    """A description of the background; build with the class methods or :func:`parse_background`."""

    kind: BackgroundKind = "color"
    rgb: tuple[int, int, int] = GREENSCREEN
    blur: float = DEFAULT_BLUR
    image: Any = None  # uint8 RGB (H, W, 3) numpy array or tensor
    frame_at: Callable[[float], Any] | None = None
    frames: Sequence[Any] | None = None
    fps: float = 30.0
    path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def color(cls, rgb: tuple[int, int, int] | str = GREENSCREEN) -> Background:
        return cls(kind="color", rgb=parse_color(rgb) if isinstance(rgb, str) else _rgb(rgb))

    @classmethod
    def from_image(cls, image: Any) -> Background:
        if image is None or len(image.shape) != 3 or image.shape[2] != 3:
            raise VidmatError("a background image must be an RGB image (H, W, 3).")
        return cls(kind="image", image=image)

    @classmethod
    def from_video(
        cls,
        frame_at: Callable[[float], Any] | None = None,
        frames: Sequence[Any] | None = None,
        fps: float = 30.0,
    ) -> Background:
        if frame_at is None and not frames:
            raise VidmatError("a video background needs frames or a frame_at(t) callable.")
        if fps <= 0:
            raise VidmatError("a video background needs a positive frame rate.")
        return cls(kind="video", frame_at=frame_at, frames=frames, fps=float(fps))

    @classmethod
    def blurred(cls, strength: float = DEFAULT_BLUR) -> Background:
        if not 0 <= strength < math.inf:
            raise VidmatError(f"blur strength must be a finite number >= 0, got {strength}.")
        return cls(kind="blur", blur=float(strength))

    @classmethod
    def transparent(cls) -> Background:
        return cls(kind="transparent")

    @classmethod
    def mask(cls) -> Background:
        return cls(kind="mask")

    @property
    def channels(self) -> int:
        """3 for RGB output, 4 for RGBA (transparent)."""
        return 4 if self.kind == "transparent" else 3

    def describe(self) -> str:
        if self.kind == "color":
            return "color #{:02X}{:02X}{:02X}".format(*self.rgb)
        if self.kind == "blur":
            return f"blur:{self.blur:g}"
        if self.kind == "file":
            return f"file {self.path}"
        return self.kind


def _rgb(value: Sequence[int]) -> tuple[int, int, int]:
    vals = tuple(int(v) for v in value)
    if len(vals) != 3 or any(not 0 <= v <= 255 for v in vals):
        raise VidmatError(f"a colour needs three values 0..255, got {vals}.")
    return vals[0], vals[1], vals[2]


_HEX = re.compile(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
_TRIPLE = re.compile(r"^(?:rgb\()?\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*\)?$")


def parse_color(text: str) -> tuple[int, int, int]:
    """``green``, ``#00ff00``, ``0f0``, ``rgb(0,255,0)``, ``0,255,0`` -> (r, g, b)."""
    key = text.strip().lower()
    if key in COLOR_NAMES:
        return COLOR_NAMES[key]
    m = _HEX.match(key)
    if m:
        h = m.group(1)
        if len(h) == 3:
            h = "".join(c * 2 for c in h)
        return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
    m = _TRIPLE.match(key)
    if m:
        return _rgb([int(g) for g in m.groups()])
    raise VidmatError(
        f"{text!r} is not a colour: use a name (green, blue, black, white, ...) or hex like #00B140."
    )


def is_color(text: str) -> bool:
    try:
        parse_color(text)
    except VidmatError:
        return False
    return True


def parse_background(spec: str | Background | None) -> Background:
    """Turn a CLI string into a :class:`Background`.

    ``green`` (default), ``#00ff00``, ``blue``, ``blur``, ``blur:25``, ``transparent``
    (alias ``alpha``, ``rgba``), ``mask`` (alias ``matte``) are resolved here;
    anything else is taken as a path (kind ``file``) for the io layer to open, so the
    core never guesses at the filesystem.
    """
    if spec is None:
        return Background.color()
    if isinstance(spec, Background):
        return spec
    text = str(spec).strip()
    if not text:
        raise VidmatError(
            "the background is empty: use a colour, blur, transparent, mask or a file."
        )
    key = text.lower()
    if key in ("transparent", "alpha", "rgba", "none"):
        return Background.transparent()
    if key in ("mask", "matte"):
        return Background.mask()
    if key == "blur" or key.startswith("blur:") or key.startswith("blur="):
        if key == "blur":
            return Background.blurred()
        arg = key[5:]
        if not arg:
            raise VidmatError(f"give a blur strength after {key!r}, as in blur:25, or plain blur.")
        try:
            strength = float(arg)
        except ValueError:
            raise VidmatError(
                f"blur strength must be a number, as in blur:25, got {arg!r}."
            ) from None
        return Background.blurred(strength)
    if key.startswith(("color:", "colour:")):
        return Background.color(text.split(":", 1)[1])
    if key.startswith(("#", "rgb(")):
        return Background.color(text)  # clearly meant as a colour: a bad one is an error
    if is_color(text):
        return Background.color(text)
    return Background(kind="file", path=text)
