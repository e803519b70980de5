"""Test-wide settings: every test runs on a CPU without a display, camera or shipped weights."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_shared = pytest.mark.skip(reason=f"needs {SHARED_DATA}")
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_cuda)
        if "shared" in item.keywords and not SHARED_DATA.is_dir():
            item.add_marker(skip_shared)


@pytest.fixture(autouse=True, scope="session")
def _few_threads() -> None:
    """Tests run beside other work on 2 cores; oversubscribing threads only slows them."""
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def shared_data() -> Path:
    return SHARED_DATA


@pytest.fixture
def make_people() -> Callable[..., Path]:
    """A maker of small training roots: ``make_people(root, n=3)`` writes ``n`` 48x40
    images of a bright block (the person) on dark noise to root/images, masks to
    root/masks (0 / 255), and returns root."""
    import cv2
    import numpy as np

    def make(root: Path, n: int = 3) -> Path:
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

    return make


@pytest.fixture
def tiny_weights(tmp_path: Path) -> Path:
    """A vidmat weights file of a random-weight u2netp (seed 0) that runs at 32 px:
    fast enough for tests that drive the engine or the training tools end to end."""
    import torch

    from vidmat.model.spec import WeightsSpec
    from vidmat.model.u2net import build_model
    from vidmat.model.weights import save_weights

    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    spec = WeightsSpec(
        name="tiny", arch="u2netp", input_size=32, scale="255", description="d", file=path.name
    )
    save_weights(build_model("u2netp"), spec, path)
    return path
