"""`make up` / `make down` as a newcomer runs them: no nightly surprise, the printed login works, nothing left running.

Runs scripts/up.sh (the target of `make up`) with its state in a temporary folder and a free port.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import airflow_local  # noqa: E402

DAG_ID = "twins_svt_l_validation"


def _env(state: Path, port: int, **extra: str) -> dict[str, str]:
    # Not the test session's Airflow settings (conftest): up.sh derives its own from its state folder.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "TWINS_"))}
    return {**env, "TWINS_UP_STATE": str(state), "TWINS_UI_PORT": str(port), **extra}


@pytest.mark.deploy
def test_make_up_runs_nothing_at_0200_and_make_down_stops_everything(tmp_path):
    state, port = tmp_path / "up", airflow_local.free_port()
    env = _env(state, port)
    try:
        up = subprocess.run(["bash", "scripts/up.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]
        assert "Nightly runs: off" in up.stdout and "batch sizes [1, 4] and 2 perf loops" in up.stdout
        home = state / "airflow"
        api = airflow_local.RestClient(f"http://127.0.0.1:{port}", airflow_local.admin_password(home), DAG_ID)
        assert f"password {airflow_local.admin_password(home)}" in up.stdout
        api.wait_for_dag()
        details = api.get(f"/api/v2/dags/{DAG_ID}/details")
        # Unpaused (a trigger from the form runs at once), but no schedule: nothing starts at 02:00 by itself.
        assert details["is_paused"] is False
        assert details["timetable_summary"] in (None, "None") and details["next_dagrun_run_after"] is None
        assert api.get(f"/api/v2/dags/{DAG_ID}/dagRuns")["total_entries"] == 0
        # The README's places: component logs under <state>/logs, task logs under <state>/airflow/logs.
        assert (state / "logs" / "scheduler.log").is_file() and (home / "logs").is_dir()
    finally:
        pids = json.loads((state / "pids.json").read_text()) if (state / "pids.json").is_file() else {}
        down = subprocess.run(
            ["bash", "scripts/down.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
    assert down.returncode == 0 and "Stopped" in down.stdout, down.stdout + down.stderr
    assert pids and not any(airflow_local.alive(pid) for pid in pids.values()), pids
    assert not (state / "pids.json").exists()


def test_the_nightly_can_be_turned_off_and_on():
    """TWINS_NIGHTLY: off = no schedule (make up's default); a cron = that nightly; unset = 02:00 UTC."""
    code = (
        "import sys; sys.path[:0] = [sys.argv[1] + '/dags', sys.argv[1] + '/plugins']\n"
        "import twins_svt_l_validation as m\n"
        "t = m.SCHEDULE\n"
        "print('SCHEDULE', None if t is None else t.expression)\n"
    )
    seen = {}
    for value in ("off", "30 3 * * *", None):
        env = {k: v for k, v in os.environ.items() if k != "TWINS_NIGHTLY"}
        if value is not None:
            env["TWINS_NIGHTLY"] = value
        proc = subprocess.run(
            [sys.executable, "-c", code, str(ROOT)], env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        seen[value] = proc.stdout.split("SCHEDULE ", 1)[1].strip()
    assert seen == {"off": "None", "30 3 * * *": "30 3 * * *", None: "0 2 * * *"}
