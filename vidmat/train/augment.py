"""Sample synthesis for webcam and video use.

Every sample is a pure function of a ``numpy.random.Generator``; the loop seeds
one generator per (seed, step, slot), so the batch at step ``s`` is the same
whether the run went straight through or was resumed from a checkpoint.

What the augmentations stand for: random scale/crop/rotation/flip (framing of a
webcam or a phone), people pasted onto other scenes and onto person-free crops
of the photos themselves (studio sets must not teach "plain grey = background"),
colour / brightness / contrast / gamma (white balance and exposure), low light
with sensor noise, blur (focus and motion), and JPEG artefacts (streamed video).
A pasted person casts no shadow, while a real one does (DAVIS hike: 59 % of the
session-13 model's false-positive pixels lie at or below the hiker's ankles, where his
shadow falls), so composites can get one that the label leaves background: soft and
faint (``shadow``), or hard and dark, laid on the ground from the feet in sunlight
(``sun_shadow``). Nor does a pasted person often stand before a scene of its own
colour, the case the model fails most on video, so composites can get one
(``camouflage``). Nor are the scenes ever murals, posters or patterned walls, before
which the model loses whole people (``graphics``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np

from vidmat.train.data import CachedSource


@dataclass(frozen=True)
class AugmentConfig:
    rotate_deg: float = 12.0
    flip: float = 0.5
    bg_from_bank: float = 0.7  # else a person-free crop of a training photo
    color: float = 0.8
    low_light: float = 0.15
    noise: float = 0.3
    blur: float = 0.2
    jpeg: float = 0.3
    grayscale: float = 0.05
    aspect_range: tuple[float, float] = (0.5, 2.0)  # frame width / height
    whole_photo: float = 0.3  # un-composited samples that show the entire photo
    #: Composited samples whose person casts a shadow onto the new background. Off by
    #: default so that runs started without it resume with exactly their batches.
    shadow: float = 0.0
    #: Composited samples whose new scene takes on the colour of a part of the person
    #: (a white top before a pale wall, skin before sunlit hay). Off by default, as above.
    camouflage: float = 0.0
    #: Composited samples that get a second person, pasted behind the first at its own
    #: place and scale. Every training photo shows one person, and the model learned that
    #: a frame holds one: with two val/ccp people pasted apart into a scene, the shipped
    #: weights missed one entirely 40 times in 200, with each alone 2 in 101 (session 31).
    second_person: float = 0.0
    #: Largest composited window, as a multiple of the photo's longer side (the smallest
    #: is 0.45). At 1.5 a whole-body photo's person still fills about 0.6 of the frame's
    #: height; DAVIS's skater fills 0.43-0.70 of it (median 0.57), a person across a room less.
    wide_shot: float = 1.5
    #: Composited samples whose scene gets bold graphics painted on it: lettering with
    #: outlines, blobs, stripes in saturated colours, as on a mural, a poster or a
    #: patterned wall. Before DAVIS rollerblade's graffiti wall the H200-trained weights
    #: miss the whole skater on 11 of 35 frames (IoU 0) and find her (0.78-0.84) once the
    #: wall alone is blurred (session 33). Off by default, as above.
    graphics: float = 0.0
    #: Composited samples whose person stands in sunlight: a hard, dark shadow laid on
    #: the ground from the feet, tinted by the sky's light (it replaces the soft shadow
    #: of ``shadow`` where both come). DAVIS hike's false positives at 192 px are almost
    #: all that shadow on the gravel, and the soft, faint shadows of ``shadow`` did not
    #: teach it away (session 37). Needs the feet in the frame. Off by default, as above.
    sun_shadow: float = 0.0


def _affine(
    rng: np.random.Generator,
    h: int,
    w: int,
    size: int,
    win: tuple[float, float],
    cfg: AugmentConfig,
    anchor_bottom: bool = False,
) -> np.ndarray:
    """Affine map from a ``win`` = (width, height) source window to a ``size`` square.

    The window has the aspect ratio of a camera frame, and squashing it to the
    square is what inference does to every frame (``cv2.resize`` to the model
    size): a 16:9 webcam frame makes people thin, a portrait photo makes them
    wide. Training on the same geometry is what lets the model see a whole
    full-body photo or a wide DAVIS frame the way it will see it at run time.
    ``anchor_bottom`` keeps the photo's bottom edge at or below the output's
    bottom edge: a torso cut by the photo frame must not float mid-scene.
    """
    sw, sh = win
    cx = rng.uniform(0.5 * sw, w - 0.5 * sw) if sw < w else w / 2
    cy = rng.uniform(0.5 * sh, h - 0.5 * sh) if sh < h else h / 2
    if sw >= w:
        cx += rng.uniform(-0.5, 0.5) * (sw - w)
    if sh >= h:
        cy += rng.uniform(-0.5, 0.5) * (sh - h)
    if anchor_bottom:
        cy = min(cy, h - sh / 2)
    angle = np.deg2rad(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
    c, s = np.cos(angle), np.sin(angle)
    # translate the window centre to the origin, rotate, squash to the square, re-centre
    rot = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
    squash = np.diag([size / sw, size / sh, 1.0])
    to_origin = np.array([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]])
    to_centre = np.array([[1.0, 0.0, size / 2], [0.0, 1.0, size / 2], [0.0, 0.0, 1.0]])
    m = to_centre @ squash @ rot @ to_origin
    if rng.random() < cfg.flip:
        m = np.array([[-1.0, 0.0, size], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ m
    return m[:2]


def _frame_aspect(rng: np.random.Generator, cfg: AugmentConfig) -> float:
    """Width / height of the camera frame a sample stands for (log-uniform, 9:16 to 16:9 and a bit)."""
    lo, hi = cfg.aspect_range
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _window(
    rng: np.random.Generator, h: int, w: int, composite: bool, cfg: AugmentConfig
) -> tuple[float, float]:
    """Source window (width, height) for one sample.

    Not composited: stay inside the photo, so the border is real image content;
    sometimes the whole photo, exactly the frame inference would see.
    Composited: anywhere from a close-up to a small figure in a wide shot.
    """
    if composite:
        sh = rng.uniform(0.45, cfg.wide_shot) * max(h, w)
        return _frame_aspect(rng, cfg) * sh, sh
    if rng.random() < cfg.whole_photo:
        return float(w), float(h)
    a = _frame_aspect(rng, cfg)
    sh = rng.uniform(0.55, 1.0) * min(h, w / a)
    return a * sh, sh


def _background(
    rng: np.random.Generator,
    size: int,
    bank: np.ndarray | None,
    sources: Sequence[CachedSource],
    cfg: AugmentConfig,
) -> np.ndarray:
    """A person-free scene, float32 RGB in [0, 255]."""
    if bank is not None and len(bank) and rng.random() < cfg.bg_from_bank:
        bg = bank[rng.integers(len(bank))]
        h, w = bg.shape[:2]
        side = rng.uniform(0.4, 1.0) * min(h, w)
        x0 = rng.uniform(0, w - side)
        y0 = rng.uniform(0, h - side)
        crop = bg[int(y0) : int(y0 + side), int(x0) : int(x0 + side)]
    else:
        crop = _person_free_crop(rng, sources)
        if crop is None:
            if bank is not None and len(bank):
                crop = bank[rng.integers(len(bank))]
            else:  # smooth random colour field
                crop = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
    out = cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return out.astype(np.float32)


def _person_free_crop(
    rng: np.random.Generator, sources: Sequence[CachedSource]
) -> np.ndarray | None:
    """A crop of a training photo that contains no person pixel (a few tries)."""
    for _ in range(6):
        src = sources[int(rng.integers(len(sources)))]
        i = rng.integers(len(src))
        m = src.masks[i]
        h, w = m.shape
        side = int(rng.uniform(0.2, 0.5) * min(h, w))
        if side < 8:
            continue
        y0 = int(rng.integers(0, h - side + 1))
        x0 = int(rng.integers(0, w - side + 1))
        if not m[y0 : y0 + side, x0 : x0 + side].any():
            return np.asarray(src.images[i, y0 : y0 + side, x0 : x0 + side])
    return None


def _photometric(rng: np.random.Generator, img: np.ndarray, cfg: AugmentConfig) -> np.ndarray:
    """Colour, exposure, low light, blur, noise; float32 [0,255] in, uint8 out."""
    if rng.random() < cfg.color:
        gains = rng.uniform(0.8, 1.2, 3).astype(np.float32)
        contrast = rng.uniform(0.7, 1.3)
        bright = rng.uniform(-30, 30)
        mean = img.mean()
        img = (img * gains - mean) * contrast + mean + bright
        if rng.random() < 0.5:
            sat = rng.uniform(0.5, 1.4)
            grey = img.mean(axis=2, keepdims=True)
            img = grey + (img - grey) * sat
        img = np.clip(img, 0, 255)
        if rng.random() < 0.5:
            gamma = rng.uniform(0.7, 1.5)
            img = 255.0 * (img / 255.0) ** gamma
    if rng.random() < cfg.grayscale:
        img = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
    low = rng.random() < cfg.low_light
    if low:
        img = img * rng.uniform(0.15, 0.5)
    if rng.random() < cfg.blur:
        if rng.random() < 0.5:
            k = int(rng.choice([3, 5]))
            img = cv2.GaussianBlur(img, (k, k), 0)
        else:  # motion blur along a random direction
            k = int(rng.integers(3, 8))
            ker: np.ndarray = np.zeros((k, k), np.float32)
            ker[k // 2, :] = 1.0 / k
            rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), rng.uniform(0, 180), 1.0)
            ker = cv2.warpAffine(ker, rot, (k, k))
            ker = ker / max(ker.sum(), 1e-6)
            img = cv2.filter2D(img, -1, ker)
    if low or rng.random() < cfg.noise:
        sigma = rng.uniform(2, 12 if low else 8)
        img = img + rng.normal(0, sigma, img.shape).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < cfg.jpeg:
        q = int(rng.integers(30, 90))
        ok, buf = cv2.imencode(".jpg", out[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            out = decoded[:, :, ::-1]
    return np.ascontiguousarray(out)


def _camouflage(
    rng: np.random.Generator, bg: np.ndarray, fg: np.ndarray, alpha: np.ndarray
) -> np.ndarray:
    """``bg`` with its mean colour moved toward that of one part of the person.

    The shipped weights lose a white top before a pale wall (DAVIS rollerblade) and a
    raised bare arm before bright hay (dance-twirl): parts whose colour the scene
    shares. The colour is the local mean around one person pixel, so the scene
    matches a garment or the skin, not the person's blend of them; the scene keeps
    its texture, which is all that is left to tell the two apart.
    """
    ys, xs = np.nonzero(alpha > 0.5)
    if len(ys) < 16:
        return bg
    k = int(rng.integers(len(ys)))
    local = cv2.blur(fg, (9, 9))[ys[k], xs[k]]
    t = rng.uniform(0.5, 1.0)
    return np.clip(bg + t * (local - bg.mean(axis=(0, 1))), 0.0, 255.0)


_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
)
_GLYPHS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _vivid(rng: np.random.Generator) -> tuple[int, int, int]:
    """A saturated RGB colour, or now and then white or black (paint, not scenery)."""
    r = rng.random()
    if r < 0.15:
        return (255, 255, 255) if r < 0.1 else (0, 0, 0)
    hsv = np.array([[[rng.integers(180), rng.integers(130, 256), rng.integers(110, 256)]]])
    red, green, blue = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
    return int(red), int(green), int(blue)


def _graphics(rng: np.random.Generator, bg: np.ndarray) -> np.ndarray:
    """``bg`` with bold shapes painted over part or all of it, float32 RGB.

    Lettering in outlined strokes, filled polygons and ellipses, bands of stripes:
    the hard-edged, high-contrast, colourful clutter of murals, posters and printed
    walls, which none of the training scenes (streets, nature, studio grey) holds.
    The paint can be translucent, as faded murals are, and is never in front of the
    person, so the label does not change.
    """
    h, w = bg.shape[:2]
    side = max(h, w)
    paint = np.clip(bg, 0, 255).astype(np.uint8)
    if rng.random() < 0.35:  # a painted wall: a ground colour first
        paint[:] = _vivid(rng)
    for _ in range(int(rng.integers(3, 13))):
        colour = _vivid(rng)
        cx, cy = int(rng.uniform(-0.1, 1.1) * w), int(rng.uniform(-0.1, 1.1) * h)
        r = max(2.0, rng.uniform(0.05, 0.45) * side)
        kind = rng.choice(4, p=(0.5, 0.2, 0.15, 0.15))
        if kind == 0:  # lettering, outlined as graffiti and signs are
            font = _FONTS[int(rng.integers(len(_FONTS)))]
            text = "".join(rng.choice(list(_GLYPHS), int(rng.integers(1, 7))))
            (tw, th), _ = cv2.getTextSize(text, font, 1.0, 2)
            scale = rng.uniform(0.1, 0.6) * h / max(th, 1)
            scale = min(scale, 1.6 * w / max(tw, 1))
            thick = max(1, int(scale * rng.uniform(1.5, 5)))
            org = (int(cx - tw * scale / 2), int(cy + th * scale / 2))
            if rng.random() < 0.7:
                cv2.putText(paint, text, org, font, scale, _vivid(rng), thick + max(2, thick // 2))
            cv2.putText(paint, text, org, font, scale, colour, thick, cv2.LINE_AA)
        elif kind == 1:  # a filled polygon, sometimes outlined
            n = int(rng.integers(3, 8))
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = r * rng.uniform(0.4, 1.0, n)
            pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)
            cv2.fillPoly(paint, [pts], colour, cv2.LINE_AA)
            if rng.random() < 0.5:
                cv2.polylines(paint, [pts], True, _vivid(rng), max(1, int(r / 12)), cv2.LINE_AA)
        elif kind == 2:  # an ellipse
            axes = (int(r), int(r * rng.uniform(0.3, 1.0)))
            cv2.ellipse(paint, (cx, cy), axes, rng.uniform(0, 180), 0, 360, colour, -1, cv2.LINE_AA)
        else:  # a band of parallel stripes
            step = max(3, int(rng.uniform(0.02, 0.1) * side))
            d = np.array([np.cos(a := rng.uniform(0, np.pi)), np.sin(a)])
            along, across = d * 2 * side, np.array([-d[1], d[0]])  # half a line, its normal
            half = int(0.5 * r // step)
            for k in range(-half, half + 1):
                p0 = np.array([cx, cy]) + across * k * step
                a0, a1 = (p0 - along).astype(int), (p0 + along).astype(int)
                cv2.line(paint, tuple(a0), tuple(a1), colour, max(1, step // 3), cv2.LINE_AA)
    opacity = rng.uniform(0.6, 1.0)
    return bg * (1.0 - opacity) + paint.astype(np.float32) * opacity


def _laid_on_ground(foot: float, k: float, shear: float) -> np.ndarray:
    """Affine map laying a silhouette on the ground from its feet (row ``foot``): heights
    above the feet become depths below them, ``k`` times as long (negative: up the frame,
    behind the person), moved sideways ``shear`` per row by the light's bearing."""
    # y' = foot + k (foot - y), x' = x + shear (foot - y)
    return np.array([[1.0, -shear, shear * foot], [0.0, -k, foot * (1.0 + k)]])


def _cast_shadow(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray | None:
    """How much a pasted person darkens the background behind it, float32 (H, W, 1) in [0, 1).

    Ground: the silhouette laid down from the feet, flattened and sheared by the
    light's direction. Wall: the silhouette shifted and scaled, as a side light
    throws it onto a wall behind. Soft-edged and partial, as shadows are.
    """
    ys, xs = np.nonzero(alpha > 0.5)
    if len(ys) < 16:
        return None
    h, w = alpha.shape
    if rng.random() < 0.5:
        foot = float(ys.max())
        k = rng.uniform(0.15, 0.8)  # height of the laid-down shadow / of the person
        m = _laid_on_ground(foot, k, rng.uniform(-1.5, 1.5) * k)
    else:
        cx, cy, scale = float(xs.mean()), float(ys.mean()), rng.uniform(0.9, 1.25)
        dx, dy = rng.uniform(-0.3, 0.3) * w, rng.uniform(-0.1, 0.1) * h
        m = np.array([[scale, 0.0, cx * (1 - scale) + dx], [0.0, scale, cy * (1 - scale) + dy]])
    shadow = cv2.warpAffine(alpha, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0)
    shadow = cv2.GaussianBlur(shadow, (0, 0), rng.uniform(0.5, 4.0) * max(h, w) / 256)
    return (shadow * rng.uniform(0.3, 0.75))[..., None]


def _sun_shadow(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray | None:
    """How much the sun's shadow of a pasted person darkens each channel, float32 (H, W, 3).

    The silhouette laid on the ground from the feet, flattened and sheared by the sun's
    height and bearing (in front of the person, or behind when the sun faces the camera),
    sharp-edged and dark as on a sunny day, and bluer than the light around it, since the
    sky lights it. None when the feet are out of the frame.
    """
    ys = np.nonzero(alpha > 0.5)[0]
    h, w = alpha.shape
    if len(ys) < 16 or ys.max() >= h - 2:
        return None
    foot = float(ys.max())
    # toward the camera (down the frame), or away from it (up the frame, behind the person)
    k = rng.uniform(0.1, 0.7) if rng.random() < 0.75 else -rng.uniform(0.05, 0.3)
    m = _laid_on_ground(foot, k, rng.uniform(-1.5, 1.5))
    shadow = cv2.warpAffine(alpha, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0)
    shadow = cv2.GaussianBlur(shadow, (0, 0), rng.uniform(0.3, 1.2) * max(h, w) / 256)
    # red and green lose more than blue: sky light (R, G, B, as the samples are)
    tint = np.array([1.0, rng.uniform(0.9, 1.0), rng.uniform(0.7, 0.9)], np.float32)
    return (shadow * rng.uniform(0.45, 0.85))[..., None] * tint


#: Spawn key of the graphics switch's generator, apart from the children that
#: ``Generator.spawn`` numbers 0, 1, 2 for the switches before it.
_GRAPHICS_KEY = 101
#: Spawn key of the sun-shadow switch's generator, as for the graphics'.
_SUN_SHADOW_KEY = 102


def _keyed_child(rng: np.random.Generator, key: int) -> np.random.Generator:
    """A child generator of ``rng`` under its own spawn key.

    Unlike ``rng.spawn``, it does not advance the parent's count of children, so the
    children spawned after it (and every draw of a run without this switch) stay
    what they were: runs resumed from older checkpoints keep their batches.
    """
    ss = cast(np.random.SeedSequence, rng.bit_generator.seed_seq)
    return np.random.default_rng(
        np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, key), pool_size=ss.pool_size)
    )


DEFAULT_AUGMENT = AugmentConfig()


def synthesize(
    rng: np.random.Generator,
    sources: Sequence[CachedSource],
    weights: np.ndarray,
    size: int,
    bank: np.ndarray | None = None,
    cfg: AugmentConfig = DEFAULT_AUGMENT,
) -> tuple[np.ndarray, np.ndarray]:
    """One training sample: RGB uint8 (size, size, 3) and mask float32 (size, size) in {0, 1}."""
    src, i = _pick(rng, sources, weights)
    composite = rng.random() < src.spec.composite
    fg, alpha = _framed(rng, src, i, size, composite, cfg)
    label = alpha
    if composite:
        bg = _background(rng, size, bank, sources, cfg)
        if cfg.graphics > 0:
            grng = _keyed_child(rng, _GRAPHICS_KEY)
            if grng.random() < cfg.graphics:
                bg = _graphics(grng, bg)
        if cfg.shadow > 0:
            # A child generator, so the draws below (and the batches of runs without
            # shadows) are the same whether or not this sample gets one.
            srng = rng.spawn(1)[0]
            shadow = _cast_shadow(srng, alpha) if srng.random() < cfg.shadow else None
        else:
            shadow = None
        if cfg.sun_shadow > 0:
            sun_rng = _keyed_child(rng, _SUN_SHADOW_KEY)
            if sun_rng.random() < cfg.sun_shadow:
                sun = _sun_shadow(sun_rng, alpha)
                shadow = sun if sun is not None else shadow
        if shadow is not None:
            bg *= 1.0 - shadow
        if cfg.camouflage > 0:
            # Spawned after the shadow's child, so that one stays what it was.
            crng = rng.spawn(1)[0]
            if crng.random() < cfg.camouflage:
                bg = _camouflage(crng, bg, fg, alpha)
        if cfg.second_person > 0:
            # Spawned after the camouflage's child, so those draws stay what they were.
            prng = rng.spawn(1)[0]
            if prng.random() < cfg.second_person:
                src2, i2 = _pick(prng, sources, weights)
                fg2, alpha2 = _framed(prng, src2, i2, size, True, cfg)
                bg = _paste(fg2, alpha2, bg)  # behind the first person
                label = np.maximum(label, alpha2)  # the label holds both
        out = _paste(fg, alpha, bg)
    else:
        out = fg
    target = (label > 0.5).astype(np.float32)
    return _photometric(rng, out, cfg), target


def _pick(
    rng: np.random.Generator, sources: Sequence[CachedSource], weights: np.ndarray
) -> tuple[CachedSource, int]:
    """A training photo: its source drawn by the sampling weights, then one of its photos."""
    src = sources[int(rng.choice(len(sources), p=weights))]
    return src, int(rng.integers(len(src)))


def _framed(
    rng: np.random.Generator,
    src: CachedSource,
    i: int,
    size: int,
    composite: bool,
    cfg: AugmentConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Photo ``i`` of ``src`` as a camera would frame it (see :func:`_affine`): RGB float32
    (size, size, 3) and its person's alpha, float32 (size, size); outside the photo the
    alpha is 0 when the person is to be composited, the photo mirrored on when not."""
    img = np.asarray(src.images[i])
    mask = np.asarray(src.masks[i])
    h, w = mask.shape
    win = _window(rng, h, w, composite, cfg)
    touches_bottom = bool(mask[-1].any())
    m = _affine(rng, h, w, size, win, cfg, anchor_bottom=composite and touches_bottom)
    fg = cv2.warpAffine(
        img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    ).astype(np.float32)
    border = cv2.BORDER_CONSTANT if composite else cv2.BORDER_REFLECT_101
    alpha = cv2.warpAffine(
        mask.astype(np.float32) / 255.0, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=border
    )
    return fg, alpha


def _paste(fg: np.ndarray, alpha: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """``fg`` over ``bg`` by ``alpha``, its edge softened a little so that a hard cut-out
    seam is no cue."""
    soft = cv2.GaussianBlur(alpha, (3, 3), 0)[..., None]
    return fg * soft + bg * (1.0 - soft)


def sample_rng(seed: int, step: int, slot: int) -> np.random.Generator:
    """The generator for one sample: depends only on (seed, step, slot), so resume is exact."""
    return np.random.default_rng([seed, step, slot])
