"""``twins clean``: apply the retention policy to a work dir (what the end of every run does), or show it."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..retention import apply_retention
from ..store import DEFAULT_SQLITE_NAME, URL_ENV, ResultsStore, default_url, sqlite_file
from .arguments import add_retention_arguments, retention_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "clean",
        help="remove old runs' per-image outputs, folders of runs that died before record, and least recently "
        "used cache entries over the budget",
        description="Apply the retention policy to a work dir, as the end of every `twins run` and DAG run does: "
        "the results database and reports are kept; a run that may still be going is never touched. Prints "
        "what is removed and the space left on the work dir's filesystem.",
    )
    p.add_argument(
        "--work-dir", "--work_dir", dest="work_dir", default="twins_work",
        help="the work dir to clean (twins run's --work-dir; the DAG's TWINS_WORK_DIR)",
    )  # fmt: skip
    p.add_argument(
        "--results-url",
        default=None,
        help=f"the results database its runs are recorded in: SQLAlchemy URL (default ${URL_ENV} or "
        f"./{DEFAULT_SQLITE_NAME})",
    )
    p.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    add_retention_arguments(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    policy = retention_from_args(args)
    work = Path(args.work_dir)
    if not work.is_dir():
        raise InputError(f"work dir {work} does not exist: pass --work-dir (twins run's, or the DAG's TWINS_WORK_DIR)")
    url = args.results_url or default_url()
    path = sqlite_file(url)
    # A typo must not open a new, empty database: every unrecorded-looking run folder would count as dead.
    if path is not None and not path.exists():
        raise InputError(
            f"no results database at {path}: pass the one this work dir's runs are recorded in (--results-url)"
        )
    report = apply_retention(work, ResultsStore(url), policy, dry_run=args.dry_run)
    print(report.text())
    return 0
