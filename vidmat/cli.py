"""The ``vidmat`` command: one entry point, one module per subcommand.

Each module named in :data:`COMMANDS` lives in ``vidmat/commands/`` and exposes
``add_parser(subparsers)`` (which registers its sub-parser and sets
``func=run`` as the default) and ``run(args) -> int``. A command line that names
a command imports that command's module alone. The command modules import torch,
PyAV, OpenCV and Qt where a command runs, not at their top, and read the defaults and
limits their ``--help`` states from torch-free modules (:mod:`vidmat.model.spec`,
:mod:`vidmat.core.settings`): every ``--help`` prints at once (0.1 s instead of 1.3 s
and 280 MB for torch's import on a 2-core CPU), and ``vidmat train`` needs neither
PyAV nor Qt (a GPU machine for training may have neither).
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import errno
import importlib
import os
import signal
import sys
from collections.abc import Sequence

from vidmat import __version__
from vidmat.allocator import keep_freed_memory
from vidmat.errors import VidmatError
from vidmat.signals import ignore_stop_signals, interrupt_once, stopped

#: Subcommand modules in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = (
    "demo",
    "convert",
    "live",
    "train",
    "eval",
    "bench",
    "info",
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of command ``only`` alone."""
    parser = argparse.ArgumentParser(
        prog="vidmat",
        description=(
            "Separate people from their background in video: a live virtual background "
            "from a webcam, offline conversion of video files to greenscreen / alpha, "
            "and recording of the composited output. Runs U2-Net† (u2netp) on an NVIDIA "
            "GPU under fp16, or more slowly on the CPU."
        ),
        epilog="Run 'vidmat COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"vidmat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in (only,) if only in COMMANDS else COMMANDS:
        try:
            module = importlib.import_module(f"vidmat.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"vidmat.commands.{name}":
                continue  # command not built yet in this checkout
            raise
        module.add_parser(sub)
    return parser


#: Name of the error handler :func:`show_undecodable_bytes` installs.
BYTES_HANDLER = "vidmat.bytes"


def _bytes_as_escapes(exc: UnicodeError) -> tuple[str, int]:
    """A file name's bytes that are not UTF-8 (Python holds them as lone surrogates,
    U+DC80..U+DCFF) as ``\\xe9``: the byte on disk, not Python's ``\\udce9``."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    bad = exc.object[exc.start : exc.end]
    shown = "".join(
        f"\\x{ord(c) - 0xDC00:02x}"
        if 0xDC80 <= ord(c) <= 0xDCFF
        else c.encode("ascii", "backslashreplace").decode()
        for c in bad
    )
    return shown, exc.end


def show_undecodable_bytes() -> None:
    """Name a file whose name is not UTF-8 (Latin-1 from an old camera or archive) by its
    bytes. On stderr, where messages go, as ``caf\\xe9.mp4``: Python printed
    ``caf\\udce9.mp4``, a name no shell or file manager shows. On stdout, where a script
    may read a path (``vidmat demo``'s result), as the bytes themselves, as under a C
    locale; with a UTF-8 locale's strict stdout such a name was a traceback. Process-wide,
    for the command's run; run on every ``main`` call (tests replace the streams)."""
    try:
        codecs.lookup_error(BYTES_HANDLER)
    except LookupError:
        codecs.register_error(BYTES_HANDLER, _bytes_as_escapes)
    out_errors = "surrogateescape" if getattr(sys.stdout, "errors", None) == "strict" else None
    for stream, errors in ((sys.stdout, out_errors), (sys.stderr, BYTES_HANDLER)):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and errors is not None:
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors=errors)


#: The packages vidmat's commands import, by module: (name to say, pip package). A broken
#: or missing one (a failed upgrade, a wheel for another Python) gave ImportError's
#: traceback from deep inside a command.
DEPENDENCIES = {
    "av": ("PyAV", "av"),
    "cv2": ("OpenCV", "opencv-python"),
    "numpy": ("NumPy", "numpy"),
    "torch": ("PyTorch", "torch"),
    "tqdm": ("tqdm", "tqdm"),
    "safetensors": ("safetensors", "safetensors"),
}


def main(argv: Sequence[str] | None = None) -> int:
    keep_freed_memory()
    show_undecodable_bytes()
    # The program itself (argv from the process), not a caller in Python such as a test,
    # whose own Ctrl-C must keep working after a simulated one.
    whole_process = argv is None
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        # imports torch & co.: Ctrl-C can land here too
        parser = build_parser(argv[0] if argv else None)
        args, extras = parser.parse_known_args(argv)
        if extras:
            _innermost_parser(parser, args).error(f"unrecognized arguments: {' '.join(extras)}")
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2  # a usage error, as argparse's own; 1 is an unexpected error
        # Every command stops on kill (SIGTERM) or a hang-up as on Ctrl-C: eval, bench
        # and info ended at once with -15 and no word. Commands with work to save on a
        # stop set their own handlers inside (train, the live window).
        with interrupt_once():
            return int(args.func(args) or 0)
    except VidmatError as exc:
        print(f"vidmat: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C, or Terminated: kill and a hang-up
        if whole_process:
            ignore_stop_signals()
        return stopped("vidmat", exc)
    except ImportError as exc:
        what = DEPENDENCIES.get((exc.name or "").split(".")[0])
        if what is None:
            raise  # not an install's fault: a bug, with its traceback
        print(
            f"vidmat: error: {what[0]} cannot be imported ({str(exc).rstrip('.')}); "
            f"reinstall it: python -m pip install --force-reinstall --no-deps {what[1]}",
            file=sys.stderr,
        )
        return 2
    except BrokenPipeError:
        # The reader of our output went away (`vidmat info | head -3`): stop quietly, as
        # other command-line tools do, instead of a traceback about the pipe.
        _discard_stdout()
        return 128 + getattr(signal, "SIGPIPE", 13)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT) and exc.filename is None:
            # A write failed on a full disk: what was printed (`vidmat info > /dev/full`)
            # or a file a command writes along (a training log).
            try:
                sys.stdout.flush()
            except OSError:
                _discard_stdout()  # else Python's flush at exit fails again, with a trace
            print(f"vidmat: error: writing failed ({exc.strerror}).", file=sys.stderr)
            return 2
        if exc.errno != errno.ENAMETOOLONG:
            raise  # a bug, with its traceback
        # A path given on the command line that no file system takes (`-o` of 300 bytes):
        # the first look at it (is it a folder?) raised, before any check could say so.
        name = os.fsdecode(exc.filename or "")
        name = name if len(name) <= 60 else f"{name[:28]}...{name[-28:]}"
        print(f"vidmat: error: the path {name} is too long for the file system.", file=sys.stderr)
        return 2


def _innermost_parser(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The parser of the (sub)command the command line chose, e.g. ``vidmat bench live``'s.

    argparse leaves options a subcommand does not know to the top-level parser, whose
    error then shows ``vidmat``'s usage; the chosen command's usage says what it takes.
    """
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = getattr(args, subs[0].dest, None) if subs else None
        if chosen is None or chosen not in subs[0].choices:
            return parser
        parser = subs[0].choices[chosen]


def _discard_stdout() -> None:
    """Point stdout at the null device, so Python's flush at exit raises nothing more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # stdout is not a real file (a test's capture): nothing will flush to a pipe


if __name__ == "__main__":
    sys.exit(main())
