"""The layering rules hold: ui -> pipelines -> core/io -> model, Qt only in ui."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "vidmat"

# What each layer may not import (its own layer and lower ones are fine; io may use
# core, core never uses io).
FORBIDDEN = {
    "model": (
        "vidmat.core",
        "vidmat.io",
        "vidmat.pipelines",
        "vidmat.ui",
        "vidmat.commands",
        "vidmat.train",
    ),
    "core": ("vidmat.io", "vidmat.pipelines", "vidmat.ui", "vidmat.commands", "vidmat.train"),
    "io": ("vidmat.pipelines", "vidmat.ui", "vidmat.commands", "vidmat.train"),
    "pipelines": ("vidmat.ui", "vidmat.commands"),
    "train": ("vidmat.ui", "vidmat.pipelines", "vidmat.commands"),
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _files() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_does_not_import_upwards(layer: str) -> None:
    bad = [
        f"{path.relative_to(PKG.parent)} imports {name}"
        for path in (PKG / layer).rglob("*.py")
        for name in _imports(path)
        if name.startswith(FORBIDDEN[layer])
    ]
    assert not bad, bad


def test_qt_is_imported_only_in_ui() -> None:
    bad = [
        str(path.relative_to(PKG.parent))
        for path in _files()
        if "ui" not in path.relative_to(PKG).parts[:1]
        and any(n.split(".")[0] in ("PyQt6", "PySide6") for n in _imports(path))
    ]
    assert not bad, bad
