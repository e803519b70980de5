"""The live pipeline: camera → latest frame → model → smoothing → refine + composite → sinks.

Threads and why:

* **capture** (:class:`~vidmat.io.camera.CaptureThread`) pushes frames into a
  one-slot :class:`~vidmat.io.queues.LatestQueue`: if the worker is busy the
  oldest frame is dropped (and counted), so the picture never lags behind.
* **worker** takes the newest frame, mirrors it if asked, gets a mask for it,
  refines it at full resolution against that very frame, composites, and hands
  the result to ``on_frame`` and to the sinks (recorder, virtual camera).
* **model** (only in ``async`` mode, the CPU default): u2netp needs 200-500 ms
  per frame on a 2-core CPU, far more than a 15 fps frame budget. So the model
  runs in its own thread on the newest frame it can get, and the worker
  composites every frame with the latest smoothed mask. The picture stays
  fluid and fresh (latency = refine + composite), only the mask trails. On a
  GPU the model takes ~3 ms, so ``sync`` mode runs it in the worker on every
  frame. With ``infer_every`` n, either mode offers the model only every n-th
  frame, the smoother carrying the mask between (async also skips frames
  while the model is busy, so it may run less often still).
* **recorder** (:class:`~vidmat.io.recorder.Recorder`) encodes off the worker.

The core knows nothing of Qt: callbacks are plain callables called from the
worker thread (``on_started(info)``, ``on_frame(LiveFrame)``, ``on_error(message)``,
``on_finished()``, ``on_status(event, message)``); the Qt bridge in
:mod:`vidmat.ui.bridge` turns them into signals. ``stop()`` sets the abort flag
and joins every thread; settings (background, smoothing, threshold, feather, grow,
mirror) change while running through :meth:`LivePipeline.update`.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from vidmat.core.backgrounds import Background, parse_background
from vidmat.core.engine import Engine, app_precision, select_device
from vidmat.core.postprocess import PostProcessor
from vidmat.core.settings import (
    CPU_LIVE_SIZE,
    EngineConfig,
    LiveSettings,
    PostprocessConfig,
    check_duration,
)
from vidmat.core.smoothing import SmoothingState, TemporalSmoother
from vidmat.errors import VidmatError
from vidmat.io.camera import CameraConfig, CaptureThread, Frame
from vidmat.io.queues import LatestQueue, QueueClosed
from vidmat.model.spec import WeightsSpec
from vidmat.model.weights import load_weights

log = logging.getLogger(__name__)

MODES = ("auto", "sync", "async")


@dataclass(frozen=True)
class LiveConfig:
    """How the pipeline is built; fixed for one run."""

    camera: CameraConfig = field(default_factory=CameraConfig)
    #: auto = async on the CPU (model in its own thread), sync on CUDA.
    mode: str = "auto"
    #: Offer the model every n-th frame only (both modes); the smoother carries the mask
    #: between. Async mode also skips the frames that arrive while the model is busy.
    infer_every: int = 1
    #: Stop this many seconds of wall time after the first frame, or after the start while
    #: none came (None: until stop() or the source ends), whatever the frame rate.
    duration: float | None = None
    #: Guided refinement / despill settings; None picks what the device affords.
    refine: bool = True
    guided_color: bool | None = None  # None: colour guide on CUDA, grey on the CPU
    despill: bool | None = None  # None: on CUDA, off on the CPU (33 ms at 640x480 there)
    #: The UI reports when a frame is on screen (end-to-end latency includes painting).
    display_reports: bool = False
    #: Keep every frame's timings (benchmarks); otherwise only a rolling window.
    keep_history: bool = False
    #: Niceness added to the async model thread (Linux): when the CPU is short the
    #: picture keeps its rate and the mask updates less often. 0 = equal footing.
    model_nice: int = 2

    def validated(self) -> LiveConfig:
        if self.mode not in MODES:
            raise VidmatError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}.")
        if self.infer_every < 1:
            raise VidmatError(f"--infer-every must be >= 1, got {self.infer_every}.")
        check_duration(self.duration)
        return self


@dataclass
class LiveFrame:
    """One composited output frame and where its time went."""

    image: np.ndarray  # uint8 (H, W, 3) RGB, or (H, W, 4) RGBA for the transparent view
    source: Frame  # the captured frame it was made from
    index: int  # output sequence number
    t_dequeued: float  # perf_counter when the worker took the frame
    t_composited: float  # perf_counter when the composite was ready
    model_ms: float | None  # inference run for this very frame (sync mode), else None
    post_ms: float  # refine + composite (+ smoothing in sync mode)
    mask_age_ms: float  # how much older the frame the mask came from is
    inferred: bool = False

    @property
    def pts(self) -> float:
        return self.source.pts

    @property
    def latency_ms(self) -> float:
        """Capture to composite-ready, without display."""
        return (self.t_composited - self.source.timestamp) * 1000.0


def _pct(values: list[float] | deque[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


class LiveStats:
    """Per-stage timings: a rolling window for the status bar, full history for benchmarks."""

    WINDOW = 120

    def __init__(self, keep_history: bool = False) -> None:
        self._lock = threading.Lock()
        self.keep_history = keep_history
        self.names = ("capture", "model", "post", "display", "latency", "mask_age")
        self.recent: dict[str, deque[float]] = {n: deque(maxlen=self.WINDOW) for n in self.names}
        self.history: dict[str, list[float]] = {n: [] for n in self.names}
        self.display_times: deque[float] = deque(maxlen=self.WINDOW)
        self.displayed = 0
        self.inferences = 0
        self.first_source_time: float | None = None
        self.last_source_time: float | None = None
        self.source_timed = 0

    def add(self, name: str, value_ms: float) -> None:
        with self._lock:
            self.recent[name].append(value_ms)
            if self.keep_history:
                self.history[name].append(value_ms)
            if name == "model":
                self.inferences += 1

    def displayed_at(self, t: float, source_time: float | None = None) -> None:
        """A frame painted at ``t``; ``source_time``: when its picture was captured or due."""
        with self._lock:
            self.display_times.append(t)
            self.displayed += 1
            if source_time is not None:
                if self.first_source_time is None:
                    self.first_source_time = source_time
                self.last_source_time = source_time
                self.source_timed += 1

    def run_fps(self) -> float:
        """Frames shown over the whole run, per second of the source's own time from the
        first shown to the last: never above the source's rate. The rolling :meth:`fps`
        at the end of a run counted the burst after start-up over the last 120 frames
        (a 0.2 s run of a 30 fps file said 49 fps)."""
        with self._lock:
            n, first, last = self.source_timed, self.first_source_time, self.last_source_time
        if n < 2 or first is None or last is None or last <= first:
            return 0.0
        return (n - 1) / (last - first)

    def fps(self) -> float:
        with self._lock:
            ts = list(self.display_times)
        if len(ts) < 2 or ts[-1] <= ts[0]:
            return 0.0
        return (len(ts) - 1) / (ts[-1] - ts[0])

    def model_fps(self) -> float:
        with self._lock:
            ms = list(self.recent["model"])
        return 1000.0 / float(np.mean(ms)) if ms else 0.0

    def summary(self, history: bool = False) -> dict[str, float | None]:
        with self._lock:
            src = self.history if history else self.recent
            data = {n: list(src[n]) for n in self.names}
        out: dict[str, float | None] = {}
        for n, vals in data.items():
            out[f"{n}_p50_ms"] = _pct(vals, 50)
            out[f"{n}_p99_ms"] = _pct(vals, 99)
        return out


class LivePipeline:
    """Wires capture, model, post-processing and sinks together; see the module docstring.

    ``sinks`` are callables ``sink(frame: LiveFrame)`` called from the worker
    (the recorder's ``submit`` and the virtual camera's ``send``); they must
    return quickly. Sinks may be added and removed while running.
    """

    def __init__(
        self,
        engine: Engine,
        config: LiveConfig | None = None,
        settings: LiveSettings | None = None,
        *,
        on_started: Callable[[dict[str, Any]], None] | None = None,
        on_frame: Callable[[LiveFrame], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        on_finished: Callable[[], None] | None = None,
        on_status: Callable[[str, str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.config = (config or LiveConfig()).validated()
        self._settings = (settings or LiveSettings()).validated()
        self.on_started = on_started
        self.on_frame = on_frame
        self.on_error = on_error
        self.on_finished = on_finished
        self.on_status = on_status
        cuda = engine.device.type == "cuda"
        mode = self.config.mode
        self.mode = ("sync" if cuda else "async") if mode == "auto" else mode
        s = self._settings
        self.post = PostProcessor(
            PostprocessConfig(
                smoothing=s.smoothing,
                refine=self.config.refine,
                guided_color=cuda if self.config.guided_color is None else self.config.guided_color,
                threshold=s.threshold,
                contrast=s.contrast,
                erode_dilate_px=s.grow,
                feather_px=s.feather,
                despill=cuda if self.config.despill is None else self.config.despill,
            ),
            background=s.background,
        )
        self.stats = LiveStats(self.config.keep_history)
        self.frames_q: LatestQueue[Frame] = LatestQueue(1)
        #: (model input, its frame's time, whether the frame was mirrored)
        self.model_q: LatestQueue[tuple[torch.Tensor, float, bool]] = LatestQueue(1)
        self.capture: CaptureThread | None = None
        self._worker: threading.Thread | None = None
        self._model_thread: threading.Thread | None = None
        self._abort = threading.Event()
        self._finished = threading.Event()
        self._lock = threading.Lock()
        self._sinks: list[Callable[[LiveFrame], None]] = []
        self._settings_dirty = False
        # Latest smoothed mask at model resolution and the capture time of its frame.
        self._mask: torch.Tensor | None = None
        self._mask_time = 0.0
        # Whether that mask's frame was mirrored: in async mode a mask inferred before the
        # mirror switch is flipped to fit the frames after it, not laid on them backwards.
        self._mask_mirrored = False
        self._mask_ready = threading.Event()
        self._smoother = TemporalSmoother(s.smoothing)
        self._smooth_state: SmoothingState | None = None
        self.last_frame: LiveFrame | None = None
        self.error: str | None = None
        self.outputs = 0
        self._restore_threads = 0  # torch's thread count before start(), restored by stop()
        #: perf_counter time the run ended at: cut short (duration reached or stop()), or,
        #: with :attr:`source_ended`, when a file that does not loop finished showing its
        #: last frame. None while running, or when a source ended at no known time (a
        #: failure, a file read faster than real time). A recording's last frame lasts until
        #: then (at most a frame when cut short), so a recording is never longer than the run.
        self.ended_at: float | None = None
        #: The source ended by itself and :attr:`ended_at` is when its last frame stopped
        #: being shown: a file's last picture held for seconds is recorded for seconds.
        self.source_ended = False
        self._t_begin = 0.0  # perf_counter when the worker started (duration before a frame)

    # -------------------------------------------------------------- settings
    @property
    def settings(self) -> LiveSettings:
        return self._settings

    def update(self, **changes: Any) -> LiveSettings:
        """Change live settings from any thread; applied before the next frame.

        ``background`` may be a :class:`Background` or a spec string (colour,
        blur, blur:N, transparent, mask). Bad values raise :class:`VidmatError`.
        """
        if "background" in changes and not isinstance(changes["background"], Background):
            changes["background"] = parse_background(changes["background"])
        with self._lock:
            self._settings = replace(self._settings, **changes).validated()
            self._settings_dirty = True
            return self._settings

    def _apply_settings(self) -> LiveSettings:
        with self._lock:
            s = self._settings
            dirty, self._settings_dirty = self._settings_dirty, False
        if dirty:
            if s.background is not self.post.background:
                self.post.set_background(s.background)
            self.post.set_config(
                smoothing=s.smoothing,
                threshold=s.threshold,
                contrast=s.contrast,
                erode_dilate_px=s.grow,
                feather_px=s.feather,
            )
            if s.smoothing != self._smoother.strength:
                self._smoother = TemporalSmoother(s.smoothing)
        return s

    # ----------------------------------------------------------------- sinks
    def add_sink(self, sink: Callable[[LiveFrame], None]) -> None:
        with self._lock:
            self._sinks = [*self._sinks, sink]

    def remove_sink(self, sink: Callable[[LiveFrame], None]) -> None:
        with self._lock:
            self._sinks = [s for s in self._sinks if s is not sink]

    # --------------------------------------------------------------- control
    @property
    def running(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    @property
    def aborted(self) -> bool:
        return self._abort.is_set()

    @property
    def dropped(self) -> int:
        """Camera frames the worker never saw because a newer one replaced them."""
        return self.frames_q.dropped

    def start(self) -> None:
        """Open the source (a bad one raises :class:`VidmatError` here) and start the threads."""
        if self._worker is not None:
            raise RuntimeError("a LivePipeline runs once; make a new one to restart")
        self.capture = CaptureThread(self.config.camera, self.frames_q, self._capture_status)
        if self.engine.device.type == "cpu" and not self.engine.cfg.threads:
            # Two OpenMP threads on a 2-core machine that also captures and composites
            # made a 64x48 composite take 250 ms instead of 2 ms (threads spin-wait on
            # a busy core); torch's thread count is process-wide, so set it here.
            self._restore_threads = torch.get_num_threads()
            torch.set_num_threads(1)
        self._worker = threading.Thread(target=self._run_worker, name="vidmat-live", daemon=True)
        if self.mode == "async":
            self._model_thread = threading.Thread(
                target=self._run_model, name="vidmat-model", daemon=True
            )
            self._model_thread.start()
        self._worker.start()
        self.capture.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Abort and join every thread this pipeline started (idempotent)."""
        if self.ended_at is None and not self._finished.is_set():
            self.ended_at = time.perf_counter()
        self._abort.set()
        if self.capture is not None:
            self.capture.stop()
        self.frames_q.close()
        self.model_q.close()
        self._mask_ready.set()
        for t in (self.capture, self._model_thread, self._worker):
            if t is not None and t.is_alive() and t is not threading.current_thread():
                t.join(timeout)
        if self._restore_threads:
            torch.set_num_threads(self._restore_threads)
            self._restore_threads = 0

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker has finished (duration reached, file ended, error, stop)."""
        return self._finished.wait(timeout)

    def threads(self) -> list[threading.Thread]:
        return [t for t in (self.capture, self._model_thread, self._worker) if t is not None]

    def frame_displayed(self, frame: LiveFrame, t: float | None = None) -> None:
        """The UI calls this once a frame is painted: the display stage and end-to-end latency."""
        t = time.perf_counter() if t is None else t
        self.stats.add("display", (t - frame.t_composited) * 1000.0)
        self.stats.add("latency", (t - frame.source.timestamp) * 1000.0)
        self.stats.displayed_at(t, frame.source.due)

    def status(self) -> dict[str, Any]:
        """What the status bar shows: rates, stage times (rolling p50), drops."""
        s = self.stats.summary()
        cap = self.capture
        return {
            "capture_fps": cap.fps if cap is not None else 0.0,
            "display_fps": self.stats.fps(),
            "run_fps": self.stats.run_fps(),
            "model_ms": s["model_p50_ms"],
            "model_fps": self.stats.model_fps(),
            "post_ms": s["post_p50_ms"],
            "latency_ms": s["latency_p50_ms"],
            "mask_age_ms": s["mask_age_p50_ms"],
            "dropped": self.dropped,
            "frames": self.outputs,
            "camera_lost": bool(cap is not None and cap.lost),
        }

    # -------------------------------------------------------------- internals
    def _capture_status(self, event: str, message: str) -> None:
        """Capture events go to ``on_status``, except a failure: that ends the run as any
        other error does (``on_error``, :attr:`error`), so a caller that stops on errors and
        exits non-zero (headless live) sees a lost source as one, not as a status line
        after which the run ended as if it had finished."""
        if event == "error":
            self._fail(VidmatError(message))
        elif self.on_status is not None:
            self.on_status(event, message)

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, VidmatError):
            message = str(exc)
        else:
            message = f"{type(exc).__name__}: {exc}"
            log.error("live pipeline failed:\n%s", "".join(traceback.format_exception(exc)))
        with self._lock:
            first = self.error is None
            if first:
                self.error = message
        self._abort.set()
        if first and self.on_error is not None:
            try:
                self.on_error(message)
            except Exception:
                log.exception("on_error callback failed")

    @torch.inference_mode()
    def _infer(self, x: torch.Tensor, frame_time: float, mirrored: bool) -> float:
        """Model + temporal smoothing at model resolution; publishes the mask. Returns ms.

        ``x`` is the frame already on the device (1, H, W, 3): only the worker
        uploads, so the engine's pinned staging buffer is never shared by threads.
        ``mirrored``: whether ``x`` was flipped; the smoothing starts over when that
        changes, its history being of the other orientation.
        """
        t0 = time.perf_counter()
        low = self.engine.predict_lowres(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        t1 = time.perf_counter()
        if mirrored != self._mask_mirrored:
            self._smooth_state = None
        smoothed, self._smooth_state = self._smoother(low, x[0], self._smooth_state)
        with self._lock:
            self._mask = smoothed
            self._mask_time = frame_time
            self._mask_mirrored = mirrored
        self._mask_ready.set()
        ms = (t1 - t0) * 1000.0
        self.stats.add("model", ms)
        return ms

    def _run_model(self) -> None:
        """Async mode: the newest frame the worker has seen → mask, as fast as the model goes."""
        _lower_thread_priority(self.config.model_nice)
        try:
            while not self._abort.is_set():
                try:
                    item = self.model_q.get(timeout=0.2)
                except QueueClosed:
                    return
                if item is not None:
                    self._infer(*item)
        except BaseException as exc:
            self._fail(exc)

    def _prepare(self, frame: Frame, s: LiveSettings) -> Frame:
        if s.mirror:
            image = np.ascontiguousarray(frame.image[:, ::-1])
            frame = replace(frame, image=image)
        return frame

    def _deadline(self, t_first: float | None) -> float:
        """When --duration ends the run: that long after the first frame, or after the
        worker started while none came yet (inf without a duration).

        Checked on the wall clock, not only when a frame arrives: a source delivering
        one frame in ten seconds, or a camera that is lost, must still stop on time.
        """
        if self.config.duration is None:
            return math.inf
        return (self._t_begin if t_first is None else t_first) + self.config.duration

    def _past(self, deadline: float) -> bool:
        if time.perf_counter() < deadline:
            return False
        if self.ended_at is None:
            self.ended_at = deadline
        return True

    def _source_end(self) -> None:
        """The source ended (the capture closed the queue): the run ends when the capture
        says its last frame stopped being shown, if it knows (a file held in real time),
        and not when the worker noticed: the end a recording's last frame lasts until."""
        cap = self.capture
        if self.ended_at is None and cap is not None and cap.ended_at is not None:
            self.ended_at = cap.ended_at
            self.source_ended = True

    def _run_worker(self) -> None:
        started = False
        t_first: float | None = None
        self._t_begin = time.perf_counter()
        try:
            while not self._abort.is_set():
                deadline = self._deadline(t_first)
                if self._past(deadline):
                    break
                wait = min(0.2, max(0.0, deadline - time.perf_counter()))
                try:
                    frame = self.frames_q.get(timeout=wait)
                except QueueClosed:
                    self._source_end()
                    break
                if frame is None:
                    continue
                t_deq = time.perf_counter()
                if t_first is None:
                    t_first = frame.timestamp
                elif frame.timestamp >= self._deadline(t_first):
                    self.ended_at = self.ended_at or self._deadline(t_first)
                    break
                s = self._apply_settings()
                frame = self._prepare(frame, s)
                self.stats.add("capture", (t_deq - frame.timestamp) * 1000.0)
                x = self.engine.to_device(frame.image)
                model_ms: float | None = None
                inferred = False
                if self.mode == "sync":
                    if self.outputs % self.config.infer_every == 0 or self._mask is None:
                        model_ms = self._infer(x, frame.timestamp, s.mirror)
                        inferred = True
                else:
                    # Frame 0 always goes: start-up waits for the first mask below.
                    if self.outputs % self.config.infer_every == 0:
                        self.model_q.put((x, frame.timestamp, s.mirror))
                    if self._mask is None:
                        # Start-up: nothing to composite with until the first mask exists.
                        while not self._mask_ready.wait(0.1):
                            if self._abort.is_set() or self._past(self._deadline(t_first)):
                                break
                        if self._abort.is_set() or self._mask is None:
                            break
                t_post = time.perf_counter()
                with self._lock:
                    mask, mask_time = self._mask, self._mask_time
                    flip = self._mask_mirrored != s.mirror
                assert mask is not None
                if flip:  # inferred before the mirror switch: its frame was the other way
                    mask = mask.flip(-1)
                with torch.inference_mode():
                    out = self.post.finish(x[0], mask, t=frame.pts)
                    image = out.image.cpu().numpy()
                t_done = time.perf_counter()
                post_ms = (t_done - t_post) * 1000.0
                self.stats.add("post", post_ms)
                self.stats.add("mask_age", (frame.timestamp - mask_time) * 1000.0)
                result = LiveFrame(
                    image=image,
                    source=frame,
                    index=self.outputs,
                    t_dequeued=t_deq,
                    t_composited=t_done,
                    model_ms=model_ms,
                    post_ms=post_ms,
                    mask_age_ms=(frame.timestamp - mask_time) * 1000.0,
                    inferred=inferred,
                )
                self.outputs += 1
                self.last_frame = result
                if not started:
                    started = True
                    if self.on_started is not None:
                        self.on_started(self._info(result))
                with self._lock:
                    sinks = self._sinks
                for sink in sinks:
                    sink(result)
                if self.on_frame is not None:
                    self.on_frame(result)
                if not self.config.display_reports:
                    self.frame_displayed(result)
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._abort.set()
            if self.capture is not None:
                self.capture.stop()
            self.model_q.close()
            self._finished.set()
            if self.on_finished is not None:
                try:
                    self.on_finished()
                except Exception:
                    log.exception("on_finished callback failed")

    def _info(self, first: LiveFrame) -> dict[str, Any]:
        cap = self.capture
        h, w = first.image.shape[:2]
        return {
            "source": cap.description if cap else "",
            "width": w,
            "height": h,
            "fps": cap.nominal_fps if cap else 0.0,
            "device": str(self.engine.device),
            "model_size": self.engine.size,
            "mode": self.mode,
        }


def _lower_thread_priority(nice: int) -> None:
    """Linux schedules threads individually, so one thread can be niced (best effort)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except OSError:
        log.debug("could not lower the model thread's priority", exc_info=True)


def live_engine_config(cfg: EngineConfig, native_size: int = 320) -> EngineConfig:
    """Engine settings for live use: on the CPU a smaller input and one torch thread.

    u2netp at 320 takes ~0.5 s per frame on a 2-core CPU; at 192 about half that,
    and the mask is refined at full resolution anyway. One thread: the worker
    needs the other core for refine + composite, and OpenMP spinning across two
    busy cores costs more than it gives (measured 10x slower element-wise ops).
    ``--precision auto``: bf16 where the CPU has it in hardware (:func:`app_precision`).
    """
    if select_device(cfg.device).type == "cuda":
        return cfg
    size = cfg.size or min(native_size, CPU_LIVE_SIZE)
    return app_precision(replace(cfg, size=size, threads=cfg.threads or 1))


def build_live_engine(
    cfg: EngineConfig, model: torch.nn.Module | None = None, spec: WeightsSpec | None = None
) -> Engine:
    """Load the weights (unless given) and build the engine with :func:`live_engine_config`."""
    if model is None or spec is None:
        model, spec = load_weights(cfg.weights, device="cpu")
    return Engine(model, spec, live_engine_config(cfg, spec.input_size))
