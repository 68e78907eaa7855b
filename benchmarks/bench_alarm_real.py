"""Issue 18, case 9, for real: unchanged ``twins run``s back to back, and what the nightly verdict said of each.

Runs the real CLI (``twins run``: export once, then cached; ONNX Runtime on the CPU; ``--batch-sizes 1,4``, the
default 3 perf rounds of 20 loops) ``--runs`` times in a row on one generated dataset, one work dir and one
results database, nothing changed between runs. Every failed regression check is a false alarm; ``suspect``
(seen once, waiting for a second witness) and ``slow host`` (the host's own calibration was as slow) page no one
and never become a reference. Prints, per run, each batch size's median and range of rounds and the verdict,
then the counts. Goal (exit 1 when missed): no false alarm.

Run it on an otherwise quiet machine (that is the case it reproduces): about 1-1.5 minutes a run on 2 cores.

    .venv/bin/python benchmarks/bench_alarm_real.py [--runs 10] [--batch-sizes 1,4] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from twins_tasks.sample import make_sample
from twins_tasks.store import ResultsStore

TWINS = str(Path(sys.executable).with_name("twins"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--batch-sizes", default="1,4")
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary one, removed)")
    args = parser.parse_args()

    work = Path(args.keep or tempfile.mkdtemp(prefix="twins-alarm-real-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data" / "val"
    if not data.is_dir():
        make_sample(data, classes=4, per_class=2, seed=0, workers=1)
    url = f"sqlite:///{work / 'twins_results.db'}"
    rows = []
    try:
        for i in range(1, args.runs + 1):
            name = f"real-{i:02d}"
            argv = [TWINS, "run", "--root_path", str(data), "--random-init", "--backend", "onnxruntime",
                    "--batch-sizes", args.batch_sizes, "--reference-images", "4", "--work-dir", str(work / "work"),
                    "--results-url", url, "--run-name", name]  # fmt: skip
            started = time.monotonic()
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
            seconds = time.monotonic() - started
            store = ResultsStore(url)
            run = store.get_run(name)
            store.engine.dispose()
            if run is None:
                print(proc.stdout[-2000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
                raise SystemExit(f"run {name} recorded nothing (exit {proc.returncode})")
            headline = next((line for line in proc.stdout.splitlines() if line.startswith("Regression check:")), "")
            cells = []
            for b in run["batches"]:
                low, high = b.get("throughput_min") or b["throughput"], b.get("throughput_max") or b["throughput"]
                cells.append(f"bs{b['batch_size']} {b['throughput']:.2f} ({low:.2f}-{high:.2f})")
            rows.append((name, seconds, "; ".join(cells), run["regression_status"] or "-", headline))
            print(f"{name}  {seconds:5.0f} s  {'; '.join(cells)}  -> {run['regression_status']}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.runs} unchanged `twins run`s back to back (ONNX Runtime, batch sizes {args.batch_sizes}, "
          f"3 rounds of 20 loops, {os.cpu_count()} cores); img/s: median of rounds (min-max)")  # fmt: skip
    print("| run | s | throughput | check | verdict |\n|:--|--:|:--|:--|:--|")
    for name, seconds, cells, status, headline in rows:
        print(f"| {name} | {seconds:.0f} | {cells} | {status} | {headline.removeprefix('Regression check: ')} |")
    statuses = [status for _, _, _, status, _ in rows]
    false_alarms = statuses.count("failed")
    quiet = {s: statuses.count(s) for s in ("suspect", "slow host", "noisy") if statuses.count(s)}
    print(f"\nfalse alarms (check failed): {false_alarms} of {len(rows)}; not paged: {quiet or 'none'}")
    ok = false_alarms == 0
    print(("PASS" if ok else "MISS") + "  no false alarm on unchanged runs")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
