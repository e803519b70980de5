"""Training loop on a tiny generated dataset: loss goes down, resume is exact, CLI errors are clean."""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vidmat.cli import main
from vidmat.core.engine import to_input_size
from vidmat.errors import VidmatError
from vidmat.train.augment import AugmentConfig, sample_rng, synthesize
from vidmat.train.data import CachedSource, SourceSpec, fill_holes, load_backgrounds, load_source
from vidmat.train.loop import (
    TrainConfig,
    Trainer,
    anchor_loss,
    autocast,
    deep_supervision_loss,
    layer_group,
    lr_at,
    make_batch,
    resume_differences,
    size_at,
    soft_iou_loss,
)


def _squares(n: int = 8, size: int = 32, seed: int = 0) -> CachedSource:
    """Noisy images with a bright square 'person' whose mask is known."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 80, (n, size, size, 3)).astype(np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        s = int(rng.integers(10, 18))
        y, x = rng.integers(2, size - s - 2, 2)
        images[i, y : y + s, x : x + s] = rng.integers(170, 255, 3)
        masks[i, y : y + s, x : x + s] = 255
    return CachedSource(SourceSpec(Path("squares"), 1.0, 0.0), images, masks)


#: The photometric steps off: what a test compares is the composite itself.
NO_PHOTOMETRIC = AugmentConfig(color=0, low_light=0, noise=0, blur=0, jpeg=0, grayscale=0)


def _same_samples(
    seed: int, n: int, bank: np.ndarray, a: AugmentConfig, b: AugmentConfig
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Samples 0..n-1 of step 0 drawn under ``a`` and under ``b``: (img_a, label_a, img_b,
    label_b), the squares pasted onto ``bank``'s scenes every time."""
    squares = _squares()
    src = [CachedSource(SourceSpec(Path("squares"), 1.0, 1.0), squares.images, squares.masks)]
    w = np.array([1.0])
    for slot in range(n):
        yield (
            *synthesize(sample_rng(seed, 0, slot), src, w, 32, bank, a),
            *synthesize(sample_rng(seed, 0, slot), src, w, 32, bank, b),
        )


def _cfg(tmp_path: Path, steps: int) -> TrainConfig:
    return TrainConfig(
        sources=[],
        run_dir=tmp_path / "run",
        size=32,
        batch=4,
        steps=steps,
        lr=3e-3,
        warmup=2,
        val_every=1000,
        threads=None,
        progress=False,
        ckpt_minutes=1e9,
    )


def _trainer(tmp_path: Path, steps: int) -> Trainer:
    return Trainer(_cfg(tmp_path, steps), sources=[_squares()], bank=None, valsets=[])


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_a_few_steps_reduce_the_loss(tmp_path: Path, amp: str) -> None:
    tr = Trainer(
        replace(_cfg(tmp_path, steps=16), amp=amp), sources=[_squares()], bank=None, valsets=[]
    )
    x, y = make_batch(123, 0, 8, 32, tr.sources, None, tr.cfg.aug)

    def loss_on_batch() -> float:
        # Batch statistics, not running ones: after 16 steps BatchNorm's running
        # averages still lag the weights, which made an eval-mode loss flaky.
        tr.model.train()
        with torch.no_grad():
            return float(deep_supervision_loss(tr.model.forward_all(x), y))

    before = loss_on_batch()
    tr.run()
    after = loss_on_batch()
    assert tr.step == 16
    assert after < 0.8 * before, f"loss {before:.3f} -> {after:.3f}"


def test_freeze_bn_keeps_the_running_statistics_and_trains_the_rest(tmp_path: Path) -> None:
    def stats(model: torch.nn.Module) -> list[torch.Tensor]:
        return [b.clone() for n, b in model.named_buffers() if "running" in n]

    runs = {}
    for freeze in (False, True):
        tr = Trainer(
            replace(_cfg(tmp_path / str(freeze), steps=3), freeze_bn=freeze),
            sources=[_squares()],
            bank=None,
            valsets=[],
        )
        before, conv = stats(tr.model), tr.model.outconv.weight.detach().clone()
        tr.run()
        same = [torch.equal(a, b) for a, b in zip(before, stats(tr.model), strict=True)]
        ema_same = [torch.equal(a, b) for a, b in zip(before, stats(tr.ema.model), strict=True)]
        runs[freeze] = (all(same), all(ema_same), not torch.equal(conv, tr.model.outconv.weight))
        # Only the BatchNorm layers were put in eval mode, and all of them.
        bns = [m for m in tr.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert tr.model.training and len(tr.frozen_bn) == (len(bns) if freeze else 0)
        assert all(bn.training != freeze for bn in bns)
    assert runs[True] == (True, True, True)
    assert runs[False] == (False, False, True)


def test_freeze_keeps_the_named_layer_groups_and_trains_the_others(tmp_path: Path) -> None:
    cfg = replace(_cfg(tmp_path, steps=3), freeze=("encoder", "sides"))
    tr = Trainer(cfg, sources=[_squares()], bank=None, valsets=[])
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.run()
    after = tr.model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    # Weights and BatchNorm statistics alike: only the decoder's stages moved.
    assert changed == {f"stage{i}d" for i in range(1, 6)}
    ema = tr.ema.model.state_dict()
    assert all(torch.equal(before[k], ema[k]) for k in before if layer_group(k) != "decoder")
    assert layer_group("stage1.rebnconvin.conv_s1.weight") == "encoder"
    assert layer_group("stage1d.rebnconv1.bn_s1.running_mean") == "decoder"
    assert layer_group("outconv.bias") == "sides" and layer_group("side6.weight") == "sides"


def test_resume_refuses_a_checkpoint_of_other_freeze_groups(tmp_path: Path) -> None:
    first = Trainer(
        replace(_cfg(tmp_path / "a", steps=1), freeze=("encoder",)),
        sources=[_squares()],
        bank=None,
        valsets=[],
    )
    first.run()
    other = _trainer(tmp_path / "b", steps=2)
    with pytest.raises(VidmatError, match="was trained with --freeze encoder; resume it"):
        other.load(first.cfg.run_dir / "last.pt")
    same = Trainer(
        replace(_cfg(tmp_path / "c", steps=2), freeze=("encoder",)),
        sources=[_squares()],
        bank=None,
        valsets=[],
    )
    same.load(first.cfg.run_dir / "last.pt")
    assert same.step == 1
    # Two groups named in the other order freeze the same parameters: it resumes.
    two = Trainer(
        replace(_cfg(tmp_path / "d", steps=1), freeze=("decoder", "sides")),
        sources=[_squares()],
        bank=None,
        valsets=[],
    )
    two.run()
    swapped = Trainer(
        replace(_cfg(tmp_path / "e", steps=2), freeze=("sides", "decoder")),
        sources=[_squares()],
        bank=None,
        valsets=[],
    )
    swapped.load(two.cfg.run_dir / "last.pt")
    assert swapped.step == 1


@pytest.mark.parametrize(
    ("freeze", "message"),
    [
        ("encoder,trunk", "--freeze knows encoder, decoder, sides, not trunk."),
        ("encoder, decoder,sides", "--freeze leaves nothing to train; name at most two groups."),
    ],
)
def test_cli_refuses_a_freeze_it_cannot_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], freeze: str, message: str
) -> None:
    (tmp_path / "d").mkdir()
    init = _anchor_file(tmp_path, bias=0.0)
    argv = ["train", "--data", str(tmp_path / "d"), "--run", str(tmp_path / "r")]
    assert main([*argv, "--init", str(init), "--freeze", freeze]) == 2
    assert capsys.readouterr().err.strip() == f"vidmat: error: {message}"
    assert main([*argv, "--freeze", "encoder"]) == 2
    assert "--freeze keeps layers as --init gave them" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_micro_batches_with_frozen_bn_make_the_whole_batchs_step(tmp_path: Path) -> None:
    def trained(micro: int | None, freeze: bool) -> Trainer:
        cfg = replace(_cfg(tmp_path / f"{micro}{freeze}", steps=2), micro_batch=micro)
        torch.manual_seed(0)  # the same initial weights for every variant
        tr = Trainer(replace(cfg, freeze_bn=freeze), sources=[_squares()], bank=None, valsets=[])
        tr.run()
        return tr

    def gap(a: Trainer, b: Trainer) -> float:
        pairs = zip(a.model.parameters(), b.model.parameters(), strict=True)
        return max(float((p - q).detach().abs().max()) for p, q in pairs)

    whole, parts = trained(None, True), trained(2, True)
    assert parts.step == whole.step == 2
    assert gap(whole, parts) < 1e-5
    assert parts.losses == pytest.approx(whole.losses, rel=1e-5)
    # With BatchNorm learning, each pass is normalised by its own two samples instead:
    # a different step, which is what the help says.
    assert gap(trained(None, False), trained(2, False)) > 1e-4


@pytest.mark.parametrize("micro", ["3", "0", "16"])
def test_cli_refuses_a_micro_batch_that_does_not_divide_the_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], micro: str
) -> None:
    (tmp_path / "d").mkdir()
    argv = ["train", "--data", str(tmp_path / "d"), "--run", str(tmp_path / "r")]
    assert main([*argv, "--batch", "8", "--micro-batch", micro]) == 2
    assert "--micro-batch must be a positive divisor of --batch" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_cli_refuses_freeze_bn_without_init(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "d").mkdir()
    code = main(
        ["train", "--data", str(tmp_path / "d"), "--run", str(tmp_path / "r"), "--freeze-bn"]
    )
    assert code == 2
    assert "--freeze-bn keeps the statistics of --init weights" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_amp_sets_the_forward_precision_only() -> None:
    from vidmat.model.u2net import build_model

    model, cpu = build_model("u2netp").eval(), torch.device("cpu")
    x = torch.randn(1, 3, 32, 32)
    dtypes = {}
    for amp in ("off", "auto", "bf16"):
        with autocast(cpu, amp):
            dtypes[amp] = model.forward_all(x)[0].dtype
    # auto means bf16 on CUDA only: a CPU without AVX512-BF16 would emulate it, slower.
    assert dtypes == {"off": torch.float32, "auto": torch.float32, "bf16": torch.bfloat16}
    assert model.outconv.weight.dtype == torch.float32  # the weights themselves stay fp32
    with pytest.raises(VidmatError, match="unknown mixed precision 'fp8'"):
        autocast(cpu, "fp8")


def test_mix_sizes_take_turns_with_size(tmp_path: Path) -> None:
    cfg = replace(_cfg(tmp_path, steps=3), mix_sizes=(64,))
    assert [size_at(s, cfg) for s in range(5)] == [32, 64, 32, 64, 32]
    seen: list[int] = []
    mixed = Trainer(cfg, sources=[_squares()], bank=None, valsets=[])
    forward_all = mixed.model.forward_all

    def spy(x: torch.Tensor) -> list[torch.Tensor]:
        seen.append(x.shape[-1])
        return forward_all(x)

    mixed.model.forward_all = spy
    mixed.run()
    plain = _trainer(tmp_path / "plain", steps=3)
    plain.run()
    assert seen == [32, 64, 32]
    # Same batches at step 0; step 1 differs because it was drawn at 64 px.
    assert mixed.losses[0] == plain.losses[0] and mixed.losses[1] != plain.losses[1]


def test_soft_iou_loss_matches_hand_computed_value() -> None:
    # probabilities 0.5 / 0.8 / 0.2 / 0.5 against target 1 1 0 0
    p = torch.tensor([0.5, 0.8, 0.2, 0.5]).reshape(1, 1, 2, 2)
    y = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 2, 2)
    inter = 0.5 + 0.8
    union = (0.5 + 1 - 0.5) + (0.8 + 1 - 0.8) + 0.2 + 0.5
    expected = 1 - (inter + 1) / (union + 1)
    got = soft_iou_loss(torch.logit(p), y)
    assert abs(float(got) - expected) < 1e-6
    logits = [torch.logit(p)] * 7
    bce_only = deep_supervision_loss(logits, y)
    both = deep_supervision_loss(logits, y, iou_weight=0.5)
    assert abs(float(both - bce_only) - 0.5 * 7 * expected) < 1e-5


def test_anchor_loss_is_bce_against_the_anchors_resized_probabilities() -> None:
    anchor = torch.tensor([[-2.0, 2.0], [0.0, 4.0]]).reshape(1, 1, 2, 2)
    fused = torch.zeros(1, 1, 4, 4, requires_grad=True)
    # Bilinear 2x2 -> 4x4 (align_corners off): the corner pixels keep their source value.
    loss = anchor_loss(fused, anchor)
    # Every fused logit is 0 (p = 0.5), so each pixel's BCE is log 2 whatever its target.
    assert abs(float(loss.detach()) - float(np.log(2))) < 1e-6
    loss.backward()
    grad = fused.grad.reshape(4, 4) * 16  # d(mean BCE)/dz = (p - target) / n
    corners = torch.tensor([grad[0, 0], grad[0, 3], grad[3, 0], grad[3, 3]])
    expected = 0.5 - torch.sigmoid(torch.tensor([-2.0, 2.0, 0.0, 4.0]))
    assert torch.allclose(corners, expected, atol=1e-6)
    # At the anchor's own output the pull is zero.
    same = anchor.clone().requires_grad_(True)
    anchor_loss(same, anchor).backward()
    assert float(same.grad.abs().max()) < 1e-7


def test_the_schedule_peaks_once_and_ends_on_its_floor(tmp_path: Path) -> None:
    """The cosine began at 1 again after the warmup (the peak held two steps) and ended a
    step short of its floor: 10 steps with 3 of warmup ended at 0.069, not 0.02."""
    cfg = replace(_cfg(tmp_path, 10), warmup=3)
    got = [lr_at(s, cfg) for s in range(10)]
    assert got[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert got[3] < 1.0 and all(a > b for a, b in itertools.pairwise(got[2:]))
    assert got[-1] == pytest.approx(cfg.min_lr_ratio)
    plain = replace(cfg, warmup=0)  # no warmup: the peak is step 0's, the floor the last's
    assert lr_at(0, plain) == 1.0 and lr_at(9, plain) == pytest.approx(plain.min_lr_ratio)


def _anchor_file(tmp_path: Path, bias: float) -> Path:
    """A tiny-model weights file whose fused output is pushed to ``bias`` everywhere."""
    from vidmat.model.u2net import build_model
    from vidmat.train.loop import export_weights

    torch.manual_seed(5)
    model = build_model("u2netp")
    with torch.no_grad():
        model.outconv.weight.zero_()
        model.outconv.bias.fill_(bias)
    path = tmp_path / "anchor.safetensors"
    export_weights(model, replace(_cfg(tmp_path, 1), size=64), path, "test anchor")
    return path


def test_anchor_pulls_the_fused_output_toward_it(tmp_path: Path) -> None:
    anchor = _anchor_file(tmp_path, bias=-6.0)  # "background everywhere"
    x, _ = make_batch(123, 0, 8, 32, [_squares()], None, AugmentConfig())

    def foreground(anchored: bool) -> float:
        cfg = _cfg(tmp_path / str(anchored), steps=10)
        if anchored:
            cfg = replace(cfg, anchor=str(anchor), anchor_weight=5.0)
        torch.manual_seed(0)
        tr = Trainer(cfg, sources=[_squares()], bank=None, valsets=[])
        tr.run()
        tr.model.train()
        with torch.no_grad():
            return float(torch.sigmoid(tr.model.forward_all(x)[0]).mean())

    plain, anchored = foreground(False), foreground(True)
    assert anchored < 0.7 * plain, (plain, anchored)


def test_anchor_runs_at_its_own_size_in_eval_mode(tmp_path: Path) -> None:
    anchor = _anchor_file(tmp_path, bias=-1.0)
    cfg = replace(_cfg(tmp_path, steps=2), mix_sizes=(64,), anchor=str(anchor), anchor_weight=0.5)
    tr = Trainer(cfg, sources=[_squares()], bank=None, valsets=[])
    assert tr.anchor_size == 64  # the spec's size, not the training size
    seen: list[tuple[int, bool]] = []
    forward_all = tr.anchor.forward_all

    def spy(x: torch.Tensor) -> list[torch.Tensor]:
        seen.append((x.shape[-1], tr.anchor.training))
        return forward_all(x)

    tr.anchor.forward_all = spy
    batch = make_batch(7, 0, 4, 32, tr.sources, None, tr.cfg.aug)
    before = copy.deepcopy(tr.model)
    got = tr.train_step(batch)
    assert seen == [(64, False)]
    # The step's loss is the labels' loss plus the weighted anchor term, on the
    # step's own forward pass (BatchNorm in training mode, as the step ran it).
    before.train()
    with torch.no_grad():
        logits = before.forward_all(batch[0])
        a = forward_all(to_input_size(batch[0], 64))
        want = deep_supervision_loss(logits, batch[1]) + 0.5 * anchor_loss(logits[0], a[0])
    assert got == pytest.approx(float(want), rel=1e-5)
    # A second model that never trains: the anchor's weights stay as loaded.
    assert all(not p.requires_grad for p in tr.anchor.parameters())


def test_cli_refuses_an_anchor_that_is_not_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "masks").mkdir()
    bad = tmp_path / "anchor.safetensors"
    bad.write_text("not weights")
    argv = ["train", "--data", str(tmp_path / "d"), "--run", str(tmp_path / "r")]
    assert main([*argv, "--anchor", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_resume_continues_identically(tmp_path: Path) -> None:
    straight = _trainer(tmp_path / "a", steps=4)
    straight.run()

    first = _trainer(tmp_path / "b", steps=2)
    first.run()  # saves run/last.pt at the end
    ckpt = first.cfg.run_dir / "last.pt"
    assert ckpt.is_file()

    resumed = _trainer(tmp_path / "c", steps=4)
    resumed.load(ckpt)
    assert resumed.step == 2
    resumed.run()

    assert first.losses + resumed.losses == straight.losses
    for a, b in zip(
        straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


@pytest.mark.parametrize("damage", ["a layer missing", "a step that is not a number"])
def test_a_damaged_checkpoint_is_one_sentence(tmp_path: Path, damage: str) -> None:
    """A hand-edited or cut last.pt resumed into a RuntimeError or ValueError traceback."""
    first = _trainer(tmp_path / "a", steps=1)
    first.run()
    ck = torch.load(first.cfg.run_dir / "last.pt", weights_only=True)
    if damage == "a layer missing":
        ck["model"].pop("outconv.weight")
    else:
        ck["step"] = "three"
    bad = tmp_path / "bad.pt"
    torch.save(ck, bad)
    with pytest.raises(VidmatError, match=r"^checkpoint .*bad\.pt is damaged: "):
        _trainer(tmp_path / "b", steps=2).load(bad)


def test_a_checkpoint_passed_as_weights_gives_its_ema_and_its_spec(tmp_path: Path) -> None:
    """``--weights RUN/last.pt`` loaded the raw last step with the official checkpoints'
    spec (max-scaling, 320 px); the run validated and exported its EMA, scaled by 255."""
    from vidmat.model.weights import load_weights

    tr = _trainer(tmp_path, steps=3)
    tr.run()
    model, spec = load_weights(tr.cfg.run_dir / "last.pt")
    assert (spec.scale, spec.input_size, spec.arch, spec.name) == ("255", 32, "u2netp", "last")
    ema, raw = tr.ema.model.state_dict(), tr.model.state_dict()
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)  # the two differ after 3 steps
    for k, v in model.state_dict().items():
        assert torch.equal(v, ema[k]), k
    # its EMA damaged: said, not the raw last step loaded at 320 px without a word
    from vidmat.model.weights import WeightsError

    ck = torch.load(tr.cfg.run_dir / "last.pt", weights_only=True)
    ck["ema"] = {k: v for k, v in ck["ema"].items() if not k.startswith("stage2.")}
    torch.save(ck, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match=r"averaged \(EMA\) weights are damaged"):
        load_weights(tmp_path / "bad.pt")


def test_a_resume_logs_each_step_once(tmp_path: Path) -> None:
    # After a kill -9 the steps since the last checkpoint had been logged already; trained
    # again, they were logged twice (219 lines for a 200-step run).
    first = _trainer(tmp_path / "r", steps=2)
    first.run()
    log = first.cfg.run_dir / "log.jsonl"
    with log.open("a") as f:  # what a run killed at step 4, checkpointed at 2, left
        f.write('{"step": 3, "loss": 9}\n{"step": 4, "loss": 9}\nnot json\n{"step": 5, "lo')
    resumed = _trainer(tmp_path / "r", steps=4)
    resumed.load(first.cfg.run_dir / "last.pt")
    resumed.run()
    lines = log.read_text().splitlines()
    steps = [json.loads(x)["step"] for x in lines if x.startswith("{")]
    assert steps == [1, 2, 3, 4] and "not json" in lines
    assert all(json.loads(x)["loss"] != 9 for x in lines if x.startswith("{"))


def test_a_resume_runs_at_its_own_rate_and_logs_each_steps_rate(tmp_path: Path) -> None:
    """The optimiser's saved groups and the schedule's base brought back the old --lr and
    --weight-decay: a resume with --change-settings announced the new rate and trained at
    the old. The log gave each step the rate of the step after it."""
    first = _trainer(tmp_path / "a", steps=2)
    first.run()
    log = [json.loads(x) for x in (first.cfg.run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in log] == [
        pytest.approx(first.cfg.lr * lr_at(s, first.cfg)) for s in (0, 1)
    ]
    cfg = replace(_cfg(tmp_path / "b", steps=4), lr=1e-3, weight_decay=0.05)
    resumed = Trainer(cfg, sources=[_squares()], bank=None, valsets=[])
    resumed.load(first.cfg.run_dir / "last.pt", change_settings=True)
    for group in resumed.opt.param_groups:
        assert group["lr"] == pytest.approx(1e-3 * lr_at(2, cfg)) and group["weight_decay"] == 0.05
    resumed.run()
    assert resumed.opt.param_groups[0]["lr"] == pytest.approx(1e-3 * lr_at(4, cfg))


def test_load_refuses_other_settings_unless_told_to_change_them(tmp_path: Path) -> None:
    first = _trainer(tmp_path / "a", steps=1)
    first.run()
    ckpt = first.cfg.run_dir / "last.pt"
    other = Trainer(
        replace(_cfg(tmp_path / "b", steps=2), size=64, iou_weight=1.0),
        sources=[_squares()],
        bank=None,
        valsets=[],
    )
    with pytest.raises(
        VidmatError,
        match=r"was trained with --size 32 \(now 64\) and --iou-weight 0\.0 \(now 1\.0\);",
    ):
        other.load(ckpt)
    assert other.step == 0
    other.load(ckpt, change_settings=True)
    assert other.step == 1


def test_settings_a_checkpoint_predates_compare_as_their_defaults(tmp_path: Path) -> None:
    """A run started before a switch existed ran without it: resuming it without the
    switch is the same run, with it another one."""
    cfg = _cfg(tmp_path, steps=4)
    old = cfg.to_json()
    del old["aug"]["sun_shadow"], old["mix_sizes"], old["micro_batch"]
    assert resume_differences(old, replace(cfg, steps=9, threads=1, device="cpu")) == []
    assert resume_differences(old, replace(cfg, micro_batch=cfg.batch)) == []
    changed = replace(cfg, aug=replace(cfg.aug, sun_shadow=0.5), mix_sizes=(64,), micro_batch=2)
    assert resume_differences(old, changed) == [
        "--mix-size none (now 64)",
        "--micro-batch none (now 2)",
        "--sun-shadow 0.0 (now 0.5)",
    ]


@pytest.mark.cuda
def test_resume_on_cuda(tmp_path: Path) -> None:
    """The checkpoint is loaded onto the device, its CPU RNG state too (a GPU run once
    failed to resume on that)."""
    first = Trainer(
        replace(_cfg(tmp_path / "a", steps=2), device="cuda"),
        sources=[_squares()],
        bank=None,
        valsets=[],
    )
    first.run()
    resumed = Trainer(
        replace(_cfg(tmp_path / "b", steps=4), device="cuda"),
        sources=[_squares()],
        bank=None,
        valsets=[],
    )
    resumed.load(first.cfg.run_dir / "last.pt")
    assert resumed.step == 2
    resumed.run()
    assert resumed.step == 4 and all(np.isfinite(resumed.losses))
    assert torch.get_rng_state().device.type == "cpu"


def test_every_validation_keeps_its_ema(tmp_path: Path) -> None:
    """Each validated step leaves its EMA on disk, best or not, so any step can be averaged in."""
    from vidmat.model.weights import load_weights
    from vidmat.train.loop import ValSet

    sq = _squares(n=4, seed=5)
    cfg = replace(_cfg(tmp_path, steps=4), val_every=2)
    tr = Trainer(cfg, sources=[_squares()], bank=None, valsets=[ValSet("sq", sq.images, sq.masks)])
    ema_at: dict[int, dict[str, torch.Tensor]] = {}
    save = tr.save

    def spy_save(path: Path | None = None) -> Path:
        # run() checkpoints right after each validation: the EMA that was just exported.
        ema_at[tr.step] = {k: v.clone() for k, v in tr.ema.model.state_dict().items()}
        return save(path)

    tr.save = spy_save
    tr.run()
    run = cfg.run_dir
    assert sorted(p.name for p in run.glob("ema_step*.safetensors")) == [
        "ema_step2.safetensors",
        "ema_step4.safetensors",
    ]
    assert (run / "best.safetensors").is_file()
    key = "outconv.weight"
    for step in (2, 4):
        model, spec = load_weights(str(run / f"ema_step{step}.safetensors"))
        assert spec.input_size == 32
        assert torch.allclose(model.state_dict()[key], ema_at[step][key], atol=1e-3)
    assert not torch.allclose(ema_at[2][key], ema_at[4][key])
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []


def _mapped(array: np.ndarray, path: Path) -> np.ndarray:
    """``array`` as the training caches hold it: a read-only memory map of a .npy file."""
    np.save(path, array)
    return np.load(path, mmap_mode="r")


def test_cached_data_pickles_as_its_files(tmp_path: Path) -> None:
    """Batch workers receive the data pickled (forkserver): a memory-mapped cache goes as
    its file name, not its bytes, and opens again equal; arrays in memory go as bytes."""
    import pickle

    from vidmat.train.loop import StepBatches

    squares = _squares(n=64, size=64)
    source = CachedSource(
        squares.spec,
        _mapped(squares.images, tmp_path / "images.npy"),
        _mapped(squares.masks, tmp_path / "masks.npy"),
    )
    bank = _mapped(np.full((4, 48, 64, 3), 7, np.uint8), tmp_path / "bank.npy")
    batches = StepBatches(_cfg(tmp_path, steps=2), [source], bank)
    data = pickle.dumps(batches)
    assert len(data) < 20_000 < squares.images.nbytes  # 786 kB of images, 37 kB of bank
    back = pickle.loads(data)
    assert isinstance(back.sources[0].images, np.memmap) and isinstance(back.bank, np.memmap)
    assert np.array_equal(back.sources[0].images, squares.images)
    assert np.array_equal(back.sources[0].masks, squares.masks)
    assert np.array_equal(back.bank, bank)
    for a, b in zip(back[1], batches[1], strict=True):
        assert torch.equal(a, b)
    # Not a file's whole array (a slice, or one in memory): its bytes travel.
    part = CachedSource(squares.spec, source.images[10:20], squares.masks[10:20])
    back = pickle.loads(pickle.dumps(part))
    assert np.array_equal(back.images, squares.images[10:20])
    assert np.array_equal(back.masks, squares.masks[10:20])


def test_worker_processes_build_the_same_batches(tmp_path: Path) -> None:
    """--workers moves augmentation into other processes without changing a single batch."""
    inline = _trainer(tmp_path / "inline", steps=3)
    inline.run()
    rng_after = torch.get_rng_state()  # what the checkpoint saves
    squares = _squares()  # the workers read it as a training cache: memory-mapped files
    mapped = CachedSource(
        squares.spec,
        _mapped(squares.images, tmp_path / "images.npy"),
        _mapped(squares.masks, tmp_path / "masks.npy"),
    )
    pooled = Trainer(
        replace(_cfg(tmp_path / "pooled", steps=3), workers=2),
        sources=[mapped],
        bank=None,
        valsets=[],
    )
    pooled.run()
    assert pooled.losses == inline.losses
    assert torch.equal(torch.get_rng_state(), rng_after)  # the loader drew nothing from it
    for a, b in zip(
        inline.model.state_dict().values(), pooled.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    # Started at step 1 from a checkpoint, the workers pick up at that step's batch.
    part = _trainer(tmp_path / "part", steps=1)
    part.run()
    rest = Trainer(
        replace(_cfg(tmp_path / "rest", steps=3), workers=2),
        sources=[_squares()],
        bank=None,
        valsets=[],
    )
    rest.load(part.cfg.run_dir / "last.pt")
    rest.run()
    assert part.losses + rest.losses == inline.losses


def test_a_stop_between_validations_keeps_its_ema(tmp_path: Path) -> None:
    """Ctrl-C, SIGTERM or --minutes between validations leave that step's EMA on disk."""
    from vidmat.model.weights import load_weights

    tr = _trainer(tmp_path, steps=1000)
    step = tr.train_step

    def stop_after_three(batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> float:
        loss = step(batch)
        if tr.step == 3:
            tr.stop()
        return loss

    tr.train_step = stop_after_three
    tr.run()
    run = tr.cfg.run_dir
    assert tr.step == 3 and (run / "last.pt").is_file()
    assert [p.name for p in run.glob("ema_step*")] == ["ema_step3.safetensors"]
    model, _ = load_weights(str(run / "ema_step3.safetensors"))
    key = "outconv.weight"
    assert torch.allclose(model.state_dict()[key], tr.ema.model.state_dict()[key], atol=1e-3)

    late = replace(_cfg(tmp_path / "late", steps=1000), minutes=1e-9)  # over before it starts
    timed = Trainer(late, sources=[_squares()], bank=None, valsets=[])
    timed.run()
    assert timed.step == 0 and not late.run_dir.joinpath("last.pt").exists()


def test_a_run_that_diverges_stops_and_keeps_its_last_sound_checkpoint(tmp_path: Path) -> None:
    """--lr 1e30 trained on with a NaN loss, exported NaN weights as best and ended 0."""
    from vidmat.train.loop import TrainingDiverged, check_exportable

    sound = _trainer(tmp_path, steps=2)
    sound.run()
    ckpt = sound.cfg.run_dir / "last.pt"
    before = ckpt.read_bytes()
    exports = sorted(p.name for p in sound.cfg.run_dir.glob("*.safetensors"))
    wild = Trainer(
        replace(_cfg(tmp_path, steps=6), lr=1e30, warmup=0),
        sources=[_squares()],
        bank=None,
        valsets=[],
    )
    wild.load(ckpt, change_settings=True)
    with pytest.raises(TrainingDiverged) as caught:
        wild.run()
    assert str(caught.value).startswith("training diverged")
    assert f"{ckpt} holds step 2, from before it" in str(caught.value)
    assert ckpt.read_bytes() == before  # not overwritten by the wild state
    assert sorted(p.name for p in sound.cfg.run_dir.glob("*.safetensors")) == exports
    log = [json.loads(line) for line in (sound.cfg.run_dir / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in log)  # strict JSON: no bare NaN
    with pytest.raises(TrainingDiverged, match="no longer a number fp16 can hold"):
        check_exportable(_huge_model())


def _huge_model() -> torch.nn.Module:
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.fill_(1e6)  # finite, but infinity in the fp16 export
    return model


def test_val_roots_of_the_same_name_are_told_apart(tmp_path: Path) -> None:
    """--val A/val --val B/val logged one "val": the second's scores replaced the first's,
    and the mean IoU that picks the best step was of one set."""
    from vidmat.errors import VidmatError
    from vidmat.train.loop import valset_names

    a, b, c = tmp_path / "A" / "val", tmp_path / "B" / "val", tmp_path / "B" / "ccp"
    assert valset_names([a, b, c]) == ["A/val", "B/val", "ccp"]
    deep = [tmp_path / "x" / "A" / "val", tmp_path / "y" / "A" / "val"]
    assert valset_names(deep) == ["x/A/val", "y/A/val"]
    assert valset_names([c]) == ["ccp"]
    with pytest.raises(VidmatError, match="given twice"):
        valset_names([a, tmp_path / "A" / "." / "val"])


def test_whole_photo_sample_is_squashed_like_inference() -> None:
    """A wide photo drawn whole is resized to the square as ``cv2.resize`` would at run time."""
    h, w, size = 40, 80, 32
    images = np.zeros((1, h, w, 3), np.uint8)
    masks = np.zeros((1, h, w), np.uint8)
    masks[0, 10:30, 50:70] = 255  # a 20x20 square in the right half
    src = [CachedSource(SourceSpec(Path("wide"), 1.0, 0.0), images, masks)]
    plain = AugmentConfig(
        rotate_deg=0,
        flip=0,
        color=0,
        low_light=0,
        noise=0,
        blur=0,
        jpeg=0,
        grayscale=0,
        whole_photo=1.0,
    )
    _, target = synthesize(sample_rng(0, 0, 0), src, np.array([1.0]), size, cfg=plain)
    expected = cv2.resize(masks[0], (size, size), interpolation=cv2.INTER_LINEAR) > 127
    ys, xs = np.nonzero(target)
    # squashed 2:1 -> the square becomes 8 wide and 16 tall, in the right half
    assert xs.max() - xs.min() + 1 == 8 and ys.max() - ys.min() + 1 == 16
    assert np.mean((target > 0.5) != expected) < 0.01


def test_frame_aspects_cover_portrait_and_landscape() -> None:
    """Windows stand for 9:16 to 16:9 frames, so squashed people of both kinds are seen."""
    from vidmat.train.augment import _window

    cfg = AugmentConfig(whole_photo=0.0)
    wins = [_window(sample_rng(0, i, 0), 300, 300, False, cfg) for i in range(200)]
    aspects = np.array([a / b for a, b in wins])
    assert aspects.min() < 0.7 and aspects.max() > 1.5
    assert all(a <= 300 + 1e-6 and b <= 300 + 1e-6 for a, b in wins)  # inside the photo


def test_samples_depend_only_on_seed_step_slot() -> None:
    src = [_squares()]
    w = np.array([1.0])
    a = synthesize(sample_rng(0, 5, 1), src, w, 32)
    b = synthesize(sample_rng(0, 5, 1), src, w, 32)
    c = synthesize(sample_rng(0, 5, 2), src, w, 32)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert set(np.unique(a[1])) <= {0.0, 1.0}


def test_shadow_darkens_only_the_new_background() -> None:
    """A cast shadow is painted on the pasted-onto scene; the person and the label stay."""
    bank = np.full((2, 48, 64, 3), 200, np.uint8)  # flat bright scenes: a shadow shows
    shaded = replace(NO_PHOTOMETRIC, shadow=1.0)
    darkest = 0
    for img0, t0, img1, t1 in _same_samples(3, 24, bank, NO_PHOTOMETRIC, shaded):
        assert np.array_equal(t0, t1)  # same sample, same label: the shadow is background
        inside = cv2.erode(t0.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        assert np.array_equal(img0[inside], img1[inside])
        assert (img1.astype(int) <= img0.astype(int) + 1).all()  # only ever darker
        darkest = max(darkest, int((img0.astype(int) - img1)[t0 == 0].max()))
    assert darkest > 40  # at least one shadow is plainly visible


def test_sun_shadow_is_a_dark_bluish_background_patch_at_the_feet() -> None:
    """A sun shadow starts at the feet, darkens red more than blue, and is background."""
    from vidmat.train.augment import _sun_shadow

    alpha = np.zeros((64, 64), np.float32)
    alpha[10:50, 28:36] = 1.0  # a standing person, feet on row 49
    found = 0
    for seed in range(20):
        dark = _sun_shadow(np.random.default_rng(seed), alpha)
        assert dark is not None and dark.shape == (64, 64, 3)
        assert (dark[..., 2] <= dark[..., 0] + 1e-6).all()  # blue loses least
        assert 0.4 < dark.max() < 0.86  # plainly dark, never black
        rows = np.nonzero(dark[..., 0].max(axis=1) > 0.3)[0]
        assert 49 in rows  # it touches the feet ...
        found += int(rows.max() > 52 or rows.min() < 46)  # ... and lies on the ground
    assert found >= 15
    alpha[50:] = 1.0  # the feet out of the frame: no shadow to lay down
    assert _sun_shadow(np.random.default_rng(0), alpha) is None


def test_sun_shadow_darkens_only_the_scene_and_keeps_the_other_draws() -> None:
    bank = np.full((2, 48, 64, 3), 200, np.uint8)  # flat bright scenes: a shadow shows
    plain = replace(NO_PHOTOMETRIC, shadow=0.5)
    sunny = replace(plain, sun_shadow=1.0)
    shaded = 0
    for img0, t0, img1, t1 in _same_samples(7, 24, bank, plain, sunny):
        assert np.array_equal(t0, t1)  # the shadow is background
        inside = cv2.erode(t0.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        assert np.array_equal(img0[inside], img1[inside])  # the person is kept
        shaded += int((np.abs(img0.astype(int) - img1)[t0 == 0] > 40).any())
    assert shaded >= 6  # where the squares' feet are in the frame
    two = replace(plain, camouflage=0.5, second_person=0.5)
    for _, t0, _, t1 in _same_samples(6, 16, bank, two, replace(two, sun_shadow=1.0)):
        assert np.array_equal(t0, t1)  # the second person too, where it came


def test_rotate_widens_the_tilt_and_keeps_the_draws() -> None:
    """--rotate changes only the angle: the rest of each sample's random draws stay in step."""
    from vidmat.train.augment import _affine

    def draw(rotate: float, seed: int) -> tuple[float, float]:
        rng = np.random.default_rng(seed)
        m = _affine(rng, 400, 300, 64, (300.0, 200.0), replace(AugmentConfig(), rotate_deg=rotate))
        # m[0, :2] is (c, s) scaled, and negated by a flip: the ratio is tan(angle)
        return float(np.degrees(np.arctan(m[0, 1] / m[0, 0]))), float(rng.random())

    default = [draw(12.0, k) for k in range(200)]
    wide = [draw(30.0, k) for k in range(200)]
    assert max(abs(a) for a, _ in default) <= 12.0
    assert 25.0 < max(abs(a) for a, _ in wide) <= 30.0
    assert [after for _, after in default] == [after for _, after in wide]
    assert all(np.sign(a) == np.sign(b) for (a, _), (b, _) in zip(default, wide, strict=True))


def test_camouflage_moves_the_scene_to_a_colour_of_the_person() -> None:
    """The scene is shifted, texture and all, most of the way to one part's colour."""
    from vidmat.train.augment import _camouflage

    rng = np.random.default_rng(2)
    bg = rng.uniform(0, 60, (32, 32, 3)).astype(np.float32)  # dark, textured
    fg = np.zeros((32, 32, 3), np.float32)
    fg[:, :16] = (230, 230, 230)  # a white top ...
    fg[:, 16:] = (40, 20, 120)  # ... and dark blue trousers
    alpha = np.zeros((32, 32), np.float32)
    alpha[4:28, 8:24] = 1.0
    local = cv2.blur(fg, (9, 9))[alpha > 0.5]  # the colours a part of the person has
    shifted_to_top = 0
    for seed in range(12):
        out = _camouflage(np.random.default_rng(seed), bg, fg, alpha)
        shift = out - bg
        assert np.allclose(shift, shift[0, 0], atol=1e-3)  # texture kept: one shift
        gap_before = np.abs(bg.mean((0, 1)) - local).sum(axis=1)
        gap_after = np.abs(out.mean((0, 1)) - local).sum(axis=1)
        assert (gap_after <= 0.5 * gap_before + 1e-3).any()
        shifted_to_top += int(out.mean() > 150)
    assert 0 < shifted_to_top < 12  # sometimes the white top, sometimes the trousers


def test_camouflage_leaves_the_label_the_person_and_the_other_draws() -> None:
    bank = np.random.default_rng(9).integers(0, 60, (3, 48, 64, 3)).astype(np.uint8)
    # Photometric steps off (contrast follows the whole image's mean); their draws still run.
    plain = replace(NO_PHOTOMETRIC, shadow=1.0)
    camo = replace(plain, camouflage=1.0)
    changed = 0
    for img0, t0, img1, t1 in _same_samples(4, 16, bank, plain, camo):
        assert np.array_equal(t0, t1)
        # The scene changes; the person only where its soft edge lets the scene through.
        d = np.abs(img0.astype(int) - img1).sum(axis=2)
        if t0.any() and not t0.all():
            assert d[t0 == 1].mean() < 0.2 * d[t0 == 0].mean()
            changed += int((d[t0 == 0] > 6).mean() > 0.5)
    assert changed >= 10


def test_wide_shot_shows_pasted_people_smaller() -> None:
    bank = np.random.default_rng(4).integers(0, 60, (3, 48, 64, 3)).astype(np.uint8)
    wide = replace(NO_PHOTOMETRIC, wide_shot=3.0)
    pairs = [
        (t0.sum(), t1.sum()) for _, t0, _, t1 in _same_samples(6, 64, bank, NO_PHOTOMETRIC, wide)
    ]
    default, wider = np.array(pairs, float).T
    # The same draws framed wider: about half the area on average (1 / window height
    # squared: 0.74 against 1.48 for windows of 0.45-3 and 0.45-1.5 photo sides; a person
    # the narrower window cut off can show more of itself in the wider one).
    assert wider.mean() < 0.7 * default.mean()
    assert np.median(wider) < 0.5 * np.median(default)
    assert (wider < default).mean() > 0.8


def test_graphics_paint_bold_colourful_clutter() -> None:
    """On a plain grey scene: many hard edges and saturated colours, a new picture per seed."""
    from vidmat.train.augment import _graphics

    grey = np.full((64, 96, 3), 128.0, np.float32)
    outs = [_graphics(np.random.default_rng(seed), grey) for seed in range(8)]
    for out in outs:
        assert out.shape == grey.shape and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 255.0
    edges = [np.abs(np.diff(o.mean(axis=2), axis=1)) for o in outs]
    # hard-edged: steps of over 40 grey levels between neighbours, in most pictures
    assert sum(int((e > 40).mean() > 0.002) for e in edges) >= 6
    saturation = [np.ptp(o, axis=2).mean() for o in outs]  # max - min channel per pixel
    assert np.median(saturation) > 25  # colourful, where the scene had none
    assert not np.array_equal(outs[0], outs[1])
    assert np.array_equal(outs[0], _graphics(np.random.default_rng(0), grey))


def test_graphics_leave_the_label_and_the_other_switches_draws() -> None:
    """Painted scenes change only the scene: the person, the label, the shadows and the
    second person of each sample are those of a run without them."""
    bank = np.random.default_rng(9).integers(0, 60, (3, 48, 64, 3)).astype(np.uint8)
    plain = replace(NO_PHOTOMETRIC, shadow=0.5, camouflage=0.5)
    for img0, t0, img1, t1 in _same_samples(5, 16, bank, plain, replace(plain, graphics=1.0)):
        assert np.array_equal(t0, t1)
        d = np.abs(img0.astype(int) - img1).sum(axis=2)
        # The person is kept but for its soft edge, through which the scene shows.
        inside = cv2.erode(t0.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        if inside.any() and not t0.all():
            assert d[inside].mean() < 0.02 * d[t0 == 0].mean()
            assert (d[t0 == 0] > 6).mean() > 0.2
    two = replace(plain, second_person=0.5)
    for _, t0, _, t1 in _same_samples(6, 16, bank, two, replace(two, graphics=1.0)):
        assert np.array_equal(t0, t1)  # the second person too, where it came


def test_cli_switches_set_the_augmentation() -> None:
    from vidmat.cli import build_parser
    from vidmat.commands.train import augment_config

    switches = "--shadow 0.5 --camouflage 0.4 --second-person 0.3 --graphics 0.2"
    switches += " --rotate 30 --wide-shot 3 --sun-shadow 0.6"
    args = build_parser().parse_args(["train", "--data", "d", "--run", "r", *switches.split()])
    expected = AugmentConfig(
        shadow=0.5,
        camouflage=0.4,
        second_person=0.3,
        graphics=0.2,
        rotate_deg=30,
        wide_shot=3,
        sun_shadow=0.6,
    )
    assert augment_config(args) == expected
    defaults = build_parser().parse_args(["train", "--data", "d", "--run", "r"])
    assert augment_config(defaults) == AugmentConfig()  # the batches of earlier runs


def test_second_person_joins_the_first_behind_it_and_in_the_label() -> None:
    bank = np.random.default_rng(9).integers(0, 60, (3, 48, 64, 3)).astype(np.uint8)
    plain = replace(NO_PHOTOMETRIC, shadow=1.0)  # dark scenes: no camouflage
    two = replace(plain, second_person=1.0)
    grew = 0
    for img0, t0, img1, t1 in _same_samples(5, 16, bank, plain, two):
        assert np.all(t1 >= t0)  # the first person stays labelled ...
        inner = cv2.erode(t0, np.ones((7, 7), np.uint8)) == 1  # past the soft edge
        assert np.array_equal(img0[inner], img1[inner])  # ... and in front
        added = (t1 == 1) & (t0 == 0)
        if added.sum() >= 20:
            grew += 1
            # where only the second person is, the image shows a bright square, not the scene
            assert img1[added].mean() > img0[added].mean() + 40
    assert grew >= 8


def test_source_spec_parsing() -> None:
    s = SourceSpec.parse("/data/viton:0.5:0.9")
    assert (s.path, s.weight, s.composite) == (Path("/data/viton"), 0.5, 0.9)
    assert SourceSpec.parse("rel/ccp") == SourceSpec(Path("rel/ccp"), 1.0, 0.5)
    assert SourceSpec.parse("ccp:2").weight == 2.0


def test_a_root_whose_name_ends_in_a_number_after_a_colon_is_that_root(tmp_path: Path) -> None:
    """--data colon/set:1 (a folder so named) was read as colon/set with weight 1: "training
    root colon/set does not exist"."""
    from vidmat.train.data import parse_data_source

    odd = tmp_path / "set:1"
    odd.mkdir()
    assert parse_data_source(str(odd)) == SourceSpec(odd, 1.0, 0.5)
    assert parse_data_source(f"{odd}:2:0.3") == SourceSpec(odd, 2.0, 0.3)


def test_fill_holes_closes_enclosed_gap_only() -> None:
    m = np.zeros((9, 9), np.uint8)
    m[1:8, 1:8] = 255
    m[3:5, 3:5] = 0  # enclosed hole
    m[0:2, 4] = 0  # notch open to the border stays background
    out = fill_holes(m)
    assert out[3:5, 3:5].min() == 255
    assert out[0, 4] == 0


def test_close_gaps_names_are_folders_of_the_data() -> None:
    from vidmat.train.data import gap_root_names

    roots = [Path("/data/viton"), Path("/data/ccp")]
    assert gap_root_names(None, []) == ("viton",)  # the default asks for no such folder
    assert gap_root_names("none", roots) == ()
    assert gap_root_names(" ccp , viton,", roots) == ("ccp", "viton")
    with pytest.raises(VidmatError, match="names vitn, cc, which no --data folder"):
        gap_root_names("vitn,ccp,cc", roots)


def test_close_neck_gaps_closes_the_neck_but_not_the_image_edge() -> None:
    from vidmat.train.data import close_neck_gaps

    m = np.zeros((60, 40), np.uint8)
    m[3:20, 12:28] = 255  # a head 3 px below the top edge
    m[24:60, 4:36] = 255  # a torso cut off by the bottom edge
    m[20:24, 12:14] = m[20:24, 26:28] = 255  # the neck's sides, its middle unlabelled
    m[52:60, 18:21] = 0  # a 3-px slit between the arms, open to the bottom edge
    out = close_neck_gaps(m)
    assert out[20:24, 14:26].min() == 255  # the neck is closed
    assert out[(m > 127)].min() == 255  # nothing labelled person is lost
    assert out[:3].max() == 0  # the background above the head stays background
    assert out[59, 18:21].max() == 0  # the slit still opens to the bottom edge


def _squares_root(root: Path) -> tuple[Path, CachedSource]:
    """Three of :func:`_squares` written as a training root (ROOT/images, ROOT/masks)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    src = _squares(n=3)
    for i in range(3):
        cv2.imwrite(str(root / "images" / f"{i}.png"), src.images[i])
        cv2.imwrite(str(root / "masks" / f"{i}.png"), src.masks[i])
    return root, src


def test_load_source_builds_and_reuses_cache(tmp_path: Path) -> None:
    root, src = _squares_root(tmp_path / "set")
    loaded = load_source(SourceSpec(root), tmp_path / "cache", long_side=64, progress=False)
    assert loaded.images.shape == (3, 64, 64, 3) and loaded.masks.shape == (3, 64, 64)
    assert set(np.unique(loaded.masks)) <= {0, 255}
    again = load_source(SourceSpec(root), tmp_path / "cache", long_side=64, progress=False)
    assert np.array_equal(np.asarray(loaded.masks), np.asarray(again.masks))
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2  # reused, not rebuilt
    # A mask relabelled in place (the same count of files) was trained on from the old
    # cache; the cache now follows each file's size and modification time.
    mask = root / "masks" / "1.png"
    cv2.imwrite(str(mask), 255 - src.masks[1])
    os.utime(mask, ns=(mask.stat().st_atime_ns, mask.stat().st_mtime_ns + 10**9))
    relabelled = load_source(SourceSpec(root), tmp_path / "cache", long_side=64, progress=False)
    assert np.array_equal(np.asarray(relabelled.masks[1]), 255 - np.asarray(loaded.masks[1]))
    assert np.array_equal(np.asarray(relabelled.masks[0]), np.asarray(loaded.masks[0]))
    bank = tmp_path / "bg"
    bank.mkdir()
    cv2.imwrite(str(bank / "a.png"), src.images[0])
    first = np.array(load_backgrounds(bank, tmp_path / "cache", size=(32, 32)))
    cv2.imwrite(str(bank / "a.png"), 255 - src.images[0])
    os.utime(bank / "a.png", ns=(0, (bank / "a.png").stat().st_mtime_ns + 10**9))
    second = np.array(load_backgrounds(bank, tmp_path / "cache", size=(32, 32)))
    assert not np.array_equal(first, second)
    # Another size is another cache (the key held the last file's bytes instead).
    assert np.asarray(load_backgrounds(bank, tmp_path / "cache", size=(16, 16))).shape[1:3] == (
        16,
        16,
    )
    smaller = load_source(SourceSpec(root), tmp_path / "cache", long_side=32, progress=False)
    assert smaller.images.shape == (3, 32, 32, 3)


@pytest.mark.parametrize("damage", ["truncated", "empty", "another shape"])
def test_a_damaged_cache_is_built_again(
    tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cache cut short (a full disk, a copy stopped) ended training in a traceback: mmap
    length, EOFError, or a broadcast error mid-run for an array of another shape."""
    root, src = _squares_root(tmp_path / "set")
    bank = tmp_path / "bg"
    bank.mkdir()
    cv2.imwrite(str(bank / "a.png"), src.images[0])
    good = np.array(load_source(SourceSpec(root), tmp_path / "c", 64, progress=False).images)
    good_bank = np.array(load_backgrounds(bank, tmp_path / "c", size=(32, 32)))
    for cached in (tmp_path / "c").glob("*.npy"):
        if damage == "truncated":
            cached.write_bytes(cached.read_bytes()[:200])
        elif damage == "empty":
            cached.write_bytes(b"")
        else:
            np.save(cached, np.zeros((2, 5, 5, 3), np.uint8))
    again = load_source(SourceSpec(root), tmp_path / "c", 64, progress=False)
    assert np.array_equal(np.asarray(again.images), good)
    assert np.array_equal(
        np.asarray(load_backgrounds(bank, tmp_path / "c", size=(32, 32))), good_bank
    )
    assert capsys.readouterr().err.count("is damaged; building it again") == 2


def test_only_named_roots_get_their_holes_filled(tmp_path: Path) -> None:
    """VITON's neck gaps are closed; a CCP arm-torso gap stays background."""
    m = np.zeros((32, 32), np.uint8)
    m[4:28, 4:28] = 255
    m[12:20, 12:20] = 0  # enclosed background, e.g. inside a bent arm
    img = np.full((32, 32, 3), 128, np.uint8)
    for name in ("viton", "ccp"):
        (tmp_path / name / "images").mkdir(parents=True)
        (tmp_path / name / "masks").mkdir()
        cv2.imwrite(str(tmp_path / name / "images" / "0.png"), img)
        cv2.imwrite(str(tmp_path / name / "masks" / "0.png"), m)
    cfg = _cfg(tmp_path, steps=1)
    cfg.sources = [SourceSpec(tmp_path / "viton"), SourceSpec(tmp_path / "ccp")]
    cfg.cache_dir = tmp_path / "cache"
    cfg.cache_long_side = 32
    viton, ccp = Trainer(cfg, bank=None, valsets=[]).sources
    assert viton.masks[0, 16, 16] == 255
    assert ccp.masks[0, 16, 16] == 0


def test_cli_refuses_missing_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--data", str(tmp_path / "nope"), "--run", str(tmp_path / "r")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--shadow", "1.5", "--shadow must be between 0 and 1."),
        ("--rotate", "120", "--rotate must be between 0 and 90 degrees."),
        ("--camouflage", "-0.1", "--camouflage must be between 0 and 1."),
        ("--second-person", "1.5", "--second-person must be between 0 and 1."),
        ("--sun-shadow", "2", "--sun-shadow must be between 0 and 1."),
        ("--graphics", "2", "--graphics must be between 0 and 1."),
        ("--wide-shot", "0.3", "--wide-shot must be above 0.45 and at most 10."),
        ("--workers", "-1", "--workers must be 0 or more."),
        ("--minutes", "0", "--minutes must be positive."),
        ("--anchor-weight", "-1", "--anchor-weight must be 0 or more."),
        ("--anchor-size", "100", "--anchor-size must be a multiple of 32, at least 32."),
    ],
)
def test_cli_refuses_out_of_range_switches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    (tmp_path / "d").mkdir()
    code = main(["train", "--data", str(tmp_path / "d"), "--run", str(tmp_path / "r"), flag, value])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"vidmat: error: {message}"
    assert not (tmp_path / "r").exists()


def test_publish_sets_input_size_and_loads(tmp_path: Path) -> None:
    from vidmat.model.spec import WeightsSpec
    from vidmat.model.u2net import build_model
    from vidmat.model.weights import load_weights, save_weights, sha256_file
    from vidmat.train.publish import publish

    torch.manual_seed(0)
    model = build_model("u2netp")
    src = tmp_path / "best.safetensors"
    save_weights(model, WeightsSpec(name="run", arch="u2netp", input_size=160, scale="255"), src)
    out = tmp_path / "u2netp_person.safetensors"
    sha = publish(src, out, size=256, note="test")
    assert sha == sha256_file(out)
    loaded, spec = load_weights(str(out))
    assert spec.input_size == 256 and spec.scale == "255" and spec.name == "u2netp_person"
    a = model.state_dict()["outconv.weight"]
    assert torch.allclose(loaded.state_dict()["outconv.weight"], a, atol=1e-3)
    assert out.stat().st_mode & 0o044 == 0o044  # readable by others, like any shipped file
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_publish_refuses_to_replace_or_to_write_nowhere(tmp_path: Path) -> None:
    from vidmat.model.spec import WeightsSpec
    from vidmat.model.u2net import build_model
    from vidmat.model.weights import save_weights, sha256_file
    from vidmat.train.publish import publish

    torch.manual_seed(0)
    src = tmp_path / "best.safetensors"
    save_weights(build_model("u2netp"), WeightsSpec(name="run", arch="u2netp"), src)
    out = tmp_path / "u2netp_person.safetensors"
    out.write_bytes(b"older weights")
    with pytest.raises(VidmatError, match="--overwrite"):
        publish(src, out, size=256)
    assert out.read_bytes() == b"older weights"
    assert publish(src, out, size=256, overwrite=True) == sha256_file(out)
    with pytest.raises(VidmatError, match="does not exist"):
        publish(src, tmp_path / "no" / "such" / "x.safetensors", size=256)


def test_publish_several_files_writes_their_mean(tmp_path: Path) -> None:
    from vidmat.model.spec import WeightsSpec
    from vidmat.model.u2net import build_model
    from vidmat.model.weights import load_weights, save_weights
    from vidmat.train.publish import publish

    srcs, models = [], []
    for seed, arch in ((0, "u2netp"), (1, "u2netp"), (2, "u2net")):
        torch.manual_seed(seed)
        models.append(build_model(arch))
        srcs.append(tmp_path / f"m{seed}.safetensors")
        save_weights(models[-1], WeightsSpec(name="run", arch=arch, input_size=160), srcs[-1])
    out = tmp_path / "mean.safetensors"
    publish(srcs[:2], out, size=192, half=False)
    loaded, spec = load_weights(str(out))
    assert spec.input_size == 192
    key = "stage1.rebnconv1.conv_s1.weight"
    a, b = (m.state_dict()[key] for m in models[:2])
    assert not torch.allclose(a, b)
    assert torch.allclose(loaded.state_dict()[key], (a + b) / 2, atol=1e-6)
    with pytest.raises(VidmatError, match="one architecture"):
        publish([srcs[0], srcs[2]], tmp_path / "bad.safetensors", size=192)
    assert not (tmp_path / "bad.safetensors").exists()


def test_publish_onto_takes_only_the_named_layers_from_the_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vidmat.model.spec import WeightsSpec
    from vidmat.model.u2net import build_model
    from vidmat.model.weights import load_weights, save_weights
    from vidmat.train.publish import main, publish

    paths, states = [], []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        m = build_model("u2netp")
        paths.append(tmp_path / f"m{seed}.safetensors")
        save_weights(m, WeightsSpec(name="run", arch="u2netp", input_size=160), paths[-1])
        states.append(m.state_dict())
    base, donors = paths[0], paths[1:]
    out = tmp_path / "graft.safetensors"
    publish(donors, out, size=256, half=False, onto=base, layers=["stage5", "sides"])
    got = load_weights(str(out))[0].state_dict()
    for k, v in got.items():
        first = k.split(".", 1)[0]
        if first in ("stage5", "outconv") or first.startswith("side"):
            want = (
                (states[1][k].float() + states[2][k].float()) / 2
                if v.is_floating_point()
                else states[1][k]
            )
        else:
            want = states[0][k]
        assert torch.allclose(v, want.to(v.dtype), atol=1e-6), k
    assert not torch.allclose(
        got["stage5.rebnconvin.conv_s1.weight"], states[0]["stage5.rebnconvin.conv_s1.weight"]
    )
    assert not torch.allclose(
        got["stage5d.rebnconvin.conv_s1.weight"], states[1]["stage5d.rebnconvin.conv_s1.weight"]
    )
    with pytest.raises(VidmatError, match="stage9"):
        publish(donors, tmp_path / "bad.safetensors", size=256, onto=base, layers=["stage9"])
    with pytest.raises(VidmatError, match="go together"):
        publish(donors, tmp_path / "bad.safetensors", size=256, layers=["stage5"])
    big = tmp_path / "big.safetensors"
    save_weights(build_model("u2net"), WeightsSpec(name="run", arch="u2net"), big)
    with pytest.raises(VidmatError, match="--onto weights and the sources are not all of one"):
        publish(donors, tmp_path / "bad.safetensors", size=256, onto=big, layers=["stage5"])
    assert not (tmp_path / "bad.safetensors").exists()
    cli_out = tmp_path / "cli.safetensors"
    argv = [*map(str, donors), "--onto", str(base), "--layers", "stage5,sides", "--size", "256"]
    monkeypatch.setattr("sys.argv", ["publish", *argv, "--fp32", "--out", str(cli_out)])
    main()
    cli = load_weights(str(cli_out))[0].state_dict()
    assert all(torch.equal(cli[k], got[k]) for k in got)


def test_publish_as_head_keeps_the_sources_head_for_one_size_beside_the_base_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A side refit at 320 grafted --as-head 320: the file answers as the refit at 320 and
    as the base at 192 and 256."""
    from vidmat.model.spec import WeightsSpec
    from vidmat.model.u2net import build_model
    from vidmat.model.weights import load_weights, save_weights
    from vidmat.train.publish import main, publish

    torch.manual_seed(0)
    base_model = build_model("u2netp")
    refit_model = build_model("u2netp")
    refit_model.load_state_dict(base_model.state_dict())
    with torch.no_grad():
        refit_model.side1.weight.mul_(1.5)
        refit_model.outconv.bias.add_(0.5)
    base, refit = tmp_path / "base.safetensors", tmp_path / "refit.safetensors"
    spec = WeightsSpec(name="run", arch="u2netp", input_size=256)
    save_weights(base_model, spec, base)
    save_weights(refit_model, spec, refit)
    out = tmp_path / "heads.safetensors"
    publish(refit, out, size=256, half=False, onto=base, as_head=320)
    got, got_spec = load_weights(str(out))
    assert got_spec.input_size == 256 and list(got.sized_heads) == ["320"]
    with torch.inference_mode():
        for s, want in ((192, base_model), (256, base_model), (320, refit_model)):
            x = torch.randn(1, 3, s, s)
            assert torch.allclose(got(x), want.eval()(x), atol=1e-6), s
    with pytest.raises(VidmatError, match="--as-head goes with --onto"):
        publish(refit, tmp_path / "bad.safetensors", size=256, as_head=320)
    with pytest.raises(VidmatError, match="without --layers"):
        publish(
            refit, tmp_path / "bad.safetensors", size=256, onto=base, as_head=320, layers=["sides"]
        )
    big = tmp_path / "big.safetensors"
    save_weights(build_model("u2net"), WeightsSpec(name="run", arch="u2net"), big)
    with pytest.raises(VidmatError, match="not all of one architecture"):
        publish(big, tmp_path / "bad.safetensors", size=256, onto=base, as_head=320)
    # a run's export averaged with a file keeping heads per size: both u2netp, which
    # "not all of one architecture" denied
    with pytest.raises(VidmatError, match="some keep heads for input sizes 320 that the others"):
        publish([out, refit], tmp_path / "bad.safetensors", size=256)
    assert not (tmp_path / "bad.safetensors").exists()
    cli_out = tmp_path / "cli.safetensors"
    argv = [str(refit), "--onto", str(base), "--as-head", "320", "--size", "256", "--fp32"]
    monkeypatch.setattr("sys.argv", ["publish", *argv, "--out", str(cli_out)])
    main()
    cli = load_weights(str(cli_out))[0].state_dict()
    assert cli.keys() == got.state_dict().keys()
    assert all(torch.equal(cli[k], v) for k, v in got.state_dict().items())


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_an_interrupt_as_workers_start_shuts_them_down_before_it_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C is delivered as the workers start (when the held signals are let through).
    The traceback kept the loader, and its starting workers, alive while the caller went
    on deleting what they read (bench train's temporary cache): each printed a traceback.
    """
    import contextlib

    @contextlib.contextmanager
    def interrupted_on_release():
        yield
        raise KeyboardInterrupt

    monkeypatch.setattr("vidmat.train.loop.group_signals_held", interrupted_on_release)
    squares = _squares()
    mapped = CachedSource(
        squares.spec,
        _mapped(squares.images, tmp_path / "images.npy"),
        _mapped(squares.masks, tmp_path / "masks.npy"),
    )
    trainer = Trainer(
        replace(_cfg(tmp_path / "run", steps=3), workers=1), sources=[mapped], bank=None, valsets=[]
    )
    with pytest.raises(KeyboardInterrupt) as caught:
        next(trainer.batches())
    # the traceback (and so the loader) is still held here: its worker must be gone anyway
    assert caught.value is not None
    me = str(os.getpid())
    workers = [
        p.name
        for p in Path("/proc").iterdir()
        if p.name.isdigit()
        and (p / "stat").exists()
        and _parent(p / "stat") == me
        and b"spawn_main" in _read(p / "cmdline")
    ]
    assert workers == []


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _parent(stat: Path) -> str:
    """The parent pid in /proc/PID/stat (the field after the state, past the name's ")")."""
    fields = _read(stat).decode(errors="replace").rsplit(")", 1)[-1].split()
    return fields[1] if len(fields) > 1 else ""


def _one_pair(root: Path) -> Path:
    """``root`` with one good image/mask pair, 0.png, for a second one to spoil."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    src = _squares(n=1)
    cv2.imwrite(str(root / "images" / "0.png"), src.images[0])
    cv2.imwrite(str(root / "masks" / "0.png"), src.masks[0])
    return root


def test_a_dangling_link_in_the_data_is_one_sentence(tmp_path: Path) -> None:
    # The cache key's stat of every file raised FileNotFoundError (a traceback).
    root = _one_pair(tmp_path / "set")
    for kind in ("images", "masks"):
        (root / kind / "1.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(VidmatError, match="cannot read"):
        load_source(SourceSpec(root), tmp_path / "cache", long_side=64, progress=False)


def test_a_picture_over_opencvs_pixel_limit_in_the_data_is_one_sentence(tmp_path: Path) -> None:
    # cv2.imread raises for it (a C++ assertion), where it returns None for other files.
    from core_fixtures import huge_png_header

    root = _one_pair(tmp_path / "set")
    huge_png_header(root / "images" / "1.png")
    shutil.copy(root / "masks" / "0.png", root / "masks" / "1.png")
    with pytest.raises(VidmatError, match=r"1\.png is larger than OpenCV reads"):
        load_source(SourceSpec(root), tmp_path / "cache", long_side=64, progress=False)


def test_a_whole_last_log_record_without_its_newline_gets_one(tmp_path: Path) -> None:
    # Nothing to drop, but the next record would have been glued to it.
    from vidmat.train.loop import _drop_log_after

    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}')
    _drop_log_after(log, 5)
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_validation_scores_what_eval_scores(tmp_path: Path) -> None:
    """Validation shrank frames with OpenCV's area resize and interpolated alpha back,
    so the best step was picked on numbers apart from `vidmat eval`'s."""
    import copy

    from vidmat.core.engine import Engine, upsample_alpha
    from vidmat.core.settings import EngineConfig
    from vidmat.model.spec import WeightsSpec
    from vidmat.train.loop import ValSet, validate
    from vidmat.train.metrics import iou, mae

    class Bright(torch.nn.Module):  # sure of its person where the frame is bright
        def __init__(self) -> None:
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(6.0 * x.mean(1, keepdim=True)) + self.dummy

    model = Bright().eval()
    images = np.zeros((3, 40, 56, 3), np.uint8)
    masks = np.zeros((3, 40, 56), np.uint8)
    for i in range(3):  # squares off the model's 32 px grid, and a true mask a bit apart
        images[i, 7 + i : 29 + i, 9 + 3 * i : 37 + 2 * i] = 255
        masks[i, 8 + i : 30 + i, 9 + 3 * i : 36 + 2 * i] = 255
    got = validate(model, [ValSet("v", images, masks)], 32, torch.device("cpu"))["v"]
    spec = WeightsSpec(name="t", arch="u2netp", input_size=32, scale="255")
    engine = Engine(copy.deepcopy(model), spec, EngineConfig(device="cpu", precision="fp32"))
    probs = upsample_alpha(engine.predict_lowres(images).float(), 40, 56)[:, 0].numpy()
    pairs = list(zip(probs, masks > 127, strict=True))
    assert got["iou"] == pytest.approx(np.mean([iou(p, g) for p, g in pairs]), abs=1e-5)
    assert got["mae"] == pytest.approx(np.mean([mae(p, g) for p, g in pairs]), abs=1e-5)


def test_an_export_at_another_size_keeps_the_head_that_was_trained(tmp_path: Path) -> None:
    """A fine-tune at 64 of a file with heads for 256 (its own) and 192 trains the 192 head
    (the nearest); the export said "input size 64" and so made the own, untrained head the
    one that serves 64: best.safetensors did not give the scores it was picked on. The
    run's checkpoint, loaded as weights, answered the same way."""
    from vidmat.model.u2net import build_model
    from vidmat.model.weights import load_weights
    from vidmat.train.loop import export_weights

    torch.manual_seed(0)
    model = build_model("u2netp").eval()
    model.head_size = 256
    head = model.add_sized_head(192)
    with torch.no_grad():
        head.outconv.bias.add_(2.0)  # what training at 64 changed: the 192 head
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        want = model(x)
    path = tmp_path / "best.safetensors"
    export_weights(model, replace(_cfg(tmp_path, 1), size=64), path, "fine-tune")
    got, spec = load_weights(str(path))
    assert (spec.input_size, spec.head_size) == (64, 256)
    assert got.head_for(64) is got.sized_heads["192"]
    with torch.inference_mode():
        torch.testing.assert_close(got.float()(x), want, atol=2e-3, rtol=0)  # fp16 file
    ck = tmp_path / "last.pt"
    state = model.state_dict()
    torch.save(
        {"step": 1, "model": state, "ema": state, "opt": {}, "sched": {},
         "config": {"size": 64}, "head_size": 256},
        ck,
    )  # fmt: skip
    got, spec = load_weights(str(ck))
    assert (spec.input_size, spec.head_size) == (64, 256)
    assert got.head_for(64) is got.sized_heads["192"]
    # one head serves every size: nothing to keep, and the file reads as before
    plain = build_model("u2netp")
    export_weights(plain, replace(_cfg(tmp_path, 1), size=64), tmp_path / "p.safetensors", "p")
    assert load_weights(str(tmp_path / "p.safetensors"))[1].head_size is None
