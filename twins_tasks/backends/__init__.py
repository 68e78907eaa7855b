"""Backends behind one small interface: compile an ONNX model per batch size, infer, measure.

``ascend`` drives ``atc`` and ``ais_bench`` on a Huawei Ascend host; ``onnxruntime`` runs the same steps
for real on any CPU/GPU host. Modules are imported lazily: importing this package is cheap.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
from typing import Any

from ..errors import InputError
from .base import Backend, CompileResult, InferResult

__all__ = [
    "Backend",
    "CompileResult",
    "InferResult",
    "BACKENDS",
    "get_backend",
    "resolve_backend_name",
    "add_backend_arguments",
    "backend_from_args",
]

BACKENDS = {
    "onnxruntime": "twins_tasks.backends.onnxruntime:OnnxRuntimeBackend",
    "ascend": "twins_tasks.backends.ascend:AscendBackend",
}

DEFAULT_CANN_ENV = "/usr/local/Ascend/ascend-toolkit/set_env.sh"


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


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by compile/infer/perf/run; each backend reads the ones it knows.

    Flags that mirror a tool keep its spelling (``--device`` of ais_bench, ``--soc_version`` and
    ``--precision_mode`` of atc); our own use ``--kebab-case`` (old spellings stay as aliases).
    """
    parser.add_argument(
        "--backend",
        default="auto",
        choices=["auto", *BACKENDS],
        help="auto = ascend when atc/CANN is installed, else onnxruntime",
    )
    g = parser.add_argument_group("onnxruntime backend")
    g.add_argument(
        "--providers", default=None, help="comma-separated ONNX Runtime execution providers (default: best available)"
    )
    g.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    a = parser.add_argument_group("ascend backend")
    a.add_argument("--device", "-d", type=int, default=0, help="NPU device id (ais_bench --device)")
    a.add_argument(
        "--device-ids",
        default=None,
        help="twins run: chips the batch sizes may use, e.g. 0,1 or auto (every chip npu-smi shows); "
        "each batch size leases one (default: --device)",
    )
    a.add_argument(
        "--cann-env", "--cann_env", dest="cann_env", default=None, help=f"CANN set_env.sh (default {DEFAULT_CANN_ENV})"
    )
    a.add_argument("--soc_version", default="auto", help="atc --soc_version, e.g. Ascend310P3; auto = from npu-smi")
    a.add_argument("--precision_mode", default=None, help="atc --precision_mode (default: none, as the recipe)")
    a.add_argument("--op_select_implmode", default=None, help="atc --op_select_implmode")
    a.add_argument(
        "--python", dest="ais_bench_python", default=None, help="Python interpreter that has ais_bench installed"
    )


def backend_from_args(args: argparse.Namespace) -> Backend:
    """The backend that ``twins compile/infer/perf`` flags select (the same settings ``twins run`` uses)."""
    from ..recipe import backend_settings_from_args

    settings = backend_settings_from_args(args)
    name = resolve_backend_name(settings.name, cann_env=settings.cann_env)
    return get_backend(name, **settings.options(name))
