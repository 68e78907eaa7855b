"""``twins run``: the whole recipe without Airflow (exit 3 when the regression check fails)."""

from __future__ import annotations

import argparse

from ..run import run_recipe
from ..store import new_run_id
from .arguments import add_recipe_arguments, recipe_from_args

EXIT_REGRESSION = 3  # the run was recorded, and the regression check failed


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="the whole recipe without Airflow, ending with the perf table",
        description="preprocess -> pth2onnx -> per batch size compile, infer, perf -> postprocess -> results DB "
        "-> report -> regression check of each batch size against the accepted history of the same setup (exit "
        "code 3 on a regression)",
    )
    add_recipe_arguments(p)
    p.add_argument("--work-dir", "--work_dir", dest="work_dir", default="twins_work", help="cache and run outputs")
    p.add_argument(
        "--run-name", default=None, help="run id in the results DB, unique (default: cli__<UTC time>_<random>)"
    )
    p.add_argument(
        "--results-url", default=None, help="SQLAlchemy URL (default $TWINS_RESULTS_URL or ./twins_results.db)"
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    config = recipe_from_args(args)
    run_key = args.run_name or new_run_id("cli")
    result = run_recipe(config, work_dir=args.work_dir, run_key=run_key, results_url=args.results_url)
    if result["regression"] == "failed":
        return EXIT_REGRESSION
    return 0 if result["ok"] else 1  # some batch sizes failed: recorded as a partial run, said above
