"""Wiring of io and core into the user jobs: offline convert, live pipeline."""
