"""ais_bench's file layout, shared by every backend so that one postprocess reads them all.

Inputs: ``.bin``/``.BIN``/``.npy``/``.NPY`` files (one image each) in natural sort order. Outputs:
``<output>/<output_dirname>/<input stem>_<output index>.<fmt>``, one per input file; TXT is one line per
row of the (-1, last_dim) array, values ``%f`` separated by single spaces, a trailing space, then newline.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .constants import OUTPUT_FORMATS
from .errors import InputError

# Exactly these: ais_bench's folder listing tests ``endswith`` on each (utils.py, get_fileslist_from_dir),
# so ``img.Bin`` is not an input there and must not be one here.
INPUT_SUFFIXES = (".bin", ".BIN", ".npy", ".NPY")
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in _DIGITS.split(name)]


def list_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Input files as ais_bench takes them for a one-input model: one folder, or files (comma-separated).

    ais_bench reads a comma-separated list of *folders* as one folder per model input
    (io_oprations.py, check_input_parameter); Twins-SVT-L has one input, so only one folder is allowed.
    A comma-separated list of *files* is the files of that one input.
    """
    if isinstance(inputs, (str, os.PathLike)):
        items = [p for p in str(inputs).split(",") if p]
    else:
        items = [str(p) for p in inputs]
    if len(items) > 1 and any(Path(item).is_dir() for item in items):
        raise InputError(
            f"--input {','.join(items)} lists {len(items)} entries with a folder among them: ais_bench reads a "
            "comma-separated list of folders as one folder per model input, and this model has one input "
            "(`input`). Pass one folder (put all .bin/.npy files in it), or a comma-separated list of files."
        )
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = [p for p in path.iterdir() if p.is_file() and p.name.endswith(INPUT_SUFFIXES)]
            files.extend(sorted(found, key=lambda p: natural_key(p.name)))
        elif path.is_file():
            if not path.name.endswith(INPUT_SUFFIXES):
                raise InputError(
                    f"input file {path} is not a .bin or .npy file (ais_bench takes exactly "
                    f"{' '.join(INPUT_SUFFIXES)}; rename it)"
                )
            files.append(path)
        else:
            raise InputError(f"input path {path} does not exist: pass the folder written by `twins preprocess`")
    if not files:
        raise InputError(f"no .bin/.npy input files in {inputs}: run `twins preprocess` first")
    return files


def output_stem(path: str | os.PathLike) -> str:
    """The stem ais_bench names an input's outputs after: the file name up to its FIRST dot.

    ``img.v1.bin`` -> ``img`` (io_oprations.py, save_tensors_to_file: ``basename.split('.')[0]``).
    """
    return os.path.basename(os.fspath(path)).split(".")[0]


def check_output_stems(files: Iterable[str | os.PathLike]) -> None:
    """An :class:`InputError` naming the inputs whose outputs would overwrite each other under ais_bench."""
    by_stem: dict[str, list[str]] = {}
    for path in files:
        by_stem.setdefault(output_stem(path), []).append(os.path.basename(os.fspath(path)))
    clashes = {stem: names for stem, names in by_stem.items() if len(names) > 1}
    if clashes:
        shown = "; ".join(f"{', '.join(names)} -> {stem}_0.*" for stem, names in list(clashes.items())[:5])
        raise InputError(
            f"{len(clashes)} group(s) of input files would write the same output (ais_bench names outputs "
            f"after the file name up to its first dot): {shown}. Rename them so that the part before the "
            "first dot is unique (e.g. img.v1.bin -> img_v1.bin)."
        )


def load_input(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        return np.load(path).astype(np.float32, copy=False).reshape(-1)
    return np.fromfile(path, dtype=np.float32)


def output_path(output_dir: str | os.PathLike, stem: str, index: int = 0, outfmt: str = "BIN") -> Path:
    return Path(output_dir) / f"{stem}_{index}.{outfmt.lower()}"


def format_txt(array: np.ndarray) -> str:
    rows = np.asarray(array).reshape(-1, np.asarray(array).shape[-1])
    return "".join(" ".join(f"{v:f}" for v in row) + " \n" for row in rows)


def write_output(path: Path, array: np.ndarray, outfmt: str) -> None:
    """Write one output file in ais_bench's format (temp name then rename: readers never see half)."""
    outfmt = outfmt.upper()
    tmp = path.with_name(f".{path.name}.tmp")
    if outfmt == "TXT":
        tmp.write_text(format_txt(array))
    elif outfmt == "NPY":
        with open(tmp, "wb") as fh:
            np.save(fh, array)
    elif outfmt == "BIN":
        np.ascontiguousarray(array).tofile(tmp)
    else:
        raise InputError(f"--outfmt {outfmt!r} is not one of {', '.join(OUTPUT_FORMATS)}")
    os.replace(tmp, path)


def read_output(path: str | os.PathLike, num_classes: int | None = None) -> np.ndarray:
    """Read one output file of any format as a flat float32 vector.

    ais_bench writes BIN and NPY in the model's output dtype (utils.py, save_data_to_files: ``tofile`` /
    ``np.save``): float16 when atc compiled with ``--output_type=FP16``. NPY says its dtype in its header;
    a BIN file does not, so with ``num_classes`` its size decides (``num_classes`` x 4 bytes: float32,
    x 2 bytes: float16). Without ``num_classes`` a BIN file is read as float32.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        values = np.array(path.read_bytes().split(), dtype=np.float32)
    elif suffix == ".npy":
        values = np.load(path).astype(np.float32, copy=False).reshape(-1)
    elif suffix == ".bin":
        size = path.stat().st_size
        if num_classes is not None and size == 2 * num_classes:
            values = np.fromfile(path, dtype=np.float16).astype(np.float32)
        elif num_classes is not None and size != 4 * num_classes:
            raise ValueError(
                f"expected {num_classes} values: {4 * num_classes} bytes (float32) or {2 * num_classes} bytes "
                f"(float16), found {size} bytes"
            )
        else:
            values = np.fromfile(path, dtype=np.float32)
    else:
        raise InputError(f"output {path} has an unknown format (expected .txt, .npy or .bin)")
    if num_classes is not None and values.size != num_classes:
        raise ValueError(f"expected {num_classes} values, found {values.size}")
    return values


_OUTPUT_NAME = re.compile(r"^(?P<stem>.+)_(?P<index>\d+)\.(?P<fmt>txt|npy|bin)$", re.IGNORECASE)


def find_outputs(pred_dir: str | os.PathLike, index: int = 0) -> dict[str, Path]:
    """Map input stem -> output file for output ``index`` in an ais_bench result folder."""
    found: dict[str, Path] = {}
    for entry in os.scandir(os.fspath(pred_dir)):
        match = _OUTPUT_NAME.match(str(entry.name))
        if match and int(match["index"]) == index and entry.is_file():
            found[match["stem"]] = Path(entry.path)
    return found
