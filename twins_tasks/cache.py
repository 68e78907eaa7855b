"""Content-addressed caches: a nightly run whose inputs did not change reuses earlier work.

Keys: preprocessed inputs = dataset content + transform version + limit; ONNX model = checkpoint hash +
export options; compiled artifact = model hash + batch size + backend options. Each entry is a directory
built under a temporary name and renamed into place, so a concurrent run never sees half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .backends.base import Backend
from .errors import MissingOutputError
from .files import atomic_dir, cached_sha256, host_tag, sha256_json, write_json_atomic

log = logging.getLogger(__name__)

COMPILE_RECORD = "compile.json"


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def relative_paths(record: dict[str, Any], entry: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """A record to store: the paths under ``keys`` made relative to the entry folder (which lives in the cache).

    A copied or moved work dir then resolves them to its own files, never to the original's.
    """
    stored = dict(record)
    for key in keys:
        value = stored.get(key)
        if isinstance(value, str) and os.path.isabs(value):
            stored[key] = os.path.relpath(value, entry)
    return stored


def _resolve_paths(record: dict[str, Any], entry: Path, keys: tuple[str, ...]) -> dict[str, Any] | None:
    """Paths under ``keys`` made absolute against ``entry``; None when one points outside it.

    Records written before paths were stored relative hold absolute paths: one inside this entry is fine;
    one elsewhere belongs to the work dir this cache was copied from, and the entry is rebuilt.
    """
    resolved = dict(record)
    for key in keys:
        value = resolved.get(key)
        if not isinstance(value, str):
            continue
        path = Path(value)
        if path.is_absolute():
            if not _inside(path, entry):
                return None
        else:
            path = entry / path
        resolved[key] = str(path)
    return resolved


def load_record(
    record_path: Path, file_key: str, *, path_keys: tuple[str, ...] = (), size_key: str | None = None
) -> dict[str, Any] | None:
    """A cache entry's record, if the entry is complete and intact; paths in it absolute.

    Checked cheaply on every reuse: the record parses, the file it names (``file_key``, plus ``path_keys``) lies
    in this entry, exists and, when the record holds its size (``size_key``), still has that size: an artifact
    truncated from outside is rebuilt, not handed to the next step.
    """
    entry = record_path.parent
    try:
        record = _resolve_paths(json.loads(record_path.read_text()), entry, (file_key, *path_keys))
        if record is None:
            log.warning("Cache entry %s names files outside itself (copied from another work dir?)", entry)
            return None
        path = Path(record[file_key])
        if not path.is_file():
            return None
        if size_key is not None and record.get(size_key) is not None and path.stat().st_size != record[size_key]:
            log.warning(
                "Cache entry %s is damaged: %s has %d bytes, its record says %d",
                entry,
                path.name,
                path.stat().st_size,
                record[size_key],
            )
            return None
        return record
    except (OSError, ValueError, KeyError, TypeError):  # no record, or one edited into something else
        return None


# Temp names made by files.atomic_dir / atomic_path: ".<name>.<host>-<pid>.<random>.tmp".
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[^.]+\.tmp$")
# Temp entries whose owner cannot be checked (another host, or names from before the owner was recorded) are
# removed after this long: far longer than any export or compile runs.
STALE_TEMP_SECONDS = 24 * 3600


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def sweep_stale_temps(folder: str | Path, *, max_age_s: float = STALE_TEMP_SECONDS) -> list[str]:
    """Remove hidden temp entries a killed run left in ``folder`` (one cache section); return their names.

    A temp entry is stale when its owner process (host and pid are in its name) is dead on this host, or,
    when its owner cannot be checked, when it has not changed for ``max_age_s``. A killed export leaves a
    380 MB temp folder that nothing else would ever remove.
    """
    folder = Path(folder)
    removed: list[str] = []
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(".") and e.name.endswith(".tmp")]
    except FileNotFoundError:
        return removed
    host, now = host_tag(), time.time()
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue
        if match and match["host"] == host:
            stale = not _pid_alive(int(match["pid"]))
        else:
            stale = age > max_age_s
        if not stale:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            Path(entry.path).unlink(missing_ok=True)
        removed.append(entry.name)
    if removed:
        log.warning(
            "Removed %d temp entr%s left in %s by killed runs: %s",
            len(removed),
            "y" if len(removed) == 1 else "ies",
            folder,
            ", ".join(sorted(removed)[:5]),
        )
    return removed


def discard_incomplete(target: Path) -> None:
    """Move aside a cache folder whose record is missing or names a missing file, so a rebuild can take its name.

    atomic_dir only ever renames complete folders into place, so such a folder was damaged by hand (a file
    deleted) or copied in half; left there, it would make every rebuild look like a lost race and be thrown away.
    """
    if not target.exists():
        return
    log.warning("Cache entry %s is incomplete (its record or the file it names is missing): rebuilding it", target)
    aside = target.with_name(f".{target.name}.incomplete-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(target, aside)
    except FileNotFoundError:  # another run moved it first
        return
    shutil.rmtree(aside, ignore_errors=True)


def require_record(
    record_path: Path, file_key: str, *, path_keys: tuple[str, ...] = (), size_key: str | None = None
) -> dict[str, Any]:
    """The record of an entry just built (or built by a concurrent run that won the rename)."""
    record = load_record(record_path, file_key, path_keys=path_keys, size_key=size_key)
    if record is None:
        raise MissingOutputError(
            f"cache entry {record_path.parent} is incomplete right after it was built: "
            f"check the disk (space, permissions), remove the folder and retry"
        )
    return record


def compile_key(backend: Backend, model: Path, batch_size: int) -> str:
    return sha256_json(
        {
            "model_sha256": cached_sha256(model),
            "batch_size": batch_size,
            "backend": backend.name,
            "options": backend.options_key(),
        }
    )[:16]


def compile_cached(
    backend: Backend, model: str | Path, batch_size: int, cache_root: str | Path, *, name: str | None = None
) -> dict[str, Any]:
    """Compile ``model`` for ``batch_size`` unless an artifact with the same key exists; return its record.

    The record is ``CompileResult.to_dict()`` plus ``key`` and ``cached`` (True when reused).
    """
    model = Path(model)
    key = compile_key(backend, model, batch_size)
    section = Path(cache_root) / "compiled"
    sweep_stale_temps(section)
    target = section / f"{backend.name}_bs{batch_size}_{key}"
    record_path = target / COMPILE_RECORD
    mark_used(target)  # before the check: the cache budget keeps what a run is about to reuse
    record = load_record(record_path, "artifact", size_key="artifact_size")
    if record is not None:
        log.info(
            "Reusing compiled artifact %s (model hash, batch size %d and %s options unchanged; "
            "compiled in %.1f s originally)",
            record["artifact"],
            batch_size,
            backend.name,
            record["compile_seconds"],
        )
        return {**record, "cached": True}
    discard_incomplete(target)
    with atomic_dir(target) as tmp:
        result = backend.compile(model, batch_size, tmp, name=name)
        record = result.to_dict()
        built = Path(result.artifact)
        record["artifact"] = str(built.relative_to(tmp))  # relative to the entry: a moved cache stays valid
        if built.is_file():  # else require_record below says the backend wrote nothing
            record["artifact_size"] = built.stat().st_size
        record["key"] = key
        write_json_atomic(tmp / COMPILE_RECORD, record)
    return {**require_record(record_path, "artifact", size_key="artifact_size"), "cached": False}


# Use markers, for the caches' size budget (twins_tasks.retention evicts least recently used entries first). An
# entry's last use is the mtime of its USE_STAMP (never stamped, or a file entry: its own mtime); a process working
# with an entry holds a shared flock on its USE_LOCK, which eviction takes exclusively before it moves the entry
# away, so an entry a live run holds is never evicted.
CACHE_SECTIONS = ("bins", "onnx", "compiled", "reference")
USE_STAMP = ".twins-used"
USE_LOCK = ".twins-use.lock"


def cache_entry(path: str | Path) -> Path | None:
    """The cache entry (``<cache>/<section>/<entry>``) that ``path`` is, or lies in; None for a path outside one."""
    path = Path(path)
    for candidate in [path, *path.parents][:4]:
        if candidate.parent.name in CACHE_SECTIONS:
            return candidate
    return None


def mark_used(entry: str | Path) -> None:
    """Note that a run uses this cache entry now (a folder, or a file entry such as a reference ``.npz``)."""
    entry = Path(entry)
    with contextlib.suppress(OSError):  # a read-only cache is reused all the same, without a stamp
        if entry.is_dir():
            (entry / USE_STAMP).touch()
        elif entry.is_file():
            os.utime(entry)


@contextlib.contextmanager
def in_use(*paths: str | Path) -> Iterator[None]:
    """Hold the cache entries that ``paths`` are or lie in for the block (a shared lock each): eviction skips them.

    Paths outside the cache (a folder of the user's own) are left alone: no marker is written there.
    """
    with contextlib.ExitStack() as stack:
        for path in paths:
            entry = cache_entry(path)
            if entry is None or not entry.is_dir():
                continue
            try:
                handle = stack.enter_context(open(entry / USE_LOCK, "a+b"))
            except OSError:  # read-only cache, or the entry is gone: the step says what is missing
                continue
            fcntl.flock(handle, fcntl.LOCK_SH)  # waits only while an eviction of this very entry is under way
            mark_used(entry)
        yield
