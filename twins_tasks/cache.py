"""Content-addressed caches: a nightly run whose inputs did not change reuses earlier work.

Keys: preprocessed inputs = dataset fingerprint + transform version + limit; ONNX model = checkpoint hash +
export options; compiled artifact = model hash + batch size + backend options. Each entry is a directory
built under a temporary name and renamed into place, so a concurrent run never sees half of one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from .backends.base import Backend
from .errors import MissingOutputError
from .files import atomic_dir, cached_sha256, sha256_json, write_json_atomic

log = logging.getLogger(__name__)

COMPILE_RECORD = "compile.json"


def load_record(record_path: Path, file_key: str) -> dict[str, Any] | None:
    """A cache entry's record, if the entry is complete: the record exists and names a file that exists."""
    try:
        record = json.loads(record_path.read_text())
        return record if Path(record[file_key]).is_file() else None
    except (OSError, ValueError, KeyError, TypeError):  # no record, or one edited into something else
        return None


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


def require_record(record_path: Path, file_key: str) -> dict[str, Any]:
    """The record of an entry just built (or built by a concurrent run that won the rename)."""
    record = load_record(record_path, file_key)
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
    target = Path(cache_root) / "compiled" / f"{backend.name}_bs{batch_size}_{key}"
    record_path = target / COMPILE_RECORD
    record = load_record(record_path, "artifact")
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
        record["artifact"] = str(target / Path(result.artifact).relative_to(tmp))
        record["key"] = key
        write_json_atomic(tmp / COMPILE_RECORD, record)
    return {**require_record(record_path, "artifact"), "cached": False}
