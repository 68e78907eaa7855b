"""The ``twins`` command: one subcommand per recipe step, flags mirroring the recipe's scripts.

The top layer of ``twins_tasks``: only this package imports argparse. Each module here registers one step's
subcommand(s) and turns flags into calls of the library; errors are mapped to exit codes once, in :func:`main`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__
from ..errors import InputError, TwinsError

# Exit codes: 1 = a step failed (tool, missing outputs), 2 = bad input (as argparse's usage errors), 3 = `twins run`
# recorded a regression. Each error class carries its own (TwinsError.exit_status); the DAG's preprocess task
# maps 2 to a failure without retries.
EXIT_INPUT = InputError.exit_status

# Each module registers its own subcommand(s): twins_tasks.cli.<name>.register(subparsers).
STEP_MODULES = (
    "sample", "preprocess", "export", "inference", "perf", "postprocess", "reference", "run", "results", "clean",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twins", description="Twins-SVT-L inference validation, step by step.")
    parser.add_argument("--version", action="version", version=f"twins {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in STEP_MODULES:
        importlib.import_module(f"twins_tasks.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except TwinsError as exc:
        print(f"twins {args.command}: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_status
    except KeyboardInterrupt:
        print(f"twins {args.command}: interrupted", file=sys.stderr)
        return 130
