"""``twins results``: the recorded runs, people's marks on them (``--accept``/``--exclude``), and ``--upgrade`` of
the results database's schema."""

from __future__ import annotations

import argparse
import json

from ..errors import InputError
from ..history import ACCEPT, EXCLUDE, mark_run, mark_text, run_marks
from ..store import DEFAULT_SQLITE_NAME, URL_ENV, ResultsStore, default_url, head_revision, sqlite_file


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "results",
        help="list recorded validation runs from the results database; --upgrade migrates its schema",
        description="List recorded runs. Opening a database whose schema is older than this twins_tasks "
        "upgrades it in place (Alembic, rows kept); --upgrade does only that and says what it did.",
    )
    p.add_argument("--url", default=None, help=f"SQLAlchemy URL (default ${URL_ENV} or ./{DEFAULT_SQLITE_NAME})")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--run", dest="run_key", default=None, help="show one run in full (JSON)")
    p.add_argument(
        "--upgrade", action="store_true", help="upgrade the database schema to this version's (Alembic) and exit"
    )
    marks = p.add_argument_group("curating the regression check's history (who, when and why are recorded)")
    marks.add_argument(
        "--accept", metavar="RUN", default=None,
        help="accept RUN as the new normal (a toolchain or hardware change): each batch size's reference window "
        "starts again from it",
    )  # fmt: skip
    marks.add_argument(
        "--exclude", metavar="RUN", default=None,
        help="take RUN out of every reference (e.g. a night with a noisy neighbour)",
    )  # fmt: skip
    marks.add_argument("--why", default=None, help="why (required with --accept and --exclude)")
    marks.add_argument("--by", default=None, help="who marks it (default: the OS user)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    url = args.url or default_url()
    path = sqlite_file(url)
    # Opening a SQLite URL creates the file: for `twins run` that is wanted, here a typo would list (or
    # "upgrade") an empty database that nothing will ever use.
    if path is not None and not path.exists():
        raise InputError(f"no results database at {path}; check --url, or run `twins run` first")
    store = ResultsStore(url)
    if args.upgrade:
        if store.schema_change is None:
            print(f"results database {store.describe()}: schema already at revision {head_revision()}")
        else:
            before, after = store.schema_change
            was = "none (new database)" if before is None else before
            print(f"results database {store.describe()}: schema upgraded from revision {was} to {after}")
        return 0
    if args.accept or args.exclude:
        if args.accept and args.exclude:
            raise InputError("give --accept RUN or --exclude RUN, not both")
        action, run_key = (ACCEPT, args.accept) if args.accept else (EXCLUDE, args.exclude)
        if not (args.why or "").strip():
            raise InputError(f"say why with --why TEXT: the next person reading the history of run {run_key} needs it")
        mark = mark_run(store, run_key, action, args.why, by=args.by)
        print(f"run {run_key}: {mark_text(mark)}")
        return 0
    if args.run_key:
        run = store.get_run(args.run_key)
        if run is None:
            raise InputError(f"no run {args.run_key!r} in {store.describe()}")
        run["marks"] = run_marks(store, [args.run_key]).get(args.run_key, [])
        print(json.dumps(run, indent=2, default=str))
        return 0
    print(f"results database: {store.describe()}")
    runs = store.list_runs(args.limit)
    marked = run_marks(store, [run["run_key"] for run in runs])
    for run in runs:
        ok = [b for b in run["batches"] if b.get("status") != "failed"]
        best = max(ok, key=lambda b: b["throughput"] or 0, default=None)
        best_text = (
            f"best bs {best['batch_size']} {best['throughput']:.1f} img/s" if best and best["throughput"] else "-"
        )
        top1 = next((b["top1"] for b in ok if b["top1"] is not None), None)
        data = "  GENERATED DATA" if (run.get("config") or {}).get("synthetic_data") else ""
        failed = run.get("failed_batch_sizes") or {}
        failed_text = f"  failed bs {','.join(str(bs) for bs in failed)}" if failed else ""
        skipped_text = f"  {run['num_skipped']} image(s) skipped" if run.get("num_skipped") else ""
        print(
            f"{run['run_key']}  {run['backend']}  {run['weights']}{data}  {run['status']}"
            f"/{run['regression_status'] or '-'}  top-1 {'-' if top1 is None else f'{top1:.1f}%'}  {best_text}"
            f"{failed_text}{skipped_text}"
        )
        for mark in marked.get(run["run_key"], []):
            print(f"    {mark_text(mark)}")
    return 0
