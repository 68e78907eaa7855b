"""Retention: the work dir stays bounded however many nightly runs go through it (issue 19).

Per-image outputs are bulky (a 50,000-image run with six batch sizes leaves 3.5 GiB and 300,000 files) and
needed only until they are scored. :func:`apply_retention` (the DAG's ``cleanup`` task, the end of ``twins run``,
``twins clean``) applies a :class:`~twins_tasks.types.RetentionPolicy`:

- run folders (``<work>/runs/<run>``) are classified: **live** (its ``twins run`` holds the owner lock, or it is
  not recorded yet and was touched within the grace period: it may still be running), **recorded** or **failed**
  (in the results database, or with a report: a run recorded in another database), **dead** (not recorded,
  untouched for the grace period: it died before ``record``);
- recorded runs keep their outputs (``result/``) while among the newest ``keep_runs``, failed ones (status
  partial/failed, or a failed regression check) also while younger than ``keep_failed_days``; older ones lose
  ``result/`` and keep their report and failure notes. Dead runs' folders are removed whole. The results
  database and reports are never touched, nor a live run's folder, nor the folder of the run applying it;
- the caches (``<work>/cache/{bins,onnx,compiled,reference}``) are held to ``cache_budget_gib``: least recently
  used entries go first (:func:`twins_tasks.cache.mark_used` notes each use), never one used within the grace
  period or held by a running step (:func:`twins_tasks.cache.in_use`).

Removing a file that went away or cannot be removed is a hiccup: said in the report, never a failure. Not being
able to list the run folders or read the results database is: without them, no folder can be told dead.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import shutil
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from .cache import CACHE_SECTIONS, USE_LOCK, USE_STAMP, sweep_stale_temps
from .errors import TwinsError
from .files import host_tag
from .steps import FAILURES_DIR, safe_name
from .store import RUN_UID_FILE, ResultsStore, ValidationRun
from .types import RetentionPolicy

log = logging.getLogger(__name__)

RUNS_DIR = "runs"  # <work>/runs/<safe_name(run key)>: steps.plan_run
CACHE_DIR = "cache"
RESULT_DIR = "result"  # a run folder's per-image outputs and ais_bench summaries: what retention removes
REPORT_NAME = "report.md"  # written after `record` (report.write_report): a recorded run's mark on disk
OWNER_LOCK = ".twins-run.lock"  # held (flock) by the `twins run` process that owns the folder

LIVE, RECORDED, FAILED, DEAD = "live", "recorded", "failed", "dead"
GIB = 2**30


@dataclass(frozen=True)
class RunFolder:
    """One run folder and what retention makes of it."""

    path: Path
    state: str  # LIVE, RECORDED, FAILED or DEAD
    why: str
    touched_at: float  # newest mtime of the folder and of the folders in it (epoch seconds)
    recorded_at: float | None = None


@dataclass(frozen=True)
class Removal:
    path: Path
    what: str  # "outputs", "dead run", "cache entry"
    why: str
    size: int  # bytes on disk
    error: str | None = None  # a hiccup: it could not be (wholly) removed


@dataclass
class RetentionReport:
    """What :func:`apply_retention` removed (or, in a dry run, would remove) and the space left."""

    policy: RetentionPolicy
    work_dir: Path
    dry_run: bool = False
    runs: list[RunFolder] = field(default_factory=list)
    removals: list[Removal] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # why the others stay, one line per reason
    notes: list[str] = field(default_factory=list)
    cache_size: int = 0  # after
    cache_entries: int = 0
    disk: dict[str, int] = field(default_factory=dict)  # free/total bytes, free/total inodes of the work dir's fs

    @property
    def freed(self) -> int:
        return sum(r.size for r in self.removals if r.error is None)

    def lines(self) -> list[str]:
        p = self.policy
        budget = "no cache budget" if p.cache_budget_gib is None else f"cache budget {p.cache_budget_gib:g} GiB"
        head = (
            f"Retention{' (dry run: nothing removed)' if self.dry_run else ''} in {self.work_dir}: outputs of the "
            f"last {p.keep_runs} recorded run(s) kept, of failed runs {p.keep_failed_days:g} day(s); unrecorded "
            f"runs untouched for {p.grace_hours:g} h are dead; {budget}"
        )
        verb = "would remove" if self.dry_run else "removed"
        lines = [head]
        for r in self.removals:
            rel = _relative(r.path, self.work_dir)
            if r.error:
                lines.append(f"  NOT removed {rel} ({r.what}, {r.why}): {r.error}")
            else:
                lines.append(f"  {verb} {rel}: {_size(r.size)} ({r.what}, {r.why})")
        if not self.removals:
            lines.append("  nothing to remove")
        lines += [f"  kept {line}" for line in self.kept]
        lines += [f"  {line}" for line in self.notes]
        freed = f"{'Would free' if self.dry_run else 'Freed'} {_size(self.freed)}"
        cache = (
            f"cache {_size(self.cache_size)} in {self.cache_entries} entr{'y' if self.cache_entries == 1 else 'ies'}"
        )
        if self.policy.cache_budget_gib is not None:
            cache += f" (budget {self.policy.cache_budget_gib:g} GiB)"
        lines.append(f"{freed}; {cache}; {self.space_left()}")
        return lines

    def text(self) -> str:
        return "\n".join(self.lines())

    def space_left(self) -> str:
        if not self.disk:
            return "free space unknown"
        used = 1 - self.disk["free"] / self.disk["total"] if self.disk["total"] else 0.0
        inodes = ""
        if self.disk.get("files_total"):
            inodes = f", {self.disk['files_free']:,} of {self.disk['files_total']:,} files (inodes) free"
        return (
            f"the work dir's filesystem has {_size(self.disk['free'])} free of {_size(self.disk['total'])} "
            f"({used:.0%} used){inodes}"
        )

    def summary(self) -> dict[str, Any]:
        """Small and JSON-able (the DAG task's XCom)."""
        return {
            "dry_run": self.dry_run,
            "removed": [str(r.path) for r in self.removals if r.error is None],
            "not_removed": {str(r.path): r.error for r in self.removals if r.error},
            "freed_bytes": self.freed,
            "cache_bytes": self.cache_size,
            "free_bytes": self.disk.get("free"),
        }


# ------------------------------------------------------------------------------------------ run folders


def own_run_folder(run_dir: str | Path) -> BinaryIO:
    """Own ``run_dir`` while the returned file stays open (an exclusive flock; the kernel drops it when the process
    dies): retention treats the folder as live. ``twins run`` holds it from the folder's creation to its end."""
    handle = open(Path(run_dir) / OWNER_LOCK, "a+b")  # the open file is the ownership: no `with`
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def _owner_alive(folder: Path) -> bool:
    """A process holds the folder's owner lock (a `twins run` going on, on this host or over a shared mount)."""
    try:
        fd = os.open(folder / OWNER_LOCK, os.O_RDWR)
    except OSError:  # no lock file: not a `twins run` folder (the DAG's), or one from before the lock
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _touched_at(folder: Path) -> float:
    """The newest mtime of the folder and the folders in it, two levels down (a running infer writes into
    ``result/<name>.partial``, which changes that folder's mtime with every output): a few stats, not 300,000."""
    newest = folder.stat().st_mtime
    stack = [(folder, 0)]
    while stack:
        here, depth = stack.pop()
        with contextlib.suppress(OSError), os.scandir(here) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    newest = max(newest, st.st_mtime)
                    if depth < 2 and stat.S_ISDIR(st.st_mode):
                        stack.append((Path(entry.path), depth + 1))
    return newest


def _epoch(value: dt.datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back the naive UTC time it was given
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def recorded_runs(store: ResultsStore) -> dict[str, tuple[str, str | None, float | None, str | None]]:
    """Folder name -> (status, regression status, recorded at, run identity) of every run in the results database."""
    columns = (
        ValidationRun.run_key,
        ValidationRun.status,
        ValidationRun.regression_status,
        ValidationRun.recorded_at,
        ValidationRun.run_uid,
    )
    try:
        with Session(store.engine) as session:
            rows = session.execute(select(*columns).order_by(ValidationRun.recorded_at)).all()
    except DBAPIError as exc:
        raise TwinsError(
            f"cannot read the recorded runs from the results database {store.describe()} "
            f"({str(exc.orig or exc).splitlines()[0]}): without them no run folder can be told dead, so nothing "
            "was removed; check the database and retry (twins clean)"
        ) from exc
    return {safe_name(key): (status, regression, _epoch(at), uid) for key, status, regression, at, uid in rows}


def _same_run(row_uid: str | None, folder_uid: str | None) -> bool:
    """Is the recorded row this folder's run? Not when both carry identities that differ: the folder is another
    run of that name, refused at record (a row from before identities, or a CLI run's folder, matches by name)."""
    return row_uid is None or folder_uid is None or row_uid == folder_uid


def _folder_uid(path: Path) -> str | None:
    """The identity a DAG run's plan left in its folder (store.folder_run_uid); None for a CLI run or an older one."""
    try:
        return (path / RUN_UID_FILE).read_text().strip() or None
    except OSError:
        return None


def classify_runs(
    work_dir: str | Path,
    store: ResultsStore,
    *,
    grace_hours: float,
    current_run_key: str | None = None,
    now: float | None = None,
) -> list[RunFolder]:
    """Every run folder under ``<work_dir>/runs``, newest first, as live, recorded, failed or dead."""
    runs_dir = Path(work_dir) / RUNS_DIR
    if not runs_dir.is_dir():
        return []
    now = time.time() if now is None else now
    grace_s = grace_hours * 3600
    recorded = recorded_runs(store)
    current = safe_name(current_run_key) if current_run_key else None
    folders: list[RunFolder] = []
    with os.scandir(runs_dir) as entries:  # unlistable: truly wrong, raised
        names = sorted(e.name for e in entries if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))
    for name in names:
        path = runs_dir / name
        try:
            touched = _touched_at(path)
        except FileNotFoundError:  # removed meanwhile
            continue
        idle_h = (now - touched) / 3600
        if name == current:
            # Never touched; but once recorded it is the newest recorded run, and takes one of the keep_runs places.
            mine = name in recorded and _same_run(recorded[name][3], _folder_uid(path))
            at = (recorded[name][2] or touched) if mine else None
            folders.append(RunFolder(path, LIVE, "the run applying this policy", touched, at))
        elif _owner_alive(path):
            folders.append(RunFolder(path, LIVE, "its twins run is going on (owner lock held)", touched))
        elif name in recorded and _same_run(recorded[name][3], _folder_uid(path)):
            status, regression, at, _ = recorded[name]
            failed = status != "success" or regression == "failed"
            why = f"recorded: {status}" + (f", regression check {regression}" if regression else "")
            folders.append(RunFolder(path, FAILED if failed else RECORDED, why, touched, at if at else touched))
        elif (path / REPORT_NAME).is_file():
            # Reported, so recorded, in another results database (CLI runs with --results-url share work dirs).
            failed = any((path / FAILURES_DIR).glob("*.json"))
            why = "reported (recorded in another results database)" + ("; some steps failed" if failed else "")
            at = (path / REPORT_NAME).stat().st_mtime
            folders.append(RunFolder(path, FAILED if failed else RECORDED, why, touched, at))
        elif now - touched < grace_s:
            why = f"not recorded, touched {idle_h:.1f} h ago (under {grace_hours:g} h): may still be running"
            folders.append(RunFolder(path, LIVE, why, touched))
        else:
            why = f"not recorded and untouched for {idle_h:.1f} h: the run died before record"
            folders.append(RunFolder(path, DEAD, why, touched))
    return sorted(folders, key=lambda f: (f.recorded_at or f.touched_at, f.path.name), reverse=True)


# ------------------------------------------------------------------------------------------ sizes, removal


def disk_size(path: str | Path) -> int:
    """Bytes ``path`` takes on disk (allocated blocks), a folder with everything in it; links not followed."""
    path = Path(path)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return 0
    total = st.st_blocks * 512
    if not stat.S_ISDIR(st.st_mode):
        return total
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def _remove(path: Path) -> str | None:
    """Remove a file or folder; None when done, else the first error (the rest is still removed)."""
    errors: list[str] = []

    def failed(_func: Any, failed_path: str, info: Any) -> None:
        exc = info[1]
        if not isinstance(exc, FileNotFoundError):  # gone meanwhile: that is what we wanted
            errors.append(f"{failed_path}: {getattr(exc, 'strerror', None) or exc}")

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, onerror=failed)  # Python 3.11: no onexc yet
    else:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            errors.append(f"{path}: {exc.strerror or exc}")
    if errors:
        return errors[0] + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
    return None


# ------------------------------------------------------------------------------------------ caches


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    size: int
    last_used: float  # epoch seconds: the newer of the entry's mtime and its use stamp's


def last_used(entry: Path) -> float:
    """When a run last used a cache entry: its use stamp (:func:`twins_tasks.cache.mark_used`); an entry never
    stamped (built just now, or before stamps existed), or a file entry: its own mtime."""
    try:
        return (entry / USE_STAMP).stat().st_mtime
    except OSError:
        return entry.stat().st_mtime


def cache_entries(cache_root: str | Path) -> list[CacheEntry]:
    """Every entry of the caches, least recently used first (hidden temp names are not entries)."""
    found = []
    for section in CACHE_SECTIONS:
        folder = Path(cache_root) / section
        try:
            names = sorted(e.name for e in os.scandir(folder) if not e.name.startswith("."))
        except FileNotFoundError:
            continue
        for name in names:
            path = folder / name
            with contextlib.suppress(FileNotFoundError):
                found.append(CacheEntry(path, disk_size(path), last_used(path)))
    return sorted(found, key=lambda e: (e.last_used, str(e.path)))


def _evict(entry: CacheEntry) -> tuple[bool, str | None]:
    """Move a cache entry aside and remove it unless a step holds it or a run used it meanwhile.

    Returns (evicted, error). The exclusive lock waits for no one: a step that holds the entry (a shared lock,
    :func:`twins_tasks.cache.in_use`) keeps it. Renamed under a temp name of this process first, so a killed
    eviction's leftovers are swept like any temp (``cache.sweep_stale_temps``) and a reader never sees half.
    """
    path = entry.path
    aside = path.with_name(f".{path.name}.{host_tag()}-{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if path.is_dir():
            with open(path / USE_LOCK, "a+b") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False, None
                # Used since it was listed? Its stamp says (the lock file just made changed the folder's mtime).
                with contextlib.suppress(OSError):
                    if (path / USE_STAMP).stat().st_mtime > entry.last_used:
                        return False, None
                os.rename(path, aside)
        else:
            if path.stat().st_mtime > entry.last_used:  # used since it was listed
                return False, None
            os.rename(path, aside)
    except FileNotFoundError:  # another clean got there first
        return False, None
    except OSError as exc:
        return False, f"{exc.strerror or exc}"
    return True, _remove(aside)


def enforce_cache_budget(
    cache_root: str | Path,
    budget_bytes: int | None,
    *,
    grace_hours: float,
    dry_run: bool = False,
    now: float | None = None,
) -> tuple[list[Removal], list[CacheEntry], list[str]]:
    """Evict least recently used cache entries until the caches fit ``budget_bytes`` (None: no budget).

    Never an entry used within ``grace_hours`` (a run that may still be going uses it) or held by a running
    step. Returns (removals, the entries left, notes).
    """
    now = time.time() if now is None else now
    grace_s = grace_hours * 3600
    notes: list[str] = []
    if not dry_run:
        for section in CACHE_SECTIONS:
            swept = sweep_stale_temps(Path(cache_root) / section)
            if swept:
                plural = "y" if len(swept) == 1 else "ies"
                notes.append(f"removed {len(swept)} temp entr{plural} left in cache/{section} by killed runs")
    entries = cache_entries(cache_root)
    total = sum(e.size for e in entries)
    removals: list[Removal] = []
    left = list(entries)
    held: list[CacheEntry] = []
    for entry in entries:
        if budget_bytes is None or total <= budget_bytes:
            break
        if now - entry.last_used < grace_s:
            held.append(entry)
            continue
        when = dt.datetime.fromtimestamp(entry.last_used, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        why = f"least recently used (last used {when}); the cache was {_size(total)}, over its budget"
        if dry_run:
            evicted, error = True, None
        else:
            evicted, error = _evict(entry)
        if not evicted and error is None:
            held.append(entry)
            continue
        removals.append(Removal(entry.path, "cache entry", why, entry.size, error))
        if evicted:
            total -= entry.size
            left.remove(entry)
    if budget_bytes is not None and total > budget_bytes and held:
        notes.append(
            f"the cache stays over its budget ({_size(total)}): {len(held)} entr{'y' if len(held) == 1 else 'ies'} "
            f"in use by runs that may still be going ({_size(sum(e.size for e in held))}) kept"
        )
    return removals, left, notes


# ------------------------------------------------------------------------------------------ the policy


def apply_retention(
    work_dir: str | Path,
    store: ResultsStore,
    policy: RetentionPolicy,
    *,
    current_run_key: str | None = None,
    dry_run: bool = False,
    now: float | None = None,
) -> RetentionReport:
    """Apply ``policy`` to the work dir (see the module's docstring); ``current_run_key``'s folder is never touched."""
    work = Path(work_dir)
    now = time.time() if now is None else now
    report = RetentionReport(policy=policy, work_dir=work, dry_run=dry_run)
    runs = classify_runs(work, store, grace_hours=policy.grace_hours, current_run_key=current_run_key, now=now)
    report.runs = runs
    # The run applying the policy, recorded with its outputs, holds one of the keep_runs places (else keep_runs + 1
    # runs' outputs would stay after every run).
    own = sum(1 for f in runs if f.state == LIVE and f.recorded_at is not None and (f.path / RESULT_DIR).exists())
    kept_recent, kept_failed = own, 0
    done = [f for f in runs if f.state in (RECORDED, FAILED)]  # newest first
    for rank, folder in enumerate(done, start=own):
        outputs = folder.path / RESULT_DIR
        age_days = (now - (folder.recorded_at or folder.touched_at)) / 86400
        if rank < policy.keep_runs:
            kept_recent += outputs.exists()
            continue
        if folder.state == FAILED and age_days < policy.keep_failed_days:
            kept_failed += outputs.exists()
            continue
        if not outputs.exists():
            continue
        why = f"{folder.why}; {age_days:.1f} day(s) old, not among the last {policy.keep_runs}"
        report.removals.append(_apply(outputs, "outputs", why, dry_run))
    for folder in runs:
        if folder.state != DEAD:
            continue
        try:
            if not dry_run and now - _touched_at(folder.path) < policy.grace_hours * 3600:  # touched meanwhile
                continue
        except FileNotFoundError:  # removed meanwhile (another clean)
            continue
        report.removals.append(_apply(folder.path, "dead run", folder.why, dry_run))
    if kept_recent:
        report.kept.append(f"the outputs of {kept_recent} recent recorded run(s)")
    if kept_failed:
        report.kept.append(f"the outputs of {kept_failed} failed run(s), for diagnosis")
    live = [f for f in runs if f.state == LIVE]
    for folder in live:
        report.kept.append(f"{_relative(folder.path, work)} untouched: {folder.why}")
    budget = None if policy.cache_budget_gib is None else int(policy.cache_budget_gib * GIB)
    removals, left, notes = enforce_cache_budget(
        work / CACHE_DIR, budget, grace_hours=policy.grace_hours, dry_run=dry_run, now=now
    )
    report.removals += removals
    report.notes += notes
    report.cache_size = sum(e.size for e in left)
    report.cache_entries = len(left)
    report.disk = disk_space(work)
    for removal in report.removals:
        if removal.error:
            log.warning("Retention could not remove %s: %s", removal.path, removal.error)
    return report


def _apply(path: Path, what: str, why: str, dry_run: bool) -> Removal:
    size = disk_size(path)
    error = None if dry_run else _remove(path)
    return Removal(path, what, why, size, error)


def disk_space(path: str | Path) -> dict[str, int]:
    """Free and total bytes and inodes of the filesystem holding ``path`` (its nearest existing folder)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return {}
    return {
        "free": st.f_bavail * st.f_frsize,
        "total": st.f_blocks * st.f_frsize,
        "files_free": st.f_favail,
        "files_total": st.f_files,
    }


def _relative(path: Path, work: Path) -> str:
    try:
        return str(path.relative_to(work))
    except ValueError:
        return str(path)


def _size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
