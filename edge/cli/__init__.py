"""The ``hsi-edge`` command line: one module per subcommand.

Each subcommand module in :data:`SUBCOMMANDS` defines ``register(subparsers)`` (adds its
parser and sets ``func``) and a handler ``run(args) -> int``.  :func:`main` prints any
:class:`~edge.errors.HsiEdgeError` as one line on stderr and returns non-zero; ``--debug``
shows the traceback instead.  Data goes to stdout, logs to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from typing import Sequence

from edge import __version__
from edge.errors import HsiEdgeError

__all__ = ["main", "SUBCOMMANDS", "one_line"]

#: Subcommand modules under ``edge.cli`` (imported lazily; a module whose optional
#: dependency is missing still registers and reports that when run).
SUBCOMMANDS: tuple[str, ...] = (
    "run", "simulate", "calibrate", "bench", "kernels", "engine", "model", "sim_devices",
    "train_demo", "transfer_study", "latency", "deploy", "selftest", "corpus", "serve",
)

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hsi-edge",
        description="Edge inference for surgical spectral cameras.")
    parser.add_argument("--version", action="version", version=f"hsi-edge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="info-level logs on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"edge.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"edge.cli.{name}":
                continue  # subcommand not built (yet)
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hsi-edge`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(_global_flags_first(sys.argv[1:] if argv is None else list(argv)))
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    # SIGTERM behaves like Ctrl-C so long runs shut down cleanly and still write results.
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        return int(args.func(args) or 0)
    except HsiEdgeError as exc:
        if args.debug:
            raise
        print(f"hsi-edge {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"hsi-edge {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        # A frame (rows x cols x bands) or a reference average larger than this machine, or
        # a process memory limit, allows: one line, not numpy's traceback.
        if args.debug:
            raise
        print(f"hsi-edge {args.command}: error: out of memory: the frames (camera.rows x "
              f"camera.cols x bands) or the frames averaged do not fit in this machine's "
              f"memory; use smaller frames or fewer frames", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # stdout closed early (e.g. `hsi-edge kernels info | head`): not an error of ours
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except OSError as exc:
        # The environment, not the input: disk full, read-only file system, a folder that
        # vanished.  One line naming the file; --debug shows where it happened.
        if args.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"hsi-edge {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR


#: Options of the top-level parser that may also be given after the subcommand
#: (``hsi-edge run --debug``): they are moved in front of it before parsing.
GLOBAL_FLAGS = ("--debug", "-v", "--verbose")


def _global_flags_first(argv: list[str]) -> list[str]:
    """``argv`` with :data:`GLOBAL_FLAGS` moved before the subcommand (not after ``--``)."""
    try:
        end = argv.index("--")
    except ValueError:
        end = len(argv)
    flags = [a for a in argv[:end] if a in GLOBAL_FLAGS]
    rest = [a for a in argv[:end] if a not in GLOBAL_FLAGS]
    return flags + rest + argv[end:]


def one_line(message: str) -> str:
    """``message`` on one line (multi-line texts, e.g. from YAML parsers, joined by '; ')."""
    lines = [part.strip() for part in message.splitlines() if part.strip()]
    return "; ".join(lines)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
