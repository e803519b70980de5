"""PyQt6 window and worker bridge: the only package that imports Qt.

Importing this package does not import Qt; only the modules inside it do, so the
CLI and headless runs work on machines without a display or Qt libraries.
"""

from __future__ import annotations


def qt_version() -> str | None:
    """The Qt version PyQt6 was built against, or None when PyQt6 cannot be imported."""
    try:
        from PyQt6.QtCore import QT_VERSION_STR
    except ImportError:
        return None
    return QT_VERSION_STR
