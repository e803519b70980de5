"""The model matches the official checkpoints' layout and behaves on any input size."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vidmat.model.u2net import (
    RSU,
    build_model,
    count_parameters,
    fold_batch_norms,
    onednn_fused_dtypes,
)

DATA = Path(__file__).parent / "data"


def _reference(arch: str) -> dict[str, tuple[int, ...]]:
    rows = (DATA / f"{arch}_state_dict.tsv").read_text().splitlines()[1:]
    out = {}
    for row in rows:
        key, shape = row.split("\t")
        out[key] = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
    return out


@pytest.mark.parametrize(("arch", "params"), [("u2netp", 1_131_181), ("u2net", 44_009_869)])
def test_state_dict_matches_official_layout(arch: str, params: int) -> None:
    ref = _reference(arch)
    state = build_model(arch).state_dict()
    assert len(ref) == 798
    assert {k: tuple(v.shape) for k, v in state.items()} == ref
    assert count_parameters(build_model(arch)) == params


@pytest.mark.parametrize("size", [(64, 64), (67, 101), (33, 47), (1, 1), (320, 320)])
def test_eval_output_is_probability_at_input_size(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_model("u2netp").eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 1, *size)
    assert torch.all(out >= 0) and torch.all(out <= 1)
    assert torch.isfinite(out).all()


def test_forward_all_returns_seven_logit_maps_and_fused_matches_eval() -> None:
    torch.manual_seed(0)
    model = build_model("u2netp").eval()
    x = torch.randn(1, 3, 48, 40)
    with torch.inference_mode():
        maps = model.forward_all(x)
        prob = model(x)
    assert len(maps) == 7
    assert all(m.shape == (1, 1, 48, 40) for m in maps)
    # logits are unbounded; the eval output is exactly their fused sigmoid, not min-max stretched
    assert torch.allclose(torch.sigmoid(maps[0]), prob)
    assert prob.max() - prob.min() < 1.0


def test_train_mode_returns_the_seven_maps() -> None:
    model = build_model("u2netp").train()
    maps = model(torch.randn(2, 3, 32, 32))
    assert isinstance(maps, list) and len(maps) == 7


def test_rsu_dilated_keeps_resolution_and_pooled_recovers_it() -> None:
    x = torch.randn(1, 8, 37, 29)
    for dilated in (False, True):
        block = RSU(5, 8, 4, 6, dilated=dilated).eval()
        assert block(x).shape == (1, 6, 37, 29)
    block = RSU(4, 8, 4, 6, dilated=True)
    assert [block.rebnconv1.conv_s1.dilation, block.rebnconv4.conv_s1.dilation] == [(1, 1), (8, 8)]


def test_unknown_architecture_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("u3net")


def test_a_sized_head_serves_the_inputs_nearest_its_size_and_no_others() -> None:
    torch.manual_seed(0)
    model = build_model("u2netp").eval()
    model.head_size = 256
    inputs = {s: torch.randn(1, 3, s, s) for s in (192, 256, 288, 320, 384)}
    with torch.inference_mode():
        before = {s: model(x) for s, x in inputs.items()}
    head = model.add_sized_head(320)
    assert set(model.state_dict()) - set(build_model("u2netp").state_dict()) == {
        f"sized_heads.320.{k}" for k in head.state_dict()
    }
    with torch.inference_mode():
        # a new head starts as a copy of the model's own: nothing changes yet
        assert all(torch.equal(model(x), before[s]) for s, x in inputs.items())
        head.outconv.bias.add_(3.0)
        after = {s: model(x) for s, x in inputs.items()}
    assert [model.head_for(s) is head for s in (192, 256, 287, 288, 320, 2048)] == [
        False,
        False,
        False,
        True,  # a tie goes to the sized head
        True,
        True,
    ]
    for s in (192, 256):
        assert torch.equal(after[s], before[s])
    for s in (288, 320, 384):
        assert (after[s] > before[s]).all()
    non_square = torch.randn(1, 3, 320, 192)  # the longer side decides
    assert model.head_for(max(non_square.shape[-2:])) is head


def test_folded_batch_norms_give_the_same_output_faster_to_compute() -> None:
    """Inference folds each batch norm into its convolution: no BatchNorm2d is left, and
    the output is the unfolded model's, in eval mode only."""
    import copy

    torch.manual_seed(0)
    model = build_model("u2netp").eval()
    for m in model.modules():  # statistics other than the identity a fresh model has
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        before = model(x)[0]
        folded = fold_batch_norms(copy.deepcopy(model))
        after = folded(x)[0]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert torch.allclose(before, after, atol=1e-5)
    assert count_parameters(folded) < count_parameters(model)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(build_model("u2netp").train())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_a_folded_model_on_a_cpu_applies_each_relu_inside_its_convolution(
    dtype: torch.dtype, layout: torch.memory_format
) -> None:
    """oneDNN's fused convolution + ReLU gives the numbers of the two calls; it is used
    only without autograd (it has none), and a model still to be trained never takes it."""
    import copy

    torch.manual_seed(1)
    folded = fold_batch_norms(build_model("u2netp").eval()).to(dtype, memory_format=layout)
    if dtype not in onednn_fused_dtypes():
        pytest.skip(f"oneDNN has no fused convolution for {dtype} on this CPU")
    plain = copy.deepcopy(folded)
    for m in plain.modules():
        if hasattr(m, "folded"):
            m.folded = False
    x = torch.randn(2, 3, 64, 64).to(dtype).contiguous(memory_format=layout)
    with torch.inference_mode():
        fused_out, plain_out = folded(x), plain(x)
    tol = 1e-5 if dtype == torch.float32 else 0.0
    assert (fused_out.float() - plain_out.float()).abs().max().item() <= tol
    # with autograd on, the plain path runs and gradients flow back to the input
    leaf = x.detach().requires_grad_()
    folded(leaf).float().sum().backward()
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0
    assert not any(getattr(m, "folded", False) for m in build_model("u2netp").modules())


def test_bf16_without_onednn_bf16_runs_the_plain_convolution() -> None:
    """On a CPU without AVX-512 oneDNN refuses bf16 in its fused convolution (a traceback
    for an explicit --precision bf16); there the folded model keeps conv + ReLU."""
    script = (
        "import torch\n"
        "from vidmat.model.u2net import build_model, fold_batch_norms, onednn_fused_dtypes\n"
        "assert torch.bfloat16 not in onednn_fused_dtypes()\n"
        "m = fold_batch_norms(build_model('u2netp').eval()).bfloat16()\n"
        "with torch.inference_mode():\n"
        "    print(tuple(m(torch.randn(1, 3, 64, 64).bfloat16()).shape))\n"
    )
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "(1, 1, 64, 64)"
