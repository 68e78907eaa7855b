"""What the source images hold: a content hash per image behind a stat cache, and the dataset digest that keys the
preprocessed-inputs cache.

Like git's index: ``(path, size, mtime_ns, inode) -> sha256`` rows in a csv, so that a nightly check of an unchanged
dataset only stats its files (no image is read), while a copy (``cp -r``: new paths and dates, same bytes) is read
and hashed once and then matches the bins already made. A file modified within RACY_NS of a scan is not cached (its
next change could keep its size and time stamp), so it is hashed again next time.

No PIL here: listing and hashing do not import the image stack.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..files import sha256_file, sha256_json, write_text_atomic
from .dataset import MAX_LISTED, Item, list_dataset

log = logging.getLogger(__name__)

INDEX_HEADER = ("twins-stat-index", "1")  # first row; a file without it (or another version) is ignored
RACY_NS = 2_000_000_000  # files changed this recently are hashed again next time (coarse mtime clocks, NFS)


@dataclass
class Sources:
    """A listed dataset and what its images hold, in listing order."""

    root: Path
    classes: list[str]
    items: list[Item]
    names: list[str]  # each image's path relative to the root ("<class>/<file>")
    digests: list[str | None]  # sha256 of each image's bytes; None when it cannot be read
    mtimes: list[int | None]  # st_mtime_ns of each image (bins of an older twins_tasks are judged by it)
    unreadable: dict[int, str] = field(default_factory=dict)  # item index -> why it cannot be read
    hashed: int = 0  # images read and hashed by this scan (the others: known from the stat cache)

    def digest(self) -> str:
        """The dataset's content: class folders and, in sorted relative-name order, each image's hash."""
        images = sorted(
            (name, self.digests[i] or f"unreadable: {self.unreadable.get(i)}") for i, name in enumerate(self.names)
        )
        return sha256_json({"classes": self.classes, "images": images})

    def refuse_unreadable(self) -> None:
        """Raise :class:`InputError` naming every image that cannot be read (before any preprocessing)."""
        if not self.unreadable:
            return
        listed = "\n".join(
            f"  {self.items[i].source}: {reason}" for i, reason in sorted(self.unreadable.items())[:MAX_LISTED]
        )
        more = f"\n  ... and {len(self.unreadable) - MAX_LISTED} more" if len(self.unreadable) > MAX_LISTED else ""
        raise InputError(
            f"{len(self.unreadable)} of {len(self.items)} images cannot be read (nothing was preprocessed):\n"
            f"{listed}{more}\nReplace or remove them, or pass --skip-bad to record them in the manifest as skipped"
        )


def unreadable_reason(path: str | os.PathLike, exc: BaseException) -> str:
    """Why ``path`` cannot be read, naming where a dangling or looping symlink points."""
    if os.path.islink(path) and not os.path.exists(path):
        return f"dangling symlink or symlink loop (-> {os.readlink(str(path))}): {type(exc).__name__}"
    return f"{type(exc).__name__}: {exc}"


def scan_dataset(
    root_path: str | os.PathLike, index_path: str | os.PathLike, *, limit: int | None = None, workers: int = 1
) -> Sources:
    """List the dataset (:func:`.dataset.list_dataset`) and hash its images, reading only those the stat cache at
    ``index_path`` does not know unchanged; the cache is updated (hashing uses ``workers`` threads)."""
    classes, items = list_dataset(root_path, limit)
    root = Path(root_path)
    real_root = os.path.realpath(root)
    index_path = Path(index_path)
    known = _read_index(index_path)
    started = time.time_ns()
    names = [_relative(item.source, root) for item in items]
    sources = Sources(root, classes, items, names, [None] * len(items), [None] * len(items))
    # Keyed by the real root + the name under it: a relative or absolute spelling of the root is the same file.
    keys = [os.path.join(real_root, name) for name in names]
    stats: list[tuple[int, int, int] | None] = []
    missing: list[int] = []
    for i, item in enumerate(items):
        try:
            st = os.stat(item.source)
        except OSError as exc:  # dangling link, link loop, removed meanwhile
            sources.unreadable[i] = unreadable_reason(item.source, exc)
            stats.append(None)
            continue
        stats.append((st.st_size, st.st_mtime_ns, st.st_ino))
        sources.mtimes[i] = st.st_mtime_ns
        row = known.get(keys[i])
        if row is not None and row[:3] == stats[i]:
            sources.digests[i] = row[3]
        else:
            missing.append(i)

    def hash_one(i: int) -> tuple[int, str | None, str | None]:
        try:
            return i, sha256_file(items[i].source), None
        except OSError as exc:  # unreadable (permissions), or removed meanwhile
            return i, None, unreadable_reason(items[i].source, exc)

    if missing:
        log.info("Reading %d of %d images to hash their content (the others are unchanged)", len(missing), len(items))
        # hashlib and file reads release the GIL: threads are enough
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for i, digest, reason in pool.map(hash_one, missing):
                sources.digests[i] = digest
                if reason is not None:
                    sources.unreadable[i] = reason
    sources.hashed = len(missing)

    fresh = dict(known) if limit is not None else {}  # a whole listing drops the rows of files gone since
    for i, key in enumerate(keys):
        stat, digest = stats[i], sources.digests[i]
        if stat is not None and digest is not None and stat[1] < started - RACY_NS:
            fresh[key] = (*stat, digest)
        else:
            fresh.pop(key, None)
    if fresh != known:
        _write_index(index_path, fresh)
    return sources


def _relative(source: Path, root: Path) -> str:
    """``source`` relative to ``root`` (a listing joins the root as given, so its text is a prefix)."""
    text, prefix = str(source), os.path.join(str(root), "")
    return text[len(prefix) :] if text.startswith(prefix) else os.path.relpath(source, root)


def _read_index(path: Path) -> dict[str, tuple[int, int, int, str]]:
    """path -> (size, mtime_ns, inode, sha256); empty when there is no (readable) index of this version."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            if tuple(next(reader, ())) != INDEX_HEADER:
                return {}
            return {row[0]: (int(row[1]), int(row[2]), int(row[3]), row[4]) for row in reader if len(row) == 5}
    except (OSError, ValueError):
        return {}


def _write_index(path: Path, rows: dict[str, tuple[int, int, int, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(INDEX_HEADER)
    for key in sorted(rows):
        writer.writerow([key, *rows[key]])
    try:
        write_text_atomic(path, buffer.getvalue())
    except OSError as exc:  # a read-only cache still works, without remembering hashes
        log.warning("Cannot save the image hash cache %s (%s): the next run reads the images again", path, exc)
