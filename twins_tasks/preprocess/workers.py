"""The process pool that transforms images into bins: one task per image, write errors stop the others.

The pool's functions are top-level so that they pickle; a write error (disk full) comes back as a value, so that
the pool ends with close/join rather than terminate, which has been seen to hang.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator
from multiprocessing.pool import IMapIterator
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from ..errors import TwinsError
from ..files import atomic_path
from .sources import unreadable_reason
from .transform import transform_image

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a wait for the pool's next result goes before checking that no worker died.
WATCH_S = 1.0

# Set in pool workers: once one of them cannot write (disk full), the others skip their remaining tasks.
_STOP: Any = None


def _init_worker(stop: Any) -> None:
    """Pool initializer. Airflow's task runner makes forked children ignore SIGTERM, which would hang
    Pool.terminate(): workers get the default handler back."""
    global _STOP
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _STOP = stop


def _image_size(source: str) -> str:
    """`` (a W×H image)`` from the file's header (no decode), or "" when even that cannot be read."""
    try:
        with Image.open(source) as image:
            return f" (a {image.width}×{image.height} {image.mode} image)"
    except Exception:
        return ""


def _convert_one(task: tuple[int, str, str]) -> tuple[int, str | None, Exception | None]:
    """Worker: transform ``source`` into ``target``; return (index, why it cannot be read, error that stops the run).

    Only decoding errors become a reason; a failure to write the bin (disk full) or to find memory for the image
    comes back as the third item (a value, not an exception: the pool then ends with close/join instead of
    terminate, which can hang). A source that cannot be decoded loses the bin an earlier version of it left:
    inference reads every .bin of the folder and would otherwise score the old picture.
    """
    index, source, target = task
    if _STOP is not None and _STOP.is_set():
        return index, None, OSError("stopped: another worker could not write")
    try:
        array = transform_image(source)
    except MemoryError:  # not a bad image: another host, or fewer workers, would make it (its message is empty)
        Path(target).unlink(missing_ok=True)
        return (
            index,
            None,
            TwinsError(
                f"out of memory transforming {source}{_image_size(source)}: give the task more memory or run fewer "
                "--workers (each holds one decoded image)"
            ),
        )
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ValueError...
        Path(target).unlink(missing_ok=True)
        return index, unreadable_reason(source, exc), None
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


def worker_context(preload: str) -> Any:
    """The multiprocessing context for a pool of workers running functions of module ``preload``.

    A plain fork is the cheapest start, but it copies the locks of this process's other threads as they are: one
    held at that moment stays held in the child for ever (a worker hung on its first import, seen in a test
    process that had run a DAG in-process). With other threads running, workers are forked from a forkserver
    that has imported ``preload`` (and with it numpy and Pillow) and runs no other thread.
    """
    if threading.active_count() == 1 or "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([preload])
    return ctx


def _apply_all(func: Callable[[Any], T], items: list[Any]) -> list[T]:
    return [func(item) for item in items]


def watched_map(pool: Any, func: Callable[[Any], T], tasks: list[Any], chunksize: int, what: str) -> Iterator[T]:
    """``func`` over ``tasks`` in ``pool`` (chunks of ``chunksize``, in completion order); a TwinsError once a
    worker has died.

    A worker killed by a signal (the kernel's out-of-memory killer sends SIGKILL) is replaced by the Pool, but the
    tasks it held never come back and ``imap`` would wait for them for ever: a nightly run hung, not failed. The
    chunks are made here because only ``imap_unordered`` with chunksize 1 returns an iterator whose ``next`` takes
    a timeout (a larger chunksize returns a plain generator). Pool keeps its worker processes in ``_pool``
    (CPython, every version since 2.6); without it nothing is watched.
    """
    chunks = [tasks[i : i + chunksize] for i in range(0, len(tasks), max(1, chunksize))]
    results: IMapIterator[list[T]] = pool.imap_unordered(functools.partial(_apply_all, func), chunks)
    seen = {p.pid: p for p in getattr(pool, "_pool", [])}
    while True:
        try:
            yield from results.next(timeout=WATCH_S)
        except StopIteration:
            return
        except multiprocessing.TimeoutError:
            seen.update({p.pid: p for p in getattr(pool, "_pool", [])})
            dead = [p for p in seen.values() if p.exitcode not in (None, 0)]
            if dead:
                code = dead[0].exitcode
                how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
                oom = ", usually the kernel's out-of-memory killer" if code == -signal.SIGKILL else ""
                raise TwinsError(
                    f"a {what} worker process (pid {dead[0].pid}) died ({how}{oom}) with tasks that will never "
                    f"finish: give the task more memory or run fewer --workers, then run it again (finished files "
                    "are kept)"
                ) from None


def run_tasks(tasks: list[tuple[int, str, str]], workers: int) -> Iterator[tuple[int, str | None]]:
    """(index, reason it cannot be decoded or None) per ``(index, source, target)`` task, in completion order;
    the first write error (or out-of-memory error) is raised at the end.

    The pool is always ended with close/join (workers skip their remaining tasks once one write failed),
    never terminate: terminating a pool whose workers are mid-write has been seen to hang.
    """
    failure: Exception | None = None
    if workers <= 1 or len(tasks) <= 1:
        for index, reason, error in map(_convert_one, tasks):
            if error is not None:
                raise error
            yield index, reason
        return
    ctx = worker_context(__name__)
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
        for index, reason, error in watched_map(pool, _convert_one, tasks, chunksize, "preprocess"):
            if error is not None:
                # Keep the real write error, not a worker's "stopped" note that may arrive before it.
                if failure is None or (
                    getattr(failure, "errno", None) is None and getattr(error, "errno", None) is not None
                ):
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
