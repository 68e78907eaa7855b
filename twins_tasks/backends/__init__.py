"""Backends behind one small interface: compile an ONNX model per batch size, infer, measure.

``ascend`` drives ``atc`` and ``ais_bench`` on a Huawei Ascend host; ``onnxruntime`` runs the same steps
for real on any CPU/GPU host. Modules are imported lazily: importing this package is cheap.
"""

from __future__ import annotations

import importlib
import os
import shutil
from typing import Any

from ..constants import DEFAULT_CANN_ENV
from ..errors import InputError
from .base import Backend

__all__ = [
    "Backend",
    "BACKENDS",
    "get_backend",
    "resolve_backend_name",
]

BACKENDS = {
    "onnxruntime": "twins_tasks.backends.onnxruntime:OnnxRuntimeBackend",
    "ascend": "twins_tasks.backends.ascend:AscendBackend",
}


def resolve_backend_name(name: str, *, cann_env: str | None = None) -> str:
    """``auto`` means Ascend where its toolchain is installed (``atc`` on PATH or the CANN env script)."""
    if name != "auto":
        if name not in BACKENDS:
            raise InputError(f"unknown backend {name!r}: choose auto, {', '.join(BACKENDS)}")
        return name
    if shutil.which("atc") or os.path.isfile(cann_env or os.environ.get("TWINS_CANN_ENV", DEFAULT_CANN_ENV)):
        return "ascend"
    return "onnxruntime"


def get_backend(name: str, **options: Any) -> Backend:
    """Build a backend by name (``auto`` allowed); ``options`` go to its constructor."""
    name = resolve_backend_name(name, cann_env=options.get("cann_env"))
    module_name, class_name = BACKENDS[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**options)
