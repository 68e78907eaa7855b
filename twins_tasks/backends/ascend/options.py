"""The Ascend backend's settings: one frozen, validated record.

Values are typed: a device id is an ``int``, a timeout a number of seconds. Callers that hold strings
(templated Airflow fields, command-line text) convert them before building the record; a string where a
number belongs is an :class:`~twins_tasks.errors.InputError` naming the setting.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ...constants import DEFAULT_CANN_ENV, MAX_DEVICE_ID, PRECISION_MODES
from ...errors import InputError

OP_SELECT_IMPLMODES = ("high_precision", "high_performance")
OUTPUT_TYPES = ("FP32", "FP16", "UINT8", "INT8")
# Ascend310, Ascend310P3, Ascend910B3, Ascend910_9391 ...: a word, never a path or an option.
_SOC = re.compile(r"Ascend[0-9A-Za-z_]+")


@dataclass(frozen=True)
class AscendOptions:
    """Everything the Ascend backend needs besides the tool runner.

    :param cann_env: CANN ``set_env.sh`` (default ``$TWINS_CANN_ENV`` or the toolkit's standard path).
    :param device: logical NPU device id (``ais_bench --device``).
    :param soc_version: ``auto`` = ``Ascend`` + the chip name of ``device`` in ``npu-smi info``.
    :param precision_mode: atc ``--precision_mode`` (None: atc's default, force_fp16).
    :param op_select_implmode: atc ``--op_select_implmode``.
    :param dynamic_batch_size: atc ``--dynamic_batch_size``, ``"1,2,4,8"`` or ``[1, 2, 4, 8]``.
    :param insert_op_conf: atc ``--insert_op_conf`` (an AIPP config file).
    :param output_type: atc ``--output_type`` (``FP16`` makes ais_bench write float16 BIN/NPY outputs).
    :param ais_bench_python: the interpreter that has ais_bench installed (default: this one).
    :param atc_path: ``atc`` (looked up on the CANN environment's PATH) or a path.
    :param npu_smi_path: ``npu-smi`` or a path.
    :param compile_timeout: seconds for one atc run (None: no limit); likewise ``infer_timeout``, ``perf_timeout``.
    :param idle_aicore_max: the device must be at most this busy (AICore %) before a perf run; None skips
        the idle check (a warning says the numbers may not be comparable).
    :param idle_memory_max_mb: and use at most this much device memory (None: not checked).
    :param idle_wait_s: how long to wait for an idle device before failing; polled every ``idle_poll_s``.
    """

    cann_env: str | None = None
    device: int = 0
    soc_version: str = "auto"
    precision_mode: str | None = None
    op_select_implmode: str | None = None
    dynamic_batch_size: str | Sequence[int] | None = None
    insert_op_conf: str | os.PathLike | None = None
    output_type: str | None = None
    ais_bench_python: str | None = None
    atc_path: str = "atc"
    npu_smi_path: str = "npu-smi"
    compile_timeout: float | None = 3600.0
    infer_timeout: float | None = 6 * 3600.0
    perf_timeout: float | None = 1800.0
    idle_aicore_max: float | None = 5.0
    idle_memory_max_mb: int | None = None
    idle_wait_s: float = 300.0
    idle_poll_s: float = 5.0

    def __post_init__(self) -> None:
        # Normalised values replace the given ones: the record is frozen, so this is the only place.
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        put("cann_env", str(self.cann_env or os.environ.get("TWINS_CANN_ENV") or DEFAULT_CANN_ENV))
        if not _is_int(self.device) or not 0 <= self.device <= MAX_DEVICE_ID:
            raise InputError(
                f"device={self.device!r} must be an integer from 0 to {MAX_DEVICE_ID} (logical NPU device id)"
            )
        if self.soc_version != "auto" and not (isinstance(self.soc_version, str) and _SOC.fullmatch(self.soc_version)):
            raise InputError(
                f"soc_version={self.soc_version!r} must be 'auto' or an Ascend SoC name such as "
                "Ascend310P3 (see `npu-smi info`: 'Ascend' + the Name column)"
            )
        put("precision_mode", _choice("precision_mode", self.precision_mode, PRECISION_MODES))
        put("op_select_implmode", _choice("op_select_implmode", self.op_select_implmode, OP_SELECT_IMPLMODES))
        put("dynamic_batch_size", _dynamic_batch(self.dynamic_batch_size))
        output_type = self.output_type.upper() if isinstance(self.output_type, str) else self.output_type
        put("output_type", _choice("output_type", output_type, OUTPUT_TYPES))
        if self.insert_op_conf is not None:
            conf = Path(self.insert_op_conf).resolve()
            if not conf.is_file():
                raise InputError(f"insert_op_conf {conf} not found: pass the AIPP config file atc should read")
            put("insert_op_conf", conf)
        put("ais_bench_python", self.ais_bench_python or sys.executable)
        for name in ("compile_timeout", "infer_timeout", "perf_timeout", "idle_aicore_max"):
            _seconds_or_none(name, getattr(self, name))
        if self.idle_memory_max_mb is not None and (
            not _is_int(self.idle_memory_max_mb) or self.idle_memory_max_mb < 0
        ):
            raise InputError(f"idle_memory_max_mb={self.idle_memory_max_mb!r} must be a non-negative integer or None")
        for name in ("idle_wait_s", "idle_poll_s"):
            if getattr(self, name) is None:
                raise InputError(f"{name}=None: give a number of seconds (0 allowed)")
            _seconds_or_none(name, getattr(self, name))

    @property
    def dynamic_sizes(self) -> list[int]:
        return [int(s) for s in str(self.dynamic_batch_size).split(",")] if self.dynamic_batch_size else []


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _seconds_or_none(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InputError(f"{name}={value!r} must be a non-negative number or None")


def _choice(key: str, value: str | None, allowed: Sequence[str]) -> str | None:
    if value is None:
        return None
    if value not in allowed:
        raise InputError(f"{key}={value!r} is not allowed: choose one of {', '.join(allowed)}")
    return value


def _dynamic_batch(value: str | Sequence[int] | None) -> str | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        sizes = [int(str(v).strip()) for v in items]
    except ValueError:
        raise InputError(f"dynamic_batch_size={value!r} must be comma-separated integers, e.g. '1,2,4,8'") from None
    if not sizes or any(s < 1 for s in sizes) or len(set(sizes)) != len(sizes):
        raise InputError(f"dynamic_batch_size={value!r} must be distinct integers >= 1, e.g. '1,2,4,8'")
    return ",".join(str(s) for s in sizes)
