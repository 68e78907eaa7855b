"""Simulation benchmark: the whole DAG for 6 batch sizes on 1, 2 and 4 fake NPU chips, under a real scheduler.

Airflow runs as plain processes (scripts/airflow_local.py: api-server, scheduler, dag-processor, triggerer;
LocalExecutor, SQLite metadata DB). The Ascend backend drives the contract doubles (tests/doubles) made to
take realistic, scaled times (``TWINS_FAKE_DELAYS=realistic``: atc 8 s, ais_bench 0.5 s per inference batch
and 0.2 s per perf loop, per chip) on a fake host with 4 chips whose ais_bench holds a lock per chip, so two
tasks on one chip would fail loudly. Each timed run uses ``device_ids`` [0], [0, 1] or [0, 1, 2, 3]: the
batch sizes lease chips from those; atc compiles run in parallel in the ``ascend_compile`` pool.

A first run fills the caches of the steps that are not measured (preprocess, ONNX export of the real
twins_svt_large with random weights); before each timed run the compiled-artifact cache is emptied, so every
run compiles with atc. Goal: wall time on 4 chips at most 0.4 x that on 1 chip, no chip ever shared. Prints a
table; exits 1 when the goal is missed.

    .venv/bin/python benchmarks/bench_npu_dag.py [--scale 1.0] [--images 8] [--loops 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

import airflow_local  # noqa: E402
from bench_npu_leases import ideal_seconds  # noqa: E402

DAG_ID = "twins_svt_l_validation"
BATCH_SIZES = [1, 4, 8, 16, 32, 64]
GOAL = 0.4


def run_dag(api: airflow_local.RestClient, conf: dict[str, Any], timeout_s: float) -> tuple[str, float, str]:
    """Trigger a run as the UI does; (run id, its wall time from Airflow's start and end dates, final state).

    Airflow's own dates, not the time until our 2 s status poll saw the end: the poll would add up to 2 s.
    """
    run_id = api.trigger(conf)
    try:
        run = api.wait(run_id, timeout_s)
    except TimeoutError:
        return run_id, float("nan"), "timeout"
    return run_id, _stamp(run["end_date"]) - _stamp(run["start_date"]), run["state"]


def _stamp(value: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def timeline(api: airflow_local.RestClient, run_id: str) -> str:
    """Where a run's wall time went: each task's start and end, in seconds from the run's start."""
    run = api.run(run_id)
    t0 = _stamp(run["start_date"])
    rows = sorted(
        (_stamp(t["start_date"]) - t0, _stamp(t["end_date"]) - t0, t["task_id"], t["map_index"])
        for t in api.task_instances(run_id)
        if t.get("start_date") and t.get("end_date")
    )
    lines = [f"    {start:6.1f} -> {end:6.1f}  {task}" + (f"[{i}]" if i >= 0 else "") for start, end, task, i in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the doubles' realistic times")
    parser.add_argument("--images", type=int, default=8, help="generated images (inference batches per size)")
    parser.add_argument("--loops", type=int, default=20, help="perf loops per round (the DAG's default: 20)")
    parser.add_argument("--rounds", type=int, default=3, help="perf rounds (the DAG's default: 3)")
    parser.add_argument("--chips", default="1,2,4", help="chip counts to time")
    parser.add_argument("--timeline", action="store_true", help="print each timed run's task start/end times")
    args = parser.parse_args()
    chips_list = [int(c) for c in args.chips.split(",")]

    base = Path(tempfile.mkdtemp(prefix="bench-npu-dag-"))
    home, work, state = base / "airflow", base / "work", base / "state"
    home.mkdir()
    data = base / "data" / "val"
    from twins_tasks.sample import make_sample

    make_sample(data, classes=2, per_class=max(1, args.images // 2), seed=0)
    port = airflow_local.free_port()
    settings = {
        "AIRFLOW__CORE__PARALLELISM": "16",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "16",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "TWINS_WORK_DIR": str(work),
        "TWINS_NPU_QUEUE": "default",
        "TWINS_TASK_RETRIES": "0",
        "TWINS_CANN_ENV": str(REPO / "tests" / "doubles" / "set_env.sh"),
        "TWINS_FAKE_NPUS": "4",
        "TWINS_FAKE_DELAYS": "realistic",
        "TWINS_FAKE_TIME_SCALE": str(args.scale),
        "FAKE_NPU_LOCK_DIR": str(base / "npu-locks"),
        "TWINS_LEASE_DIR": str(base / "leases"),
        "TWINS_DOUBLES_LOG": str(base / "doubles.jsonl"),
    }
    env = airflow_local.airflow_env(home, api_port=port, executor="LocalExecutor", repo=REPO, **settings)
    airflow_local.airflow_cli(env, "db", "migrate")
    for pool, slots in (("ascend_npu", "4"), ("ascend_compile", str(len(BATCH_SIZES)))):
        airflow_local.airflow_cli(env, "pools", "set", pool, slots, pool)
    pids = airflow_local.start(airflow_local.components(api_port=port), env, state)
    try:
        airflow_local.wait_healthy(f"http://127.0.0.1:{port}", pids, state)
        api = airflow_local.RestClient(f"http://127.0.0.1:{port}", airflow_local.admin_password(home), DAG_ID)
        api.wait_for_dag()
        conf = {
            "dataset_path": str(data),
            "backend": "ascend",
            "soc_version": "Ascend310P3",
            "batch_sizes": BATCH_SIZES,
            "perf_loops": args.loops,
            "perf_rounds": args.rounds,
            "reference_images": 0,
            "max_throughput_drop_pct": 1000.0,
        }
        print("warm-up run (preprocess, ONNX export; not timed) ...", flush=True)
        _, seconds, outcome = run_dag(api, {**conf, "batch_sizes": [1], "perf_loops": 1, "perf_rounds": 1}, 1800)
        print(f"  {outcome} in {seconds:.0f} s", flush=True)
        if outcome != "success":
            raise SystemExit(f"the warm-up run ended {outcome}; logs under {home / 'logs'}")
        results = []
        for chips in chips_list:
            shutil.rmtree(work / "cache" / "compiled", ignore_errors=True)  # every timed run compiles with atc
            run_id, seconds, outcome = run_dag(api, {**conf, "device_ids": list(range(chips))}, 1800)
            from twins_tasks.store import ResultsStore

            run = ResultsStore(f"sqlite:///{home / 'twins_results.db'}").get_run(run_id) or {"batches": []}
            where = {b["batch_size"]: b.get("device") for b in run["batches"]}
            results.append((chips, seconds, outcome, where))
            print(f"  {chips} chip(s): {outcome} in {seconds:.1f} s; devices {where}", flush=True)
            if args.timeline:
                print(timeline(api, run_id), flush=True)
    finally:
        airflow_local.stop(pids)
    events = [json.loads(line) for line in (base / "doubles.jsonl").read_text().splitlines() if line.strip()]
    clashes = [e for e in events if e.get("clash") or e.get("event") == "clash"]

    one = next(s for c, s, _, _ in results if c == 1) if 1 in chips_list else None
    # The floor no scheduler can beat: the simulated tool times alone, compiles at once, device work packed.
    floor = {c: ideal_seconds(c, args.images, args.loops * args.rounds, args.scale) for c in [1, *chips_list]}
    print()
    print(f"| chips | wall (s) | vs 1 chip | simulated times alone (s) | vs 1 chip | run | devices per batch size |"
          f"   (scale {args.scale}, {args.images} images, perf {args.loops} loops x {args.rounds} rounds)")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---|---|")
    for chips, seconds, outcome, where in results:
        shown = f"{seconds / one:.2f}x" if one else "-"
        devices = ", ".join(f"bs{b}: {d}" for b, d in where.items())
        print(
            f"| {chips} | {seconds:.1f} | {shown} | {floor[chips]:.1f} | {floor[chips] / floor[1]:.2f}x | {outcome} "
            f"| {devices} |"
        )
    print(f"\nchip clashes seen by the doubles: {len(clashes)}")
    ok = all(o == "success" for _, _, o, _ in results) and not clashes
    four = next((s for c, s, _, _ in results if c == 4), None)
    if one and four is not None:
        ratio = four / one
        print(f"4 chips / 1 chip = {ratio:.2f} (goal <= {GOAL}): {'met' if ratio <= GOAL else 'MISSED'}")
        ok = ok and ratio <= GOAL
    shutil.rmtree(base, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
