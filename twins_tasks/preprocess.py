"""The preprocess step: ImageNet val folder -> one raw float32 ``<stem>.bin`` per image (``Twins_preprocess.py``).

The transform is the recipe's torchvision pipeline, ``Resize(256, BICUBIC) -> CenterCrop(224) -> ToTensor()
-> Normalize(mean, std)`` on ``PIL.Image.open(f).convert("RGB")``, re-done with PIL + numpy so that
torchvision is not needed at run time; the bins equal torchvision's bit for bit (tests compare).

Besides the bins, ``bin_path`` gets ``manifest.csv`` (stem, source, label, wnid, status, reason) and
``classes.txt`` (the class folders present, sorted, one per line), written at the end of a complete run only: the
postprocess reads labels from the manifest, so a failed run leaves none behind.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import BIN_BYTES, IMAGE_SIZE, MEAN, RESIZE_SIZE, STD
from .cache import sweep_stale_temps
from .errors import InputError
from .files import (
    atomic_path,
    check_output_dir,
    no_space_is_input_error,
    sha256_json,
    tree_fingerprint,
    walk,
    write_json_atomic,
    write_text_atomic,
)
from .labels import LABEL_SCHEME_TEXT, POSITION, class_labels
from .progress import Progress

log = logging.getLogger(__name__)

# Part of the preprocessed-inputs cache key: bump when the bytes a given image produces change.
TRANSFORM_VERSION = "1"
# Part of the same key: bump when the labels a given dataset gets change (2: wnid folders -> ImageNet indices).
LABELS_VERSION = "2"
MANIFEST_NAME = "manifest.csv"
CLASSES_NAME = "classes.txt"
STAMPS_NAME = ".sources.csv"  # stem, source, size, mtime_ns of the source each bin was made from (hidden)
PREPROCESS_RECORD = "preprocess.json"  # the cache entry's completion record (see prepare_inputs)
MANIFEST_COLUMNS = ("stem", "source", "label", "wnid", "status", "reason")
STATUS_OK = "ok"
STATUS_SKIPPED = "skipped"
# torchvision.datasets.folder.IMG_EXTENSIONS, compared case-insensitively as ImageFolder does.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_MAX_LISTED = 20  # bad files / duplicates named in one error message; the log names every one


def _normalize_lut() -> np.ndarray:
    """(3, 256) float32: ToTensor + Normalize for each uint8 value, computed with the same float32 ops.

    torchvision does ``x.to(float32).div(255)`` then ``sub_(mean).div_(std)`` with float32 mean/std;
    each output depends on one uint8 input only, so a lookup of those exact operations gives identical
    bits at a third of the cost of doing the arithmetic on every pixel.
    """
    values = np.arange(256, dtype=np.float32) / np.float32(255)
    mean = np.asarray(MEAN, dtype=np.float32)[:, None]
    std = np.asarray(STD, dtype=np.float32)[:, None]
    return np.ascontiguousarray((values[None, :] - mean) / std, dtype=np.float32)


_LUT = _normalize_lut()


@dataclass(frozen=True)
class Item:
    """One image of the dataset: output name, source file, class index and class folder."""

    stem: str
    source: Path
    label: int
    wnid: str


@dataclass(frozen=True)
class ManifestRow:
    stem: str
    source: str
    label: int
    wnid: str
    status: str  # "ok" (a .bin exists) or "skipped" (undecodable, run with --skip-bad)
    reason: str = ""


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


# ---------------------------------------------------------------------------------------------- transform


def resized_size(width: int, height: int, size: int = RESIZE_SIZE) -> tuple[int, int]:
    """torchvision's Resize(size) output (width, height): short side = size, long side truncated."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def center_crop_box(width: int, height: int, size: int = IMAGE_SIZE) -> tuple[int, int, int, int]:
    """torchvision's CenterCrop box (left, top, right, bottom); Python's round() (half to even), as it uses."""
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return left, top, left + size, top + size


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image as RGB, as torchvision's ``pil_loader`` does.

    ``convert`` forces the decode: a truncated file fails here, not later (PIL opens lazily).
    """
    with open(path, "rb") as fh:
        return Image.open(fh).convert("RGB")


def transform_rgb(image: Image.Image) -> np.ndarray:
    """Resize(256, bicubic) -> CenterCrop(224) -> ToTensor -> Normalize on an RGB image: (3,224,224) float32."""
    size = resized_size(*image.size)
    if size != image.size:  # torchvision returns the image untouched when it already has the size
        image = image.resize(size, Image.Resampling.BICUBIC)
    pixels = np.asarray(image.crop(center_crop_box(*size)))  # (224, 224, 3) uint8
    out = np.empty((3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for channel in range(3):
        np.take(_LUT[channel], pixels[:, :, channel], out=out[channel])
    return out


def transform_image(path: str | os.PathLike) -> np.ndarray:
    """The recipe's transform of one image file: (3, 224, 224) float32, CHW, normalised."""
    return transform_rgb(load_rgb(path))


# ---------------------------------------------------------------------------------------------- dataset


def output_stem(filename: str) -> str:
    """The reference's output name: the file name up to its first dot (``basename.split('.')[0]``)."""
    return filename.split(".")[0]


def _class_files(class_dir: str) -> list[str]:
    """Image files under one class folder in ImageFolder's order (sorted walk, links followed)."""
    found: list[str] = []
    # Sorted by folder path as ImageFolder sorts os.walk; hidden entries (.ipynb_checkpoints, macOS ._ files,
    # our temp files) are never images; a symlink loop is refused (files.walk) instead of walked forever.
    for dirpath, _dirnames, filenames in sorted(walk(class_dir, skip_hidden=True)):
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS):
                found.append(os.path.join(dirpath, name))
    return found


def _round_robin(per_class: list[list[Item]], limit: int) -> list[Item]:
    """First image of each class, then the second of each, ... until ``limit``; returned in dataset order."""
    chosen: set[tuple[int, int]] = set()
    depth = 0
    while len(chosen) < limit and any(depth < len(files) for files in per_class):
        for label, files in enumerate(per_class):
            if depth < len(files) and len(chosen) < limit:
                chosen.add((label, depth))
        depth += 1
    return [item for label, files in enumerate(per_class) for i, item in enumerate(files) if (label, i) in chosen]


# Folders that are never a val folder: refused before anything walks them (``--root_path /`` would walk the
# whole filesystem, /proc included).
_SYSTEM_FOLDERS = frozenset(
    ["/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/run", "/sbin", "/sys", "/usr", "/var"]
)


def _holds_an_image(folder: str) -> bool:
    """True when ``folder`` itself (not a sub-folder) holds an image file: one scandir, stops at the first."""
    try:
        with os.scandir(folder) as entries:
            return any(not e.name.startswith(".") and e.name.lower().endswith(IMG_EXTENSIONS) for e in entries)
    except OSError:
        return False


def check_dataset_root(root_path: str | os.PathLike) -> list[str]:
    """Check, before anything walks it, that ``root_path`` looks like an ImageNet-layout val folder; return its
    class folder names, sorted.

    Cheap: one listing of the root and one of each class folder. Refused: a missing folder, the filesystem
    root or a system folder, class-folder links that are dangling, and a tree whose images sit deeper than
    ``<class>/<image>`` in every class (the folder above the val folder, e.g. one holding ``train/`` and ``val/``).
    """
    root = Path(root_path)
    if not root.is_dir():
        raise InputError(
            f"--root_path {root} is not a folder: point it at the ImageNet val folder "
            "(one sub-folder per class, e.g. val/n01440764/ILSVRC2012_val_00000293.JPEG)"
        )
    resolved = os.path.realpath(root)
    if resolved in _SYSTEM_FOLDERS:
        raise InputError(
            f"--root_path {root} is {'the filesystem root' if resolved == '/' else 'a system folder'}, not an "
            "ImageNet val folder: pass the folder holding one sub-folder per class (val/<wnid>/<image>.JPEG)"
        )
    with os.scandir(root) as entries:
        listed = [(e.name, e.is_dir(), e.is_symlink()) for e in entries if not e.name.startswith(".")]
    broken = sorted(name for name, is_dir, is_link in listed if is_link and not os.path.exists(root / name))
    if broken:
        raise InputError(
            f"{len(broken)} class folder link(s) under {root} are dangling or loop: "
            f"{', '.join(f'{name} -> {os.readlink(root / name)}' for name in broken[:_MAX_LISTED])}; "
            "fix or remove them"
        )
    classes = sorted(name for name, is_dir, _ in listed if is_dir)
    if not classes:
        raise InputError(f"{root} has no class folders: expected {root}/<wnid>/<image>.JPEG (ImageFolder layout)")
    if not any(_holds_an_image(os.path.join(root, name)) for name in classes):
        deeper = [name for name in classes[:_MAX_LISTED] if os.path.isdir(os.path.join(root, name))]
        raise InputError(
            f"{root} is not an ImageNet-layout val folder: none of its {len(classes)} sub-folder(s) "
            f"({', '.join(deeper[:5])}{' ...' if len(classes) > 5 else ''}) holds image files directly. "
            f"Expected {root}/<wnid>/<image>.JPEG: if the val folder is one level down, pass that folder"
        )
    return classes


def list_dataset(root_path: str | os.PathLike, limit: int | None = None) -> tuple[list[str], list[Item]]:
    """Classes (sorted folder names) and images of an ImageFolder tree, labelled by :func:`labels.class_labels`.

    :param limit: keep a representative subset of this many images, taken round-robin across classes.
    :raises InputError: missing root, no class folders, an empty class folder, or two images that would
        write the same ``<stem>.bin``.
    """
    root = Path(root_path)
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1 (got {limit})")
    classes = check_dataset_root(root)
    labels, _scheme = class_labels(classes, root)
    per_class: list[list[Item]] = []
    empty: list[str] = []
    for label, wnid in zip(labels, classes, strict=True):
        files = _class_files(os.path.join(root, wnid))
        if not files:
            empty.append(wnid)
        per_class.append([Item(output_stem(os.path.basename(f)), Path(f), label, wnid) for f in files])
    if empty:
        # ImageFolder refuses these too: labels would still be right, but an empty class is a broken copy.
        raise InputError(
            f"{len(empty)} class folder(s) under {root} hold no image ({', '.join(empty[:10])}); "
            f"image files end in {', '.join(IMG_EXTENSIONS)} (any case): fix or remove them"
        )

    first_seen: dict[str, Path] = {}
    duplicates: list[str] = []
    for item in (item for files in per_class for item in files):
        if item.stem in first_seen:
            duplicates.append(f"{first_seen[item.stem]} and {item.source}")
        else:
            first_seen[item.stem] = item.source
    if duplicates:
        raise InputError(
            f"{len(duplicates)} image name(s) occur twice, and both would be written as "
            f"<stem>.bin: {'; '.join(duplicates[:_MAX_LISTED])}"
            f"{' ...' if len(duplicates) > _MAX_LISTED else ''}. Rename or remove one of each pair"
        )

    items = [item for files in per_class for item in files]
    if limit is not None and limit < len(items):
        items = _round_robin(per_class, limit)
    return classes, items


# ---------------------------------------------------------------------------------------------- manifest


def _manifest_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path if path.suffix.lower() == ".csv" and not path.is_dir() else path / MANIFEST_NAME


def write_manifest(path: str | os.PathLike, rows: Iterable[ManifestRow]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for row in rows:
        writer.writerow([row.stem, row.source, row.label, row.wnid, row.status, row.reason])
    write_text_atomic(_manifest_file(path), buffer.getvalue())


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """Rows of a preprocess manifest; ``path`` is the bin folder or the csv file itself."""
    manifest = _manifest_file(path)
    if not manifest.is_file():
        raise InputError(
            f"no preprocess manifest at {manifest}: run `twins preprocess --bin_path "
            f"{manifest.parent}` to completion first (a failed run writes none)"
        )
    with open(manifest, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = set(MANIFEST_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise InputError(f"{manifest} is not a preprocess manifest: columns {sorted(missing)} are missing")
        rows = []
        for line, rec in enumerate(reader, start=2):
            try:
                rows.append(
                    ManifestRow(
                        stem=rec["stem"],
                        source=rec["source"],
                        label=int(rec["label"]),
                        wnid=rec["wnid"],
                        status=rec["status"],
                        reason=rec["reason"] or "",
                    )
                )
            except (TypeError, ValueError) as exc:
                raise InputError(f"{manifest} line {line} is malformed ({exc}): re-run `twins preprocess`") from exc
    return rows


def read_classes(path: str | os.PathLike) -> list[str]:
    """Class folder names of a preprocess run, sorted; ``path`` is the bin folder or the file.

    Labels are in the manifest: for wnid folders they are ImageNet indices, not positions in this list
    (see :mod:`twins_tasks.labels`).
    """
    path = Path(path)
    classes_file = path if path.suffix.lower() == ".txt" and not path.is_dir() else path / CLASSES_NAME
    if not classes_file.is_file():
        raise InputError(f"no {CLASSES_NAME} at {classes_file}: run `twins preprocess` to completion first")
    return classes_file.read_text(encoding="utf-8").splitlines()


# ---------------------------------------------------------------------------------------------- the step


def _is_complete(path: str) -> bool:
    # Bins are renamed into place whole, so the right size means a finished write.
    try:
        return os.stat(path).st_size == BIN_BYTES
    except FileNotFoundError:
        return False


def _source_stamp(path: str | os.PathLike) -> tuple[int, int] | None:
    """(size, mtime_ns) of a source image, None when it cannot be stat'ed (it is then redone and reported)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _read_stamps(out: Path) -> dict[str, tuple[str, int, int]]:
    """stem -> (source, size, mtime_ns) of the source each bin was made from (empty when unknown)."""
    try:
        with open(out / STAMPS_NAME, newline="", encoding="utf-8") as fh:
            return {row[0]: (row[1], int(row[2]), int(row[3])) for row in csv.reader(fh) if len(row) == 4}
    except (OSError, ValueError):
        return {}


def _write_stamps(out: Path, stamps: dict[str, tuple[str, int, int]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for stem in sorted(stamps):
        writer.writerow([stem, *stamps[stem]])
    write_text_atomic(out / STAMPS_NAME, buffer.getvalue())


def _bin_is_current(
    target: str, source: str, stamp: tuple[int, int] | None, known: tuple[str, int, int] | None
) -> bool:
    """A complete bin made from this very source file, unchanged since (size and mtime, as make/rsync judge)."""
    if stamp is None or not _is_complete(target):
        return False
    if known is not None:
        return known == (source, *stamp)
    # A bin from before stamps were kept: trust it only if the source is not newer than it.
    try:
        return stamp[1] <= os.stat(target).st_mtime_ns
    except OSError:
        return False


# Set in pool workers: once one of them cannot write (disk full), the others skip their remaining tasks.
_STOP: Any = None


def _init_worker(stop: Any) -> None:
    """Pool initializer. Airflow's task runner makes forked children ignore SIGTERM, which would hang
    Pool.terminate(): workers get the default handler back."""
    global _STOP
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _STOP = stop


def _convert_one(task: tuple[int, str, str]) -> tuple[int, str | None, OSError | None]:
    """Worker: transform ``source`` into ``target``; return (index, why it cannot be read, write error).

    Only decoding errors become a reason; a failure to write the bin (disk full) comes back as the third item
    (a value, not an exception: the pool then ends with close/join instead of terminate, which can hang).
    A source that cannot be decoded loses the bin an earlier version of it left: inference reads every
    .bin of the folder and would otherwise score the old picture.
    """
    index, source, target = task
    if _STOP is not None and _STOP.is_set():
        return index, None, OSError("stopped: another worker could not write")
    try:
        array = transform_image(source)
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ValueError...
        Path(target).unlink(missing_ok=True)
        if os.path.islink(source) and not os.path.exists(source):
            return index, f"dangling symlink or symlink loop (-> {os.readlink(source)}): {type(exc).__name__}", None
        return index, f"{type(exc).__name__}: {exc}", None
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


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (containers, taskset)
    except AttributeError:
        return os.cpu_count() or 1


def _run_tasks(tasks: list[tuple[int, str, str]], workers: int) -> Iterator[tuple[int, str | None]]:
    """(index, reason it cannot be decoded or None) per task; the first write error is raised at the end.

    The pool is always ended with close/join (workers skip their remaining tasks once one write failed),
    never terminate: terminating a pool whose workers are mid-write has been seen to hang.
    """
    failure: OSError | None = None
    if workers <= 1 or len(tasks) <= 1:
        for index, reason, error in map(_convert_one, tasks):
            if error is not None:
                raise error
            yield index, reason
        return
    ctx = multiprocessing.get_context()
    stop = ctx.Event()
    try:
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(stop,))
    except AssertionError as exc:  # "daemonic processes are not allowed to have children"
        log.warning("Cannot start worker processes here (%s): preprocessing in this process", exc)
        yield from _run_tasks(tasks, 1)
        return
    # Chunks amortise the inter-process round trip; small enough that progress keeps moving.
    chunksize = max(1, min(64, len(tasks) // (workers * 8)))
    try:
        for index, reason, error in pool.imap_unordered(_convert_one, tasks, chunksize=chunksize):
            if error is not None:
                # Keep the real write error, not a worker's "stopped" note that may arrive before it.
                if failure is None or (failure.errno is None and error.errno is not None):
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


def preprocess(
    root_path: str | os.PathLike,
    bin_path: str | os.PathLike,
    *,
    workers: int | None = None,
    limit: int | None = None,
    skip_bad: bool = False,
    space_advice: str | None = None,
) -> PreprocessResult:
    """Write ``<stem>.bin`` for every image of ``root_path`` into ``bin_path``, then the manifest and classes.

    Bins already complete from an earlier run are kept. Undecodable images are logged one by one; after
    everything else is written they raise :class:`InputError` naming each one, unless ``skip_bad``, which
    records them in the manifest as ``skipped`` instead.

    :param workers: processes to use (default: every available core; 1 = in this process).
    :param limit: preprocess a round-robin subset of this many images (see :func:`list_dataset`).
    :param space_advice: what to do when the disk fills (the message names ``bin_path`` either way).
    """
    start = time.perf_counter()
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be at least 1 (got {workers})")
    out = Path(bin_path)
    check_output_dir(out, "--bin_path")
    classes, items = list_dataset(root_path, limit)
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
        return _preprocess(out, root_path, classes, items, label_scheme, workers, skip_bad, start)


def _preprocess(
    out: Path,
    root_path: str | os.PathLike,
    classes: list[str],
    items: list[Item],
    label_scheme: str,
    workers: int | None,
    skip_bad: bool,
    start: float,
) -> PreprocessResult:
    out.mkdir(parents=True, exist_ok=True)
    # The manifest marks a complete run; the one of an earlier run must not outlive a failing rerun.
    (out / MANIFEST_NAME).unlink(missing_ok=True)

    targets = [str(out / f"{item.stem}.bin") for item in items]
    known = _read_stamps(out)
    stamps = [_source_stamp(item.source) for item in items]
    tasks = [
        (i, str(item.source), targets[i])
        for i, item in enumerate(items)
        if not _bin_is_current(targets[i], str(item.source), stamps[i], known.get(item.stem))
    ]
    changed = sum(1 for i, _, target in tasks if _is_complete(target))
    if changed:
        log.warning(
            "%d source image(s) changed (size or modification time) since their bins in %s were written: redoing them",
            changed,
            out,
        )
    reused = len(items) - len(tasks)
    workers = min(workers or _default_workers(), max(len(tasks), 1))
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

    reasons: dict[int, str] = {}
    progress = Progress("preprocess", len(tasks), unit="images", logger=log)
    for index, reason in _run_tasks(tasks, workers):
        if reason is not None:
            reasons[index] = reason
            log.log(logging.WARNING if skip_bad else logging.ERROR, "Cannot decode %s: %s", items[index].source, reason)
        progress.update()
    if tasks:
        progress.finish()

    # Remember what each bin was made from, also when bad images fail the run below: the next run then
    # redoes only what changed. Stamps of images whose bins are gone are dropped.
    for i, item in enumerate(items):
        stamp = stamps[i]
        if i in reasons or stamp is None:
            known.pop(item.stem, None)
        else:
            known[item.stem] = (str(item.source), *stamp)
    _write_stamps(out, known)

    bad = [(str(items[i].source), reasons[i]) for i in sorted(reasons)]
    seconds = time.perf_counter() - start
    result = PreprocessResult(
        bin_path=str(out),
        num_images=len(items),
        num_written=len(tasks) - len(bad),
        num_reused=reused,
        bad=bad,
        seconds=seconds,
        rate=len(tasks) / seconds if seconds > 0 else 0.0,
        label_scheme=label_scheme,
    )
    if bad and not skip_bad:
        listed = "\n".join(f"  {source}: {reason}" for source, reason in bad[:_MAX_LISTED])
        more = f"\n  ... and {len(bad) - _MAX_LISTED} more (each is in the log)" if len(bad) > _MAX_LISTED else ""
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


# ---------------------------------------------------------------------------------------------- cached step


def prepare_inputs(
    root_path: str | Path,
    cache_root: str | Path,
    *,
    limit: int | None = None,
    workers: int | None = None,
    skip_bad: bool = False,
) -> dict[str, Any]:
    """Preprocess the dataset into a folder keyed by dataset fingerprint + transform version + limit."""
    from .sample import is_generated

    root = Path(root_path)
    if not root.is_dir():
        raise InputError(
            f"dataset folder {root} does not exist: pass the ImageNet val folder "
            f"(one sub-folder per class) or make one with `twins make-sample`"
        )
    check_dataset_root(root)  # before the fingerprint walks it: `/` or a folder above val is refused here
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


SKIPPED_NAMES_CAP = 200  # names kept in a results-DB row: a broken copy of 50,000 images must not bloat it


def skipped_fields(inputs: dict[str, Any]) -> dict[str, Any]:
    """The results-DB run fields for the images ``--skip-bad`` left out, from :func:`prepare_inputs`' record.

    ``{"num_skipped": N, "skipped_images": ["<class>/<file>", ...]}`` (names capped at SKIPPED_NAMES_CAP;
    the count is exact).
    """
    bad = inputs.get("bad") or []
    names = [f"{Path(source).parent.name}/{Path(source).name}" for source, _reason in bad[:SKIPPED_NAMES_CAP]]
    return {"num_skipped": len(bad), "skipped_images": names}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "preprocess",
        help="ImageNet val folder -> float32 .bin files (Twins_preprocess.py)",
        description="Resize(256, bicubic) -> CenterCrop(224) -> normalise each image of "
        "ROOT_PATH/<wnid>/ into BIN_PATH/<stem>.bin (raw float32 CHW), plus "
        "manifest.csv and classes.txt. Complete bins of an earlier run are kept.",
    )
    p.add_argument("--root_path", required=True, help="ImageNet val folder, one sub-folder per class")
    p.add_argument("--bin_path", required=True, help="output folder for the .bin files")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores; 1 = no pool)")
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="only this many images, taken round-robin across classes (a quick representative run)",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="record undecodable images as skipped in the manifest instead of failing",
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    result = preprocess(args.root_path, args.bin_path, workers=args.workers, limit=args.limit, skip_bad=args.skip_bad)
    print(
        f"preprocess: {result.num_images} images -> {result.bin_path}: {result.num_written} written, "
        f"{result.num_reused} kept from an earlier run, {len(result.bad)} skipped as undecodable; "
        f"{result.seconds:.1f} s ({result.rate:.1f} img/s); labels: {LABEL_SCHEME_TEXT[result.label_scheme]}"
    )
    return 0
