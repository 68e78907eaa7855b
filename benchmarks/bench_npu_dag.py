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
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

import airflow_local  # noqa: E402

DAG_ID = "twins_svt_l_validation"
BATCH_SIZES = [1, 4, 8, 16, 32, 64]
GOAL = 0.4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    def __init__(self, base: str, password: str) -> None:
        self.base = base
        self.token = ""
        self.token = self.call("POST", "/auth/token", {"username": "admin", "password": password})["access_token"]

    def call(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            f"{self.base}{path}", data=json.dumps(body).encode() if body is not None else None, method=method
        )
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def run_dag(self, conf: dict[str, Any], timeout_s: float) -> tuple[str, float, str]:
        run_id = self.call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]
        quoted = urllib.parse.quote(run_id, safe="")
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            run = self.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quoted}")
            if run["state"] in ("success", "failed"):
                return run_id, time.monotonic() - started, run["state"]
            time.sleep(1)
        return run_id, time.monotonic() - started, "timeout"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the doubles' realistic times")
    parser.add_argument("--images", type=int, default=8, help="generated images (inference batches per size)")
    parser.add_argument("--loops", type=int, default=20, help="perf loops per round (the DAG's default: 20)")
    parser.add_argument("--rounds", type=int, default=3, help="perf rounds (the DAG's default: 3)")
    parser.add_argument("--chips", default="1,2,4", help="chip counts to time")
    args = parser.parse_args()
    chips_list = [int(c) for c in args.chips.split(",")]

    base = Path(tempfile.mkdtemp(prefix="bench-npu-dag-"))
    home, work, state = base / "airflow", base / "work", base / "state"
    home.mkdir()
    data = base / "data" / "val"
    from twins_tasks.sample import make_sample

    make_sample(data, classes=2, per_class=max(1, args.images // 2), seed=0)
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "16",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "16",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex * 2,
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
        "PYTHONPATH": f"{REPO}:{REPO / 'plugins'}",
    }
    airflow = airflow_local.AIRFLOW
    subprocess.run([*airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    for pool, slots in (("ascend_npu", "4"), ("ascend_compile", str(len(BATCH_SIZES)))):
        subprocess.run([*airflow, "pools", "set", pool, slots, pool], env=env, check=True, capture_output=True)
    pids = airflow_local.start(airflow_local.components(api_port=port), env, state)
    try:
        airflow_local.wait_healthy(f"http://127.0.0.1:{port}", pids, state)
        api = Api(f"http://127.0.0.1:{port}", airflow_local.admin_password(home))
        for _ in range(120):
            try:
                api.call("GET", f"/api/v2/dags/{DAG_ID}")
                break
            except urllib.error.HTTPError:
                time.sleep(1)
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
        _, seconds, outcome = api.run_dag({**conf, "batch_sizes": [1], "perf_loops": 1, "perf_rounds": 1}, 1800)
        print(f"  {outcome} in {seconds:.0f} s", flush=True)
        if outcome != "success":
            raise SystemExit(f"the warm-up run ended {outcome}; logs under {home / 'logs'}")
        results = []
        for chips in chips_list:
            shutil.rmtree(work / "cache" / "compiled", ignore_errors=True)  # every timed run compiles with atc
            run_id, seconds, outcome = api.run_dag({**conf, "device_ids": list(range(chips))}, 1800)
            from twins_tasks.store import ResultsStore

            run = ResultsStore(f"sqlite:///{home / 'twins_results.db'}").get_run(run_id) or {"batches": []}
            where = {b["batch_size"]: b.get("device") for b in run["batches"]}
            results.append((chips, seconds, outcome, where))
            print(f"  {chips} chip(s): {outcome} in {seconds:.1f} s; devices {where}", flush=True)
    finally:
        airflow_local.stop(pids)
    events = [json.loads(line) for line in (base / "doubles.jsonl").read_text().splitlines() if line.strip()]
    clashes = [e for e in events if e.get("clash") or e.get("event") == "clash"]

    one = next(s for c, s, _, _ in results if c == 1) if 1 in chips_list else None
    print()
    print(f"| chips | wall (s) | vs 1 chip | run | devices per batch size |   (scale {args.scale}, "
          f"{args.images} images, perf {args.loops} loops x {args.rounds} rounds)")  # fmt: skip
    print("|---:|---:|---:|---|---|")
    for chips, seconds, outcome, where in results:
        ratio = f"{seconds / one:.2f}x" if one else "-"
        devices = ", ".join(f"bs{b}: {d}" for b, d in where.items())
        print(f"| {chips} | {seconds:.1f} | {ratio} | {outcome} | {devices} |")
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
