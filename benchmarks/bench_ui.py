"""Results UI speed: the runs and history pages (and their JSON) must answer in <= 300 ms of server time with
1,000 runs x 6 batch sizes in the results database.

Fills a temporary SQLite results database through the store's ORM models (1,000 nightly runs of one
configuration, the worst case for the history page, batch sizes 1, 4, 8, 16, 32, 64; every 37th run regressed),
then requests each page from the plugin's FastAPI app in-process (the Airflow login check replaced by a fixed
user: a JWT check costs well under a millisecond). Server time is the app's own ``Server-Timing`` header
(routing, queries, templates); the median of ``--repeat`` requests after two warm-ups must be <= the target.

    .venv/bin/python benchmarks/bench_ui.py [--runs 1000] [--repeat 15] [--target-ms 300] [--url EMPTY_DB_URL]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from sqlalchemy.orm import Session  # noqa: E402

from twins_tasks.store import BatchResult, ResultsStore, ValidationRun  # noqa: E402

BATCH_SIZES = (1, 4, 8, 16, 32, 64)
CONFIG_KEY = "bench0config0001"


def fill(store: ResultsStore, runs: int) -> None:
    """``runs`` nightly runs of one configuration, newest last, with plausible numbers."""
    rng = random.Random(0)
    start = dt.datetime(2024, 1, 1, 2, tzinfo=dt.UTC)
    with Session(store.engine) as session, session.begin():
        for i in range(runs):
            when = start + dt.timedelta(days=i)
            regressed = i % 37 == 36
            run = ValidationRun(
                run_key=f"scheduled__{when:%Y-%m-%dT%H:%M:%S}+00:00",
                source="airflow:twins_svt_l_validation",
                config_key=CONFIG_KEY,
                config={"synthetic_data": False, "batch_sizes": list(BATCH_SIZES), "backend": "ascend"},
                model_name="twins_svt_large",
                weights="checkpoint /ckpt/alt_gvt_large.pth sha256=" + "c" * 64,
                random_init=False,
                checkpoint_sha256="c" * 64,
                onnx_sha256="a" * 64,
                opset=11,
                backend="ascend",
                device="npu:0",
                soc_version="Ascend310P3",
                dataset_path="/data/imagenet/val",
                dataset_fingerprint="f" * 64,
                num_images=50000,
                versions={"cann": "8.0.RC1", "torch": "2.14.1"},
                status="success",
                regression_status="failed" if regressed else ("first" if i == 0 else "passed"),
                started_at=when,
                finished_at=when + dt.timedelta(hours=3),
                recorded_at=when + dt.timedelta(hours=3),
            )
            scale = 0.7 if regressed else 1.0
            for bs in BATCH_SIZES:
                throughput = (130 + 10 * BATCH_SIZES.index(bs)) * scale * rng.uniform(0.97, 1.03)
                run.batches.append(
                    BatchResult(
                        batch_size=bs,
                        throughput=throughput,
                        latency_min_ms=1000 * bs / throughput * 0.95,
                        latency_median_ms=1000 * bs / throughput,
                        latency_p99_ms=1000 * bs / throughput * 1.1,
                        top1=81.2 + rng.uniform(-0.05, 0.05),
                        top5=95.6,
                        num_images=50000,
                        num_missing=0,
                        agreement_top1=99.9,
                        agreement_max_abs_diff=2e-3,
                        compile_seconds=120.0,
                    )
                )
            session.add(run)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=15, help="timed requests per page (after two warm-ups)")
    parser.add_argument("--target-ms", type=float, default=300.0)
    parser.add_argument(
        "--url",
        default=None,
        help="an EMPTY results database to fill (e.g. PostgreSQL); default a temporary SQLite file",
    )
    args = parser.parse_args()

    import logging

    from fastapi.testclient import TestClient

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise

    from twins_airflow.ui.app import create_app

    with tempfile.TemporaryDirectory(prefix="bench_ui_") as tmp:
        store = ResultsStore(args.url or f"sqlite:///{Path(tmp) / 'twins_results.db'}")
        if store.count_rows()[0]:
            print(f"{store.describe()} is not empty: give an empty database to fill", file=sys.stderr)
            return 2
        started = time.perf_counter()
        fill(store, args.runs)
        filled_s = time.perf_counter() - started
        runs, batches = store.count_rows()
        print(f"results database {store.describe()}: {runs} runs, {batches} batch results (filled in {filled_s:.1f} s)")
        newest = views_newest(store)
        client = TestClient(create_app(store.url, user_dependency=lambda: {"username": "bench"}))
        pages: list[tuple[str, str, dict[str, str | int], bool]] = [
            ("runs page (50 newest)", "/", {}, True),
            ("runs JSON (50 newest)", "/api/runs", {}, True),
            ("runs page, one configuration", "/", {"config_key": CONFIG_KEY}, True),
            ("history page (last 200)", "/history", {"config_key": CONFIG_KEY}, True),
            ("history JSON (last 200)", "/api/history", {"config_key": CONFIG_KEY}, True),
            ("history page (all 1,000)", "/history", {"config_key": CONFIG_KEY, "limit": 1000}, True),
            ("history JSON (all 1,000)", "/api/history", {"config_key": CONFIG_KEY, "limit": 1000}, True),
            ("run page", "/run", {"run_key": newest}, True),
        ]
        print(f"\n| page | median ms | max ms | bytes | goal <= {args.target_ms:.0f} ms |")
        print("|---|---:|---:|---:|---|")
        missed = []
        for label, path, params, goal in pages:
            times = []
            size = 0
            for i in range(args.repeat + 2):
                response = client.get(path, params=params)
                if response.status_code != 200:
                    print(f"{label}: HTTP {response.status_code}: {response.text[:300]}", file=sys.stderr)
                    return 2
                size = len(response.content)
                if i >= 2:
                    timing = response.headers["server-timing"]  # "app;dur=12.3"
                    times.append(float(timing.split("dur=", 1)[1]))
            median = statistics.median(times)
            verdict = "-"
            if goal:
                verdict = "met" if median <= args.target_ms else "MISSED"
                if median > args.target_ms:
                    missed.append(label)
            print(f"| {label} | {median:.1f} | {max(times):.1f} | {size:,} | {verdict} |")
    if missed:
        print(f"\nMISSED: {', '.join(missed)} above {args.target_ms:.0f} ms (median server time)")
        return 1
    print(f"\nAll goal pages answered within {args.target_ms:.0f} ms (median server time).")
    return 0


def views_newest(store: ResultsStore) -> str:
    from twins_tasks.results_views import list_runs

    return str(list_runs(store, limit=1)["runs"][0]["run_key"])


if __name__ == "__main__":
    sys.exit(main())
