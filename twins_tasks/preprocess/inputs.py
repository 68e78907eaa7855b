"""The preprocessed-inputs cache entry: :func:`prepare_inputs` runs preprocess into ``<cache>/bins/<key>`` once per
dataset fingerprint, transform version, labels version and limit, and reuses it after.

What the DAG's preprocess task (``twins prepare-inputs``) and ``twins run`` call; its record also feeds the
results DB (:func:`skipped_fields`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..cache import sweep_stale_temps
from ..constants import BIN_BYTES
from ..errors import InputError
from ..files import sha256_json, tree_fingerprint, write_json_atomic
from ..sample import is_generated
from .bins import preprocess
from .dataset import LABELS_VERSION, check_dataset_root
from .manifest import MANIFEST_NAME
from .transform import TRANSFORM_VERSION

log = logging.getLogger(__name__)

PREPROCESS_RECORD = "preprocess.json"  # the cache entry's completion record (see prepare_inputs)
SKIPPED_NAMES_CAP = 200  # names kept in a results-DB row: a broken copy of 50,000 images must not bloat it


def prepare_inputs(
    root_path: str | Path,
    cache_root: str | Path,
    *,
    limit: int | None = None,
    workers: int | None = None,
    skip_bad: bool = False,
) -> dict[str, Any]:
    """Preprocess the dataset into a folder keyed by dataset fingerprint + transform version + limit."""
    root = Path(root_path)
    if not root.is_dir():
        raise InputError(
            f"dataset folder {root} does not exist: pass the ImageNet val folder "
            f"(one sub-folder per class) or make one with `twins make-sample`"
        )
    # as given, not `root` (an empty --root_path is Path('.')); before the fingerprint walks it: `/` or a folder
    # above val is refused here
    check_dataset_root(root_path)
    fingerprint = tree_fingerprint(root)
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
    # Read from the dataset on every call, not kept in the record: the marker is a dot file, outside the
    # fingerprint that keys this cache.
    synthetic = is_generated(root)
    record = _intact_record(record_path)
    if record is not None:
        log.info(
            "Reusing preprocessed inputs %s (%d images): dataset fingerprint and transform version %s unchanged",
            target,
            record["num_images"],
            TRANSFORM_VERSION,
        )
        return {**record, "synthetic_data": synthetic, "cached": True}
    record_path.unlink(missing_ok=True)  # damaged or from another work dir: preprocess redoes what is wrong
    sweep_stale_temps(target)  # temp bins of a killed run
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
    return {**record, "bin_path": str(target), "synthetic_data": synthetic, "cached": False}


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
