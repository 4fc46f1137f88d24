"""The ``irtpeer`` command line: a thin layer over the library.

Each sub-command lives in its own module with a ``register(subparsers)`` function that adds its
parser and sets ``func`` to a callable taking the parsed arguments and returning an exit code.
Errors the user can cause are :class:`irtpeer.IrtpeerError`; they are printed without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .._errors import IrtpeerError

# Sub-command modules, in the order their commands are listed in ``irtpeer --help``.
COMMAND_MODULES = [
    "irtpeer.cli.score",
    "irtpeer.cli.report",
    "irtpeer.cli.bias",
    "irtpeer.cli.equate",
    "irtpeer.cli.compare",
    "irtpeer.cli.judges",
    "irtpeer.cli.simulate",
    "irtpeer.cli.harness",
    "irtpeer.cli.dataset",
]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="irtpeer",
        description="Calibrate LLM-judge ratings with a Many-Facet Rasch Model.",
    )
    parser.add_argument("--version", action="version", version=f"irtpeer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _as_program() -> None:
    """Settings for a process that ends with this command (not for callers in Python): output
    that survives its reader going away (:mod:`._streams`), and garbage-collector settings: collections rarer while torch, pandas and scipy build their ~250,000 long-lived
    objects (15 M-rating `irtpeer score`: 0.39 -> 0.14 s of collections), and those objects
    frozen at exit instead of traversed again while the interpreter tears down (~0.4 s)."""
    import atexit
    import gc

    from ._streams import keep_working_when_the_reader_goes

    gc.set_threshold(100_000, 50, 100)
    atexit.register(gc.freeze)
    keep_working_when_the_reader_goes()  # `... | head` must not cut a fit short


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the irtpeer program itself (console script, python -m irtpeer)
        _as_program()
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except IrtpeerError as exc:
        print(f"irtpeer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("irtpeer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (e.g. `irtpeer score ... | head`): not an error of ours
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def program() -> None:
    """The irtpeer program, as the console script and ``python -m irtpeer`` run it: :func:`main`,
    then the exit without the interpreter's teardown (:func:`._common.exit_now`)."""
    from ._common import exit_now

    exit_now(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
