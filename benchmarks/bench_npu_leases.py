"""Simulation benchmark: batch sizes spread over 1, 2 and 4 fake NPU chips through device leases.

The contract doubles (tests/doubles) take realistic, scaled-down times (``TWINS_FAKE_DELAYS=realistic``:
atc 8 s, ais_bench 0.5 s per inference batch and 0.2 s per perf loop) and hold a lock per fake chip, so a
chip shared by two tasks would fail loudly. Each batch size is one chain, as in the DAG: compile (atc on the
host CPU, ``--compile-workers`` at once) -> lease a chip -> infer -> perf on that chip -> release. Chains run
in threads; the tools are separate processes, as on a real host.

This measures the library's part (leases, per-chip idle checks, parallel compiles) without Airflow; the
same goal for the whole DAG under a real scheduler is measured separately. Goal: wall time on 4 chips at
most 0.4 x that on 1 chip. Prints a table; exits 1 when the goal is missed or any chip was shared.

    .venv/bin/python benchmarks/bench_npu_leases.py [--scale 1.0] [--images 16]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.doubles.helpers import FAKE_VARS, SET_ENV, make_inputs, make_model, read_log  # noqa: E402
from twins_tasks.backends.ascend import AscendBackend  # noqa: E402
from twins_tasks.devices import lease_chip  # noqa: E402

BATCH_SIZES = (1, 4, 8, 16, 32, 64)
GOAL = 0.4


def run_once(chips: int, work: Path, images: int, loop: int, compile_workers: int) -> tuple[float, list[str]]:
    """Wall seconds for every batch size's chain on ``chips`` fake chips; problems found (clashes)."""
    os.environ["TWINS_FAKE_NPUS"] = str(chips)
    os.environ["TWINS_LEASE_DIR"] = str(work / "leases")
    os.environ["FAKE_NPU_LOCK_DIR"] = str(work / "npu-locks")
    os.environ["TWINS_DOUBLES_LOG"] = str(work / "calls.jsonl")
    inputs = work / "bin_path"
    make_inputs(inputs, images)
    model = make_model(work / "alt_gvt_large.onnx")
    backend = AscendBackend(cann_env=str(SET_ENV), soc_version="Ascend310P3", idle_poll_s=0.1)
    candidates = backend.list_chips()
    compiles = ThreadPoolExecutor(max_workers=compile_workers)

    def chain(bs: int) -> str:
        artifact = Path(compiles.submit(backend.compile, model, bs, work / "compiled").result().artifact)
        with lease_chip(
            candidates, purpose=f"bs {bs}", read_devices=backend.npu_devices, wait_s=600, poll_s=0.1
        ) as chip:
            on_chip = backend.with_device(chip)
            on_chip.infer(artifact, inputs, bs, work / "result", f"bs{bs}", "TXT")
            on_chip.perf(artifact, bs, loop=loop)
        return f"bs {bs} on NPU {chip}"

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(BATCH_SIZES)) as chains:
        done = list(chains.map(chain, BATCH_SIZES))
    seconds = time.perf_counter() - start
    compiles.shutdown()
    clashes = [f"NPU {e['device']} shared" for e in read_log(work / "calls.jsonl", "events") if e["event"] == "clash"]
    print(f"  {chips} chip(s): {seconds:.1f} s  ({'; '.join(done)})", flush=True)
    return seconds, clashes


def ideal_seconds(chips: int, images: int, loop: int, scale: float) -> float:
    """The simulated times alone, without process start-up: compiles at once, then device work packed onto
    ``chips`` longest first. The floor any scheduler can reach on this workload."""
    work = sorted(((-(-images // bs)) * 0.5 + loop * 0.2) * scale for bs in BATCH_SIZES)[::-1]
    load = [0.0] * chips
    for seconds in work:
        load[load.index(min(load))] += seconds
    return 8.0 * scale + max(load)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=1.0, help="multiply every simulated tool time (default 1.0)")
    p.add_argument("--images", type=int, default=16, help="preprocessed inputs per batch size (default 16)")
    p.add_argument("--loop", type=int, default=20, help="perf loops (default 20, as the recipe)")
    p.add_argument("--compile-workers", type=int, default=6, help="atc runs at once (default 6)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for var in FAKE_VARS:
        os.environ.pop(var, None)
    os.environ["TWINS_FAKE_DELAYS"] = "realistic"
    os.environ["TWINS_FAKE_TIME_SCALE"] = str(args.scale)
    results: dict[int, float] = {}
    problems: list[str] = []
    print(f"Batch sizes {list(BATCH_SIZES)}, {args.images} images, {args.loop} perf loops, scale {args.scale}:")
    for chips in (1, 2, 4):
        with tempfile.TemporaryDirectory(prefix=f"twins-sim-{chips}-") as tmp:
            results[chips], found = run_once(chips, Path(tmp), args.images, args.loop, args.compile_workers)
            problems += found
    print()
    ideal = {chips: ideal_seconds(chips, args.images, args.loop, args.scale) for chips in results}
    print("| chips | wall s | vs 1 chip | simulated times alone: s | vs 1 chip |")
    print("|---|---|---|---|---|")
    for chips, seconds in results.items():
        print(
            f"| {chips} | {seconds:.1f} | {seconds / results[1]:.2f}x | {ideal[chips]:.1f} | "
            f"{ideal[chips] / ideal[1]:.2f}x |"
        )
    ratio = results[4] / results[1]
    ok = ratio <= GOAL and not problems
    print(f"\n4 chips / 1 chip = {ratio:.2f} (goal <= {GOAL}); chips shared: {', '.join(problems) or 'none'}")
    print("goal met" if ok else "GOAL MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
