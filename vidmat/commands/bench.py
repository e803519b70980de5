"""``vidmat bench TARGET``: speed and memory measurements that print a table and write JSON."""

from __future__ import annotations

import argparse
import importlib

#: Benchmark modules under vidmat/benchmarks/, each with add_parser(sub) and run(args).
TARGETS: tuple[str, ...] = ("model", "postprocess", "convert", "live", "train")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure speed: model, postprocess, convert, live, train",
        description="Benchmarks print a table and, with --json PATH, write their results as JSON "
        "(an existing file only with --overwrite). Absolute times only mean something on the "
        "machine they were taken on; compare ratios measured side by side in one run.",
    )
    targets = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name in TARGETS:
        try:
            module = importlib.import_module(f"vidmat.benchmarks.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"vidmat.benchmarks.{name}":
                continue
            raise
        module.add_parser(targets)
        # Here, once, so that every target has it: an earlier run's JSON (perhaps the
        # baseline of a comparison) is replaced only on request, as `vidmat eval --json`.
        targets.choices[name].add_argument(
            "--overwrite", action="store_true", help="replace an existing --json file"
        )
