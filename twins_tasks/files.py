"""Files are the interface between steps: atomic writes, content hashes, walks that refuse symlink loops."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create 0600/0700 entries; the renamed result must be readable like any file a worker
# writes (another Airflow worker or the NPU host may run as a different user).
_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


def host_tag() -> str:
    """This host's name as it appears in temp names (letters, digits, '_' and '-'), for stale-temp sweeps."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", socket.gethostname())[:40] or "host"


def _temp_prefix(path: Path) -> str:
    # Owner host and pid in the name: cache.sweep_stale_temps removes the temp entries of dead processes.
    return f".{path.name}.{host_tag()}-{os.getpid()}."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto ``path`` only if the block succeeds.

    A reader (a retry, a concurrent run) sees either no file or the whole file, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary sibling name and rename it into place when complete.

    If ``path`` already exists when the block ends (a concurrent run won the race), the new copy is
    discarded: content-addressed directories hold the same content either way.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    os.chmod(tmp, _DIR_MODE)
    try:
        yield tmp
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    """Stable hash of a JSON-able value (dict key order does not matter)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def cached_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, remembered in ``<file>.sha256`` keyed by size and mtime.

    ONNX models and checkpoints are hundreds of MB; a nightly run should not re-read them to learn
    that nothing changed.
    """
    path = Path(path)
    st = path.stat()
    sidecar = path.with_name(path.name + ".sha256")
    stamp = f"{st.st_size}:{st.st_mtime_ns}"
    with contextlib.suppress(OSError, ValueError):
        saved_stamp, saved_hash = sidecar.read_text().split()
        if saved_stamp == stamp:
            return saved_hash
    digest = sha256_file(path)
    with contextlib.suppress(OSError):  # read-only checkpoint folders are fine: just don't cache
        write_text_atomic(sidecar, f"{stamp} {digest}\n")
    return digest


def walk(top: str | os.PathLike, *, skip_hidden: bool = False) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(top, followlinks=True)`` in sorted order that refuses a symlink loop instead of following it.

    A link to a folder that encloses it (``val/n01/again -> ..``) would make a plain walk list the same files
    over and over until paths grow too long. ``skip_hidden`` prunes folders whose name starts with a dot.
    A dangling link, or a link to itself, is not a folder: it comes back among the file names.

    :raises InputError: naming the link and where it points.
    """
    from .errors import InputError

    for dirpath, dirnames, filenames in os.walk(str(top), followlinks=True):
        if skip_hidden:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        dirnames.sort()
        filenames.sort()
        here = os.path.realpath(dirpath)
        for name in dirnames:
            child = os.path.join(dirpath, name)
            if not os.path.islink(child):
                continue
            target = os.path.realpath(child)
            if here == target or here.startswith(target.rstrip(os.sep) + os.sep):
                raise InputError(
                    f"symlink loop in {top}: {child} -> {os.readlink(child)} leads back to {target}, a folder "
                    "that encloses it; remove or fix the link"
                )
        yield dirpath, dirnames, filenames


def create_run_dir(parent: str | os.PathLike, name: str) -> Path:
    """Create ``parent/name`` for one run, failing if it exists: two runs never share (and clean) one folder.

    ``mkdir`` without ``exist_ok`` is atomic: of two processes racing for one name exactly one wins.
    """
    from .errors import InputError

    path = Path(parent) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
    except FileExistsError:
        raise InputError(
            f"run folder {path} already exists: another run used the run id {name!r}; pass another "
            "--run-name, or none for a fresh unique id"
        ) from None
    return path


# errno values that mean "the disk (or the user's quota) is full".
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_no_space(exc: BaseException) -> bool:
    """True for the OSError a full disk or quota raises (also when it comes back pickled from a worker)."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


@contextlib.contextmanager
def no_space_is_input_error(path: str | os.PathLike, advice: str) -> Iterator[None]:
    """Turn a full disk under ``path`` into an :class:`InputError` that says so, names ``path`` and what to do.

    Callers write through temp names (:func:`atomic_path`, :func:`atomic_dir`), which are removed when the
    write fails, so nothing half-written is left behind either.
    """
    from .errors import InputError

    try:
        yield
    except OSError as exc:
        if not is_no_space(exc):
            raise
        raise InputError(f"no space left on {path} ({exc.strerror}; {_free_space(path)}): {advice}") from exc


def _free_space(path: str | os.PathLike) -> str:
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return f"{shutil.disk_usage(probe).free / 2**20:.1f} MiB free now"
    except OSError:
        return "free space unknown"


def _first_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_file(path: str | os.PathLike | None, flag: str) -> None:
    """Fail before any work when a FILE is to be written at ``path`` but a folder is there (or above it, a file).

    Hours of compute must not end in "Is a directory" when the record is written.
    """
    from .errors import InputError

    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{flag} {path} is an existing folder, where a file is written: give a file path")
    above = _first_existing(path.parent)
    if not above.is_dir():
        raise InputError(f"{flag} {path}: {above} is a file, not a folder: choose a path under a folder")


def check_output_dir(path: str | os.PathLike | None, flag: str) -> None:
    """Fail before any work when a FOLDER is to be written at ``path`` but a file is there (or above it)."""
    from .errors import InputError

    if path is None:
        return
    path = Path(path)
    above = _first_existing(path)
    if not above.is_dir():
        if above == path:
            raise InputError(f"{flag} {path} is a file, where a folder is written: give a folder (created if missing)")
        raise InputError(f"{flag} {path}: {above} is a file, not a folder: give a folder (created if missing)")
