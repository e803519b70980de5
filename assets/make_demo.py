"""Make assets/demo.mp4, the clip ``vidmat demo`` converts. Run from the repository root:

    pip install scikit-image      # dev-only: it ships the photo
    python assets/make_demo.py

The person is NASA astronaut Eileen Collins from scikit-image's ``astronaut()`` sample
(a NASA photograph, public domain). She glides and sways over a background generated
here (drifting colour gradient and soft moving discs), with a generated two-tone
chord as audio. 4 s at 23.976 fps (NTSC film rate, to show exact timing), 640x360,
H.264 + AAC. Deterministic: the same script writes the same pixels.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

WIDTH, HEIGHT = 640, 360
RATE = Fraction(24000, 1001)
SECONDS = 4.0
SAMPLE_RATE = 48000
OUT = Path(__file__).resolve().parent / "demo.mp4"


def person_layer() -> tuple[np.ndarray, np.ndarray]:
    """The photo's upper body with a soft oval vignette (RGB, weight in [0, 1])."""
    from skimage import data

    photo = data.astronaut()  # 512x512 RGB
    crop = photo[0:512, 60:360]  # the astronaut and a little of her own background
    h = 320
    w = round(crop.shape[1] * h / crop.shape[0])
    crop = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:h, 0:w]
    # An oval around head and shoulders that runs straight down to the frame's bottom edge.
    dy = np.clip((yy - h * 0.5) / (h * 0.5), -1.0, 0.0)
    d = ((xx - w / 2) / (w / 2)) ** 2 + dy**2
    weight = np.clip((1.0 - d) / 0.2, 0.0, 1.0)
    return crop, weight.astype(np.float32)[..., None]


def background(t: float) -> np.ndarray:
    """A drifting diagonal gradient with three soft discs orbiting."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    phase = (xx / WIDTH + yy / HEIGHT) * 1.5 + t * 0.35
    img = np.stack(
        [
            110 + 70 * np.sin(2 * math.pi * phase),
            120 + 60 * np.sin(2 * math.pi * (phase + 0.33)),
            150 + 80 * np.sin(2 * math.pi * (phase + 0.66)),
        ],
        -1,
    )
    for k, colour in enumerate([(250, 220, 90), (90, 220, 250), (240, 120, 200)]):
        cx = WIDTH * (0.5 + 0.38 * math.cos(0.9 * t + 2.1 * k))
        cy = HEIGHT * (0.5 + 0.32 * math.sin(1.3 * t + 2.1 * k))
        r = 55 + 10 * k
        disc = np.clip(1.0 - np.hypot(xx - cx, yy - cy) / r, 0.0, 1.0)[..., None] ** 0.7
        img = img * (1 - 0.8 * disc) + np.array(colour, np.float32) * 0.8 * disc
    return img


def frame(i: int, t: float, person: np.ndarray, weight: np.ndarray) -> np.ndarray:
    img = background(t)
    h, w = person.shape[:2]
    x = round(WIDTH / 2 - w / 2 + 140 * math.sin(2 * math.pi * t / SECONDS))
    y = HEIGHT - h + round(8 * math.sin(2 * math.pi * t * 0.75))
    x0, x1 = max(0, x), min(WIDTH, x + w)
    y0, y1 = max(0, y), min(HEIGHT, y + h)
    p = person[y0 - y : y1 - y, x0 - x : x1 - x].astype(np.float32)
    a = weight[y0 - y : y1 - y, x0 - x : x1 - x]
    img[y0:y1, x0:x1] = p * a + img[y0:y1, x0:x1] * (1 - a)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def tone(n: int) -> np.ndarray:
    """A soft A-major chord (A3 + C#4 + E4) with a slow swell, stereo float32 (2, n)."""
    t = np.arange(n) / SAMPLE_RATE
    env = np.minimum(1.0, t / 0.3) * np.minimum(1.0, (SECONDS - t) / 0.4).clip(0, 1)
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.18, 329.63)) / 3
    left = 0.25 * env * chord * (0.8 + 0.2 * np.sin(2 * np.pi * 0.5 * t))
    right = 0.25 * env * chord * (0.8 + 0.2 * np.cos(2 * np.pi * 0.5 * t))
    return np.stack([left, right]).astype(np.float32)


def main() -> None:
    person, weight = person_layer()
    tb = Fraction(1, 24000)
    frames = round(SECONDS * RATE)
    with av.open(str(OUT), "w", options={"movflags": "faststart"}) as c:
        v = c.add_stream("libx264", rate=RATE, options={"crf": "21", "preset": "slow"})
        v.width, v.height, v.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        v.time_base = tb
        v.codec_context.time_base = tb
        a = c.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
        a.codec_context.bit_rate = 96000
        for i in range(frames):
            vf = av.VideoFrame.from_ndarray(frame(i, i / float(RATE), person, weight), "rgb24")
            vf.pts, vf.time_base = i * 1001, tb
            for p in v.encode(vf):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        samples = tone(int(frames / RATE * SAMPLE_RATE))
        for start in range(0, samples.shape[1], 1024):
            af = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[:, start : start + 1024]),
                format="fltp",
                layout="stereo",
            )
            af.sample_rate, af.pts = SAMPLE_RATE, start
            for p in a.encode(af):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB, {frames} frames)")


if __name__ == "__main__":
    main()
