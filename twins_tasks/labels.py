"""Class labels: ImageNet wnid folders get their ImageNet-1k class index, other folders their sorted position.

The recipe's ImageFolder labels (index among the class folders present) equal ImageNet's indices only when all
1,000 folders are there; a class subset or a nightly smoke set would score 0% against the true classes. A
folder named by an ImageNet-1k wnid therefore gets that class's index, from timm's synset list (the order
every timm/torchvision ImageNet classifier uses). Folders that are not wnids (a custom dataset) keep their
positions, and every output says so. A mix is refused: half the labels would mean one thing, half another.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from .constants import NUM_CLASSES
from .errors import InputError

log = logging.getLogger(__name__)

IMAGENET = "imagenet"  # label = ImageNet-1k class index of the folder's wnid
POSITION = "folder-position"  # label = index of the folder among the sorted class folders present
LABEL_SCHEME_TEXT = {
    IMAGENET: "ImageNet-1k class indices (folder wnid -> index, timm's synset list)",
    POSITION: "positions among the sorted class folders (folder names are not ImageNet wnids)",
}
WNID = re.compile(r"n\d{8}")
_LISTED = 20


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k wnids in class-index order (``n01440764`` is 0), from timm's synset list.

    Read as a file next to the installed timm instead of through ``timm.data.ImageNetInfo``: importing timm
    loads torch (seconds), and preprocessing or scoring needs neither.
    """
    spec = importlib.util.find_spec("timm")
    path = Path(spec.origin).parent / "data" / "_info" / "imagenet_synsets.txt" if spec and spec.origin else None
    if path is None or not path.is_file():
        raise InputError(
            f"timm's ImageNet synset list is not installed ({path or 'no timm package'}): "
            "install the project's dependencies (timm) to map wnid folders to ImageNet class indices"
        )
    wnids = tuple(path.read_text(encoding="utf-8").split())
    if len(wnids) != NUM_CLASSES:
        raise InputError(f"{path} lists {len(wnids)} synsets, not {NUM_CLASSES}: a damaged timm install?")
    return wnids


@functools.cache
def _index() -> dict[str, int]:
    return {wnid: i for i, wnid in enumerate(imagenet_wnids())}


def class_labels(classes: Sequence[str], root: str | os.PathLike = "the dataset") -> tuple[list[int], str]:
    """Labels for sorted class folder names, and which scheme they follow (:data:`IMAGENET` or :data:`POSITION`).

    :raises InputError: some folders are ImageNet-1k wnids and others are not; the message names the others.
    """
    index = _index()
    known = [c for c in classes if c in index]
    if len(known) == len(classes):
        return [index[c] for c in classes], IMAGENET
    if not known:
        return list(range(len(classes))), POSITION
    odd = [c for c in classes if c not in index]
    looks = [c for c in odd if WNID.fullmatch(c)]
    hint = (
        f" ({len(looks)} of them look like wnids but are not among ImageNet-1k's 1,000 classes, e.g. {looks[0]})"
        if looks
        else ""
    )
    raise InputError(
        f"{root} mixes {len(known)} ImageNet class folder(s) (wnids, e.g. {known[0]}) with {len(odd)} folder(s) "
        f"that are not ImageNet-1k wnids{hint}: {', '.join(odd[:_LISTED])}{' ...' if len(odd) > _LISTED else ''}. "
        "Labels would mean ImageNet classes for some images and folder positions for others: remove or rename "
        "those folders (or use only non-wnid names, whose labels are their positions)"
    )


def scheme_of(wnids_and_labels: Sequence[tuple[str, int]]) -> str:
    """The scheme a manifest's (wnid, label) pairs follow: IMAGENET when every label is its wnid's index."""
    index = _index()
    if wnids_and_labels and all(index.get(wnid) == label for wnid, label in wnids_and_labels):
        return IMAGENET
    return POSITION
