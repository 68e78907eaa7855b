"""A SubprocessHook that runs the Ascend tools through twins_tasks' tool runner.

The backend calls ``hook(argv, env=..., cwd=..., timeout=..., title=...)``; every line of the tool's output
goes into the task log as it arrives, long outputs folded under ``::group::title``, and ``on_kill`` stops
the tool with everything it started (its own process group).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

from airflow.providers.standard.hooks.subprocess import SubprocessHook

from twins_tasks.toolrun import ToolResult, kill_process_group, run_tool


class ToolHook(SubprocessHook):
    """Run one external tool at a time (argv, never a shell string), streaming its output into the log.

    An instance is a :class:`twins_tasks.toolrun.ToolRunner`: pass it as ``runner=`` to a backend.

    :param kill_grace_s: seconds between SIGTERM and SIGKILL when the task is killed.
    """

    def __init__(self, *, kill_grace_s: float = 10.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.kill_grace_s = kill_grace_s

    def run_command(  # type: ignore[override]  # returns a ToolResult: exit code and the output's last lines
        self,
        command: list[str],
        env: dict[str, str] | None = None,
        output_encoding: str = "utf-8",
        cwd: str | None = None,
        timeout: float | None = None,
        title: str | None = None,
    ) -> ToolResult:
        """Run ``command``; log each line live; return its exit code and last lines.

        :param command: the tool and its arguments, one literal string each.
        :param env: the whole environment of the tool (default: this process's).
        :param output_encoding: must be UTF-8 (the tools print ASCII; undecodable bytes are escaped).
        :param cwd: working directory (default: this process's; the backend passes absolute paths).
        :param timeout: seconds after which the tool's process group is stopped (``timed_out`` is set).
        :param title: fold the tool's output under ``::group::title`` in the log view.
        """
        if output_encoding.lower().replace("-", "") != "utf8":
            raise ValueError(f"ToolHook decodes tool output as UTF-8, not {output_encoding!r}")

        def keep(proc: subprocess.Popen) -> None:
            self.sub_process = proc

        return run_tool(command, env=env, cwd=cwd, timeout=timeout, title=title, logger=self.log, on_start=keep)  # type: ignore[arg-type]

    def __call__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        title: str | None = None,
    ) -> ToolResult:
        return self.run_command(
            list(argv), env=dict(env) if env is not None else None, cwd=cwd, timeout=timeout, title=title
        )

    def send_sigterm(self) -> None:
        """Stop the running tool and its children: SIGTERM to its process group, SIGKILL after the grace."""
        proc = self.sub_process
        if proc is None:
            return
        self.log.info(
            "Sending SIGTERM to the process group of %s (pid %d)",
            proc.args[0] if isinstance(proc.args, list) and proc.args else "tool",
            proc.pid,
        )
        if proc.poll() is None:
            kill_process_group(proc, grace_s=self.kill_grace_s)
            return
        # The tool itself has exited; children it left behind are still in its group (pgid == its pid,
        # since it was started in a new session), and a live group's id is never reused.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
