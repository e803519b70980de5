"""Where the shipped weights and demo assets are, in a checkout and in an installed wheel.

In a source checkout (and an editable install) they are the repository's
top-level ``weights/`` and ``assets/``; a wheel carries the same files as
``vidmat/_bundled/weights`` and ``vidmat/_bundled/assets``.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _bundled(name: str) -> Path:
    checkout = _PACKAGE.parent / name
    if (_PACKAGE.parent / "pyproject.toml").is_file() and checkout.is_dir():
        return checkout
    return _PACKAGE / "_bundled" / name


def weights_dir() -> Path:
    return _bundled("weights")


def assets_dir() -> Path:
    return _bundled("assets")
