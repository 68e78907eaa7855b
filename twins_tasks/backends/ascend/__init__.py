"""The Ascend backend, by concern.

- :mod:`.commands`: the recipe's ``atc`` and ``python -m ais_bench`` command lines (argv lists), and how to
  read a failed run;
- :mod:`.npu_smi`: the ``npu-smi info`` table and the idle wait;
- :mod:`.cann_env`: the CANN environment (``set_env.sh`` sourced once) and the toolkit version;
- :mod:`.options`: the backend's settings, one validated record;
- :mod:`.artifacts`: what the tools leave behind (atc's ``.om``, ais_bench's results and summary JSON);
- :mod:`.backend`: :class:`AscendBackend`, which runs them through a tool runner.

Every public name is importable from here (``twins_tasks.backends.ascend:AscendBackend`` is the registry's).
"""

from __future__ import annotations

from .backend import AscendBackend
from .cann_env import cann_version_from_home, load_cann_env
from .commands import ais_bench_infer_command, ais_bench_perf_command, atc_command, failure_reason
from .npu_smi import IdlePolicy, NpuDevice, find_device, parse_npu_smi, read_npu_smi, wait_until_idle
from .options import OP_SELECT_IMPLMODES, OUTPUT_TYPES, AscendOptions

__all__ = [
    "OP_SELECT_IMPLMODES",
    "OUTPUT_TYPES",
    "AscendBackend",
    "AscendOptions",
    "IdlePolicy",
    "NpuDevice",
    "ais_bench_infer_command",
    "ais_bench_perf_command",
    "atc_command",
    "cann_version_from_home",
    "failure_reason",
    "find_device",
    "load_cann_env",
    "parse_npu_smi",
    "read_npu_smi",
    "wait_until_idle",
]
