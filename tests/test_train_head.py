"""Refitting the fused head (vidmat.train.head): the fit itself, and the file it writes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vidmat.train.head import SourceSides, fit_head, head_loss, main, mean_iou


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


def _dataset(root: Path, n: int = 3) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 80, (40, 48, 3), dtype=np.uint8)
        mask = np.zeros((40, 48), np.uint8)
        mask[8 + i : 32, 12:36] = 255
        img[mask > 0] = (200, 160, 120)
        cv2.imwrite(str(root / "images" / f"{i}.png"), img)
        cv2.imwrite(str(root / "masks" / f"{i}.png"), mask)
    return root


@pytest.fixture
def tiny_weights(tmp_path: Path) -> Path:
    from vidmat.model.u2net import build_model
    from vidmat.model.weights import WeightsSpec, save_weights

    torch.manual_seed(0)
    src = tmp_path / "src.safetensors"
    spec = WeightsSpec(name="src", arch="u2netp", input_size=32, scale="255", description="d")
    save_weights(build_model("u2netp"), spec, src)
    return src


def test_cli_writes_the_source_with_only_its_head_changed(
    tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vidmat.model.weights import load_weights, sha256_file

    data = _dataset(tmp_path / "people")
    out = tmp_path / "refit.safetensors"
    src_sha = sha256_file(tiny_weights)
    assert main([str(tiny_weights), "--data", str(data), "--out", str(out), "--fp32"]) == 0
    assert sha256_file(tiny_weights) == src_sha  # the input is never touched
    printed = capsys.readouterr().out
    assert "people: 3 images" in printed and "sha256 " + sha256_file(out) in printed
    before, _ = load_weights(str(tiny_weights))
    after, spec = load_weights(str(out))
    old_head = " ".join(f"{v:.4f}" for v in before.outconv.weight.view(6).tolist())
    new_head = " ".join(f"{v:.4f}" for v in after.outconv.weight.view(6).tolist())
    assert (
        old_head != new_head and f"bias): {old_head}" in printed and f"now: {new_head}" in printed
    )
    assert spec.input_size == 32 and spec.name == "refit" and spec.description == "d"
    a, b = before.state_dict(), after.state_dict()
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert sorted(changed) == ["outconv.bias", "outconv.weight"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_refuses_bad_input_in_one_sentence(tmp_path: Path, tiny_weights: Path) -> None:
    data = _dataset(tmp_path / "people")
    out = tmp_path / "refit.safetensors"
    out.write_bytes(b"older")
    cases = [
        ([str(tiny_weights), "--data", str(data), "--out", str(out)], "--overwrite"),
        (
            [str(tiny_weights), "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "x")],
            "nope",
        ),
        (
            [str(tmp_path / "none.safetensors"), "--data", str(data), "--out", str(tmp_path / "y")],
            "none",
        ),
        (
            [
                str(tiny_weights),
                "--data",
                str(data),
                "--out",
                str(tmp_path / "z"),
                "--iou-weight",
                "-1",
            ],
            "--iou-weight",
        ),
    ]
    for argv, word in cases:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        message = str(exc.value.code)
        assert message.startswith("head: error: ") and word in message
        assert "\n" not in message
    assert out.read_bytes() == b"older"
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_a_mask_of_another_size_is_named(tmp_path: Path, tiny_weights: Path) -> None:
    data = _dataset(tmp_path / "people", n=2)
    cv2.imwrite(str(data / "masks" / "1.png"), np.zeros((20, 24), np.uint8))
    with pytest.raises(SystemExit) as exc:
        main([str(tiny_weights), "--data", str(data), "--out", str(tmp_path / "o.safetensors")])
    assert str(exc.value.code) == "head: error: mask 1.png is (24, 20), image is (48, 40)."
    assert not (tmp_path / "o.safetensors").exists()
