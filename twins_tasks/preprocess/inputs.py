"""The preprocessed-inputs cache entry: :func:`prepare_inputs` runs preprocess into ``<cache>/bins/<key>`` once per
dataset content (each image's bytes and name, :mod:`.sources`), transform version, labels version and limit, and
reuses it after: also for a copy of the same images under another path, mount or date.

What the DAG's preprocess task (``twins prepare-inputs``) and ``twins run`` call; its record also feeds the
results DB (:func:`skipped_fields`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from ..cache import mark_used, sweep_stale_temps
from ..constants import BIN_BYTES
from ..errors import InputError
from ..files import sha256_json, write_json_atomic, write_text_atomic
from ..sample import is_generated
from .bins import preprocess, reuse_bins
from .dataset import LABELS_VERSION, check_dataset_root
from .manifest import MANIFEST_NAME
from .sources import scan_dataset
from .transform import TRANSFORM_VERSION
from .workers import default_workers

log = logging.getLogger(__name__)

PREPROCESS_RECORD = "preprocess.json"  # the cache entry's completion record (see prepare_inputs)
STAT_INDEX_DIR = ".stat-index"  # <cache>/bins/.stat-index/<real root's hash>.csv: the image hashes' stat cache
SKIPPED_NAMES_CAP = 200  # names kept in a results-DB row: a broken copy of 50,000 images must not bloat it


def prepare_inputs(
    root_path: str | Path,
    cache_root: str | Path,
    *,
    limit: int | None = None,
    workers: int | None = None,
    skip_bad: bool = False,
) -> dict[str, Any]:
    """Preprocess the dataset into a folder keyed by its content + transform version + limit.

    :raises InputError: before any preprocessing, for images that cannot be read (a dangling symlink) unless
        ``skip_bad``, which records them as skipped.
    """
    root = Path(root_path)
    if not root.is_dir():
        raise InputError(
            f"dataset folder {root} does not exist: pass the ImageNet val folder "
            f"(one sub-folder per class) or make one with `twins make-sample`"
        )
    # as given, not `root` (an empty --root_path is Path('.')); before the listing walks it: `/` or a folder
    # above val is refused here
    check_dataset_root(root_path)
    # Keyed by content, not dates or spelling; the stat cache keeps the nightly check to one stat per image.
    index = Path(cache_root) / "bins" / STAT_INDEX_DIR / f"{sha256_json(os.path.realpath(root))[:16]}.csv"
    sources = scan_dataset(root_path, index, limit=limit, workers=workers or default_workers())
    if not skip_bad:
        sources.refuse_unreadable()
    fingerprint = sources.digest()
    key = sha256_json(
        {
            "dataset": fingerprint,
            "transform": TRANSFORM_VERSION,
            "labels": LABELS_VERSION,
            "limit": limit,
            "skip_bad": skip_bad,
        }
    )[:16]
    target = Path(cache_root) / "bins" / key
    record_path = target / PREPROCESS_RECORD
    mark_used(target)  # before the check: the cache budget keeps what a run is about to reuse
    # Read from the dataset on every call, not kept in the record: the marker is a dot file, outside the
    # fingerprint that keys this cache.
    synthetic = is_generated(root)
    record = _intact_record(record_path)
    if record is not None:
        log.info(
            "Reusing preprocessed inputs %s (%d images): image contents and transform version %s unchanged",
            target,
            record["num_images"],
            TRANSFORM_VERSION,
        )
        _remember_entry(index, key)
        # the dataset as given now: the entry may have been made from a copy of it elsewhere
        return {**record, "root_path": str(root.resolve()), "synthetic_data": synthetic, "cached": True}
    record_path.unlink(missing_ok=True)  # damaged or from another work dir: preprocess redoes what is wrong
    sweep_stale_temps(target)  # temp bins of a killed run
    donor = _last_entry(index, target)
    if donor is not None and (linked := reuse_bins(donor, target, sources)):
        log.info("Linked %d bins of unchanged images from %s, the last entry made from this dataset", linked, donor)
    # Not built under a temp name: preprocess writes each .bin atomically and skips complete ones, so an
    # interrupted 50,000-image run resumes here instead of starting over. The record marks completion.
    result = preprocess(
        root,
        target,
        workers=workers,
        limit=limit,
        skip_bad=skip_bad,
        space_advice="free space in the work dir's cache (602,112 bytes per image) or use another --work_dir; "
        "complete bins are kept and reused",
        sources=sources,
    )
    record = {
        **result.to_dict(),
        "bin_path": ".",  # relative to the entry: a copied or moved work dir uses its own bins
        "root_path": str(root.resolve()),
        "dataset_fingerprint": fingerprint,
        "transform_version": TRANSFORM_VERSION,
        "key": key,
    }
    write_json_atomic(record_path, record)
    _remember_entry(index, key)
    return {**record, "bin_path": str(target), "synthetic_data": synthetic, "cached": False}


def _remember_entry(index: Path, key: str) -> None:
    """Note ``key`` as the entry last used for the dataset whose stat cache is ``index`` (see _last_entry)."""
    last = index.with_suffix(".last")
    with contextlib.suppress(OSError):  # only a shortcut for the next change of this dataset
        if not last.is_file() or last.read_text().strip() != key:
            write_text_atomic(last, key)


def _last_entry(index: Path, target: Path) -> Path | None:
    """The complete entry last used for the dataset whose stat cache is ``index`` (not ``target``), made by this
    transform version: its bins of unchanged images are reused by a new entry."""
    try:
        key = index.with_suffix(".last").read_text().strip()
        donor = target.parent / key
        record = json.loads((donor / PREPROCESS_RECORD).read_text()) if len(key) == 16 and key.isalnum() else None
    except (OSError, ValueError):
        return None
    if donor == target or not isinstance(record, dict) or record.get("transform_version") != TRANSFORM_VERSION:
        return None
    return donor


def _intact_record(record_path: Path) -> dict[str, Any] | None:
    """The record of a complete, undamaged preprocessed-inputs entry (``bin_path`` absolute), else None.

    Cheap check on every reuse (one directory listing): the manifest is there, every ``.bin`` has exactly
    602,112 bytes, and there are as many as the record says were made. A bin truncated or deleted from
    outside makes the entry be rebuilt in place, which redoes only the damaged bins.
    """
    target = record_path.parent
    try:
        record = json.loads(record_path.read_text())
        stored = Path(record["bin_path"])
        expected = int(record["num_images"]) - len(record.get("bad") or [])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if stored.is_absolute() and stored != target:
        log.warning(
            "Preprocessed inputs %s: record names %s (copied from another work dir?): rebuilding", target, stored
        )
        return None
    if not (target / MANIFEST_NAME).is_file():
        log.warning("Preprocessed inputs %s lack %s: rebuilding", target, MANIFEST_NAME)
        return None
    with os.scandir(target) as entries:
        sizes = [e.stat().st_size for e in entries if e.name.endswith(".bin") and not e.name.startswith(".")]
    wrong = sum(1 for size in sizes if size != BIN_BYTES)
    if wrong or len(sizes) != expected:
        log.warning(
            "Preprocessed inputs %s are damaged (%d bins, %d of the wrong size; the record says %d): rebuilding "
            "the damaged ones",
            target,
            len(sizes),
            wrong,
            expected,
        )
        return None
    return {**record, "bin_path": str(target)}


def skipped_fields(inputs: dict[str, Any]) -> dict[str, Any]:
    """The results-DB run fields for the images ``--skip-bad`` left out, from :func:`prepare_inputs`' record.

    ``{"num_skipped": N, "skipped_images": ["<class>/<file>", ...]}`` (names capped at SKIPPED_NAMES_CAP;
    the count is exact).
    """
    bad = inputs.get("bad") or []
    names = [f"{Path(source).parent.name}/{Path(source).name}" for source, _reason in bad[:SKIPPED_NAMES_CAP]]
    return {"num_skipped": len(bad), "skipped_images": names}
