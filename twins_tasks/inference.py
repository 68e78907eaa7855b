"""The inference step: a backend's ``infer`` (ais_bench's part of the recipe) that ends cleanly on a full disk.

``twins compile``/``twins infer`` (``twins_tasks/cli/inference.py``) and the DAG's infer task call it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError
from .files import is_no_space, no_space_is_input_error

if TYPE_CHECKING:
    from .backends.base import Backend
    from .types import InferResult


def infer_checked(
    backend: Backend,
    artifact: Path,
    inputs: str | Path,
    batch_size: int,
    output: Path,
    output_dirname: str,
    outfmt: str = "BIN",
) -> InferResult:
    """``backend.infer`` with a full disk ending in "no space left on <output>/<output_dirname>" (InputError).

    The outputs already written are whole files (written under temp names and renamed); the temp file of the
    output being written when the disk filled is removed here, so the folder holds only real outputs.
    """
    out_dir = Path(output) / output_dirname
    try:
        with no_space_is_input_error(
            out_dir, "free space there (one TXT output is about 9 KB, BIN/NPY 4 KB) or pass another --output"
        ):
            return backend.infer(artifact, inputs, batch_size, output, output_dirname, outfmt=outfmt)
    except InputError as exc:
        if isinstance(exc.__cause__, OSError) and is_no_space(exc.__cause__) and out_dir.is_dir():
            for leftover in out_dir.glob(".*.tmp"):  # layout.write_output's temp names
                leftover.unlink(missing_ok=True)
        raise
