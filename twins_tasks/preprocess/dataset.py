"""Which images a val folder holds and their labels: the ImageFolder-layout checks and listing (no PIL).

Shared by preprocess (which bins to write) and postprocess (labels straight from a val folder), so that stems and
labels cannot drift apart between the two steps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..files import walk
from ..labels import class_labels
from ..layout import output_stem

# Part of the preprocessed-inputs cache key: bump when the labels a given dataset gets change (2: wnid folders ->
# ImageNet indices, see labels.class_labels).
LABELS_VERSION = "2"
# torchvision.datasets.folder.IMG_EXTENSIONS, compared case-insensitively as ImageFolder does.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
MAX_LISTED = 20  # bad files / duplicates named in one error message; the log names every one

# Folders that are never a val folder: refused before anything walks them (``--root_path /`` would walk the
# whole filesystem, /proc included).
_SYSTEM_FOLDERS = frozenset(
    ["/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/run", "/sbin", "/sys", "/usr", "/var"]
)


@dataclass(frozen=True)
class Item:
    """One image of the dataset: output name, source file, class index and class folder."""

    stem: str
    source: Path
    label: int
    wnid: str


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
    if isinstance(root_path, str) and not root_path.strip():
        # Path("") is ".": an empty flag or Param would otherwise walk whatever folder the command started in
        raise InputError(
            "--root_path is empty: no dataset folder given; pass the ImageNet val folder "
            "(one sub-folder per class, e.g. val/n01440764/ILSVRC2012_val_00000293.JPEG)"
        )
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
            f"{', '.join(f'{name} -> {os.readlink(root / name)}' for name in broken[:MAX_LISTED])}; "
            "fix or remove them"
        )
    classes = sorted(name for name, is_dir, _ in listed if is_dir)
    if not classes:
        raise InputError(f"{root} has no class folders: expected {root}/<wnid>/<image>.JPEG (ImageFolder layout)")
    if not any(_holds_an_image(os.path.join(root, name)) for name in classes):
        deeper = [name for name in classes[:MAX_LISTED] if os.path.isdir(os.path.join(root, name))]
        raise InputError(
            f"{root} is not an ImageNet-layout val folder: none of its {len(classes)} sub-folder(s) "
            f"({', '.join(deeper[:5])}{' ...' if len(classes) > 5 else ''}) holds image files directly. "
            f"Expected {root}/<wnid>/<image>.JPEG: if the val folder is one level down, pass that folder"
        )
    return classes


def list_dataset(root_path: str | os.PathLike, limit: int | None = None) -> tuple[list[str], list[Item]]:
    """Classes (sorted folder names) and images of an ImageFolder tree, labelled by :func:`labels.class_labels`.

    An image's stem is :func:`twins_tasks.layout.output_stem` of its file name (up to the first dot): the name
    ais_bench gives its outputs, so a bin and the outputs made from it share it.

    :param limit: keep a representative subset of this many images, taken round-robin across classes.
    :raises InputError: missing root, no class folders, an empty class folder, or two images that would
        write the same ``<stem>.bin``.
    """
    root = Path(root_path)
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1 (got {limit})")
    classes = check_dataset_root(root_path)  # the flag as given: Path('') would already be '.'
    labels, _scheme = class_labels(classes, root)
    per_class: list[list[Item]] = []
    empty: list[str] = []
    for label, wnid in zip(labels, classes, strict=True):
        files = _class_files(os.path.join(root, wnid))
        if not files:
            empty.append(wnid)
        per_class.append([Item(output_stem(f), Path(f), label, wnid) for f in files])
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
            f"<stem>.bin: {'; '.join(duplicates[:MAX_LISTED])}"
            f"{' ...' if len(duplicates) > MAX_LISTED else ''}. Rename or remove one of each pair"
        )

    items = [item for files in per_class for item in files]
    if limit is not None and limit < len(items):
        items = _round_robin(per_class, limit)
    return classes, items
