"""The files preprocess leaves beside the bins: ``manifest.csv`` (one row per image) and ``classes.txt``.

The manifest's one writer (:func:`write_manifest`, run by preprocess) and one reader (:func:`read_manifest`,
used by postprocess to score from it). Plain csv, no PIL: scoring from a manifest does not import the image stack.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..files import write_text_atomic

MANIFEST_NAME = "manifest.csv"
CLASSES_NAME = "classes.txt"  # the class folders present, sorted, one per line
MANIFEST_COLUMNS = ("stem", "source", "label", "wnid", "status", "reason")
# What scoring needs; the reader takes a manifest with only these (source, wnid and reason then read as "").
REQUIRED_COLUMNS = ("stem", "label", "status")
STATUS_OK = "ok"
STATUS_SKIPPED = "skipped"


@dataclass(frozen=True)
class ManifestRow:
    stem: str
    source: str
    # ImageNet index (or folder position, see labels.class_labels). None only on a skipped row whose label is
    # not an integer: the reader does not require one there, as nothing is scored from a skipped image.
    label: int | None
    wnid: str
    status: str  # STATUS_OK (a .bin exists) or STATUS_SKIPPED (undecodable, run with --skip-bad)
    reason: str = ""


def _manifest_file(path: str | os.PathLike) -> Path:
    """``path`` itself when it is a file or names a .csv, else ``path/manifest.csv`` (a bin folder)."""
    path = Path(path)
    if path.is_file() or (path.suffix.lower() == ".csv" and not path.is_dir()):
        return path
    return path / MANIFEST_NAME


def write_manifest(path: str | os.PathLike, rows: Iterable[ManifestRow]) -> None:
    """Write the manifest atomically; ``path`` is the bin folder or the csv file itself."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for row in rows:
        writer.writerow([row.stem, row.source, row.label, row.wnid, row.status, row.reason])
    write_text_atomic(_manifest_file(path), buffer.getvalue())


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """Rows of a preprocess manifest, in file order; ``path`` is the bin folder or the csv file itself.

    Status is read case- and space-insensitively. Refused, naming the line: a status other than ok/skipped,
    an ok row whose label is not an integer, and an ok row whose stem an earlier ok row has.
    """
    manifest = _manifest_file(path)
    if not manifest.is_file():
        raise InputError(
            f"no preprocess manifest at {manifest}: run `twins preprocess --bin_path "
            f"{manifest.parent}` to completion first (a failed run writes none)"
        )
    rows: list[ManifestRow] = []
    with open(manifest, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        absent = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise InputError(
                f"{manifest} lacks column(s) {', '.join(absent)} (has {reader.fieldnames}): "
                f"is it a manifest written by `twins preprocess`?"
            )
        scored: set[str] = set()
        for line, rec in enumerate(reader, start=2):
            stem, status = rec["stem"], (rec["status"] or "").strip().lower()
            if status not in (STATUS_OK, STATUS_SKIPPED):
                raise InputError(f"{manifest} line {line}: status {rec['status']!r} is neither 'ok' nor 'skipped'")
            try:
                label: int | None = int(rec["label"])
            except (TypeError, ValueError):
                if status == STATUS_OK:
                    raise InputError(
                        f"{manifest} line {line}: label {rec['label']!r} of {stem!r} is not an integer"
                    ) from None
                label = None
            if status == STATUS_OK:
                if stem in scored:
                    raise InputError(f"{manifest} line {line}: stem {stem!r} appears twice")
                scored.add(stem)
            source, wnid, reason = rec.get("source") or "", rec.get("wnid") or "", rec.get("reason") or ""
            rows.append(ManifestRow(stem, source, label, wnid, status, reason))
    return rows
