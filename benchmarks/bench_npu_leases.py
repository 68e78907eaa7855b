"""Simulation benchmark: 6 batch sizes over 50,000 simulated images on 1 vs 4 fake NPU chips, with the floor.

The contract doubles (tests/doubles) take times proportional to the images they run at the seed's Ascend
310P rates (shared/toolchain-contract.md, "Published numbers": 131.1 / 129.7 / 175.2 / 161.2 / 156.1 / 148.1
img/s at batch size 1 / 4 / 8 / 16 / 32 / 64), so each batch size costs about the same device time, as on
the device. ``--images`` real input files stand for the 50,000 (each for 50,000 / images of them:
``FAKE_AIS_IMAGES_PER_FILE``); a perf loop takes batch size / rate; atc 8 s. ``--scale`` multiplies every
simulated time (0.2: the 1-chip run's ~2,000 device seconds take ~400 s) but not what the scale leaves real:
each tool's start-up and the doubles' own work on the files (4 at once on a 2-core machine), which a smaller
scale inflates against the device time. The doubles hold a lock per fake chip, so a chip shared by two tasks
would fail loudly and be counted.

Each batch size is one chain, as in the DAG and ``twins run``: compile (atc on the host CPU, all at once) ->
infer (``steps.infer_step``: split over the chips of the run that are free, growing as others free up) ->
perf (``steps.perf_step``, one chip). Chains run in threads; the tools are separate processes. Library level,
no Airflow. Rows: 1 chip; 4 chips with one chip per batch size (``infer_chips`` 1, the behaviour before the
split); 4 chips split. The floor no scheduler can beat: the compile, then all device work spread evenly over
the chips (and no less than the longest chain). Goal (issue 19): 4 chips split <= 0.30 x 1 chip, and within
15% of its floor. Exits 1 when missed or any chip was shared.

    .venv/bin/python benchmarks/bench_npu_leases.py [--scale 0.2] [--images 512] [--chips 4]
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
from twins_tasks.steps import chips_for_perf, infer_step, perf_step  # noqa: E402

BATCH_SIZES = (1, 4, 8, 16, 32, 64)
# The seed's Ascend 310P throughput per batch size (img/s), toolchain-contract.md "Published numbers".
SEED_RATES = {1: 131.1, 4: 129.7, 8: 175.2, 16: 161.2, 32: 156.1, 64: 148.1}
SIMULATED_IMAGES = 50_000
ATC_SECONDS = 8.0  # the atc double's realistic compile
GOAL_RATIO = 0.30
GOAL_OVER_FLOOR = 0.15


def floor_seconds(
    chips: int, compile_s: float, infers: list[float], perfs: list[float], pieces: list[int] | None = None
) -> float:
    """No scheduler beats this: every compile at once, then the device work spread evenly over ``chips``; and
    no batch size's chain finishes before its inference split over at most ``pieces`` chips, then its perf."""
    pieces = pieces or [chips] * len(infers)
    spread = (sum(infers) + sum(perfs)) / chips
    chain = max(i / min(chips, p) + q for i, q, p in zip(infers, perfs, pieces, strict=True))
    return compile_s + max(spread, chain)


def ideal_seconds(chips: int, images: int, loop: int, scale: float) -> float:
    """The floor for the doubles' fixed realistic times (``TWINS_FAKE_DELAYS=realistic``: 0.5 s per inference
    batch, 0.2 s per perf loop, atc 8 s), as bench_npu_dag.py runs them: slices are of whole batches, so a
    split inference runs the same batches."""
    batches = [-(-images // bs) for bs in BATCH_SIZES]
    infers = [b * 0.5 * scale for b in batches]
    return floor_seconds(chips, ATC_SECONDS * scale, infers, [loop * 0.2 * scale] * len(BATCH_SIZES), batches)


def seed_floor(chips: int, loop: int, scale: float) -> float:
    """The floor at the seed's rates over :data:`SIMULATED_IMAGES`."""
    infers = [SIMULATED_IMAGES / SEED_RATES[bs] * scale for bs in BATCH_SIZES]
    perfs = [loop * bs / SEED_RATES[bs] * scale for bs in BATCH_SIZES]
    return floor_seconds(chips, ATC_SECONDS * scale, infers, perfs)


def run_once(
    chips: int, work: Path, inputs: Path, model: Path, loop: int, infer_chips: int | None
) -> tuple[float, list[str], list[str]]:
    """Wall seconds for every batch size's chain on ``chips`` fake chips; where each ran; clashes found."""
    work.mkdir(parents=True)
    os.environ["TWINS_FAKE_NPUS"] = str(chips)
    os.environ["TWINS_LEASE_DIR"] = str(work / "leases")
    os.environ["FAKE_NPU_LOCK_DIR"] = str(work / "npu-locks")
    os.environ["TWINS_DOUBLES_LOG"] = str(work / "calls.jsonl")
    backend = AscendBackend(cann_env=str(SET_ENV), soc_version="Ascend310P3", idle_poll_s=0.1)
    candidates = backend.list_chips()

    def chain(bs: int) -> str:
        artifact = backend.compile(model, bs, work / "compiled").artifact
        inferred = infer_step(
            backend,
            artifact,
            inputs,
            bs,
            work / "result",
            f"bs{bs}",
            "TXT",
            device_ids=candidates,
            purpose="bench",
            max_chips=infer_chips,
        )
        perf = perf_step(backend, artifact, bs, loop=loop, device_ids=chips_for_perf(candidates, inferred))
        chips_used = ",".join(map(str, inferred["chips"]))
        return f"bs{bs}: infer {chips_used} ({inferred['seconds']:.1f} s), perf {perf['device'].split(':')[-1]}"

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(BATCH_SIZES)) as chains:
        done = list(chains.map(chain, BATCH_SIZES))
    seconds = time.perf_counter() - start
    clashes = [f"NPU {e['device']} shared" for e in read_log(work / "calls.jsonl", "events") if e["event"] == "clash"]
    return seconds, done, clashes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=0.2, help="multiply every simulated tool time (default 0.2)")
    p.add_argument("--images", type=int, default=512, help="real input files standing for the 50,000 (default 512)")
    p.add_argument("--loop", type=int, default=20, help="perf loops (default 20, as the recipe)")
    p.add_argument("--chips", type=int, default=4, help="chips of the multi-chip rows (default 4)")
    p.add_argument("--verbose", action="store_true", help="print where each batch size ran")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for var in FAKE_VARS:
        os.environ.pop(var, None)
    os.environ["TWINS_FAKE_DELAYS"] = "realistic"  # atc 8 s; ais_bench by the rates below
    os.environ["TWINS_FAKE_TIME_SCALE"] = str(args.scale)
    os.environ["FAKE_AIS_IMAGES_PER_S"] = ",".join(f"{bs}:{rate}" for bs, rate in SEED_RATES.items())
    os.environ["FAKE_AIS_IMAGES_PER_FILE"] = str(SIMULATED_IMAGES / args.images)
    rows = [("1 chip", 1, None), (f"{args.chips} chips, one per batch size", args.chips, 1)]
    rows.append((f"{args.chips} chips, split", args.chips, None))
    print(
        f"Batch sizes {list(BATCH_SIZES)}, {SIMULATED_IMAGES:,} simulated images ({args.images} files) at the seed's "
        f"310P rates, {args.loop} perf loops, time scale {args.scale}:",
        flush=True,
    )
    results: list[tuple[str, int, float]] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="twins-sim-") as tmp:
        inputs = Path(tmp) / "bin_path"
        make_inputs(inputs, args.images)
        model = make_model(Path(tmp) / "alt_gvt_large.onnx")
        for label, chips, infer_chips in rows:
            work = Path(tmp) / f"run{len(results)}"
            seconds, done, clashes = run_once(chips, work, inputs, model, args.loop, infer_chips)
            print(f"  {label}: {seconds:.1f} s", flush=True)
            if args.verbose:
                print("    " + "\n    ".join(done), flush=True)
            results.append((label, chips, seconds))
            problems += clashes
    one = results[0][2]
    print()
    print("| run | wall s | vs 1 chip | floor s | vs floor | wall at real rates s |")
    print("|---|---|---|---|---|---|")
    for label, chips, seconds in results:
        floor = seed_floor(chips, args.loop, args.scale)
        print(
            f"| {label} | {seconds:.1f} | {seconds / one:.2f}x | {floor:.1f} | {seconds / floor - 1:+.0%} | "
            f"{seconds / args.scale:.0f} |"
        )
    split = results[-1][2]
    ratio, over = split / one, split / seed_floor(args.chips, args.loop, args.scale) - 1
    ok = ratio <= GOAL_RATIO and over <= GOAL_OVER_FLOOR and not problems
    print(
        f"\n{args.chips} chips split / 1 chip = {ratio:.2f} (goal <= {GOAL_RATIO}); over the floor {over:+.0%} "
        f"(goal <= {GOAL_OVER_FLOOR:+.0%}); chips shared: {', '.join(problems) or 'none'}"
    )
    print("goal met" if ok else "GOAL MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
