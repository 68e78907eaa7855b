"""The inference step: a backend's ``infer`` (ais_bench's part of the recipe) that ends cleanly on a full disk.

``twins compile``/``twins infer`` (``twins_tasks/cli/inference.py``) and the DAG's infer task call it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError
from .files import is_no_space, no_space_is_input_error

if TYPE_CHECKING:
    from .backends.base import Backend
    from .types import InferResult

log = logging.getLogger(__name__)


def input_bytes(inputs: str | Path) -> int:
    """Bytes of the files under ``inputs`` (ais_bench's --input: a file, a folder, or comma-separated ones)."""
    total = 0
    for part in str(inputs).split(","):
        path = Path(part)
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            with os.scandir(path) as entries:  # one stat per file, from the directory listing where it can
                total += sum(e.stat().st_size for e in entries if e.is_file())
    return total


def log_read_rate(inputs: str | Path, seconds: float) -> float:
    """Log how fast the inputs were read (storage must give every chip this at once); return MB/s."""
    size = input_bytes(inputs)
    rate = size / seconds / 1e6 if seconds > 0 else 0.0
    log.info("inputs read: %.2f GiB in %.1f s (%.1f MB/s from storage)", size / 2**30, seconds, rate)
    return rate


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
            start = time.perf_counter()
            result = backend.infer(artifact, inputs, batch_size, output, output_dirname, outfmt=outfmt)
            log_read_rate(inputs, time.perf_counter() - start)
            return result
    except InputError as exc:
        if isinstance(exc.__cause__, OSError) and is_no_space(exc.__cause__) and out_dir.is_dir():
            for leftover in out_dir.glob(".*.tmp"):  # layout.write_output's temp names
                leftover.unlink(missing_ok=True)
        raise
