"""The process pool that transforms images into bins: one task per image, write errors stop the others.

The pool's functions are top-level so that they pickle; a write error (disk full) comes back as a value, so that
the pool ends with close/join rather than terminate, which has been seen to hang.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..files import atomic_path
from .transform import transform_image

log = logging.getLogger(__name__)

# Set in pool workers: once one of them cannot write (disk full), the others skip their remaining tasks.
_STOP: Any = None


def _init_worker(stop: Any) -> None:
    """Pool initializer. Airflow's task runner makes forked children ignore SIGTERM, which would hang
    Pool.terminate(): workers get the default handler back."""
    global _STOP
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _STOP = stop


def _convert_one(task: tuple[int, str, str]) -> tuple[int, str | None, OSError | None]:
    """Worker: transform ``source`` into ``target``; return (index, why it cannot be read, write error).

    Only decoding errors become a reason; a failure to write the bin (disk full) comes back as the third item
    (a value, not an exception: the pool then ends with close/join instead of terminate, which can hang).
    A source that cannot be decoded loses the bin an earlier version of it left: inference reads every
    .bin of the folder and would otherwise score the old picture.
    """
    index, source, target = task
    if _STOP is not None and _STOP.is_set():
        return index, None, OSError("stopped: another worker could not write")
    try:
        array = transform_image(source)
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ValueError...
        Path(target).unlink(missing_ok=True)
        if os.path.islink(source) and not os.path.exists(source):
            return index, f"dangling symlink or symlink loop (-> {os.readlink(source)}): {type(exc).__name__}", None
        return index, f"{type(exc).__name__}: {exc}", None
    try:
        with atomic_path(target) as tmp, open(tmp, "wb") as fh:
            # A file write, not ndarray.tofile: on a full disk tofile raises an OSError without errno
            # ("150528 requested and 124928 written"), which cannot be told apart from other failures.
            fh.write(array.tobytes())
    except OSError as exc:
        if _STOP is not None:
            _STOP.set()
        return index, None, exc
    return index, None, None


def default_workers() -> int:
    """The cores this process may use (containers, taskset), as the default number of workers."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_tasks(tasks: list[tuple[int, str, str]], workers: int) -> Iterator[tuple[int, str | None]]:
    """(index, reason it cannot be decoded or None) per ``(index, source, target)`` task, in completion order;
    the first write error is raised at the end.

    The pool is always ended with close/join (workers skip their remaining tasks once one write failed),
    never terminate: terminating a pool whose workers are mid-write has been seen to hang.
    """
    failure: OSError | None = None
    if workers <= 1 or len(tasks) <= 1:
        for index, reason, error in map(_convert_one, tasks):
            if error is not None:
                raise error
            yield index, reason
        return
    ctx = multiprocessing.get_context()
    stop = ctx.Event()
    try:
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(stop,))
    except AssertionError as exc:  # "daemonic processes are not allowed to have children"
        log.warning("Cannot start worker processes here (%s): preprocessing in this process", exc)
        yield from run_tasks(tasks, 1)
        return
    # Chunks amortise the inter-process round trip; small enough that progress keeps moving.
    chunksize = max(1, min(64, len(tasks) // (workers * 8)))
    try:
        for index, reason, error in pool.imap_unordered(_convert_one, tasks, chunksize=chunksize):
            if error is not None:
                # Keep the real write error, not a worker's "stopped" note that may arrive before it.
                if failure is None or (failure.errno is None and error.errno is not None):
                    failure = error
                stop.set()
                continue
            if failure is None:
                yield index, reason
    except BaseException:  # interrupted (Ctrl-C, SIGTERM): don't wait for the remaining images
        pool.terminate()
        pool.join()
        raise
    pool.close()
    pool.join()
    if failure is not None:
        raise failure
