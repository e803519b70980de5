"""Benchmarks behind ``vidmat bench``: each module has add_parser(subparsers) and run(args)."""
