"""The engine gives the same alpha as a plain forward with the same preprocessing."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidmat.core import engine as engine_module
from vidmat.core.engine import Engine, select_device, select_dtype, to_input_size, upsample_alpha
from vidmat.core.settings import EngineConfig
from vidmat.errors import VidmatError
from vidmat.model.spec import IMAGENET_MEAN, IMAGENET_STD, WeightsSpec
from vidmat.model.u2net import build_model


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, WeightsSpec]:
    torch.manual_seed(0)
    return build_model("u2netp").eval(), WeightsSpec(
        name="t", arch="u2netp", input_size=64, scale="255"
    )


def _reference(model: torch.nn.Module, frame: np.ndarray, size: int, scale: str) -> np.ndarray:
    """The preprocessing written out longhand, independent of the engine's code."""
    # A uint8 frame on the CPU is resized as uint8, then made float.
    x = torch.from_numpy(frame).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    x = x.float()
    x = x / (x.max() if scale == "max" else 255.0)
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1
    )
    with torch.inference_mode():
        p = model(x)
    # the engine interpolates the logit (clipped to |logit(1e-6)|), not alpha
    eps = 1e-6
    p = p.clamp(eps, 1 - eps)
    z = F.interpolate(
        torch.log(p / (1 - p)), size=frame.shape[:2], mode="bilinear", align_corners=False
    )
    a = torch.sigmoid(z)[0, 0]
    return torch.where(a <= 2 * eps, 0.0, torch.where(a >= 1 - 2 * eps, 1.0, a)).numpy()


@pytest.mark.parametrize("shape", [(720, 1280), (48, 64), (300, 20)])
def test_a_uint8_frame_is_resized_within_a_level_of_the_float_path(shape) -> None:
    # Shrinking, enlarging and both at once: the integer path is a rounding of the float
    # one, never a different picture, and float input (training's anchor) is unchanged.
    rng = np.random.default_rng(3)
    frame = torch.from_numpy(rng.integers(0, 256, size=(1, 3, *shape), dtype=np.uint8))
    got = to_input_size(frame, 64)
    want = to_input_size(frame.float(), 64)
    shrink = shape[0] > 64 or shape[1] > 64
    plain = F.interpolate(
        frame.float(), size=(64, 64), mode="bilinear", align_corners=False, antialias=shrink
    )
    assert got.dtype == torch.float32 and got.shape == (1, 3, 64, 64)
    assert torch.equal(want, plain)
    assert (got - want).abs().max() <= 1.0 and torch.equal(got, got.round())


@pytest.mark.parametrize("scale", ["255", "max"])
def test_engine_equals_plain_forward(tiny, scale: str) -> None:
    model, spec = tiny
    spec = WeightsSpec(name="t", arch="u2netp", input_size=64, scale=scale)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 200, size=(75, 131, 3), dtype=np.uint8)
    engine = Engine(model, spec, EngineConfig(device="cpu"))
    got = engine.predict(frame)
    assert got.shape == (75, 131) and got.dtype == np.float32
    np.testing.assert_allclose(got, _reference(model, frame, 64, scale), atol=1e-5)


def test_tta_averages_the_frame_and_its_mirror(tiny) -> None:
    model, spec = tiny
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 255, size=(2, 40, 70, 3), dtype=np.uint8)
    plain = Engine(model, spec, EngineConfig(device="cpu"))
    tta = Engine(model, spec, EngineConfig(device="cpu", tta=True))
    a = plain.predict(frames)
    b = plain.predict(np.ascontiguousarray(frames[:, :, ::-1]))[:, :, ::-1]
    got = tta.predict(frames)
    # A random-weight U2-Net is far from mirror-symmetric, so the average differs from
    # either pass; the engine's answer is exactly that average, frame by frame.
    assert np.abs(a - b).max() > 1e-3
    np.testing.assert_allclose(got, (a + b) / 2, atol=1e-5)
    assert tta.predict_lowres(frames).shape == (2, 1, 64, 64)


def test_batch_equals_single_frames_and_lowres_shape(tiny) -> None:
    model, spec = tiny
    engine = Engine(model, spec, EngineConfig(device="cpu", size=48))
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, size=(3, 41, 53, 3), dtype=np.uint8)
    batch = engine.predict(frames)
    assert batch.shape == (3, 41, 53)
    for i in range(3):
        np.testing.assert_allclose(batch[i], engine.predict(frames[i]), atol=1e-5)
    low = engine.predict_lowres(frames)
    assert low.shape == (3, 1, 48, 48) and low.dtype == torch.float32
    full = engine.predict(torch.from_numpy(frames), as_numpy=False)
    assert isinstance(full, torch.Tensor) and full.shape == (3, 1, 41, 53)


def test_a_batch_above_max_batch_runs_in_chunks(tiny, monkeypatch) -> None:
    model, spec = tiny
    monkeypatch.setattr(engine_module, "MAX_BATCH", 2)
    seen: list[int] = []
    handle = model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    try:
        engine = Engine(model, spec, EngineConfig(device="cpu", size=48))
        frames = np.random.default_rng(4).integers(0, 255, size=(5, 21, 30, 3), dtype=np.uint8)
        batch = engine.predict(frames)
        low = engine.predict_lowres(frames)
    finally:
        handle.remove()
    assert seen == [2, 2, 1, 2, 2, 1]
    assert batch.shape == (5, 21, 30) and low.shape == (5, 1, 48, 48)
    for i in range(5):
        np.testing.assert_allclose(batch[i], engine.predict(frames[i]), atol=1e-5)


def test_workers_split_a_batch_into_calls_that_run_at_the_same_time(tiny) -> None:
    model, spec = tiny
    # Both pieces must be inside the model together to pass the barrier: run one after the
    # other, the first waits alone and the barrier breaks.
    barrier = threading.Barrier(2, timeout=10)
    calls: list[tuple[str, int, bool]] = []

    def meet(_m: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        calls.append(
            (threading.current_thread().name, args[0].shape[0], torch.is_inference_mode_enabled())
        )
        barrier.wait()

    serial = Engine(model, spec, EngineConfig(device="cpu", size=48))
    frames = np.random.default_rng(5).integers(0, 255, size=(5, 21, 30, 3), dtype=np.uint8)
    expected, expected_low = serial.predict(frames), serial.predict_lowres(frames)
    engine = Engine(model, spec, EngineConfig(device="cpu", size=48, workers=2))
    handle = model.register_forward_pre_hook(meet)
    try:
        batch = engine.predict(frames)
        low = engine.predict_lowres(frames)
    finally:
        handle.remove()
        engine.close()
    assert sorted(n for _, n, _ in calls) == [2, 2, 3, 3]
    assert len({name for name, _, _ in calls}) == 2
    assert all(name.startswith("vidmat-model") and inference for name, _, inference in calls)
    np.testing.assert_allclose(batch, expected, atol=1e-5)
    torch.testing.assert_close(low, expected_low, atol=1e-5, rtol=0)
    # one frame is not split, and needs no pool
    assert engine.predict(frames[0]).shape == (21, 30) and engine._pool is None


def test_workers_below_one_are_refused(tiny) -> None:
    model, spec = tiny
    with pytest.raises(VidmatError, match="--workers must be at least 1"):
        Engine(model, spec, EngineConfig(device="cpu", workers=0))


def test_size_comes_from_spec_unless_overridden(tiny) -> None:
    model, spec = tiny
    assert Engine(model, spec, EngineConfig(device="cpu")).size == 64
    assert Engine(model, spec, EngineConfig(device="cpu", size=32)).size == 32
    with pytest.raises(VidmatError, match="out of range"):
        Engine(model, spec, EngineConfig(device="cpu", size=8))


def test_known_mask_passes_through_a_stub_model() -> None:
    class HalfMask(torch.nn.Module):
        """Left half person, right half background: a mask the test knows."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(x.shape[0], 1, *x.shape[2:])
            out[..., : x.shape[-1] // 2] = 1.0
            return out

    engine = Engine(
        HalfMask(),
        WeightsSpec(name="stub", arch="u2netp", input_size=32),
        EngineConfig(device="cpu"),
    )
    alpha = engine.predict(np.zeros((20, 64, 3), np.uint8))
    assert alpha[:, :28].min() == 1.0 and alpha[:, 36:].max() == 0.0


def test_device_and_precision_errors_are_sentences() -> None:
    assert select_device("cpu").type == "cpu"
    assert select_dtype("auto", torch.device("cpu")) == torch.float32
    with pytest.raises(VidmatError, match="needs a CUDA device"):
        select_dtype("fp16", torch.device("cpu"))
    with pytest.raises(VidmatError, match="unknown device"):
        select_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(VidmatError, match="no CUDA GPU"):
            select_device("cuda")


def test_bf16_runs_the_model_in_bf16_and_hands_out_float32(tiny) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    fp32 = Engine(*tiny, EngineConfig(device="cpu", precision="fp32"))
    reference = fp32.predict(frames)
    bf16 = Engine(*tiny, EngineConfig(device="cpu", precision="bf16"))
    assert bf16.dtype == torch.bfloat16
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    alpha = bf16.predict(frames)
    assert alpha.dtype == np.float32 and alpha.shape == (2, 48, 64)
    # bf16 keeps 8 bits of mantissa: close to fp32's matte, but not bit-equal to it.
    assert 0 < np.abs(alpha - reference).max() < 0.05


def test_bad_frames_are_refused(tiny) -> None:
    engine = Engine(*tiny, EngineConfig(device="cpu"))
    with pytest.raises(ValueError, match="uint8 RGB"):
        engine.predict(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        engine.predict(np.zeros((10, 10, 4), np.uint8))


@pytest.mark.cuda
@pytest.mark.parametrize("tta", [False, True])
def test_cuda_graph_fp16_matches_cpu_fp32(tiny, tta: bool) -> None:
    model, spec = tiny
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 255, size=(90, 120, 3), dtype=np.uint8)
    cpu = Engine(copy.deepcopy(model), spec, EngineConfig(device="cpu", tta=tta)).predict(frame)
    cfg = EngineConfig(device="cuda", precision="fp16", cuda_graph=True, tta=tta)
    gpu = Engine(copy.deepcopy(model), spec, cfg)
    first = gpu.predict(frame)
    second = gpu.predict(frame)  # replayed graph
    assert gpu._graphs and next(iter(gpu._graphs.values())) is not None
    np.testing.assert_allclose(first, second, atol=1e-6)
    np.testing.assert_allclose(first, cpu, atol=2e-2)
    eager = Engine(
        copy.deepcopy(model),
        spec,
        EngineConfig(device="cuda", precision="fp16", cuda_graph=False, tta=tta),
    )
    np.testing.assert_allclose(eager.predict(frame), first, atol=1e-3)


def test_upsampling_interpolates_the_logit_keeping_edges_hard_and_solids_exact() -> None:
    """A 4x upscale of a soft step: the same 0.5 crossing as bilinear alpha, fewer pixels
    in the soft band between, exact 0 and 1 where the model said so, and symmetric."""
    low = torch.tensor([0.0, 0.0, 0.02, 0.98, 1.0, 1.0]).view(1, 1, 1, 6).expand(1, 1, 6, 6)
    up = upsample_alpha(low.contiguous(), 24, 24)
    lin = F.interpolate(low, size=(24, 24), mode="bilinear", align_corners=False)
    assert up.shape == (1, 1, 24, 24) and float(up.min()) == 0.0 and float(up.max()) == 1.0
    assert torch.equal(up >= 0.5, lin >= 0.5)

    def band(a: torch.Tensor) -> float:
        return float(((a > 0.1) & (a < 0.9)).float().mean())

    assert band(up) < 0.8 * band(lin)
    torch.testing.assert_close(upsample_alpha(1 - low, 24, 24), 1 - up, atol=2e-5, rtol=0)
    same = torch.rand(1, 1, 5, 7)
    assert upsample_alpha(same, 5, 7) is same


def test_apps_take_bf16_where_the_cpu_has_it_and_eval_keeps_fp32(monkeypatch) -> None:
    from vidmat.pipelines.convert import engine_config_for_files
    from vidmat.pipelines.live import live_engine_config

    cpu = EngineConfig(device="cpu")
    monkeypatch.setattr(engine_module, "cpu_has_native_bf16", lambda: True)
    assert engine_config_for_files(cpu).precision == "bf16"
    assert live_engine_config(cpu).precision == "bf16"
    assert engine_module.side_by_side(cpu).precision == "auto"  # eval: fp32 below
    assert select_dtype("auto", torch.device("cpu")) == torch.float32
    chosen = EngineConfig(device="cpu", precision="fp32")
    assert engine_config_for_files(chosen).precision == "fp32"
    assert live_engine_config(chosen).precision == "fp32"
    monkeypatch.setattr(engine_module, "cpu_has_native_bf16", lambda: False)
    assert engine_config_for_files(cpu).precision == "auto"
    assert live_engine_config(cpu).precision == "auto"


@pytest.mark.cuda
def test_a_graph_is_captured_while_another_thread_works_on_the_gpu(tiny) -> None:
    """Live's worker keeps uploading, compositing and downloading while the model thread
    captures a graph for a new input size; under the default capture mode its CUDA calls
    failed ("operation not permitted when stream is capturing") and ended the run."""
    import threading

    model, spec = tiny
    engine = Engine(model, spec, EngineConfig(device="cuda", precision="fp16", cuda_graph=True))
    rng = np.random.default_rng(3)
    small = rng.integers(0, 255, size=(90, 120, 3), dtype=np.uint8)
    engine.predict(small)
    errors: list[BaseException] = []
    stop = threading.Event()

    def busy() -> None:
        try:
            while not stop.is_set():
                x = engine.to_device(small).float().mul_(2.0)
                torch.empty(int(rng.integers(1, 1 << 20)), device="cuda").cpu()
                x.cpu()
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        large = rng.integers(0, 255, size=(180, 240, 3), dtype=np.uint8)
        first = engine.predict(large)  # a new shape: captured now
        second = engine.predict(large)
    finally:
        stop.set()
        worker.join()
    assert errors == []
    assert engine._graphs[(1, 180, 240, 3)] is not None
    np.testing.assert_allclose(first, second, atol=1e-6)
