"""Run an external tool (atc, ais_bench, npu-smi) as an argv list, streaming its output live.

Never a shell string: every user value reaches the tool as one literal argument. The tool gets its own
process group so that a timeout or a kill stops it and everything it started.

A tool must not outlive its task, or hold a chip its task no longer leases: a SIGKILLed ``twins run`` or
Airflow worker runs no code of ours. So, on Linux, a tool is killed when the thread that started it dies
(``PR_SET_PDEATHSIG``; the kernel sends it when the spawning *thread* exits, and :func:`run_tool` waits for the
tool in that thread, so it fires only when the task itself is gone). And a tool started inside
:func:`inherit_fds` (a chip lease, :func:`twins_tasks.devices.lease_chip`) keeps that lock file open: the lease
lasts as long as the tool, or anything it started with the file still open, runs.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import ctypes
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

KEEP_LINES = 5000  # enough for a perf summary or atc's error block; a 50k-image ais_bench log is longer
PROGRESS_LOG_S = 10.0  # at most one redrawn progress-bar state per this many seconds goes into the log
_LINE_END = re.compile(rb"\r\n|\n|\r")
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Open files every tool started in this context inherits (see inherit_fds); per thread, as leases are.
_INHERITED_FDS: contextvars.ContextVar[tuple[int, ...]] = contextvars.ContextVar("twins_tool_fds", default=())


@dataclass
class ToolResult:
    argv: list[str]
    exit_code: int
    lines: list[str] = field(default_factory=list)
    seconds: float = 0.0
    timed_out: bool = False

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def tail(self, n: int = 20) -> list[str]:
        return self.lines[-n:]


class LineLogger(Protocol):
    """Where a tool's lines go: a ``logging.Logger``, or Airflow's task logger (``hook.log``)."""

    def info(self, msg: Any, /, *args: Any) -> Any: ...


class ToolRunner(Protocol):
    """What backends call to run a tool; the Airflow hook provides one that logs into the task log."""

    def __call__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        title: str | None = None,
    ) -> ToolResult: ...


@contextlib.contextmanager
def inherit_fds(*fds: int) -> Iterator[None]:
    """Every tool :func:`run_tool` starts in this block (in this thread) gets ``fds`` open too, e.g. a lease's lock."""
    token = _INHERITED_FDS.set((*_INHERITED_FDS.get(), *fds))
    try:
        yield
    finally:
        _INHERITED_FDS.reset(token)


def _load_prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` (Linux), looked up once here: the child may only call it, not load anything."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _load_prctl()


def _dies_with(parent: int) -> Callable[[], None] | None:
    """The ``preexec_fn`` that makes a tool die with ``parent`` (None where the OS has no such thing).

    It runs in the child between fork and exec, where another thread's lock may be held for ever: it only makes
    two system calls, through a function looked up beforehand.
    """
    prctl = _PRCTL
    if prctl is None:
        return None
    kill = int(signal.SIGKILL)

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: the signal will never come
            os._exit(1)

    return arm


def kill_process_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the tool's process group, then SIGKILL whatever is left after ``grace_s``."""
    # Tools start in a new session, so their pid is the group id; getpgid() would fail once the tool itself
    # has exited and leave its children running.
    pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _split_output(read: Callable[[int], bytes]) -> Iterator[tuple[str, bool]]:
    """The lines of a tool's output as they arrive: ``(text, is_progress)``.

    A line ends at ``\n`` (or ``\r\n``); text that ends at a lone ``\r`` is a progress-bar state that the
    next one overwrites on a terminal (``is_progress``).
    """
    pending = b""
    while chunk := read(65536):
        pending += chunk
        start = 0
        for match in _LINE_END.finditer(pending):
            if match.group() == b"\r" and match.end() == len(pending):
                break  # maybe the first half of '\r\n': wait for the next chunk
            yield _decode(pending[start : match.start()]), match.group() == b"\r"
            start = match.end()
        pending = pending[start:]
    if pending.rstrip(b"\r"):
        yield _decode(pending.rstrip(b"\r")), False


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="backslashreplace").rstrip()


def run_tool(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
    title: str | None = None,
    logger: LineLogger | None = None,
    on_start: Callable[[subprocess.Popen], None] | None = None,
) -> ToolResult:
    """Run ``argv``; log every line as it arrives; return exit code and the last lines.

    :param title: fold the tool's output under ``::group::title`` in the Airflow log view.
    :param on_start: called with the Popen (the Airflow hook keeps it for ``on_kill``).
    """
    out = logger or log
    argv = [str(a) for a in argv]
    lines: collections.deque[str] = collections.deque(maxlen=KEEP_LINES)
    out.info("Running: %s", argv)
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        start_new_session=True,
        # Not outliving this task, and holding its chip lease while it runs (see the module docstring). The
        # death signal follows the spawning thread: this thread waits for the tool below, even on an error.
        preexec_fn=_dies_with(os.getpid()),
        pass_fds=_INHERITED_FDS.get(),
    )
    if on_start is not None:
        on_start(proc)
    timed_out = threading.Event()
    timer = None
    if timeout:

        def _expire() -> None:
            timed_out.set()
            kill_process_group(proc)

        timer = threading.Timer(timeout, _expire)
        timer.daemon = True
        timer.start()
    if title:
        out.info("::group::%s", title)
    try:
        assert proc.stdout is not None
        last_progress = -PROGRESS_LOG_S
        fd = proc.stdout.fileno()  # raw reads: a progress bar's '\r' redraws arrive without a newline
        for line, is_progress in _split_output(lambda size: os.read(fd, size)):
            if is_progress:
                # A progress bar (tqdm, as ais_bench prints it) redraws itself after '\r' many times a
                # second: log a state now and then; its final state ends with a newline and is kept.
                now = time.perf_counter()
                if not line or now - last_progress < PROGRESS_LOG_S:
                    continue
                last_progress = now
            lines.append(line)
            out.info("%s", line)
        proc.wait()
    except BaseException:
        kill_process_group(proc)
        raise
    finally:
        if timer is not None:
            timer.cancel()
        if title:
            out.info("::endgroup::")
    seconds = time.perf_counter() - start
    out.info("%s exited with code %s after %.1f s", os.path.basename(argv[0]), proc.returncode, seconds)
    return ToolResult(
        argv=argv, exit_code=proc.returncode, lines=list(lines), seconds=seconds, timed_out=timed_out.is_set()
    )
