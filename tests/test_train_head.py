"""Refitting the fused head (vidmat.train.head): the fit itself, and the file it writes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidmat.train.head import (
    SourceFeatures,
    SourceSides,
    fit_head,
    fit_sides,
    full_res_side_inputs,
    head_loss,
    image_losses,
    main,
    mean_iou,
    sampled_side_inputs,
    side_logits_at_samples,
    side_refit_loss,
)


def _sides(n: int, w: torch.Tensor, b: float, seed: int, size: int = 12) -> SourceSides:
    """Random side logits whose soft target is exactly sigmoid(w . sides + b)."""
    g = torch.Generator().manual_seed(seed)
    sides = torch.randn(n, 6, size, size, generator=g) * 2
    targets = torch.sigmoid((sides * w.view(1, 6, 1, 1)).sum(1, keepdim=True) + b)
    return SourceSides(f"s{seed}", 1.0, sides, targets)


def test_bce_fit_recovers_the_head_that_made_the_targets() -> None:
    true_w = torch.tensor([0.6, 0.1, -0.3, 0.2, 0.05, 0.4])
    sources = [_sides(6, true_w, -0.25, seed=0), _sides(4, true_w, -0.25, seed=1)]
    w, b = fit_head(sources, torch.zeros(6), torch.zeros(1), iou_weight=0.0)
    assert torch.allclose(w, true_w, atol=1e-3)
    assert abs(float(b) + 0.25) < 1e-3


def test_fit_lowers_the_loss_and_mends_a_wrong_head() -> None:
    true_w = torch.tensor([0.5, 0.2, 0.1, 0.1, 0.1, 0.0])
    src = _sides(8, true_w, 0.0, seed=2)
    src = SourceSides(src.name, 1.0, src.sides, (src.targets >= 0.5).float())  # hard masks
    w0, b0 = -true_w, torch.zeros(1)  # a head that inverts the matte
    w, b = fit_head([src], w0, b0, iou_weight=1.0)
    with torch.no_grad():
        assert head_loss(w, b, [src], 1.0) < 0.5 * head_loss(w0, b0, [src], 1.0)
    assert mean_iou(w0, b0, src) < 0.2
    assert mean_iou(w, b, src) > 0.95


def test_sources_count_by_weight_not_by_size() -> None:
    """A source of many images must not outvote a small one of the same weight."""
    a = _sides(12, torch.tensor([1.0, 0, 0, 0, 0, 0]), 0.0, seed=3)
    b = _sides(2, torch.tensor([0, 1.0, 0, 0, 0, 0]), 0.0, seed=4)
    w, _ = fit_head([a, b], torch.zeros(6), torch.zeros(1), iou_weight=0.0)
    assert abs(float(w[0]) - float(w[1])) < 0.2  # equal say, though a has six times the images
    b.weight = 10.0
    w, _ = fit_head([a, b], torch.zeros(6), torch.zeros(1), iou_weight=0.0)
    assert float(w[1]) > float(w[0]) + 0.3


def test_sampled_side_inputs_reproduce_every_side_logit() -> None:
    """Side j's logit at a pixel is its [weight, bias] times the sampled patch, for the
    full-size side and for the five upsampled ones, edges and corners included."""
    from vidmat.model.u2net import build_model

    torch.manual_seed(0)
    model = build_model("u2netp").eval()
    x = torch.randn(1, 3, 64, 64)
    py = torch.tensor([0, 0, 63, 63, 17, 40, 5, 31])
    px = torch.tensor([0, 63, 0, 63, 22, 9, 50, 32])
    with torch.no_grad():
        logits = model.forward_all(x)
        feats = sampled_side_inputs(model.side_inputs(x), py, px)
    for j, f in enumerate(feats, start=1):
        conv = getattr(model, f"side{j}")
        v = torch.cat([conv.weight.reshape(-1), conv.bias]).detach()
        assert f.shape == (8, conv.in_channels * 9 + 1)
        assert torch.allclose(f @ v, logits[j][0, 0, py, px], atol=1e-4), j


def test_full_res_side_inputs_reproduce_the_upsampled_fused_logit() -> None:
    """At pixels of an image of another size (taller and narrower than the grid), the
    features times the sides' and head's numbers are the fused logit as the engine upsamples
    it, edges and corners included."""
    from vidmat.model.u2net import build_model

    torch.manual_seed(1)
    model = build_model("u2netp").eval()
    x = torch.randn(1, 3, 64, 64)
    fy = torch.tensor([0, 149, 0, 149, 75, 33, 120, 1])
    fx = torch.tensor([0, 0, 39, 39, 20, 7, 31, 38])
    with torch.no_grad():
        fused = model.forward_all(x)[0]
        up = F.interpolate(fused, size=(150, 40), mode="bilinear", align_corners=False)
        feats = full_res_side_inputs(model.side_inputs(x), fy, fx, 150, 40)
    w = model.outconv.weight.view(6).detach()
    z = model.outconv.bias.detach().clone()
    for j, f in enumerate(feats, start=1):
        conv = getattr(model, f"side{j}")
        z = z + w[j - 1] * (f @ torch.cat([conv.weight.reshape(-1), conv.bias]).detach())
    assert torch.allclose(z, up[0, 0, fy, fx], atol=1e-4)


def _features(n: int, p: int, dims: list[int], v: list[torch.Tensor], w: torch.Tensor, seed: int):
    """Random side inputs whose hard targets are those of side weights ``v``."""
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(n, p, d, generator=g).half() for d in dims]
    for f in feats:
        f[..., -1] = 1
    src = SourceFeatures(f"f{seed}", 1.0, feats, torch.zeros(n, p))
    z = side_logits_at_samples([w[j] * v[j] for j in range(6)], torch.zeros(1), src)
    src.targets = (z >= 0).float()
    return src


def test_side_refit_gradient_is_the_loss_gradient() -> None:
    """The hand-summed, chunked gradient equals autograd's on the same loss."""
    dims = [4, 4, 3, 3, 2, 2]
    w = torch.tensor([0.5, 0.2, 0.1, -0.3, 0.1, 0.05])
    g = torch.Generator().manual_seed(5)
    v0 = [torch.randn(d, generator=g) for d in dims]
    srcs = [_features(70, 30, dims, v0, w, seed=6), _features(3, 30, dims, v0, w, seed=7)]
    srcs[1].weight = 2.0
    theta = torch.cat([*(v + 0.3 * torch.randn(len(v), generator=g) for v in v0), torch.ones(1)])
    loss, grad = side_refit_loss(theta, w, v0, srcs, iou_weight=1.0, ridge=0.1)

    t = theta.clone().requires_grad_(True)
    vs = torch.split(t[:-1], dims)
    ref = t.new_zeros(())
    for s in srcs:
        z = sum(s.feats[j].float() @ (w[j] * vs[j]) for j in range(6)) + t[-1]
        ref = ref + s.weight / 3.0 * image_losses(z, s.targets, 1.0).mean()
    ref = ref + 0.1 * sum((vs[j] - v0[j]).square().sum() / v0[j].square().sum() for j in range(6))
    ref.backward()
    assert torch.allclose(loss, ref.detach(), rtol=1e-5)
    assert torch.allclose(grad, t.grad, rtol=1e-4, atol=1e-6)


def test_side_fit_learns_the_sides_and_the_ridge_holds_them() -> None:
    dims = [6, 6, 5, 5, 4, 4]
    w = torch.tensor([0.6, 0.2, 0.1, 0.1, 0.1, 0.1])
    g = torch.Generator().manual_seed(8)
    true_v = [torch.randn(d, generator=g) for d in dims]
    src = _features(20, 64, dims, true_v, w, seed=9)
    start = [-v for v in true_v]  # sides that invert the matte

    def iou(vs, b):
        z = side_logits_at_samples([w[j] * vs[j] for j in range(6)], b, src)
        p, t = z >= 0, src.targets >= 0.5
        return float((p & t).sum() / (p | t).sum())

    vs, b = fit_sides([src], w, start, torch.zeros(1), ridge=0.0)
    assert iou(start, torch.zeros(1)) < 0.2 and iou(vs, b) > 0.9
    held, _ = fit_sides([src], w, start, torch.zeros(1), ridge=100.0)
    moved = sum(float((h - s).norm() / s.norm()) for h, s in zip(held, start, strict=True))
    free = sum(float((v - s).norm() / s.norm()) for v, s in zip(vs, start, strict=True))
    assert moved < 0.1 * free


def _changed(before: torch.nn.Module, after: torch.nn.Module) -> list[str]:
    """The names of the tensors that differ between two models, sorted."""
    a, b = before.state_dict(), after.state_dict()
    return sorted(k for k in a if not torch.equal(a[k], b[k]))


#: The six side convolutions' tensor names.
_SIDES = [f"side{j}.{p}" for j in range(1, 7) for p in ("weight", "bias")]


def _refit(
    capsys: pytest.CaptureFixture[str], src: Path, data: Path, out: Path, *extra: str
) -> tuple[str, torch.nn.Module, tuple]:
    """Run the CLI on ``src`` (fp32 out): what it printed, the source model, and the
    written (model, spec); the source file is checked untouched."""
    from vidmat.model.weights import load_weights, sha256_file

    src_sha = sha256_file(src)
    assert main([str(src), "--data", str(data), "--out", str(out), "--fp32", *extra]) == 0
    assert sha256_file(src) == src_sha  # the input is never touched
    before, _ = load_weights(str(src))
    return capsys.readouterr().out, before, load_weights(str(out))


def test_cli_writes_the_source_with_only_its_head_changed(
    tmp_path: Path,
    make_people: Callable[..., Path],
    tiny_weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from vidmat.model.weights import sha256_file

    out = tmp_path / "refit.safetensors"
    printed, before, (after, spec) = _refit(
        capsys, tiny_weights, make_people(tmp_path / "people"), out
    )
    assert "people: 3 images" in printed and "sha256 " + sha256_file(out) in printed
    old_head = " ".join(f"{v:.4f}" for v in before.outconv.weight.view(6).tolist())
    new_head = " ".join(f"{v:.4f}" for v in after.outconv.weight.view(6).tolist())
    assert (
        old_head != new_head and f"bias): {old_head}" in printed and f"now: {new_head}" in printed
    )
    assert spec.input_size == 32 and spec.name == "refit" and spec.description == "d"
    assert _changed(before, after) == ["outconv.bias", "outconv.weight"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_sides_changes_only_the_sides_and_the_head_bias(
    tmp_path: Path,
    make_people: Callable[..., Path],
    tiny_weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = make_people(tmp_path / "people")
    out = tmp_path / "sides.safetensors"
    extra = ["--sides", "--pixels", "300", "--ridge", "0.01"]
    printed, before, (after, _) = _refit(capsys, tiny_weights, data, out, *extra)
    assert "people: 3 images, IoU on the sampled pixels" in printed
    assert "sides moved (change / size):" in printed and "head (6 weights" not in printed
    loss0, loss1 = (float(v) for v in printed.split("\n")[0].split()[1::2])
    assert loss1 < loss0
    assert _changed(before, after) == sorted(["outconv.bias", *_SIDES])


def test_cli_sides_at_full_resolution_fit_other_numbers_to_the_same_layers(
    tmp_path: Path,
    make_people: Callable[..., Path],
    tiny_weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = make_people(tmp_path / "people")
    extra = ["--sides", "--pixels", "300"]
    _, before, (grid, _) = _refit(capsys, tiny_weights, data, tmp_path / "g.safetensors", *extra)
    printed, _, (full, _) = _refit(
        capsys, tiny_weights, data, tmp_path / "f.safetensors", *extra, "--full-res"
    )
    assert "people: 3 images, IoU on the sampled pixels" in printed
    assert _changed(before, full) == sorted(["outconv.bias", *_SIDES])
    assert not torch.equal(grid.side1.weight, full.side1.weight)


def test_cli_fits_one_set_of_sides_at_several_sizes(
    tmp_path: Path,
    make_people: Callable[..., Path],
    tiny_weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--size 32 --size 64: each source is read at both sizes and counts at both, so the
    fit differs from the one at 32 alone; the file keeps its own input size."""
    data = make_people(tmp_path / "people")
    extra = ["--sides", "--pixels", "300"]
    one = tmp_path / "one.safetensors"
    both = tmp_path / "both.safetensors"
    printed, _, (alone, _) = _refit(capsys, tiny_weights, data, one, *extra, "--size", "32")
    assert "people: 3 images" in printed and "@" not in printed
    printed, _, (mixed, spec) = _refit(
        capsys, tiny_weights, data, both, *extra, "--size", "32", "--size", "64"
    )
    assert "people@32: 3 images" in printed and "people@64: 3 images" in printed
    assert spec.input_size == 32
    assert not torch.equal(alone.side1.weight, mixed.side1.weight)
    assert torch.equal(
        alone.stage1.rebnconvin.conv_s1.weight, mixed.stage1.rebnconvin.conv_s1.weight
    )


def test_cli_refits_the_head_the_file_uses_at_the_size_and_no_other(
    tmp_path: Path,
    make_people: Callable[..., Path],
    tiny_weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A file with a head kept for 64 px: a refit at 64 moves that head alone, and sizes
    served by different heads are refused, as no one set of numbers can be written to both."""
    from vidmat.model.weights import load_weights, save_weights

    model, spec = load_weights(str(tiny_weights))
    model.add_sized_head(64)
    src = tmp_path / "heads.safetensors"
    save_weights(model, spec, src)
    data = make_people(tmp_path / "people")
    out = tmp_path / "refit.safetensors"
    said, before, (after, _) = _refit(
        capsys, src, data, out, "--sides", "--pixels", "300", "--size", "64"
    )
    changed = _changed(before, after)
    assert changed and all(k.startswith("sized_heads.64.") for k in changed)
    # which head: --size 64 on the shipped file refitted its 192 head without a word
    assert said.startswith(
        f"refitted the head for input size 64 (the file's others: {spec.head_size or spec.input_size})\n"
    )
    x = tmp_path / "x.safetensors"
    assert (
        main([str(src), "--data", str(data), "--out", str(x), "--size", "32", "--size", "64"]) == 2
    )
    assert "different heads at the sizes 32, 64" in capsys.readouterr().err
    assert not x.exists()


def test_cli_refuses_bad_input_in_one_sentence(
    tmp_path: Path,
    make_people: Callable[..., Path],
    tiny_weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = make_people(tmp_path / "people")
    out = tmp_path / "refit.safetensors"
    out.write_bytes(b"older")
    x, y, z, r, f, g = (tmp_path / f"{n}.safetensors" for n in "xyzrfg")
    cases = [
        ([str(tiny_weights), "--data", str(data), "--out", str(out)], "--overwrite"),
        (
            [str(tiny_weights), "--data", str(tmp_path / "nope"), "--out", str(x)],
            "nope",
        ),
        (
            [str(tmp_path / "none.safetensors"), "--data", str(data), "--out", str(y)],
            "none",
        ),
        (
            [
                str(tiny_weights),
                "--data",
                str(data),
                "--out",
                str(z),
                "--iou-weight",
                "-1",
            ],
            "--iou-weight",
        ),
        (
            [str(tiny_weights), "--data", str(data), "--out", str(r), "--ridge", "-1"],
            "--ridge",
        ),
        (
            [str(tiny_weights), "--data", str(data), "--out", str(f), "--full-res"],
            "--sides",
        ),
        # the side refit's options without it did nothing to the head's seven numbers
        (
            [str(tiny_weights), "--data", str(data), "--out", str(f), "--pixels", "300"],
            "--pixels is an option of the side refit; give it with --sides.",
        ),
        (
            [str(tiny_weights), "--data", str(data), "--out", str(f), "--ridge", "0.1"],
            "--ridge is an option of the side refit; give it with --sides.",
        ),
        (  # a composite share is train's; the refit took it and did nothing with it
            [str(tiny_weights), "--data", f"{data}:1:0.5", "--out", str(f)],
            "the refit takes ROOT[:WEIGHT]",
        ),
        (  # a 48x40 image has 1,920 pixels; the 64 px grid would allow 2,000
            [
                str(tiny_weights),
                "--data",
                str(data),
                "--out",
                str(g),
                "--sides",
                "--full-res",
                "--size",
                "64",
                "--pixels",
                "2000",
            ],
            "fewer than 2000 pixels",
        ),
    ]
    for argv, word in cases:
        assert main([*argv, "--no-progress"]) == 2  # as `vidmat` exits on a refused input
        message = capsys.readouterr().err
        assert message.startswith("head: error: ") and word in message, message
        assert message.count("\n") == 1
    assert out.read_bytes() == b"older"
    assert not any(p.exists() for p in (x, y, z, r, f, g))


def test_a_mask_of_another_size_is_named(
    tmp_path: Path,
    make_people: Callable[..., Path],
    tiny_weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = make_people(tmp_path / "people", n=2)
    cv2.imwrite(str(data / "masks" / "1.png"), np.zeros((20, 24), np.uint8))
    out = tmp_path / "o.safetensors"
    assert main([str(tiny_weights), "--data", str(data), "--out", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        "head: error: mask 1.png is 24x20 px and its image 1.png 48x40 (width x height); "
        "they must match.\n"
    )
    assert not (tmp_path / "o.safetensors").exists()


@pytest.mark.parametrize(
    ("weight", "extra", "said"),
    [
        ("", ["--iou-weight", "nan"], "--iou-weight must be a finite number, 0 or more, got nan."),
        ("", ["--iou-weight", "inf"], "--iou-weight must be a finite number, 0 or more, got inf."),
        ("", ["--sides", "--ridge", "nan"], "--ridge must be a finite number, 0 or more, got nan."),
        ("", ["--sides", "--ridge", "inf"], "--ridge must be a finite number, 0 or more, got inf."),
        (":nan", [], "sampling weight of {root} must be a finite number."),
        (":inf", [], "sampling weight of {root} must be a finite number."),
        (":1:nan", [], "composite probability of {root} must be in [0, 1]."),
    ],
)
def test_cli_refuses_non_finite_numbers_in_one_sentence(
    tmp_path: Path,
    make_people: Callable[..., Path],
    tiny_weights: Path,
    capsys: pytest.CaptureFixture[str],
    weight: str,
    extra: list[str],
    said: str,
) -> None:
    """nan passes a `< 0` check and inf any; both reached L-BFGS, whose traceback was all
    the user saw."""
    root = make_people(tmp_path / "people")
    out = tmp_path / "o.safetensors"
    argv = [str(tiny_weights), "--data", f"{root}{weight}", "--out", str(out), *extra]
    assert main([*argv, "--no-progress"]) == 2
    assert capsys.readouterr().err == f"head: error: {said.format(root=root)}\n"
    assert not out.exists()


def test_cli_names_a_weight_that_is_not_a_number_as_train_does(
    tmp_path: Path,
    make_people: Callable[..., Path],
    tiny_weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--data ROOT:abc` was reported as a root without images/ and masks/; head reads
    --data with train's own parser, so both say the same."""
    from vidmat.cli import main as vidmat_main

    root = make_people(tmp_path / "people")
    out = tmp_path / "o.safetensors"
    assert main([str(tiny_weights), "--data", f"{root}:abc", "--out", str(out)]) == 2
    head_err = capsys.readouterr().err
    assert head_err == (
        f"head: error: --data {root}:abc: 'abc' is not a number; after the root come "
        f"WEIGHT[:COMPOSITE], e.g. {root}:1.0:0.5.\n"
    )
    assert vidmat_main(["train", "--data", f"{root}:abc", "--run", str(tmp_path / "run")]) == 2
    train_err = capsys.readouterr().err
    assert train_err.removeprefix("vidmat: ") == head_err.removeprefix("head: ")


def test_cli_never_writes_over_its_source_nor_a_non_safetensors_name(
    tmp_path: Path,
    make_people: Callable[..., Path],
    tiny_weights: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`head W --out W --overwrite` replaced its own input (so the shipped weights were
    once lost); an --out of another suffix was written as safetensors vidmat then refused."""
    from vidmat.model.weights import sha256_file

    data = str(make_people(tmp_path / "people"))
    sha = sha256_file(tiny_weights)
    link = tmp_path / "link.safetensors"
    link.symlink_to(tiny_weights)
    monkeypatch.chdir(tmp_path)
    for out in (str(tiny_weights), f"./{tiny_weights.name}", str(link)):
        assert main([str(tiny_weights), "--data", data, "--out", out, "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert err == (
            f"head: error: the --out {Path(out)} is the source weights file itself; "
            "choose another --out name.\n"
        )
    assert main([str(tiny_weights), "--data", data, "--out", "o.pth"]) == 2
    assert ".safetensors" in capsys.readouterr().err and not Path("o.pth").exists()
    assert sha256_file(tiny_weights) == sha and link.is_symlink()
