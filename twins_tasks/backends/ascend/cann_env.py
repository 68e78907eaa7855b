"""The CANN environment: ``source set_env.sh`` once, hand the result to every tool; the toolkit's version.

``set_env.sh`` sets PATH, LD_LIBRARY_PATH, PYTHONPATH and the ASCEND_* variables that atc, ais_bench and
ACL need. Sourcing it is shell work, so it happens once, in a subprocess (the script path is an argument,
never code), and the resulting environment is a plain dict.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from ...errors import InputError, ToolError
from .commands import TAIL_LINES


def load_cann_env(
    set_env: str | os.PathLike, *, base_env: Mapping[str, str] | None = None, timeout: float = 120.0
) -> dict[str, str]:
    """The environment after ``source <set_env>``, as a dict (the script path is an argument, not code)."""
    path = Path(set_env)
    if not path.is_file():
        raise InputError(
            f"CANN environment script {path} not found: install the CANN toolkit "
            "(Ascend-cann-toolkit_*.run, which provides set_env.sh) or point TWINS_CANN_ENV / "
            "cann_env at its set_env.sh (e.g. /usr/local/Ascend/ascend-toolkit/set_env.sh)"
        )
    # The script's own output goes to stderr (kept for the error message); stdout carries only `env -0`.
    argv = ["bash", "-c", 'source "$1" >&2 && env -0', "_", str(path)]
    try:
        proc = subprocess.run(
            argv, capture_output=True, timeout=timeout, env=dict(base_env) if base_env is not None else None
        )
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"sourcing {path} did not finish within {timeout:.0f} s") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "backslashreplace").strip().splitlines()[-TAIL_LINES:]
        raise ToolError(
            f"sourcing {path} failed (exit {proc.returncode}): " + " | ".join(err), exit_code=proc.returncode, lines=err
        )
    env: dict[str, str] = {}
    for item in proc.stdout.split(b"\0"):
        key, sep, value = item.decode("utf-8", "surrogateescape").partition("=")
        if sep and key:
            env[key] = value
    return env


def find_tool(tool: str, env: Mapping[str, str]) -> str | None:
    """Full path of ``tool`` (a name looked up on ``env``'s PATH, or a path), if it is an executable."""
    if os.sep in tool:
        return tool if os.path.isfile(tool) and os.access(tool, os.X_OK) else None
    return shutil.which(tool, path=env.get("PATH", ""))


def cann_version(env: Mapping[str, str]) -> str:
    """The toolkit version of a loaded CANN environment (``unknown`` where it names no toolkit)."""
    home = env.get("ASCEND_TOOLKIT_HOME") or env.get("ASCEND_HOME_PATH")
    if not home:
        return "unknown"
    return cann_version_from_home(home)


def cann_version_from_home(home: str | os.PathLike) -> str:
    """The version from the toolkit's version files, else the resolved ``ASCEND_TOOLKIT_HOME`` folder name."""
    home = Path(home)
    # <arch>-linux/ascend_toolkit_install.info (version=8.0.RC2) is in every toolkit; the others in some.
    candidates = [
        *sorted(home.glob("*/ascend_toolkit_install.info")),
        home / "compiler" / "version.info",
        home / "version.cfg",
    ]
    for path in candidates:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        match = re.search(r"^\s*(?:version|Version|toolkit_version)\s*[=:]\s*\[?([^\]\s]+)", text, re.MULTILINE)
        if match:
            return match.group(1)
    resolved = home.resolve().name  # .../ascend-toolkit/latest -> .../ascend-toolkit/8.0.RC2
    return resolved if resolved[:1].isdigit() else "unknown"
