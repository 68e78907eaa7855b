"""Preprocess throughput: 1 worker against N workers (N = all cores), side by side in one run.

Generates ~200 pictures of 500x375 (ImageNet's typical size; generated, not ImageNet), preprocesses them
into fresh folders with 1 worker and with N workers, alternating, and prints a table. The goal: N workers
reach at least 0.8*N times the 1-worker rate. Run: ``.venv/bin/python benchmarks/bench_preprocess.py``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from twins_tasks.preprocess.bins import preprocess
from twins_tasks.sample import GENERATED_NOTE, make_sample

TARGET_EFFICIENCY = 0.8


def _bins(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.glob("*.bin")}


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="N (default: os.cpu_count())")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each setting; the fastest counts")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    n = args.workers
    with tempfile.TemporaryDirectory(prefix="bench_preprocess.") as tmp:
        root = Path(tmp) / "val"
        images = len(make_sample(root, args.classes, args.per_class, seed=0, image_size=(500, 375)))
        print(
            f"{images} images of 500x375 ({GENERATED_NOTE}); {os.cpu_count()} cores; best of {args.repeat}; "
            f"load average before: {_load()}"
        )
        best: dict[int, float] = {}
        outputs: dict[int, dict[str, bytes]] = {}
        for attempt in range(args.repeat):
            for workers in (1, n):  # alternating: a slow spell on the machine hits both settings
                out = Path(tmp) / f"bins_{workers}_{attempt}"
                result = preprocess(root, out, workers=workers)
                assert result.num_written == images, result
                best[workers] = min(best.get(workers, float("inf")), result.seconds)
                outputs[workers] = _bins(out)
                shutil.rmtree(out)
        if outputs[1] != outputs[n]:
            print(f"FAIL: {n} workers wrote different bytes than 1 worker")
            return 1

    # Other work on the machine takes cores from the N-worker run first: show it beside the numbers.
    print(f"load average after: {_load()}")
    base_rate = images / best[1]
    print(f"{'workers':>7} {'images':>6} {'seconds':>8} {'img/s':>8} {'ratio':>6} {'target':>6}  result")
    failed = False
    for workers in sorted(best):
        rate = images / best[workers]
        ratio = rate / base_rate
        target = TARGET_EFFICIENCY * workers
        ok = ratio >= target
        failed |= not ok
        print(
            f"{workers:>7} {images:>6} {best[workers]:>8.3f} {rate:>8.1f} {ratio:>6.2f} {target:>6.2f}  "
            f"{'pass' if ok else 'FAIL'}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
