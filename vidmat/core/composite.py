"""Compositing on the device with one formula: ``out = fg * a + bg * (1 - a)``.

:func:`composite` is that formula (uint8 out, rounded); everything else prepares its
inputs. :class:`Compositor` turns a :class:`~vidmat.core.backgrounds.Background` into a
device buffer once per resolution/device (colour, cover-fit image, looped video frames
cached by index) and composites frames onto it::

    comp = Compositor(parse_background("blur:25"))
    out = comp(frame, alpha, t=seconds)   # frame uint8 (H,W,3), alpha (1,1,H,W) -> uint8 (H,W,3|4)

``fg`` may replace the frame's colours (the despilled foreground from
:func:`vidmat.core.refine.estimate_foreground`). Kinds ``transparent`` (RGBA: colour =
fg, A = alpha) and ``mask`` (alpha as grey) use the same formula with fg = white and
bg = black. :func:`composite_np` is the numpy wrapper.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vidmat.core.backgrounds import Background, parse_background
from vidmat.core.refine import as_alpha, box_filter, fast_cpu, resize

Tensor = torch.Tensor


def composite(fg: Tensor, alpha: Tensor, bg: Tensor | float) -> Tensor:
    """``fg * a + bg * (1 - a)`` in float, rounded to uint8.

    ``fg``/``bg``: (..., H, W, C) uint8 or float on the 0..255 scale (``bg`` may broadcast,
    e.g. a (3,) colour); ``alpha``: (..., H, W, 1) float in [0, 1]. Computed as
    ``bg + (fg - bg) * a`` (the same formula, one multiply fewer). On CPU the
    :class:`Compositor` evaluates the same formula with ``cv2.blendLinear``.
    """
    dtype = alpha.dtype if alpha.is_floating_point() else torch.float32
    f = fg.to(dtype) if not isinstance(fg, float) else fg
    b = (
        bg.to(dtype)
        if isinstance(bg, Tensor)
        else torch.tensor(float(bg), dtype=dtype, device=alpha.device)
    )
    out = torch.addcmul(b, f - b, alpha.to(dtype))
    # Round half to even, as OpenCV's saturate_cast does on the CPU fast path.
    return out.round_().clamp_(0.0, 255.0).to(torch.uint8)


def alpha_hw1(alpha: Tensor, frame: Tensor) -> Tensor:
    """Alpha (N,1,H,W) -> channels-last (N,H,W,1) or (H,W,1) matching ``frame``'s rank."""
    a = as_alpha(alpha).permute(0, 2, 3, 1)
    return a[0] if frame.dim() == 3 else a


def _cover_box(h: int, w: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A picture of h x w scaled to just cover ``size``: (scaled h, scaled w, top, left)
    of the centred crop."""
    height, width = size
    scale = max(height / h, width / w)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    return nh, nw, (nh - height) // 2, (nw - width) // 2


def _shown_size(size: tuple[int, int], pixel_aspect: float) -> tuple[int, int]:
    """A frame of ``size`` stored pixels as it is shown (see :func:`prepare_image`)."""
    height, width = size
    return (height, max(1, round(width * pixel_aspect))) if pixel_aspect != 1.0 else size


def cover_fit(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Scale (N,C,h,w) to cover ``size`` and centre-crop: no bars, no distortion."""
    nh, nw, top, left = _cover_box(image.shape[-2], image.shape[-1], size)
    image = resize(image, (nh, nw))
    return image[..., top : top + size[0], left : left + size[1]]


def _to_tensor(image: Any, device: torch.device) -> Tensor:
    t = image if isinstance(image, Tensor) else torch.from_numpy(np.ascontiguousarray(image))
    if t.dim() != 3 or t.shape[-1] < 3:
        raise ValueError(f"a background frame must be (H,W,3) RGB, got {tuple(t.shape)}")
    return t[..., :3].to(device)


def prepare_image(
    image: Any,
    size: tuple[int, int],
    device: torch.device,
    dtype: torch.dtype,
    pixel_aspect: float = 1.0,
) -> Tensor:
    """RGB array -> cover-fit (H,W,3) tensor on the 0..255 scale on ``device``.

    ``pixel_aspect``: the width of the frame's pixels as shown, over their height (64:45
    for PAL widescreen, stored 720x576 and shown 1024x576). The picture is fitted to the
    frame as shown and then squeezed into its stored pixels, so that it shows undistorted
    beside the person; fitted to the stored 720x576, a photo showed 1.42 times too wide.
    """
    t = _to_tensor(image, device)
    if fast_cpu(t) and t.dtype == torch.uint8:
        return torch.from_numpy(_cover_fit_cv2(t.numpy(), size, pixel_aspect)).to(dtype)
    t = t.permute(2, 0, 1)[None].to(torch.float32)
    t = resize(cover_fit(t, _shown_size(size, pixel_aspect)), size)  # (no-op at 1:1)
    return t[0].permute(1, 2, 0).round_().clamp_(0, 255).to(dtype).contiguous()


def _resize_cv2(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """:func:`resize` on a uint8 (h,w,3) array with OpenCV: area averaging when shrinking.

    Enlarging runs in float and rounds half to even as the torch path does (OpenCV's
    fixed-point uint8 bilinear lands a level lower on every .5); the source is small then.
    """
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    if height < image.shape[0] and width < image.shape[1]:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    grown = cv2.resize(image.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return np.rint(grown).clip(0, 255).astype(np.uint8)


def _cover_fit_cv2(image: np.ndarray, size: tuple[int, int], pixel_aspect: float) -> np.ndarray:
    """The CPU path of :func:`prepare_image`: a 4K background video frame fitted to 480p took
    200 ms through PyTorch's CPU area resize, most of a live frame's budget."""
    shown = _shown_size(size, pixel_aspect)
    nh, nw, top, left = _cover_box(image.shape[0], image.shape[1], shown)
    fitted = _resize_cv2(np.ascontiguousarray(image), (nh, nw))
    fitted = fitted[top : top + shown[0], left : left + shown[1]]
    return np.ascontiguousarray(_resize_cv2(np.ascontiguousarray(fitted), size))


def _blur_factor(sigma: float) -> int:
    """Downscale factor for blurring: about sigma / 3, a power of two so that 640x480 and
    1920x1080 divide exactly (OpenCV's area resize is ~2x faster on whole-number ratios)."""
    return 1 << max(0, int(np.log2(max(1.0, sigma / 3.0))))


def blur_background(frame: Tensor, alpha: Tensor | None, sigma: float) -> Tensor:
    """The frame blurred with about ``sigma`` px, person masked out so no halo of them remains.

    Blurring happens at a reduced size (box passes ~ Gaussian) and is upsampled, so the
    cost hardly depends on ``sigma``. ``frame`` (N,H,W,3) or (H,W,3) uint8/float 0..255,
    ``alpha`` (N,1,H,W). Returns float (.., H, W, 3) on the 0..255 scale.
    """
    squeeze = frame.dim() == 3
    f = (frame[None] if squeeze else frame).permute(0, 3, 1, 2).float()
    _, _, height, width = f.shape
    if sigma <= 0.5:
        out = f
    else:
        factor = _blur_factor(sigma)
        size = (max(1, round(height / factor)), max(1, round(width / factor)))
        small = resize(f, size)
        r = max(1, round(sigma / factor * 1.2))
        if alpha is not None:
            w = 1.0 - resize(as_alpha(alpha).float(), size)
            w = w.square()
            stacked = torch.cat([small * w, w], 1)
            for _ in range(2):
                stacked = box_filter(stacked, r)
            plain = box_filter(box_filter(small, r), r)
            den = stacked[:, 3:]
            eps = 1e-2
            small = (stacked[:, :3] + eps * plain) / (den + eps)
        else:
            small = box_filter(box_filter(small, r), r)
        out = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)
    out = out.permute(0, 2, 3, 1)
    return out[0] if squeeze else out


def blur_background_cv2(frame: np.ndarray, alpha: np.ndarray, sigma: float) -> np.ndarray:
    """OpenCV twin of :func:`blur_background` for CPU frames: uint8 (H,W,3) out."""
    height, width = frame.shape[:2]
    if sigma <= 0.5:
        return frame
    factor = _blur_factor(sigma)
    sw, sh = max(1, round(width / factor)), max(1, round(height / factor))
    small = cv2.resize(frame, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
    w: np.ndarray = 1.0 - cv2.resize(alpha, (sw, sh), interpolation=cv2.INTER_AREA)
    w = cv2.multiply(w, w)
    k = 2 * max(1, round(sigma / factor * 1.2)) + 1
    stacked = np.concatenate([small * w[..., None], w[..., None]], -1)
    for _ in range(2):
        stacked = cv2.blur(stacked, (k, k), borderType=cv2.BORDER_REPLICATE)
    plain = cv2.blur(
        cv2.blur(small, (k, k), borderType=cv2.BORDER_REPLICATE),
        (k, k),
        borderType=cv2.BORDER_REPLICATE,
    )
    eps = 1e-2
    small = (stacked[..., :3] + eps * plain) / (stacked[..., 3:] + eps)
    small = np.clip(small + 0.5, 0, 255).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


class Compositor:
    """Composite frames onto a background; buffers are prepared once per size and device."""

    #: Prepared frames of a ``frames`` video background kept on the device.
    MAX_CACHED_FRAMES = 64

    def __init__(
        self,
        background: Background | str | None = None,
        dtype: torch.dtype | None = None,
        pixel_aspect: float = 1.0,
    ) -> None:
        """``pixel_aspect``: the frames' pixel width over height as shown (see
        :func:`prepare_image`); pictures and videos behind the person are fitted to it."""
        self.background = parse_background(background)
        self.pixel_aspect = float(pixel_aspect)
        if self.background.kind == "file":
            raise ValueError(
                "a file background must be opened first (vidmat.io.images.load_background)"
            )
        self.dtype = dtype
        self._cache: OrderedDict[tuple, Tensor] = OrderedDict()
        self._last_video: tuple[tuple, Tensor] | None = None

    @property
    def channels(self) -> int:
        return self.background.channels

    def _dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype is not None:
            return self.dtype
        return torch.float16 if device.type == "cuda" else torch.float32

    def _cached(self, key: tuple, make: Callable[[], Tensor]) -> Tensor:
        buf = self._cache.get(key)
        if buf is None:
            buf = make()
            self._cache[key] = buf
            while len(self._cache) > self.MAX_CACHED_FRAMES:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return buf

    def background_buffer(
        self,
        size: tuple[int, int],
        device: torch.device,
        t: float | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """The prepared background (H,W,3) on the 0..255 scale (a colour in a float dtype: (3,)).

        Built once per size/device/dtype (video: once per source frame) and cached.
        """
        bg = self.background
        dtype = dtype or self._dtype(device)
        if bg.kind == "color":
            if dtype == torch.uint8:
                return self._cached(
                    ("color", size, device, dtype),
                    lambda: (
                        torch.tensor(bg.rgb, dtype=dtype, device=device)
                        .expand(*size, 3)
                        .contiguous()
                    ),
                )
            return self._cached(
                ("color", device, dtype), lambda: torch.tensor(bg.rgb, dtype=dtype, device=device)
            )
        if bg.kind == "image":
            return self._cached(
                ("image", size, device, dtype),
                lambda: prepare_image(bg.image, size, device, dtype, self.pixel_aspect),
            )
        if bg.kind == "video":
            t = 0.0 if t is None else float(t)
            frames = bg.frames
            if frames:
                index = int(t * bg.fps + 1e-6) % len(frames)
                return self._cached(
                    ("video", index, size, device, dtype),
                    lambda: prepare_image(frames[index], size, device, dtype, self.pixel_aspect),
                )
            assert bg.frame_at is not None
            # Only the latest frame: times rarely repeat, so caching more would just fill memory.
            key = (t, size, device, dtype)
            if self._last_video is None or self._last_video[0] != key:
                self._last_video = (
                    key,
                    prepare_image(bg.frame_at(t), size, device, dtype, self.pixel_aspect),
                )
            return self._last_video[1]
        raise ValueError(f"background kind {bg.kind!r} has no buffer")

    def __call__(
        self,
        frame: Tensor,
        alpha: Tensor,
        t: float | None = None,
        fg: Tensor | None = None,
    ) -> Tensor:
        """frame uint8 (H,W,3) or (N,H,W,3), alpha (N,1,H,W) -> uint8 (...,H,W,3|4).

        ``fg``: optional foreground colours to use instead of the frame (float 0..255 or
        uint8, same shape as ``frame``), e.g. despilled. ``t``: output time in seconds
        (video backgrounds).
        """
        if (
            fast_cpu(frame)
            and frame.dtype == torch.uint8
            and (frame.dim() == 3 or frame.shape[0] == 1)
        ):
            out = self._call_cv2(frame if frame.dim() == 3 else frame[0], alpha, t, fg)
            return out if frame.dim() == 3 else out[None]
        device = frame.device
        dtype = self._dtype(device)
        a = alpha_hw1(alpha, frame).to(dtype)
        kind = self.background.kind
        colour = frame if fg is None else fg
        if kind == "mask":
            return (
                composite(torch.tensor(255.0, dtype=dtype, device=device), a, 0.0)
                .expand(*a.shape[:-1], 3)
                .contiguous()
            )
        if kind == "transparent":
            rgb = (
                colour
                if colour.dtype == torch.uint8
                else colour.add(0.5).clamp_(0, 255).to(torch.uint8)
            )
            return torch.cat([rgb, a.mul(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8)], -1)
        if kind == "blur":
            bgbuf = blur_background(frame, alpha, self.background.blur * frame.shape[-3] / 720.0)
            return composite(colour, a, bgbuf.to(dtype))
        bgbuf = self.background_buffer((frame.shape[-3], frame.shape[-2]), device, t)
        return composite(colour, a, bgbuf)

    def _call_cv2(self, frame: Tensor, alpha: Tensor, t: float | None, fg: Tensor | None) -> Tensor:
        """The CPU path: OpenCV's SIMD blend on zero-copy views (same formula, same rounding)."""
        f = np.ascontiguousarray(frame.detach().numpy())
        height, width = f.shape[:2]
        a = np.ascontiguousarray(as_alpha(alpha)[0, 0].detach().float().numpy())
        kind = self.background.kind
        if kind == "mask":
            a8 = cv2.convertScaleAbs(a, alpha=255.0)
            return torch.from_numpy(cv2.merge([a8, a8, a8]))
        if fg is None:
            colour = f
        elif fg.dtype == torch.uint8:
            colour = np.ascontiguousarray(fg.detach().numpy())
        else:
            colour = np.clip(np.rint(fg.detach().float().numpy()), 0, 255).astype(np.uint8)
        if kind == "transparent":
            return torch.from_numpy(cv2.merge([colour, cv2.convertScaleAbs(a, alpha=255.0)]))
        if kind == "blur":
            bg = blur_background_cv2(f, a, self.background.blur * height / 720.0)
        else:
            bg = self.background_buffer((height, width), frame.device, t, torch.uint8).numpy()
        return torch.from_numpy(cv2.blendLinear(colour, bg, a, 1.0 - a))


def composite_np(
    frame: np.ndarray,
    alpha: np.ndarray,
    background: Background | str | None = None,
    t: float | None = None,
) -> np.ndarray:
    """numpy wrapper: frame uint8 (H,W,3), alpha float (H,W) -> uint8 (H,W,3|4)."""
    comp = Compositor(background, dtype=torch.float32)
    out = comp(
        torch.from_numpy(np.ascontiguousarray(frame)),
        torch.from_numpy(np.asarray(alpha, np.float32)),
        t,
    )
    return out.cpu().numpy()
