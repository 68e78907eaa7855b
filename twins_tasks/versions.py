"""The software versions a run records (the project, the model stack, Airflow where installed)."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from importlib import metadata

RECORDED = ("twins-tasks", "torch", "timm", "onnx", "onnxruntime", "numpy", "Pillow", "apache-airflow")


def software_versions(dists: Sequence[str] = RECORDED) -> dict[str, str]:
    """Installed versions of ``dists`` (those not installed are left out), plus Python's for the full set.

    Read from the installed distributions' metadata without importing them: torch takes seconds to import.
    """
    versions = {"python": platform.python_version()} if dists is RECORDED else {}
    for dist in dists:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions
