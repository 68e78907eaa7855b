"""What the tools leave behind: atc's ``.om`` artifact, ais_bench's result files and summary JSON."""

from __future__ import annotations

import glob
import json
import logging
import re
from pathlib import Path
from typing import Any

from ...errors import ToolError

log = logging.getLogger(__name__)

# ais_bench result files: <stem>_<output index>.<fmt>
_RESULT_FILE = re.compile(r"^.+_\d+\.(txt|npy|bin)$", re.IGNORECASE)


def find_artifacts(prefix: Path) -> list[Path]:
    """``<prefix>.om`` or ``<prefix>_linux_<arch>.om``; not ``<prefix>6.om`` (bs1 vs bs16 in one folder)."""
    pattern = re.compile(re.escape(prefix.name) + r"(_linux_[A-Za-z0-9_]+)?\.om")
    return sorted(p for p in prefix.parent.glob(f"{glob.escape(prefix.name)}*.om") if pattern.fullmatch(p.name))


def clear_previous_outputs(output: Path, output_dirname: str) -> None:
    """Remove an earlier run's result files, so that a missing output cannot hide behind a stale one."""
    out_dir = output / output_dirname
    stale = [output / f"{output_dirname}_summary.json", out_dir / "sumary.json"]
    if out_dir.is_dir():
        stale.extend(p for p in out_dir.iterdir() if _RESULT_FILE.match(p.name))
    removed = 0
    for path in stale:
        if path.is_file():
            path.unlink()
            removed += 1
    if removed:
        log.info("Removed %d result files of an earlier run in %s", removed, out_dir)


def read_summary(output: Path, output_dirname: str) -> dict[str, Any]:
    for path in (output / f"{output_dirname}_summary.json", output / output_dirname / "sumary.json"):
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except ValueError as exc:
                raise ToolError(f"ais_bench summary {path} is not valid JSON: {exc}") from exc
    log.warning(
        "ais_bench wrote no summary JSON (%s_summary.json or %s/sumary.json in %s); outputs are complete",
        output_dirname,
        output_dirname,
        output,
    )
    return {}
