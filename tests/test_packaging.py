"""The wheel carries every subpackage and the shipped weights/assets."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "vidmat").rglob("__init__.py")
    }
    assert found <= listed, f"add to pyproject's packages: {sorted(found - listed)}"
    assert config["package-dir"]["vidmat._bundled.weights"] == "weights"
    assert config["package-dir"]["vidmat._bundled.assets"] == "assets"


def test_resources_point_at_the_checkout_folders() -> None:
    from vidmat.resources import assets_dir, weights_dir

    assert weights_dir() == ROOT / "weights"
    assert assets_dir() == ROOT / "assets"


def test_compat_script_pins_each_dependency_at_its_floor() -> None:
    """`.ci/compat lowest` tests what pyproject promises: the floors, not newer releases."""
    import re

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = dict(re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", d).groups() for d in deps)
    script = (ROOT / ".ci" / "compat").read_text()
    lowest = re.search(r'^LOWEST="([^"]+)"', script, re.M).group(1).split()
    pins = dict(p.split("==") for p in lowest)
    assert {n.lower() for n in pins} == {n.lower() for n in floors}
    for name, floor in floors.items():
        pin = next(v for n, v in pins.items() if n.lower() == name.lower())
        assert pin == floor or pin.startswith(floor + "."), (name, floor, pin)
