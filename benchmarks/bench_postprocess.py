"""Scoring speed: `twins postprocess` must score >= 2,000 TXT outputs per second on one core.

Writes N generated (random) TXT outputs in ais_bench's format plus a preprocess manifest to a temp folder,
pins this process to one CPU, scores them with ``twins_tasks.postprocess.score`` and prints a table.

    .venv/bin/python benchmarks/bench_postprocess.py [--count 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twins_tasks.layout import output_path, write_output
from twins_tasks.postprocess import MANIFEST_NAME, score

TARGET = 2000.0  # outputs/s on one core


def make_outputs(root: Path, count: int) -> tuple[Path, Path, int]:
    """Random logits (generated data, not model outputs) with a known number of top-1 hits."""
    rng = np.random.default_rng(0)
    pred = root / "result" / "bench"
    pred.mkdir(parents=True)
    labels = rng.integers(0, 1000, count)
    expected_hits = 0
    with open(root / MANIFEST_NAME, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["stem", "source", "label", "wnid", "status", "reason"])
        for i, label in enumerate(labels, start=1):
            stem = f"ILSVRC2012_val_{i:08d}"
            logits = rng.standard_normal((1, 1000)).astype(np.float32) * 3
            if i % 5:  # 80% of them: make the label the clear winner
                logits[0, label] = 20.0
            expected_hits += int(logits[0].argmax() == label)
            write_output(output_path(pred, stem, 0, "TXT"), logits, "TXT")
            writer.writerow([stem, f"val/n{label:08d}/{stem}.JPEG", label, f"n{label:08d}", "ok", ""])
    return pred, root / MANIFEST_NAME, expected_hits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3, help="score this many times; the best run counts")
    args = parser.parse_args()

    cpu = sorted(os.sched_getaffinity(0))[0]
    os.sched_setaffinity(0, {cpu})  # one core, as the goal says
    with tempfile.TemporaryDirectory(prefix="bench_postprocess_") as tmp:
        start = time.perf_counter()
        pred, manifest, expected_hits = make_outputs(Path(tmp), args.count)
        print(
            f"wrote {args.count} generated TXT outputs + manifest in {time.perf_counter() - start:.1f} s "
            f"(random logits, not model outputs); scoring pinned to CPU {cpu}"
        )
        rates = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            result = score(pred, manifest)
            rates.append(args.count / (time.perf_counter() - start))
            if result.correct1 != expected_hits or result.n_total != args.count or not result.complete:
                print(f"WRONG RESULT: {result.correct1} top-1 hits, expected {expected_hits}")
                return 1
    best = max(rates)
    ok = best >= TARGET
    print()
    print(
        f"| {'outputs':>7} | {'outputs/s (best)':>16} | {'outputs/s (all runs)':>28} | {'target':>6} | "
        f"{'ratio':>5} | result |"
    )
    print(f"|{'-' * 9}|{'-' * 18}|{'-' * 30}|{'-' * 8}|{'-' * 7}|--------|")
    print(
        f"| {args.count:>7} | {best:>16.0f} | {', '.join(f'{r:.0f}' for r in rates):>28} | {TARGET:>6.0f} | "
        f"{best / TARGET:>5.2f} | {'PASS' if ok else 'FAIL':>6} |"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
