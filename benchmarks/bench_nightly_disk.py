"""Nightly disk benchmark: 30 nightly runs in a row through one work dir; its disk and files must level off.

Each night is ``twins run --backend ascend`` (twins_tasks.run.run_recipe, the library path of the CLI and the
DAG's steps) on the Ascend contract doubles (tests/doubles, no delay, one fake chip) over a small generated set
(``--images``, default 200), the recipe's six batch sizes, perf 1 loop x 1 round; ``twins run`` applies retention
at its end. Every ``--new-dataset-every`` nights the dataset is replaced by a new one (another seed: new bins),
and the cache budget (``--cache-budget-gib``) holds the ONNX model and about two datasets' bins, so least
recently used bins are evicted. Nights here are seconds apart, not 24 h: the grace period (``--grace-hours``)
is shortened to match, else every cache entry would count as in use by a run still going.

After each night: the work dir's disk and files, the caches', the run folders', and how many run folders still
hold outputs. Goals (issue 19): the caches stay within their budget every night; at most ``keep_runs`` run
folders hold outputs; over the last 10 nights the work dir's disk varies < 5% and stays under budget + the
kept runs' outputs + the reports (kept for ever, by design). Exits 1 when a goal is missed.

    nice -n 19 .venv/bin/python benchmarks/bench_nightly_disk.py [--nights 30] [--images 200]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

from bench_scale import MIB, recipe, tree, use_doubles  # noqa: E402

from twins_tasks.constants import DEFAULT_BATCH_SIZES  # noqa: E402
from twins_tasks.retention import CACHE_DIR, RESULT_DIR, RUNS_DIR  # noqa: E402
from twins_tasks.run import run_recipe  # noqa: E402
from twins_tasks.sample import GENERATED_NOTE, make_sample  # noqa: E402
from twins_tasks.types import RetentionPolicy, Thresholds  # noqa: E402

LAST = 10  # nights over which the disk must have levelled off
GOAL_SPREAD = 0.05


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--images", type=int, default=200, help="generated images per dataset (10 classes)")
    parser.add_argument("--new-dataset-every", type=int, default=5, help="nights between dataset changes")
    parser.add_argument("--keep-runs", type=int, default=RetentionPolicy.keep_runs)
    parser.add_argument(
        "--cache-budget-gib", type=float, default=0.6, help="small, so that eviction is exercised (default 0.6)"
    )
    parser.add_argument("--grace-hours", type=float, default=0.001, help="nights are seconds apart here (3.6 s)")
    parser.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    policy = RetentionPolicy(
        keep_runs=args.keep_runs, grace_hours=args.grace_hours, cache_budget_gib=args.cache_budget_gib
    )
    budget = int(args.cache_budget_gib * 2**30)

    base = Path(tempfile.mkdtemp(prefix="bench-nightly-disk-"))
    work = base / "work"
    use_doubles(base / "leases")
    url = f"sqlite:///{base / 'results.db'}"
    print(
        f"{args.nights} nights of {args.images} images, batch sizes {list(batch_sizes)}, Ascend doubles; new dataset "
        f"every {args.new_dataset_every} nights; keep_runs {args.keep_runs}, cache budget {args.cache_budget_gib} "
        f"GiB, grace {args.grace_hours} h; {GENERATED_NOTE}",
        flush=True,
    )
    print()
    print("| night | s | work dir MiB | files | cache MiB | runs/ MiB | runs/ files | folders with outputs | status |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    nights: list[dict[str, float]] = []
    outputs_per_run = 0
    data = base / "val"
    try:
        for night in range(1, args.nights + 1):
            if (night - 1) % args.new_dataset_every == 0:
                shutil.rmtree(data, ignore_errors=True)
                make_sample(data, 10, -(-args.images // 10), seed=night)
            config = dataclasses.replace(
                recipe(data, batch_sizes, policy), thresholds=Thresholds(max_throughput_drop_pct=1000.0)
            )
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # the report and retention text: not this table's
                outcome = run_recipe(config, work_dir=work, run_key=f"night-{night:02d}", results_url=url)
            seconds = time.perf_counter() - start
            runs = work / RUNS_DIR
            with_outputs = [p for p in runs.iterdir() if (p / RESULT_DIR).exists()]
            if night == 1:
                outputs_per_run = tree(with_outputs[0] / RESULT_DIR)[0]
            total, files = tree(work)
            cache = tree(work / CACHE_DIR)[0]
            run_bytes, run_files = tree(runs)
            row = {"total": total, "files": files, "cache": cache, "runs": run_bytes, "kept": len(with_outputs)}
            nights.append(row)
            status = "ok" if outcome["ok"] else f"regression {outcome['regression']}"
            print(
                f"| {night} | {seconds:.1f} | {total / MIB:,.1f} | {files:,} | {cache / MIB:,.1f} | "
                f"{run_bytes / MIB:,.1f} | {run_files:,} | {len(with_outputs)} | {status} |",
                flush=True,
            )
        reports = sum(tree(p)[0] - tree(p / RESULT_DIR)[0] for p in (work / RUNS_DIR).iterdir())
    finally:
        shutil.rmtree(base, ignore_errors=True)

    last = nights[-LAST:]
    low, high = min(n["total"] for n in last), max(n["total"] for n in last)
    spread = high / low - 1
    bound = budget + args.keep_runs * outputs_per_run + reports
    over_budget = [i + 1 for i, n in enumerate(nights) if n["cache"] > budget]
    too_many = [i + 1 for i, n in enumerate(nights) if n["kept"] > args.keep_runs]
    checks = [
        (f"caches within the {budget / MIB:,.0f} MiB budget every night", not over_budget, f"over on {over_budget}"),
        (f"at most {args.keep_runs} run folders with outputs", not too_many, f"more on {too_many}"),
        (f"last {LAST} nights' disk spread {spread:.1%} < {GOAL_SPREAD:.0%}", spread < GOAL_SPREAD, ""),
        (
            f"last {LAST} nights under budget + {args.keep_runs} x {outputs_per_run / MIB:.1f} MiB outputs + "
            f"{reports / MIB:.2f} MiB reports = {bound / MIB:,.1f} MiB (max {high / MIB:,.1f})",
            high <= bound,
            "",
        ),
    ]
    print()
    for text, ok, why in checks:
        print(f"{'met' if ok else 'MISSED'}: {text}{'' if ok or not why else ' (' + why + ')'}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
