"""Data and compute that never touch Qt or files: engine, smoothing, refinement, compositing."""
