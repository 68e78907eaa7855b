"""Run Airflow's components as plain processes (no Docker): `make up` / `make down`, and tests/test_deploy.py.

Each component is started in its own session (process group), so that stopping it also stops what it started
(api-server workers, executor and Celery pool processes). Their pids are kept in ``<state>/pids.json`` and their
output in ``<state>/logs/<component>.log``.

    python scripts/airflow_local.py up  --state var/up     # the environment comes from scripts/up.sh
    python scripts/airflow_local.py down --state var/up
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AIRFLOW = [sys.executable, "-m", "airflow"]


@dataclass
class Component:
    name: str
    argv: list[str]
    env: dict[str, str] | None = None  # added to the common environment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def airflow_env(home: Path, *, api_port: int, executor: str, repo: Path, **settings: str) -> dict[str, str]:
    """The environment of every component: this process's, minus its Airflow settings, plus these.

    ``settings`` are further variables (``AIRFLOW__…`` or ``TWINS_…``) that the caller needs.
    """
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(repo / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(repo / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex * 2,
        "AIRFLOW__API__SECRET_KEY": uuid.uuid4().hex,
        "PYTHONPATH": f"{repo}:{repo / 'plugins'}",
        **settings,
    }


def airflow_cli(env: Mapping[str, str], *args: str, timeout: float = 600) -> None:
    """One ``airflow`` command (db migrate, pools set ...); its output in the error when it fails."""
    proc = subprocess.run([*AIRFLOW, *args], env=dict(env), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"airflow {' '.join(args)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")


def components(
    *, api_port: int, celery_queues: Sequence[str] = (), celery_concurrency: int = 2, log_port_base: int = 8793
) -> list[Component]:
    """api-server, scheduler, dag-processor, triggerer, and one Celery worker per queue (none: LocalExecutor)."""
    parts = [
        Component("api-server", [*AIRFLOW, "api-server", "--port", str(api_port)]),
        Component("scheduler", [*AIRFLOW, "scheduler"]),
        Component("dag-processor", [*AIRFLOW, "dag-processor"]),
        Component("triggerer", [*AIRFLOW, "triggerer"]),
    ]
    for i, queue in enumerate(celery_queues):
        parts.append(
            Component(
                f"worker-{queue}",
                [*AIRFLOW, "celery", "worker", "--queues", queue, "--concurrency", str(celery_concurrency)],
                # Two workers on one host: each serves its task logs on its own port.
                env={"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_port_base + i)},
            )
        )
    return parts


def start(parts: Sequence[Component], env: Mapping[str, str], state: Path) -> dict[str, int]:
    """Start every component; record and return their pids (process-group ids)."""
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pids: dict[str, int] = {}
    for part in parts:
        with open(logs / f"{part.name}.log", "ab") as out:
            proc = subprocess.Popen(
                part.argv,
                env={**env, **(part.env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        pids[part.name] = proc.pid
    (state / "pids.json").write_text(json.dumps(pids, indent=2))
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by us) counts as gone.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return False
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return any(
        _pgid_of(pid) == pgid and _state_of(pid) != "Z" for pid in (int(p) for p in os.listdir("/proc") if p.isdigit())
    )


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None


def _pgid_of(pid: int) -> int | None:
    stat = _stat(pid)
    return int(stat[2]) if stat else None


def _state_of(pid: int) -> str | None:
    stat = _stat(pid)
    return stat[0] if stat else None


def stop(pids: Mapping[str, int], *, grace_s: float = 30.0) -> None:
    """SIGTERM every component's process group (the scheduler first stops its executor), SIGKILL what is left."""
    for pgid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_group_alive(p) for p in pids.values()):
        for pid in pids.values():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.5)
    for pgid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pgid, 0)


def wait_healthy(base_url: str, pids: Mapping[str, int], state: Path, *, timeout_s: float = 180.0) -> None:
    """Wait until the api-server answers its health check; fail early, with the log, if a component died."""
    deadline = time.monotonic() + timeout_s
    while True:
        for name, pid in pids.items():
            if not alive(pid):
                log = (state / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"Airflow {name} exited at start; the end of its log:\n{log}")
        try:
            with urllib.request.urlopen(f"{base_url}/api/v2/monitor/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the api-server did not answer at {base_url} within {timeout_s:.0f} s")
        time.sleep(1)


def admin_password(airflow_home: Path, user: str = "admin") -> str:
    """SimpleAuthManager writes a password per user to this file when the api-server starts."""
    return json.loads((airflow_home / "simple_auth_manager_passwords.json.generated").read_text())[user]


class RestClient:
    """Airflow's REST API as the UI uses it: a JWT from ``/auth/token``, then ``/api/v2`` (one DAG's runs)."""

    def __init__(self, base: str, password: str, dag_id: str, user: str = "admin") -> None:
        self.base = base
        self.dag_id = dag_id
        self.token = ""
        self.token = self._call("POST", "/auth/token", {"username": user, "password": password})["access_token"]

    def _call(self, method: str, path: str, body: Any = None, *, raw: bool = False) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        request.add_header("Accept", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=30) as resp:
            payload = resp.read().decode()
        return payload if raw else json.loads(payload or "null")

    def get(self, path: str, **kw: Any) -> Any:
        return self._call("GET", path, **kw)

    def trigger(self, conf: dict[str, Any]) -> str:
        run = self._call("POST", f"/api/v2/dags/{self.dag_id}/dagRuns", {"logical_date": None, "conf": conf})
        return run["dag_run_id"]

    def run(self, run_id: str) -> dict[str, Any]:
        return self.get(f"/api/v2/dags/{self.dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def task_instances(self, run_id: str) -> list[dict[str, Any]]:
        quoted = urllib.parse.quote(run_id, safe="")
        return self.get(f"/api/v2/dags/{self.dag_id}/dagRuns/{quoted}/taskInstances?limit=100")["task_instances"]

    def log(self, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        quoted = urllib.parse.quote(run_id, safe="")
        path = (
            f"/api/v2/dags/{self.dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/logs/{try_number}"
            f"?map_index={map_index}"
        )
        content = self.get(path)["content"]
        if not isinstance(content, list):
            return str(content)
        lines = []
        for line in content:  # structured log: one dict per line; a failure's exception comes as error_detail
            if not isinstance(line, dict):
                lines.append(str(line))
                continue
            lines.append(str(line.get("event", "")))
            lines += [f"{e.get('exc_type')}: {e.get('exc_value')}" for e in line.get("error_detail") or []]
        return "\n".join(lines)

    def wait_for_dag(self, timeout_s: float = 180.0) -> None:
        """Until the dag-processor has parsed the DAG file."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.get(f"/api/v2/dags/{self.dag_id}")
                return
            except urllib.error.HTTPError as exc:
                if exc.code != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(2)

    def wait(self, run_id: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.run(run_id)
            if run["state"] in ("success", "failed"):
                return run
            if time.monotonic() > deadline:
                states = {t["task_id"]: t["state"] for t in self.task_instances(run_id)}
                raise TimeoutError(f"run {run_id} still {run['state']} after {timeout_s:.0f} s: {states}")
            time.sleep(2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--state", required=True, help="folder for pids.json and logs/")
    parser.add_argument("--port", type=int, default=8080, help="api-server port (up)")
    args = parser.parse_args(argv)
    state = Path(args.state)
    pids_file = state / "pids.json"
    if args.action == "down":
        if not pids_file.is_file():
            print(f"Nothing to stop: no {pids_file}")
            return 0
        pids = json.loads(pids_file.read_text())
        stop(pids)
        pids_file.unlink()
        print(f"Stopped {', '.join(pids)}")
        return 0
    if pids_file.is_file() and any(alive(pid) for pid in json.loads(pids_file.read_text()).values()):
        print(f"Already running (see {pids_file}); stop it first with `make down`", file=sys.stderr)
        return 1
    pids = start(components(api_port=args.port), os.environ, state)
    try:
        wait_healthy(f"http://127.0.0.1:{args.port}", pids, state)
    except (RuntimeError, TimeoutError) as exc:
        stop(pids)
        print(f"up: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
