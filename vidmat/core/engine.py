"""The inference engine: RGB uint8 frames in, alpha out, as fast as the device allows.

Why one object: every job (live, convert, eval, bench) needs the same
preprocessing as the weights were trained with, on the device, with the same
precision and CUDA-graph handling. Callers get alpha at model resolution (for
edge refinement at full resolution) or at frame resolution, as numpy or as
device tensors so GPU callers can composite without a round trip.

On CUDA, batch-1 eager u2netp is kernel-launch bound (15.9 ms fp16 on an H100
against 2.98 ms graph-captured, see DESIGN.md), so each fixed input shape is
captured once into a CUDA graph that runs upload → resize → normalise → model
→ sigmoid → resize back, and is replayed afterwards.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidmat.core.settings import MAX_BATCH, PRECISIONS, EngineConfig
from vidmat.errors import VidmatError
from vidmat.model.spec import MAX_INPUT_SIZE, MIN_INPUT_SIZE, WeightsSpec
from vidmat.model.u2net import fold_batch_norms
from vidmat.model.weights import load_weights

log = logging.getLogger(__name__)

_MAX_GRAPHS = 4  # distinct input shapes kept captured


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), where
    ``--precision bf16`` runs the model faster than fp32; elsewhere it is emulated, slower.
    torch's probes are private, so an older or newer torch without them reads as no."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def app_precision(cfg: EngineConfig) -> EngineConfig:
    """``auto`` for the applications (convert, demo, live): bf16 on a CPU that has it in
    hardware, about twice as fast as fp32 for a matte that differs by a fraction of a level.

    Measured on a 2-core Xeon with AMX (session 58, shipped weights at 256 px): the model
    105 -> 51 ms a frame; `vidmat live` on a 640x480 clip made masks at 19.3 instead of
    8.3 a second (mask age 197 -> 93 ms); `vidmat convert` of a 247-frame 720p clip took
    23.9 s instead of 38.7, its frames 0.24 levels apart on average. `vidmat eval` against
    fp32 at 256: val/ccp IoU 0.9343 both, val/viton 0.9432 -> 0.9431, DAVIS 0.7510 ->
    0.7507, MAE equal or lower. eval keeps fp32 unless asked: a score should not depend on
    which CPU measured it. Elsewhere ``auto`` stays as :func:`select_dtype` says.
    """
    if cfg.precision != "auto" or select_device(cfg.device).type != "cpu":
        return cfg
    return replace(cfg, precision="bf16") if cpu_has_native_bf16() else cfg


def side_by_side(cfg: EngineConfig, spare_cores: int = 0) -> EngineConfig:
    """On the CPU, split the cores between two model calls (:attr:`EngineConfig.workers`).

    ``spare_cores``: cores left to work that runs beside the model (decoding and encoding
    in convert). What the user set is kept: ``threads`` alone means one call with that
    many, ``workers`` alone gets the threads that share leaves each. Off the CPU the
    settings pass unchanged (the engine runs one call at a time on a GPU).
    """
    if select_device(cfg.device).type != "cpu":
        return cfg
    cores = os.cpu_count() or 2
    workers = cfg.workers or (1 if cfg.threads else min(2, cores))
    threads = cfg.threads or max(1, (cores - spare_cores) // workers)
    return replace(cfg, workers=workers, threads=threads)


def select_device(name: str = "auto", option: str = "--device") -> torch.device:
    """'auto' takes the first CUDA device when there is one, else the CPU.

    ``option`` is the command-line option the name came from, for the messages.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise VidmatError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise VidmatError(
                f"{option} {name} was asked for but no CUDA GPU is usable here "
                f"(torch reports none); use {option} cpu."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise VidmatError(
                f"{option} {name}: only {torch.cuda.device_count()} CUDA device(s) present."
            )
    elif device.type != "cpu":
        raise VidmatError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N.")
    return device


def precision_name(dtype: torch.dtype) -> str:
    """The ``--precision`` name of a model dtype: what eval records and bench names a row."""
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")


def select_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision not in PRECISIONS:
        raise VidmatError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision == "fp16" and device.type != "cuda":
        raise VidmatError("--precision fp16 needs a CUDA device; on the CPU use bf16 or fp32.")
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)


class _Graph:
    """A captured upload-to-alpha pipeline for one input shape."""

    def __init__(self, graph: torch.cuda.CUDAGraph, inp: Tensor, low: Tensor, full: Tensor):
        self.graph, self.inp, self.low, self.full = graph, inp, low, full


class Engine:
    """Runs a segmentation model on RGB uint8 frames with the weights' own preprocessing.

    ``model`` is any module that maps a normalised (N, 3, s, s) batch to
    probabilities (N, 1, s, s) in eval mode; U2Net does, and so do the stub
    models tests use. The engine takes the model over: in eval mode, its batch norms
    folded into its convolutions (:func:`~vidmat.model.u2net.fold_batch_norms`), on the
    engine's device and dtype; pass a copy of a model that is still to be trained.
    """

    def __init__(
        self, model: nn.Module, spec: WeightsSpec, cfg: EngineConfig | None = None
    ) -> None:
        cfg = cfg or EngineConfig()
        self.cfg = cfg
        self.spec = spec
        self.device = select_device(cfg.device)
        self.dtype = select_dtype(cfg.precision, self.device)
        self.size = int(cfg.size or spec.input_size)
        if not MIN_INPUT_SIZE <= self.size <= MAX_INPUT_SIZE:
            raise VidmatError(
                f"--size {self.size} is out of range; use {MIN_INPUT_SIZE}..{MAX_INPUT_SIZE} "
                "(e.g. 192, 256, 320)."
            )
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.workers is not None and cfg.workers < 1:
            raise VidmatError(f"--workers must be at least 1, not {cfg.workers}.")
        #: model calls side by side (CPU only: a GPU runs one call at a time anyway)
        self.workers = (cfg.workers or 1) if self.device.type == "cpu" else 1
        self._pool: ThreadPoolExecutor | None = None
        self.channels_last = cfg.channels_last
        self._format = torch.channels_last if self.channels_last else torch.contiguous_format
        model = fold_batch_norms(model.eval())
        # Module.to takes memory_format (torch's stubs omit it).
        self.model = model.to(self.device, self.dtype, memory_format=self._format)  # type: ignore[call-overload]
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(spec.mean, device=self.device).view(shape) * 255.0
        self._std = torch.tensor(spec.std, device=self.device).view(shape) * 255.0
        self._graphs: OrderedDict[tuple[int, ...], _Graph | None] = OrderedDict()
        self._pinned: dict[tuple[int, ...], tuple[Tensor, torch.cuda.Event | None]] = {}

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> Engine:
        model, spec = load_weights(cfg.weights, device="cpu")
        return cls(model, spec, cfg)

    @property
    def use_cuda_graph(self) -> bool:
        return self.cfg.cuda_graph and self.device.type == "cuda"

    # ------------------------------------------------------------------ input
    def to_device(self, frames: np.ndarray | Tensor) -> Tensor:
        """uint8 RGB frames, (H, W, 3) or (N, H, W, 3), as a (N, H, W, 3) device tensor.

        On CUDA numpy frames go through a reused pinned buffer, so the upload is
        an asynchronous DMA rather than a pageable copy.
        """
        if isinstance(frames, np.ndarray):
            if frames.dtype != np.uint8 or frames.shape[-1] != 3 or frames.ndim not in (3, 4):
                raise ValueError(
                    f"expected uint8 RGB frames (..., H, W, 3), got {frames.dtype} {frames.shape}"
                )
            if frames.ndim == 3:
                frames = frames[None]
            if self.device.type != "cuda":
                return torch.from_numpy(np.ascontiguousarray(frames))
            key = tuple(frames.shape)
            buf, event = self._pinned.get(key, (None, None))
            if buf is None:
                buf = torch.empty(key, dtype=torch.uint8, pin_memory=True)
            elif event is not None:
                event.synchronize()  # the previous upload from this buffer has finished
            buf.numpy()[...] = frames
            out = buf.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            # On the stream the copy went to: without it, the current device's, which for
            # --device cuda:1 in a process whose current device is 0 never saw the copy.
            event.record(torch.cuda.current_stream(self.device))
            self._pinned[key] = (buf, event)
            return out
        if frames.dtype != torch.uint8 or frames.shape[-1] != 3 or frames.dim() not in (3, 4):
            raise ValueError(
                f"expected uint8 RGB frames (..., H, W, 3), got {frames.dtype} {tuple(frames.shape)}"
            )
        if frames.dim() == 3:
            frames = frames[None]
        return frames.to(self.device, non_blocking=True)

    # --------------------------------------------------------------- pipeline
    def preprocess(self, frames: Tensor) -> Tensor:
        """(N, H, W, 3) uint8 on device → normalised (N, 3, s, s) in the model's dtype."""
        x = to_input_size(frames.permute(0, 3, 1, 2), self.size)
        if self.spec.scale == "max":
            # Official U-2-Net: image / image.max(), then mean/std of [0, 1] images.
            peak = x.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
            x = x * (255.0 / peak)
        x = (x - self._mean) / self._std
        # The permuted input is already NHWC in memory; make the layout the chosen one
        # explicitly, so the model sees the same format as its weights every time.
        return x.to(self.dtype).contiguous(memory_format=self._format)

    def forward(self, x: Tensor) -> Tensor:
        """Normalised batch → probability (N, 1, s, s) float32."""
        if not self.cfg.tta:
            return self._probability(x)
        n = x.shape[0]
        both = torch.cat([x, x.flip(-1)]).contiguous(memory_format=self._format)
        out = self._probability(both)
        return (out[:n] + out[n:].flip(-1)).mul_(0.5)

    def _probability(self, x: Tensor) -> Tensor:
        out = self.model(x)
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out.float().clamp_(0.0, 1.0)

    def _pipeline(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        low = self.forward(self.preprocess(frames))
        full = upsample_alpha(low, frames.shape[1], frames.shape[2])
        return low, full

    def _graph_for(self, frames: Tensor) -> _Graph | None:
        key = tuple(frames.shape)
        if key in self._graphs:
            self._graphs.move_to_end(key)
            return self._graphs[key]
        graph: _Graph | None
        try:
            static_in = frames.clone()
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up: cuDNN autotuning and allocator pools settle
                    self._pipeline(static_in)
            torch.cuda.current_stream(self.device).wait_stream(side)
            g = torch.cuda.CUDAGraph()
            # Captured on a stream of this engine's device (torch's own capture stream is
            # on the current device: on another, nothing would be captured), erroring only
            # on this thread's unsafe calls: a live worker doing CUDA work meanwhile (a new
            # input size mid-run, zoom's first window) failed in its own thread.
            with torch.cuda.graph(g, stream=side, capture_error_mode="thread_local"):
                low, full = self._pipeline(static_in)
            graph = _Graph(g, static_in, low, full)
        except RuntimeError as exc:  # capture is an optimisation: never fail the job on it
            log.warning("CUDA graph capture failed (%s); running eagerly", exc)
            graph = None
        self._graphs[key] = graph
        while len(self._graphs) > _MAX_GRAPHS:
            self._graphs.popitem(last=False)
        return graph

    @torch.inference_mode()
    def _run(self, frames: np.ndarray | Tensor, need_full: bool) -> tuple[Tensor, Tensor | None]:
        x = self.to_device(frames)
        if self.workers > 1 and x.shape[0] > 1:
            parts = self._side_by_side(x, need_full)
        elif x.shape[0] <= MAX_BATCH:
            return self._run_on_device(x, need_full)
        else:
            parts = [
                self._run_on_device(x[i : i + MAX_BATCH], need_full)
                for i in range(0, x.shape[0], MAX_BATCH)
            ]
        low = torch.cat([lo for lo, _ in parts])
        return low, (torch.cat([fu for _, fu in parts if fu is not None]) if need_full else None)

    def _side_by_side(self, x: Tensor, need_full: bool) -> list[tuple[Tensor, Tensor | None]]:
        """Split the batch between the workers and run the pieces at the same time."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="vidmat-model")

        @torch.inference_mode()  # thread-local: the pool's threads need their own
        def piece(part: Tensor) -> tuple[Tensor, Tensor | None]:
            return self._run_on_device(part, need_full)

        pieces = torch.tensor_split(x, min(self.workers, x.shape[0]))
        return list(self._pool.map(piece, pieces))

    def close(self) -> None:
        """Stop the worker threads (idempotent); a later batch starts them again."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _run_on_device(self, x: Tensor, need_full: bool) -> tuple[Tensor, Tensor | None]:
        if self.use_cuda_graph:
            graph = self._graph_for(x)
            if graph is not None:
                graph.inp.copy_(x)
                graph.graph.replay()
                # The static outputs are overwritten by the next replay: hand out copies.
                return graph.low.clone(), (graph.full.clone() if need_full else None)
        if need_full:
            return self._pipeline(x)
        return self.forward(self.preprocess(x)), None

    def predict_lowres(self, frames: np.ndarray | Tensor) -> Tensor:
        """Alpha at model resolution, (N, 1, s, s) float32 in [0, 1] on the device."""
        if not self.cfg.zoom:
            return self._run(frames, need_full=False)[0]
        x = self.to_device(frames)
        return self._zoom(x, self._run(x, need_full=False)[0])

    @torch.inference_mode()
    def _zoom(self, x: Tensor, low: Tensor) -> Tensor:
        from vidmat.core.zoom import ZoomConfig, crop_frames, merge_windows, person_windows

        cfg = ZoomConfig()
        height, width = x.shape[1], x.shape[2]
        windows = person_windows(low, height, width, cfg)
        if not bool((windows[..., 1] > windows[..., 0]).any()):
            return low
        crop_low = self._run(crop_frames(x, windows, self.size), need_full=False)[0]
        return merge_windows(low, crop_low, windows, height, width, cfg)

    def predict(self, frames: np.ndarray | Tensor, as_numpy: bool = True) -> np.ndarray | Tensor:
        """Alpha at the frames' resolution.

        numpy: float32 (H, W) for one (H, W, 3) frame, (N, H, W) for a batch.
        ``as_numpy=False``: a float32 (N, 1, H, W) tensor on the device.
        """
        single = frames.ndim == 3 if isinstance(frames, np.ndarray) else frames.dim() == 3
        full: Tensor | None
        if self.cfg.zoom:
            x = self.to_device(frames)
            full = upsample_alpha(self.predict_lowres(x), x.shape[1], x.shape[2])
        else:
            full = self._run(frames, need_full=True)[1]
        assert full is not None
        if not as_numpy:
            return full
        out = full[:, 0].cpu().numpy()
        return out[0] if single else out


def to_input_size(x: Tensor, size: int) -> Tensor:
    """(N, C, h, w) images squashed to (size, size) as the model sees them, as float.

    Bilinear, antialiased when shrinking: one definition for whole frames and for the
    windows of :mod:`vidmat.core.zoom`, so both reach the model resized the same way.
    uint8 images on the CPU are resized as uint8 (torch's integer path, within one level
    of the float result) and converted after: 0.6 against 3.9 ms for a 720p frame on two
    cores, where the float path converted a million pixels only to throw most away.
    """
    if x.dtype == torch.uint8 and x.device.type != "cpu":
        x = x.float()  # the integer path exists on the CPU only
    if x.shape[-2:] == (size, size):
        return x.float()
    shrink = x.shape[-1] > size or x.shape[-2] > size
    return F.interpolate(
        x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink
    ).float()


#: Alpha is clipped to [eps, 1 - eps] before its logit is taken: an fp16 model's alpha
#: reaches exactly 0 and 1, whose logits are infinite (|logit| <= 13.8 here).
LOGIT_EPS = 1e-6


def upsample_alpha(alpha: Tensor, height: int, width: int) -> Tensor:
    """Resize (N, 1, h, w) alpha to the frame size by interpolating its logit bilinearly.

    Why the logit and not alpha: bilinear alpha spreads every edge over a whole grid cell of
    the model, a ramp as wide as the upscale factor (5 pixels from 256 px to 1280), so the
    matte is softer than the model made it; the logit of a sigmoid output behaves like a
    signed distance to the edge and interpolates linearly, so the edge keeps the model's
    own steepness and a position between grid points. Measured on the shipped weights
    (session 55, eleven validation sets at 192, 256 and 320 px): IoU better beyond the 95 %
    interval on nine, worse on none (+0.0000 to +0.0003); MAE lower on all eleven (val/ccp
    at 320 0.0208 -> 0.0202, val/viton 0.0322 -> 0.0319).
    """
    if alpha.shape[-2:] == (height, width):
        return alpha
    z = torch.logit(alpha.float(), eps=LOGIT_EPS)
    z = F.interpolate(z, size=(height, width), mode="bilinear", align_corners=False)
    a = torch.sigmoid_(z)
    # the clip undone: solid person and solid background stay exactly 1 and 0
    return a.masked_fill_(a <= 2 * LOGIT_EPS, 0.0).masked_fill_(a >= 1 - 2 * LOGIT_EPS, 1.0)
