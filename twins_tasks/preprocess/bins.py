"""The preprocess step itself: a val folder -> ``<stem>.bin`` per image, then the manifest and classes files.

Complete bins of an earlier run are kept when their source's content is unchanged (``.sources.csv`` stamps: the
sha256 of the image each bin was made from, see :mod:`.sources`); the manifest is written last, as the mark of a
complete run.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..constants import BIN_BYTES
from ..errors import InputError
from ..files import check_output_dir, no_space_is_input_error, write_text_atomic
from ..labels import POSITION, class_labels
from ..progress import Progress
from .dataset import MAX_LISTED
from .manifest import CLASSES_NAME, MANIFEST_NAME, STATUS_OK, STATUS_SKIPPED, ManifestRow, write_manifest
from .sources import Sources, scan_dataset
from .workers import default_workers, run_tasks

log = logging.getLogger(__name__)

STAMPS_NAME = ".sources.csv"  # stem, source, sha256 of the image each bin was made from (hidden)
INDEX_NAME = ".stat-index.csv"  # the stat cache of `twins preprocess --bin_path` (see .sources)


@dataclass
class PreprocessResult:
    bin_path: str
    num_images: int  # images selected (after --limit), bad ones included
    num_written: int  # bins written by this run
    num_reused: int  # complete bins found from an earlier run and kept
    bad: list[tuple[str, str]] = field(default_factory=list)  # (source, reason) for undecodable files
    seconds: float = 0.0
    rate: float = 0.0  # images decoded per second by this run (written + bad) / seconds
    label_scheme: str = ""  # labels.IMAGENET (wnid -> ImageNet index) or labels.POSITION (sorted folder position)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- source stamps


def _is_complete(path: str) -> bool:
    # Bins are renamed into place whole, so the right size means a finished write.
    try:
        return os.stat(path).st_size == BIN_BYTES
    except FileNotFoundError:
        return False


def _read_stamps(out: Path) -> dict[str, tuple[str, str]]:
    """stem -> (source, sha256) of the image each bin was made from (empty when unknown; the stamps of an older
    twins_tasks, size and mtime, are not used)."""
    try:
        with open(out / STAMPS_NAME, newline="", encoding="utf-8") as fh:
            return {row[0]: (row[1], row[2]) for row in csv.reader(fh) if len(row) == 3}
    except (OSError, ValueError):
        return {}


def _write_stamps(out: Path, stamps: dict[str, tuple[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for stem in sorted(stamps):
        writer.writerow([stem, *stamps[stem]])
    write_text_atomic(out / STAMPS_NAME, buffer.getvalue())


def _bin_is_current(target: str, digest: str | None, mtime: int | None, known: tuple[str, str] | None) -> bool:
    """A complete bin made from an image with these very bytes (wherever it lay then)."""
    if digest is None or not _is_complete(target):
        return False
    if known is not None:
        return known[1] == digest
    # A bin from before content stamps were kept: trust it only if the source is not newer than it.
    try:
        return mtime is not None and mtime <= os.stat(target).st_mtime_ns
    except OSError:
        return False


def reuse_bins(donor: Path, out: Path, sources: Sources) -> int:
    """Hard-link into ``out`` the complete bins of ``donor`` (another bin folder) made from images with the very
    bytes of ``sources``' images, with their stamps; return how many. A dataset with one image changed then gets
    a new cache entry that redoes that image only (bins are replaced by rename, never written in place, so a link
    shared by two entries is never changed under the other)."""
    donor_stamps = _read_stamps(donor)
    stamps = _read_stamps(out)
    linked = 0
    for i, item in enumerate(sources.items):
        digest, made = sources.digests[i], donor_stamps.get(item.stem)
        if digest is None or made is None or made[1] != digest or item.stem in stamps:
            continue
        source_bin, target = donor / f"{item.stem}.bin", out / f"{item.stem}.bin"
        if not _is_complete(str(source_bin)) or target.exists():
            continue
        out.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source_bin, target)
        except FileNotFoundError:  # evicted meanwhile
            continue
        except OSError as exc:  # no hard links on this filesystem: preprocess makes the bins
            log.info("Cannot link bins from %s into %s (%s): making them", donor, out, exc)
            break
        stamps[item.stem] = (str(item.source), digest)
        linked += 1
    if linked:
        _write_stamps(out, stamps)
    return linked


# ---------------------------------------------------------------------------------------------- the step


def preprocess(
    root_path: str | os.PathLike,
    bin_path: str | os.PathLike,
    *,
    workers: int | None = None,
    limit: int | None = None,
    skip_bad: bool = False,
    space_advice: str | None = None,
    sources: Sources | None = None,
) -> PreprocessResult:
    """Write ``<stem>.bin`` for every image of ``root_path`` into ``bin_path``, then the manifest and classes.

    Bins already complete from an earlier run are kept when their image's bytes are unchanged. Images that cannot
    be read (a dangling symlink) raise :class:`InputError` before any work, unless ``skip_bad``. Undecodable images
    are logged one by one; after everything else is written they raise :class:`InputError` naming each one, unless
    ``skip_bad``, which records them (and the unreadable ones) in the manifest as ``skipped`` instead.

    :param workers: processes to use (default: every available core; 1 = in this process).
    :param limit: preprocess a round-robin subset of this many images (see :func:`.dataset.list_dataset`).
    :param space_advice: what to do when the disk fills (the message names ``bin_path`` either way).
    :param sources: the dataset already listed and hashed (by :func:`.inputs.prepare_inputs`, with ``limit``);
        else it is, with a stat cache in ``bin_path``.
    """
    start = time.perf_counter()
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be at least 1 (got {workers})")
    out = Path(bin_path)
    check_output_dir(out, "--bin_path")
    if sources is None:
        sources = scan_dataset(root_path, out / INDEX_NAME, limit=limit, workers=workers or default_workers())
    if not skip_bad:
        sources.refuse_unreadable()
    classes = sources.classes
    label_scheme = class_labels(classes, root_path)[1]
    if label_scheme == POSITION:
        log.warning(
            "Class folders of %s (e.g. %s) are not ImageNet wnids: labels are their positions in sorted order "
            "(0..%d), which match a model's outputs only if the folders are its classes in its order",
            root_path,
            classes[0],
            len(classes) - 1,
        )
    advice = space_advice or (
        "free space there (each image needs 602,112 bytes) or pass another --bin_path; complete bins are kept"
    )
    with no_space_is_input_error(out, advice):
        return _preprocess(out, root_path, sources, label_scheme, workers, skip_bad, start)


def _preprocess(
    out: Path,
    root_path: str | os.PathLike,
    sources: Sources,
    label_scheme: str,
    workers: int | None,
    skip_bad: bool,
    start: float,
) -> PreprocessResult:
    classes, items = sources.classes, sources.items
    out.mkdir(parents=True, exist_ok=True)
    # The manifest marks a complete run; the one of an earlier run must not outlive a failing rerun.
    (out / MANIFEST_NAME).unlink(missing_ok=True)

    targets = [str(out / f"{item.stem}.bin") for item in items]
    known = _read_stamps(out)
    # Unreadable images (skip_bad: refused above otherwise) are bad before any work and lose an earlier bin.
    reasons: dict[int, str] = dict(sources.unreadable)
    for i in reasons:
        Path(targets[i]).unlink(missing_ok=True)
    tasks = [
        (i, str(item.source), targets[i])
        for i, item in enumerate(items)
        if i not in reasons
        and not _bin_is_current(targets[i], sources.digests[i], sources.mtimes[i], known.get(item.stem))
    ]
    changed = sum(1 for i, _, target in tasks if _is_complete(target))
    if changed:
        log.warning(
            "%d source image(s) changed (their content) since their bins in %s were written: redoing them",
            changed,
            out,
        )
    reused = len(items) - len(tasks) - len(reasons)
    workers = min(workers or default_workers(), max(len(tasks), 1))
    log.info(
        "Preprocessing %d images of %d classes from %s into %s: %d to write with %d worker(s), "
        "%d already complete (kept)",
        len(items),
        len(classes),
        root_path,
        out,
        len(tasks),
        workers,
        reused,
    )

    for i in sorted(reasons):
        log.warning("Cannot read %s: %s", items[i].source, reasons[i])
    progress = Progress("preprocess", len(tasks), unit="images", logger=log)
    for index, reason in run_tasks(tasks, workers):
        if reason is not None:
            reasons[index] = reason
            log.log(logging.WARNING if skip_bad else logging.ERROR, "Cannot decode %s: %s", items[index].source, reason)
        progress.update()
    if tasks:
        progress.finish()

    # Remember what each bin was made from, also when bad images fail the run below: the next run then
    # redoes only what changed. Stamps of images whose bins are gone are dropped.
    for i, item in enumerate(items):
        digest = sources.digests[i]
        if i in reasons or digest is None:
            known.pop(item.stem, None)
        else:
            known[item.stem] = (str(item.source), digest)
    _write_stamps(out, known)

    bad = [(str(items[i].source), reasons[i]) for i in sorted(reasons)]
    seconds = time.perf_counter() - start
    result = PreprocessResult(
        bin_path=str(out),
        num_images=len(items),
        num_written=len(tasks) - (len(bad) - len(sources.unreadable)),
        num_reused=reused,
        bad=bad,
        seconds=seconds,
        rate=len(tasks) / seconds if seconds > 0 else 0.0,
        label_scheme=label_scheme,
    )
    if bad and not skip_bad:
        listed = "\n".join(f"  {source}: {reason}" for source, reason in bad[:MAX_LISTED])
        more = f"\n  ... and {len(bad) - MAX_LISTED} more (each is in the log)" if len(bad) > MAX_LISTED else ""
        raise InputError(
            f"{len(bad)} of {len(items)} images cannot be decoded (the other bins are written, "
            f"no manifest):\n{listed}{more}\nReplace or remove them, or pass --skip-bad to record "
            "them in the manifest as skipped"
        )

    write_manifest(
        out,
        (
            ManifestRow(
                item.stem,
                str(item.source),
                item.label,
                item.wnid,
                STATUS_SKIPPED if i in reasons else STATUS_OK,
                reasons.get(i, ""),
            )
            for i, item in enumerate(items)
        ),
    )
    write_text_atomic(out / CLASSES_NAME, "".join(f"{wnid}\n" for wnid in classes))
    _warn_stray_bins(out, {item.stem for i, item in enumerate(items) if i not in reasons})
    log.info(
        "Preprocessed %d images into %s: %d written, %d kept, %d skipped as undecodable (%.1f s)",
        len(items),
        out,
        result.num_written,
        reused,
        len(bad),
        seconds,
    )
    return result


def _warn_stray_bins(out: Path, expected: set[str]) -> None:
    """Inference reads every .bin of the folder: say so when some are not from this dataset/limit."""
    with os.scandir(out) as entries:
        stray = [e.name for e in entries if e.name.endswith(".bin") and e.name[:-4] not in expected]
    if stray:
        log.warning(
            "%s holds %d .bin file(s) that are not in this run's manifest (e.g. %s), from an earlier "
            "run with another dataset or --limit: inference would read them too; use a fresh --bin_path",
            out,
            len(stray),
            ", ".join(sorted(stray)[:3]),
        )
