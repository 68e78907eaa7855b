"""What Airflow knows about a DAG run that recorded no results: its state, and each failed task with its error.

The results page of a run that failed before ``record`` has nothing from the results database to show; Airflow
has the answer. The plugin runs inside the api-server, so Airflow's public REST API (``/api/v2``) is called
in-process (ASGI, no network hop, no URL to configure) with the credentials of the request being served: the
user sees exactly what Airflow would show them, and nothing when Airflow refuses. A failed task's error is the
exception it raised, read from its structured task log (the ``error_detail`` of "Task failed with exception").
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

import httpx

log = logging.getLogger(__name__)

# The api-server's own app: uvicorn (and gunicorn) serve "airflow.api_fastapi.main:app".
AIRFLOW_MAIN_MODULE = "airflow.api_fastapi.main"
TOKEN_COOKIE = "_token"  # where the Airflow UI keeps its JWT (COOKIE_NAME_JWT_TOKEN)
TIMEOUT_S = 20.0
# Failed tasks whose log is read for the error; more are counted, not listed (one cause rarely fails many).
MAX_FAILED_SHOWN = 10
MAX_ERROR_CHARS = 2000

AirflowAppResolver = Callable[[], Any]


def running_airflow_app() -> Any | None:
    """The api-server's ASGI app, when this process is the api-server (it is set once the server has started);
    None elsewhere (unit tests, benchmarks)."""
    return getattr(sys.modules.get(AIRFLOW_MAIN_MODULE), "app", None)


@dataclass(frozen=True)
class FailedTask:
    """One failed task instance: ``map_index`` -1 when not mapped; ``error`` None when its log shows none."""

    task_id: str
    map_index: int
    try_number: int
    error: str | None
    end_date: str | None = None


@dataclass(frozen=True)
class AirflowRun:
    """A DAG run as Airflow knows it. ``problem`` says why the failed tasks could not be listed, if so."""

    dag_id: str
    run_id: str
    state: str
    end_date: str | None = None
    failed: list[FailedTask] = field(default_factory=list)
    more_failed: int = 0
    problem: str | None = None


@dataclass(frozen=True)
class Lookup:
    """Airflow's answer: ``run`` None when it has no such DAG run (or could not be asked: ``problem``)."""

    run: AirflowRun | None
    problem: str | None = None


def forwarded_credentials(headers: Any, cookies: Any) -> dict[str, str]:
    """The request's own credentials, as the api-server's ``get_user`` reads them (bearer header, else cookie)."""
    sent: dict[str, str] = {"Accept": "application/json"}
    if headers.get("authorization"):
        sent["Authorization"] = headers["authorization"]
    token = cookies.get(TOKEN_COOKIE)
    if token:
        sent["Cookie"] = f"{TOKEN_COOKIE}={token}"
    return sent


def error_from_log(content: Any) -> str | None:
    """The exception a task failed with, from its log as ``GET .../logs/{try}`` returns it (JSON ``content``):
    the last ``error_detail`` (the raised exception is its first entry, causes follow), else the last
    error-level line."""
    entries = [e for e in content if isinstance(e, dict)] if isinstance(content, list) else []
    for entry in reversed(entries):
        details = entry.get("error_detail")
        if isinstance(details, list) and details and isinstance(details[0], dict):
            raised = details[0]
            kind, value = raised.get("exc_type"), raised.get("exc_value")
            text = f"{kind}: {value}" if kind and value else str(value or kind or "")
            if text:
                return _clip(text)
    for entry in reversed(entries):
        if str(entry.get("level", "")).lower() in ("error", "critical") and entry.get("event"):
            return _clip(str(entry["event"]))
    return None


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _path(*parts: str) -> str:
    return "/api/v2/" + "/".join(quote(p, safe="") for p in parts)


async def lookup_run(app: Any, headers: dict[str, str], dag_id: str, run_id: str) -> Lookup:
    """Ask Airflow (its ASGI ``app``, with ``headers`` as the caller's credentials) about one DAG run."""
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api-server", headers=headers, timeout=TIMEOUT_S
        ) as client:
            return await _lookup(client, dag_id, run_id)
    except Exception as exc:  # Airflow's own error (or a timeout): the page says so instead of failing
        log.warning("Could not ask Airflow about DAG run %s/%s: %s", dag_id, run_id, exc, exc_info=True)
        return Lookup(None, problem=f"Airflow's API did not answer ({type(exc).__name__}: {exc})")


async def _lookup(client: httpx.AsyncClient, dag_id: str, run_id: str) -> Lookup:
    answer = await client.get(_path("dags", dag_id, "dagRuns", run_id))
    if answer.status_code == 404:
        return Lookup(None)
    if answer.status_code != 200:
        return Lookup(None, problem=f"Airflow answered {answer.status_code} for this DAG run")
    dag_run = answer.json()
    run = AirflowRun(
        dag_id=dag_id, run_id=run_id, state=str(dag_run.get("state") or "unknown"), end_date=dag_run.get("end_date")
    )
    listed = await client.get(
        _path("dags", dag_id, "dagRuns", run_id, "taskInstances"), params={"state": "failed", "limit": 100}
    )
    if listed.status_code != 200:
        return Lookup(replace(run, problem=f"Airflow answered {listed.status_code} for its task instances"))
    instances = sorted(listed.json().get("task_instances", []), key=lambda ti: str(ti.get("end_date") or ""))
    shown = instances[:MAX_FAILED_SHOWN]
    errors = await asyncio.gather(*(_error_of(client, dag_id, run_id, ti) for ti in shown))
    failed = [
        FailedTask(
            task_id=ti["task_id"],
            map_index=int(ti.get("map_index", -1)),
            try_number=int(ti.get("try_number") or 1),
            error=error,
            end_date=ti.get("end_date"),
        )
        for ti, error in zip(shown, errors, strict=True)
    ]
    return Lookup(replace(run, failed=failed, more_failed=max(0, len(instances) - len(shown))))


async def _error_of(client: httpx.AsyncClient, dag_id: str, run_id: str, ti: dict[str, Any]) -> str | None:
    """The error of one failed task instance's last try; None when its log cannot be read or shows none."""
    try_number = int(ti.get("try_number") or 1)
    params = {"map_index": ti.get("map_index", -1)}
    path = _path("dags", dag_id, "dagRuns", run_id, "taskInstances", ti["task_id"], "logs", str(try_number))
    try:
        answer = await client.get(path, params=params)
    except Exception as exc:  # one unreadable log (a worker gone) must not hide the others
        log.warning("Could not read the log of %s: %s", path, exc)
        return None
    if answer.status_code != 200:
        return None
    return error_from_log(answer.json().get("content"))
