"""Hooks: the tool runner every recipe step uses, and the results database on the ``twins_results`` Connection."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from twins_tasks.cli import EXIT_INPUT
from twins_tasks.errors import InputError, ToolError
from twins_tasks.store import ResultsStore, default_url
from twins_tasks.toolrun import ToolResult, kill_process_group, run_tool

RESULTS_CONN_ID = "twins_results"


class ToolHook(BaseHook):
    """Run one external tool at a time (argv, never a shell string), streaming its output into the task log.

    An instance is a :class:`twins_tasks.toolrun.ToolRunner`: pass it as ``runner=`` to a backend. It keeps
    the running process, so that :meth:`send_sigterm` (the operators' ``on_kill``) stops the tool and every
    process it started (its own process group), even after the tool itself exited.

    :param kill_grace_s: seconds between SIGTERM and SIGKILL when the task is killed.
    """

    hook_name = "Twins-SVT-L tool runner"

    def __init__(self, *, kill_grace_s: float = 10.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kill_grace_s = kill_grace_s
        self.sub_process: subprocess.Popen | None = None
        # Every tool still running: one batch size's inference runs one ais_bench per chip at once.
        self.sub_processes: list[subprocess.Popen] = []
        self._started = threading.Lock()  # tools start from several threads then

    def __call__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        title: str | None = None,
    ) -> ToolResult:
        """Run ``argv``; log each line live (folded under ``::group::title``); return exit code and last lines."""
        return run_tool(argv, env=env, cwd=cwd, timeout=timeout, title=title, logger=self.log, on_start=self._keep)

    def _keep(self, proc: subprocess.Popen) -> None:
        with self._started:
            self.sub_processes = [p for p in self.sub_processes if p.poll() is None] + [proc]
            self.sub_process = proc

    def run_twins(self, subcommand: str, *args: str, title: str | None = None) -> dict[str, Any]:
        """Run a ``twins`` subcommand in a child process and return the JSON record it writes to ``--record``.

        For steps that start worker processes: a Celery prefork worker runs tasks in daemonic processes, which
        may not have children, while a child process of ours may. Exit code 2 (bad input) becomes an
        :class:`InputError`, any other failure a :class:`ToolError`; both carry the step's own last lines.
        """
        with tempfile.TemporaryDirectory(prefix="twins-record-") as tmp:
            record = Path(tmp) / "record.json"
            argv = [sys.executable, "-m", "twins_tasks.cli", subcommand, *args, "--record", str(record)]
            result = self(argv, title=title)
            if result.exit_code == EXIT_INPUT:
                raise InputError(_last_error(result) or f"twins {subcommand}: bad input (exit code 2)")
            if result.exit_code != 0 or not record.is_file():
                raise ToolError(
                    f"twins {subcommand} failed (exit code {result.exit_code}): {_last_error(result) or 'see the log'}",
                    exit_code=result.exit_code,
                    lines=result.tail(),
                )
            return json.loads(record.read_text())

    def send_sigterm(self) -> None:
        """Stop the running tools and their children: SIGTERM to each process group, SIGKILL after the grace."""
        others = [p for p in self.sub_processes if p is not self.sub_process and p.poll() is None]
        stoppers = [threading.Thread(target=kill_process_group, args=(p, self.kill_grace_s)) for p in others]
        for stopper in stoppers:  # at once: each may take the grace
            stopper.start()
        self._stop_last()
        for stopper in stoppers:
            stopper.join()

    def _stop_last(self) -> None:
        proc = self.sub_process
        if proc is None:
            return
        self.log.info("Sending SIGTERM to the process group of pid %d", proc.pid)
        if proc.poll() is None:
            kill_process_group(proc, grace_s=self.kill_grace_s)
            return
        # The tool itself has exited; children it left behind are still in its group (pgid == its pid,
        # since it was started in a new session), and a live group's id is never reused.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)


def _last_error(result: ToolResult) -> str | None:
    """The ``twins <step>: error: ...`` line a failed step prints last."""
    for line in reversed(result.lines):
        if ": error: " in line:
            return line.split(": error: ", 1)[1]
    return None


def results_url(conn_id: str = RESULTS_CONN_ID) -> str:
    """The results database's SQLAlchemy URL: the Connection ``conn_id``'s URI, else the SQLite file
    ``$AIRFLOW_HOME/twins_results.db``. The one lookup the DAG's tasks and the results UI share.

    Airflow's own Connection lookup picks the source for the process it runs in: a task asks the API server
    through its supervisor, the api-server reads environment variables, secrets backends and the metadata DB.

    :param conn_id: the Connection's id.
    """
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return default_url(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")
    return conn.get_uri()


class ResultsHook(BaseHook):
    """The results database: the Airflow Connection ``twins_results`` (any SQLAlchemy URL, e.g.
    ``AIRFLOW_CONN_TWINS_RESULTS=postgresql://user:pass@host/db``), else ``$AIRFLOW_HOME/twins_results.db``
    (see :func:`results_url`).

    Never Airflow's own metadata database: Airflow 3 forbids task code to touch it.

    :param results_conn_id: the Connection's id.
    """

    conn_name_attr = "results_conn_id"
    default_conn_name = RESULTS_CONN_ID
    conn_type = "generic"
    hook_name = "Twins-SVT-L results database"

    def __init__(self, results_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.results_conn_id = results_conn_id

    def get_url(self) -> str:
        return results_url(self.results_conn_id)

    @cached_property
    def store(self) -> ResultsStore:
        return ResultsStore(self.get_url())
