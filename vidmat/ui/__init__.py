"""PyQt6 window and worker bridge: the only package that imports Qt."""
