"""The postprocess step: top-1/top-5 accuracy of an ais_bench result folder (``Twins_postprocess.py``).

Labels come from the ImageNet val folder (``root/<wnid>/<image>``: label = the wnid's ImageNet-1k index; folders
that are not wnids get their sorted position, and the report says so; see :mod:`twins_tasks.labels`) or from the
manifest ``twins preprocess`` writes. Unlike the reference
script, a missing or unreadable output never crashes the run: it counts as wrong and is named in the report.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .constants import NUM_CLASSES
from .errors import InputError
from .labels import LABEL_SCHEME_TEXT, POSITION, class_labels, scheme_of
from .layout import find_outputs, natural_key, read_output
from .preprocess.dataset import list_dataset
from .preprocess.manifest import MANIFEST_NAME, STATUS_SKIPPED, read_manifest
from .progress import Progress

log = logging.getLogger(__name__)

_CHUNK = 1024  # outputs stacked per top-k computation: vectorised, yet bounded memory on 50,000 images
_SHOW = 5  # names shown per problem line; the JSON record has them all


@dataclass
class Labels:
    """Ground truth for scoring: stem -> class index, plus images preprocess skipped (not scored)."""

    labels: dict[str, int]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""
    scheme: str = ""  # labels.IMAGENET or labels.POSITION


@dataclass
class AccuracyResult:
    """Top-1/top-5 over every labelled image; missing and unreadable outputs count as wrong."""

    n_total: int  # the denominator: all labelled images
    n_scored: int  # outputs that were read and ranked
    top1: float  # percent
    top5: float  # percent
    correct1: int
    correct5: int
    missing: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # skipped by preprocess: not in n_total
    unlabelled: list[str] = field(default_factory=list)  # outputs with no label: ignored
    pred_dir: str = ""
    labels_source: str = ""
    label_scheme: str = ""  # labels.IMAGENET (wnid -> ImageNet index) or labels.POSITION (sorted folder position)

    @property
    def complete(self) -> bool:
        return not self.missing and not self.unreadable

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["complete"] = self.complete
        return record

    def report_lines(self) -> list[str]:
        """The reference's accuracy line, a top-5 line, then one line per kind of problem."""
        n = self.n_total
        lines = [
            f"Accuracy of the network on the {n} val images: {self.top1:.1f}%",
            f"Top-5 accuracy of the network on the {n} val images: {self.top5:.1f}%",
        ]
        if self.missing:
            lines.append(f"Missing outputs (counted as wrong): {len(self.missing)}: {_preview(self.missing)}")
        if self.unreadable:
            lines.append(
                f"Unreadable outputs (counted as wrong): {len(self.unreadable)}: "
                f"{_preview([f'{stem} ({reason})' for stem, reason in self.unreadable], sep='; ')}"
            )
        if self.skipped:
            lines.append(
                f"Skipped by preprocess (not in the {n} images): {len(self.skipped)}: "
                f"{_preview([f'{stem} ({reason})' for stem, reason in self.skipped], sep='; ')}"
            )
        if self.unlabelled:
            lines.append(f"Outputs without a label (ignored): {len(self.unlabelled)}: {_preview(self.unlabelled)}")
        if self.label_scheme == POSITION:
            lines.append(f"Labels: {LABEL_SCHEME_TEXT[POSITION]}")
        return lines


def _preview(items: list[str], sep: str = ", ") -> str:
    more = f"{sep}... and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
    return sep.join(items[:_SHOW]) + more


# ------------------------------------------------------------------------------------------------ labels


def load_labels(input_path: str | os.PathLike) -> Labels:
    """Labels from a val folder, a ``manifest.csv``, or a bin folder that holds ``manifest.csv``."""
    path = Path(input_path)
    if path.is_file():
        return read_manifest_labels(path)
    if not path.is_dir():
        raise InputError(
            f"--input_path {path} does not exist: pass the ImageNet val folder or the "
            f"{MANIFEST_NAME} written by `twins preprocess`"
        )
    if (path / MANIFEST_NAME).is_file():
        return read_manifest_labels(path / MANIFEST_NAME)
    if any(path.glob("*.bin")):
        raise InputError(
            f"{path} holds .bin inputs but no {MANIFEST_NAME}: preprocess writes it at the end of a "
            f"complete run; re-run `twins preprocess`, or pass the ImageNet val folder instead"
        )
    return read_val_folder_labels(path)


def read_val_folder_labels(root: Path) -> Labels:
    """ImageFolder semantics (label = index of the class folder in sorted order), exactly as preprocess lists
    them: the same function, so stems and labels cannot drift apart between the two steps."""
    classes, items = list_dataset(root)
    return Labels(labels={item.stem: item.label for item in items}, source=str(root), scheme=class_labels(classes)[1])


def read_manifest_labels(manifest: Path) -> Labels:
    """Labels from ``twins preprocess``'s manifest (read by :func:`.preprocess.manifest.read_manifest`, which
    imports no image stack); rows with status ``skipped`` are reported, not scored."""
    labels: dict[str, int] = {}
    skipped: list[tuple[str, str]] = []
    wnids: list[tuple[str, int]] = []
    for row in read_manifest(manifest):
        if row.status == STATUS_SKIPPED:
            skipped.append((row.stem, row.reason or "no reason given"))
        elif row.label is not None:  # always, on an ok row: the reader refuses one without an integer label
            labels[row.stem] = row.label
            wnids.append((row.wnid, row.label))
    return Labels(labels=labels, skipped=skipped, source=str(manifest), scheme=scheme_of(wnids))


# ----------------------------------------------------------------------------------------------- scoring


def _refuse_two_formats(pred_dir: Path, outputs: dict[str, Path]) -> None:
    """Refuse a folder where one image has outputs in two formats (``x_0.txt`` and ``x_0.bin``).

    Which one would be scored is an accident of directory order, and they may come from different runs
    (an earlier ``--outfmt`` left in place): the number would silently describe one of them.
    """
    names = {entry.name.lower(): entry.name for entry in os.scandir(pred_dir)}
    clashes: list[str] = []
    for path in outputs.values():
        stem_part = path.name[: path.name.rfind(".")]  # "<stem>_0", as found
        found = [names[n] for n in (f"{stem_part}.{fmt}".lower() for fmt in ("txt", "npy", "bin")) if n in names]
        if len(found) > 1:
            clashes.append(" and ".join(sorted(found)))
    if clashes:
        clashes.sort(key=natural_key)
        raise InputError(
            f"{len(clashes)} image(s) have outputs in more than one format in {pred_dir}: "
            f"{'; '.join(clashes[:_SHOW])}{' ...' if len(clashes) > _SHOW else ''}. Which one is scored would be "
            "an accident and they may come from different runs: write each run's outputs to a fresh "
            "--output_dirname, or delete the stale format"
        )


def score(
    pred_dir: str | os.PathLike, input_path: str | os.PathLike, *, num_classes: int = NUM_CLASSES
) -> AccuracyResult:
    """Top-1/top-5 accuracy of the outputs in ``pred_dir`` against the labels of ``input_path``."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError(f"--pred {pred_dir} is not a folder: pass <output>/<output_dirname> of `twins infer`")
    truth = load_labels(input_path)
    if not truth.labels:
        raise InputError(f"no labelled images in {truth.source}: nothing to score")
    bad = [(stem, label) for stem, label in truth.labels.items() if not 0 <= label < num_classes]
    if bad:
        raise InputError(
            f"{len(bad)} label(s) in {truth.source} fall outside 0..{num_classes - 1}, e.g. "
            f"{bad[0][0]}={bad[0][1]}: is this a {num_classes}-class dataset?"
        )
    outputs = find_outputs(pred_dir)
    _refuse_two_formats(pred_dir, outputs)
    stems = sorted(truth.labels, key=natural_key)
    missing: list[str] = []
    unreadable: list[tuple[str, str]] = []
    correct1 = correct5 = n_scored = 0
    rows = np.empty((_CHUNK, num_classes), dtype=np.float32)
    row_labels = np.empty(_CHUNK, dtype=np.int64)
    filled = 0
    progress = Progress("postprocess", len(stems), unit="outputs", logger=log)

    def flush() -> None:
        nonlocal correct1, correct5, filled
        block, wanted = rows[:filled], row_labels[:filled]
        correct1 += int(np.count_nonzero(block.argmax(axis=1) == wanted))
        k = min(5, num_classes)
        top = np.argpartition(block, num_classes - k, axis=1)[:, num_classes - k :]
        correct5 += int(np.count_nonzero((top == wanted[:, None]).any(axis=1)))
        filled = 0

    for stem in stems:
        path = outputs.get(stem)
        progress.update()
        if path is None:
            missing.append(stem)
            continue
        label = truth.labels[stem]
        try:
            values = read_output(path, num_classes)
            if not np.isfinite(values).all():
                raise ValueError("non-finite values (nan/inf)")
        except Exception as exc:  # any bad file is a finding for the report, never a crash
            unreadable.append((stem, f"{path.name}: {exc}"))
            continue
        rows[filled] = values
        row_labels[filled] = label
        filled += 1
        n_scored += 1
        if filled == _CHUNK:
            flush()
    if filled:
        flush()
    progress.finish()

    n_total = len(stems)
    unlabelled = sorted((s for s in outputs if s not in truth.labels), key=natural_key)
    result = AccuracyResult(
        n_total=n_total,
        n_scored=n_scored,
        top1=100.0 * correct1 / n_total,
        top5=100.0 * correct5 / n_total,
        correct1=correct1,
        correct5=correct5,
        missing=missing,
        unreadable=unreadable,
        skipped=truth.skipped,
        unlabelled=unlabelled,
        pred_dir=str(pred_dir),
        labels_source=truth.source,
        label_scheme=truth.scheme,
    )
    if not result.complete:
        log.warning(
            "%d missing and %d unreadable outputs in %s are counted as wrong", len(missing), len(unreadable), pred_dir
        )
    return result


# ---------------------------------------------------------------------------------------------------- CLI
