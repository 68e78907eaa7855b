"""The Ascend backend: the recipe's ``atc`` and ``python -m ais_bench`` commands, run as argv lists.

Every command is the reference recipe's, flag for flag (shared/toolchain-contract.md), so a result here
can be compared with a hand-run recipe. The CANN environment (``set_env.sh``) is loaded once per backend
instance and handed to every tool; user values only ever reach a tool as single literal arguments.

Device ids: ``device`` is the *logical* device id that ``ais_bench --device`` and ACL take. In
``npu-smi info`` that is the ``Device`` column of each chip row (the row under the ``NPU Name`` row); on
tables without a ``Device`` column (Atlas 800 / 910 series print only ``Chip``) it is the NPU id, which is
what ACL numbers single-chip cards by. See :func:`parse_npu_smi`.
"""

from __future__ import annotations

import functools
import glob
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..errors import InputError, MissingOutputError, ToolError
from ..files import sha256_file
from ..layout import OUTPUT_FORMATS, list_inputs, output_path
from ..perf import PerfResult, parse_summary
from ..toolrun import ToolResult, ToolRunner, run_tool
from . import DEFAULT_CANN_ENV
from .base import Backend, CompileResult, InferResult

log = logging.getLogger(__name__)

PRECISION_MODES = ("force_fp16", "allow_mix_precision", "allow_fp32_to_fp16", "must_keep_origin_dtype", "force_fp32")
OP_SELECT_IMPLMODES = ("high_precision", "high_performance")
OUTPUT_TYPES = ("FP32", "FP16", "UINT8", "INT8")
# Ascend310, Ascend310P3, Ascend910B3, Ascend910_9391 ...: a word, never a path or an option.
_SOC = re.compile(r"Ascend[0-9A-Za-z_]+")
# A result-folder or artifact name: one path component, not an option, no shell or path syntax.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*")
# atc/ACL error codes: E10001 (input), EZ3003 (unsupported operator), EE1001, E19999 ...
_ERROR_CODE = re.compile(r"\bE[A-Z0-9]\d{4}\b")
_HEALTH = re.compile(r"[A-Za-z][A-Za-z ]*")
# ais_bench result files: <stem>_<output index>.<fmt>
_RESULT_FILE = re.compile(r"^.+_\d+\.(txt|npy|bin)$", re.IGNORECASE)
TAIL_LINES = 20
_NPU_SMI_PLACES = ("/usr/local/sbin/npu-smi", "/usr/local/bin/npu-smi")


# ----------------------------------------------------------------------------------------------------------
# Pure functions: the commands, and the npu-smi table. Tests compare these with the recipe's own text.
# ----------------------------------------------------------------------------------------------------------


def atc_command(
    model: str | os.PathLike,
    output: str | os.PathLike,
    batch_size: int,
    soc_version: str,
    *,
    atc: str = "atc",
    precision_mode: str | None = None,
    op_select_implmode: str | None = None,
    dynamic_batch_size: str | None = None,
    insert_op_conf: str | os.PathLike | None = None,
    output_type: str | None = None,
) -> list[str]:
    """The recipe's atc command as argv; ``output`` is the artifact path without ``.om`` (atc appends it).

    With ``dynamic_batch_size`` ("1,2,4,8") the batch dimension of ``--input_shape`` is -1, as atc requires.
    """
    batch = "-1" if dynamic_batch_size else str(batch_size)
    argv = [
        atc,
        "--framework=5",
        f"--model={model}",
        f"--output={output}",
        "--input_format=NCHW",
        f"--input_shape=input:{batch},3,224,224",
        "--log=error",
        f"--soc_version={soc_version}",
    ]
    if precision_mode:
        argv.append(f"--precision_mode={precision_mode}")
    if op_select_implmode:
        argv.append(f"--op_select_implmode={op_select_implmode}")
    if dynamic_batch_size:
        argv.append(f"--dynamic_batch_size={dynamic_batch_size}")
    if insert_op_conf:
        argv.append(f"--insert_op_conf={insert_op_conf}")
    if output_type:
        argv.append(f"--output_type={output_type}")
    return argv


def ais_bench_infer_command(
    artifact: str | os.PathLike,
    inputs: str | os.PathLike,
    batch_size: int,
    output: str | os.PathLike,
    output_dirname: str,
    outfmt: str = "TXT",
    *,
    device: int = 0,
    python: str = "python",
    dym_batch: int | None = None,
) -> list[str]:
    """The recipe's inference command as argv, with ``--device`` appended (the recipe relies on device 0)."""
    argv = [
        python,
        "-m",
        "ais_bench",
        "--model",
        str(artifact),
        "--input",
        str(inputs),
        "--batchsize",
        str(batch_size),
        "--output",
        str(output),
        "--output_dirname",
        output_dirname,
        "--outfmt",
        outfmt,
        "--device",
        str(device),
    ]
    if dym_batch is not None:
        argv += ["--dymBatch", str(dym_batch)]
    return argv


def ais_bench_perf_command(
    artifact: str | os.PathLike,
    batch_size: int,
    *,
    loop: int = 20,
    warmup: int = 1,
    device: int = 0,
    python: str = "python",
    dym_batch: int | None = None,
) -> list[str]:
    """The recipe's pure-performance command as argv, with ``--device`` appended.

    ``--warmup_count`` is added only when it differs from ais_bench's default (1), so the default
    command stays the recipe's.
    """
    argv = [
        python,
        "-m",
        "ais_bench",
        "--model",
        str(artifact),
        "--loop",
        str(loop),
        "--batchsize",
        str(batch_size),
        "--device",
        str(device),
    ]
    if warmup != 1:
        argv += ["--warmup_count", str(warmup)]
    if dym_batch is not None:
        argv += ["--dymBatch", str(dym_batch)]
    return argv


@dataclass
class NpuDevice:
    """One chip as ``npu-smi info`` shows it (an NPU row followed by its chip row)."""

    npu_id: int
    chip_id: int
    device_id: int  # logical id for ACL / ais_bench --device (Device column; NPU id where there is none)
    chip_name: str  # e.g. 310P3; soc_version = "Ascend" + chip_name
    health: str
    bus_id: str
    aicore_percent: float | None  # None where npu-smi prints NA
    memory_used_mb: int | None
    memory_total_mb: int | None
    hbm_used_mb: int | None = None  # 910-series tables add HBM-Usage(MB); Memory-Usage is then 0 / 0
    hbm_total_mb: int | None = None
    power_w: float | None = None
    temp_c: float | None = None

    @property
    def soc_version(self) -> str:
        return f"Ascend{self.chip_name}"

    @property
    def used_mb(self) -> int | None:
        """Device memory in use: HBM where the card reports it, else Memory-Usage."""
        if self.hbm_total_mb:
            return self.hbm_used_mb
        return self.memory_used_mb

    def status(self) -> str:
        aicore = "NA" if self.aicore_percent is None else f"{self.aicore_percent:g}%"
        memory = "NA" if self.used_mb is None else f"{self.used_mb} MB"
        total = self.hbm_total_mb or self.memory_total_mb
        if total:
            memory += f" / {total} MB"
        return (
            f"device {self.device_id} (NPU {self.npu_id} chip {self.chip_id}, {self.soc_version}, "
            f"health {self.health}): AICore {aicore}, memory {memory}"
        )


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # "NA", "-"


def _int(text: str) -> int | None:
    value = _number(text)
    return None if value is None else int(value)


def _usage_pairs(text: str) -> list[tuple[int | None, int | None]]:
    return [(_int(a), _int(b)) for a, b in re.findall(r"(\S+)\s*/\s*(\S+)", text)]


def parse_npu_smi(text: str) -> list[NpuDevice]:
    """Parse the device table of ``npu-smi info`` (one or many NPUs; one or several chips per NPU).

    Rows are ``| a | b | c |``. An NPU row is ``| <npu id> <name> | <health> | <power> <temp> <hugepages> |``;
    each chip row under it is ``| <chip> [<device>] | <bus id> | <aicore%> <used> / <total> [<hbm> / <total>] |``.
    The process table that follows (4 columns) and the version banner (1 column) are ignored.
    """
    devices: list[NpuDevice] = []
    has_device_column = False
    current: tuple[int, str, str, float | None, float | None] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|") or not line.endswith("|"):
            current = None if line.startswith("+=") else current
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 3:
            if len(cells) > 3 and "Process" in line:
                break  # process table: no more devices
            continue
        first = cells[0].split()
        if first[:2] == ["NPU", "Name"]:
            continue
        if first and first[0] == "Chip":
            has_device_column = "Device" in first
            continue
        if not first or not first[0].isdigit():
            continue
        # NPU rows carry a health word (OK, Warning, Alarm, Critical) where chip rows carry a bus id.
        if len(first) >= 2 and _HEALTH.fullmatch(cells[1]):
            stats = cells[2].split()
            current = (
                int(first[0]),
                first[1],
                cells[1],
                _number(stats[0]) if stats else None,
                _number(stats[1]) if len(stats) > 1 else None,
            )
        elif current is not None:
            npu_id, name, health, power, temp = current
            chip_id = int(first[0])
            if has_device_column and len(first) > 1 and first[1].isdigit():
                device_id = int(first[1])
            else:
                device_id = npu_id  # no Device column (910 series): ACL numbers single-chip cards by NPU id
            stats = cells[2].split()
            aicore = _number(stats[0]) if stats else None
            pairs = _usage_pairs(cells[2])
            mem = pairs[0] if pairs else (None, None)
            hbm = pairs[1] if len(pairs) > 1 else (None, None)
            devices.append(
                NpuDevice(
                    npu_id=npu_id,
                    chip_id=chip_id,
                    device_id=device_id,
                    chip_name=name,
                    health=health,
                    bus_id=cells[1],
                    aicore_percent=aicore,
                    memory_used_mb=mem[0],
                    memory_total_mb=mem[1],
                    hbm_used_mb=hbm[0],
                    hbm_total_mb=hbm[1],
                    power_w=power,
                    temp_c=temp,
                )
            )
    return devices


def find_device(devices: Sequence[NpuDevice], device: int) -> NpuDevice:
    """The chip with logical id ``device``; a clear error listing what npu-smi does show."""
    for dev in devices:
        if dev.device_id == device:
            return dev
    if not devices:
        raise ToolError(
            "npu-smi info showed no NPU device: is the Ascend driver loaded (see `npu-smi info` "
            "and dmesg), and, in a container, are /dev/davinci* passed through?"
        )
    shown = ", ".join(f"{d.device_id} ({d.soc_version})" for d in devices)
    raise InputError(f"NPU device {device} is not in `npu-smi info` (devices: {shown}): set device to one of them")


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


def _error_codes(lines: Sequence[str]) -> list[str]:
    seen: dict[str, None] = {}
    for line in lines:
        for code in _ERROR_CODE.findall(line):
            seen.setdefault(code, None)
    return list(seen)


def _check_choice(key: str, value: str | None, allowed: Sequence[str]) -> str | None:
    if value is None or value == "":
        return None
    if value not in allowed:
        raise InputError(f"{key}={value!r} is not allowed: choose one of {', '.join(allowed)}")
    return value


def _check_plain_name(key: str, value: str) -> str:
    if not isinstance(value, str) or not _PLAIN_NAME.fullmatch(value) or value in (".", ".."):
        raise InputError(
            f"{key}={value!r} must be a plain name (letters, digits, '_', '.', '-', '+', '='; "
            "no path separator, space or shell syntax; not starting with '-' or '.')"
        )
    return value


def _optional(kind: type, value: Any) -> Any:
    return None if value is None or value == "" else kind(value)


def _normalise_dynamic_batch(value: str | Sequence[int] | None) -> str | None:
    if value is None or value == "" or value == []:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        sizes = [int(str(v).strip()) for v in items]
    except ValueError:
        raise InputError(f"dynamic_batch_size={value!r} must be comma-separated integers, e.g. '1,2,4,8'") from None
    if not sizes or any(s < 1 for s in sizes) or len(set(sizes)) != len(sizes):
        raise InputError(f"dynamic_batch_size={value!r} must be distinct integers >= 1, e.g. '1,2,4,8'")
    return ",".join(str(s) for s in sizes)


# ----------------------------------------------------------------------------------------------------------
# The backend
# ----------------------------------------------------------------------------------------------------------


class AscendBackend(Backend):
    """``atc`` compiles, ``python -m ais_bench`` infers and measures, ``npu-smi`` names the chip.

    :param runner: runs a tool (argv, env, cwd, timeout, title) and returns a ToolResult; the Airflow hook
        passes itself so that output streams into the task log and ``on_kill`` can stop the tool.
    :param cann_env: CANN ``set_env.sh`` (default ``$TWINS_CANN_ENV`` or the toolkit's standard path).
    :param device: logical NPU device id (``ais_bench --device``).
    :param soc_version: ``auto`` = ``Ascend`` + the chip name of ``device`` in ``npu-smi info``.
    :param ais_bench_python: the interpreter that has ais_bench installed (default: this one).
    :param idle_aicore_max: the device must be at most this busy (AICore %) before a perf run; None skips
        the idle check (a warning says the numbers may not be comparable).
    :param idle_memory_max_mb: and use at most this much device memory (None: not checked).
    :param idle_wait_s: how long to wait for an idle device before failing; polled every ``idle_poll_s``.
    """

    name: ClassVar[str] = "ascend"
    artifact_suffix: ClassVar[str] = ".om"

    def __init__(
        self,
        *,
        runner: ToolRunner | None = None,
        cann_env: str | os.PathLike | None = None,
        device: int = 0,
        soc_version: str = "auto",
        precision_mode: str | None = None,
        op_select_implmode: str | None = None,
        dynamic_batch_size: str | Sequence[int] | None = None,
        insert_op_conf: str | os.PathLike | None = None,
        output_type: str | None = None,
        ais_bench_python: str | None = None,
        atc_path: str = "atc",
        npu_smi_path: str = "npu-smi",
        compile_timeout: float | None = 3600.0,
        infer_timeout: float | None = 6 * 3600.0,
        perf_timeout: float | None = 1800.0,
        idle_aicore_max: float | None = 5.0,
        idle_memory_max_mb: int | None = None,
        idle_wait_s: float = 300.0,
        idle_poll_s: float = 5.0,
    ) -> None:
        self.runner: ToolRunner = runner or run_tool
        self.cann_env = str(cann_env or os.environ.get("TWINS_CANN_ENV") or DEFAULT_CANN_ENV)
        try:  # templated Airflow values arrive as strings
            self.device = int(device)
            if isinstance(device, bool) or self.device < 0 or str(device).strip() != str(self.device):
                raise ValueError
        except (TypeError, ValueError):
            raise InputError(f"device={device!r} must be a non-negative integer (logical NPU device id)") from None
        if soc_version != "auto" and not _SOC.fullmatch(str(soc_version)):
            raise InputError(
                f"soc_version={soc_version!r} must be 'auto' or an Ascend SoC name such as "
                "Ascend310P3 (see `npu-smi info`: 'Ascend' + the Name column)"
            )
        self.soc_version = soc_version
        self.precision_mode = _check_choice("precision_mode", precision_mode, PRECISION_MODES)
        self.op_select_implmode = _check_choice("op_select_implmode", op_select_implmode, OP_SELECT_IMPLMODES)
        self.dynamic_batch_size = _normalise_dynamic_batch(dynamic_batch_size)
        self.output_type = _check_choice("output_type", output_type.upper() if output_type else None, OUTPUT_TYPES)
        self.insert_op_conf: Path | None = None
        if insert_op_conf:
            conf = Path(insert_op_conf).resolve()
            if not conf.is_file():
                raise InputError(f"insert_op_conf {conf} not found: pass the AIPP config file atc should read")
            self.insert_op_conf = conf
        self.ais_bench_python = ais_bench_python or sys.executable
        self.atc_path = atc_path
        self.npu_smi_path = npu_smi_path
        # float()/int(): values rendered from Airflow templates arrive as strings.
        self.compile_timeout = _optional(float, compile_timeout)
        self.infer_timeout = _optional(float, infer_timeout)
        self.perf_timeout = _optional(float, perf_timeout)
        self.idle_aicore_max = _optional(float, idle_aicore_max)
        self.idle_memory_max_mb = _optional(int, idle_memory_max_mb)
        self.idle_wait_s = float(idle_wait_s)
        self.idle_poll_s = float(idle_poll_s)

    # -- environment and device ----------------------------------------------------------------------------

    @functools.cached_property
    def env(self) -> dict[str, str]:
        """The CANN environment (sourced once), plus unbuffered Python so ais_bench's lines stream live."""
        env = load_cann_env(self.cann_env)
        env["PYTHONUNBUFFERED"] = "1"
        log.info(
            "Loaded CANN environment from %s (toolkit %s)", self.cann_env, env.get("ASCEND_TOOLKIT_HOME", "unknown")
        )
        return env

    def _require_tool(self, tool: str, what: str) -> str:
        """Full path of ``tool`` on the CANN environment's PATH, or an error saying what to install."""
        if os.sep in tool:
            found = tool if os.path.isfile(tool) and os.access(tool, os.X_OK) else None
        else:
            found = shutil.which(tool, path=self.env.get("PATH", ""))
        if not found:
            raise InputError(f"{tool} not found on PATH after sourcing {self.cann_env}: {what}")
        return found

    def _npu_smi(self) -> str:
        what = (
            "install the Ascend NPU driver (it provides npu-smi, usually /usr/local/sbin/npu-smi), or, to "
            "compile without an NPU, set soc_version explicitly (e.g. Ascend310P3)"
        )
        try:
            return self._require_tool(self.npu_smi_path, what)
        except InputError:
            # The driver installs npu-smi in /usr/local/sbin, which some images leave off PATH.
            if self.npu_smi_path == "npu-smi":
                for candidate in _NPU_SMI_PLACES:
                    if os.access(candidate, os.X_OK):
                        return candidate
            raise

    def npu_devices(self) -> list[NpuDevice]:
        """Run ``npu-smi info`` (quietly: it is polled) and parse its table."""
        npu_smi = self._npu_smi()
        try:
            proc = subprocess.run([npu_smi, "info"], capture_output=True, env=self.env, timeout=60)
        except subprocess.TimeoutExpired as exc:
            raise ToolError("npu-smi info did not answer within 60 s: is the driver healthy?") from exc
        text = proc.stdout.decode("utf-8", "backslashreplace")
        if proc.returncode != 0:
            lines = (text + proc.stderr.decode("utf-8", "backslashreplace")).strip().splitlines()
            raise ToolError(
                f"npu-smi info failed (exit {proc.returncode}): " + " | ".join(lines[-TAIL_LINES:]),
                exit_code=proc.returncode,
                lines=lines,
            )
        devices = parse_npu_smi(text)
        if not devices:
            lines = text.strip().splitlines()
            raise ToolError(
                "found no NPU in the output of `npu-smi info` (is the driver loaded; in a container, "
                "are /dev/davinci* passed through?). If the table below lists devices, its layout is "
                "new to this parser: set soc_version explicitly and idle_aicore_max=None to run "
                "without reading it.\n" + "\n".join(lines[:TAIL_LINES]),
                lines=lines,
            )
        return devices

    def device_info(self) -> NpuDevice:
        return find_device(self.npu_devices(), self.device)

    @functools.cached_property
    def resolved_soc_version(self) -> str:
        if self.soc_version != "auto":
            return self.soc_version
        dev = self.device_info()
        log.info("soc_version auto: %s from npu-smi info (%s)", dev.soc_version, dev.status())
        return dev.soc_version

    def _is_idle(self, dev: NpuDevice) -> bool:
        if (
            self.idle_aicore_max is not None
            and dev.aicore_percent is not None
            and dev.aicore_percent > self.idle_aicore_max
        ):
            return False
        if self.idle_memory_max_mb is not None and dev.used_mb is not None and dev.used_mb > self.idle_memory_max_mb:
            return False
        return True

    def wait_until_idle(self, device: int | None = None) -> NpuDevice:
        """Poll ``npu-smi info`` until the device is idle; a ToolError after ``idle_wait_s``.

        Another job on the same chip would halve the measured throughput: the recipe asks for an idle
        device, and a number measured on a busy one is not comparable with the published table.
        """
        device = self.device if device is None else device
        deadline = time.monotonic() + self.idle_wait_s
        next_log = 0.0
        while True:
            dev = find_device(self.npu_devices(), device)
            if self._is_idle(dev):
                if dev.aicore_percent is None:
                    log.warning(
                        "npu-smi shows no AICore figure for %s: cannot confirm the device is idle", dev.status()
                    )
                else:
                    log.info("NPU idle: %s", dev.status())
                return dev
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                parts = [] if self.idle_aicore_max is None else [f"AICore <= {self.idle_aicore_max:g}%"]
                if self.idle_memory_max_mb is not None:
                    parts.append(f"memory <= {self.idle_memory_max_mb} MB")
                limits = " and ".join(parts)
                raise ToolError(
                    f"NPU {dev.status()} stayed busy for {self.idle_wait_s:g} s (limits: {limits}): "
                    "the recipe requires an idle device for honest performance numbers; stop the "
                    "other job (see the process table of `npu-smi info`), pick another device, or "
                    "raise idle_aicore_max / idle_wait_s"
                )
            if now >= next_log:
                log.info(
                    "Waiting for an idle NPU: %s; need AICore <= %s%%, memory <= %s MB; %.0f s left",
                    dev.status(),
                    self.idle_aicore_max,
                    self.idle_memory_max_mb,
                    left,
                )
                next_log = now + 30.0
            time.sleep(min(self.idle_poll_s, max(left, 0.0)))

    # -- running tools -------------------------------------------------------------------------------------

    def _run(self, argv: list[str], *, timeout: float | None, title: str, cwd: str | None = None) -> ToolResult:
        return self.runner(argv, env=self.env, cwd=cwd, timeout=timeout, title=title)

    @staticmethod
    def _tail(result: ToolResult, n: int = TAIL_LINES) -> str:
        return "\n".join(result.tail(n))

    def _ais_bench_failure(self, result: ToolResult, what: str, timeout: float | None) -> ToolError:
        tail = self._tail(result)
        if result.timed_out:
            reason = f"did not finish within {timeout:g} s and was stopped"
        elif result.exit_code == 2:
            reason = "rejected its arguments (exit 2, argument error)"
        elif result.exit_code == 1:
            reason = "crashed (exit 1, an uncaught exception)"
        elif result.exit_code < 0:
            reason = f"was stopped by signal {_signal_name(-result.exit_code)}"
        else:
            reason = f"failed (exit {result.exit_code})"
        hint = ""
        if "No module named ais_bench" in result.text:
            hint = (
                f" ais_bench is not installed for {self.ais_bench_python}: install the ais_bench and aclruntime "
                "wheels (Ascend tools, ais-bench_workload) into it, or set ais_bench_python to the "
                "interpreter that has them."
            )
        return ToolError(
            f"ais_bench {what} {reason}.{hint}\nLast lines:\n{tail}",
            exit_code=result.exit_code,
            lines=result.tail(TAIL_LINES),
        )

    # -- Backend interface ---------------------------------------------------------------------------------

    def atc_command(self, model: Path, output: str | os.PathLike, batch_size: int) -> list[str]:
        return atc_command(
            model,
            output,
            batch_size,
            self.resolved_soc_version,
            atc=self.atc_path,
            precision_mode=self.precision_mode,
            op_select_implmode=self.op_select_implmode,
            dynamic_batch_size=self.dynamic_batch_size,
            insert_op_conf=self.insert_op_conf,
            output_type=self.output_type,
        )

    def _dym_batch(self, batch_size: int) -> int | None:
        """With a dynamic-batch model ais_bench must be told which batch size to run (``--dymBatch``)."""
        if not self.dynamic_batch_size:
            return None
        sizes = [int(s) for s in self.dynamic_batch_size.split(",")]
        if batch_size not in sizes:
            raise InputError(f"batch size {batch_size} is not one of dynamic_batch_size={self.dynamic_batch_size}")
        return batch_size

    def compile(self, model: Path, batch_size: int, output_dir: Path, *, name: str | None = None) -> CompileResult:
        """``atc`` the ONNX model for ``batch_size``; the artifact is ``<output_dir>/<name>[_linux_<arch>].om``."""
        model = Path(model).resolve()
        if not model.is_file():
            raise InputError(f"ONNX model {model} not found: run `twins pth2onnx` first")
        batch_size = _check_batch_size(batch_size)
        self._dym_batch(batch_size)
        # A name given by the caller must be plain; the default comes from the model's own file name, which
        # is one path component already and reaches atc as part of one literal argument.
        name = _check_plain_name("name", name) if name is not None else f"{model.stem}_bs{batch_size}"
        output_dir = Path(output_dir).resolve()
        output_dir.mkdir(parents=True, exist_ok=True)
        prefix = output_dir / name
        for stale in _artifacts(prefix):  # a leftover would pass for this run's result
            log.info("Removing previous artifact %s before compiling", stale)
            stale.unlink()
        self._require_tool(
            self.atc_path,
            "install the CANN toolkit (Ascend-cann-toolkit_*.run provides atc) or fix cann_env / atc_path",
        )
        argv = self.atc_command(model, prefix, batch_size)
        # cwd = output_dir: atc drops fusion_result.json and kernel_meta/ into its working directory.
        result = self._run(argv, timeout=self.compile_timeout, title=f"atc: {name}", cwd=str(output_dir))
        found = _artifacts(prefix)
        if result.exit_code != 0 or len(found) != 1:
            codes = _error_codes(result.lines)
            if result.timed_out:
                reason = f"did not finish within {self.compile_timeout:g} s and was stopped"
            elif result.exit_code < 0:
                reason = f"was stopped by signal {_signal_name(-result.exit_code)}"
            elif result.exit_code != 0:
                reason = f"failed (exit {result.exit_code})"
            elif not found:
                reason = f"exited 0 but wrote no {prefix}*.om"
            else:
                reason = f"wrote {len(found)} artifacts ({', '.join(p.name for p in found)}), expected one"
            raise ToolError(
                f"atc {reason} compiling {model} for batch size {batch_size} ({self.resolved_soc_version}); "
                f"error codes: {', '.join(codes) or 'none printed'}. Details: atc's log under "
                f"$ASCEND_PROCESS_LOG_PATH or ~/ascend/log; look the codes up in the CANN error-code reference."
                f"\nLast lines:\n{self._tail(result)}",
                exit_code=result.exit_code,
                lines=result.tail(TAIL_LINES),
            )
        return CompileResult(
            artifact=str(found[0]),
            batch_size=batch_size,
            compile_seconds=result.seconds,
            backend=self.name,
            command=argv,
        )

    def infer(
        self,
        artifact: Path,
        inputs: str | Path,
        batch_size: int,
        output: Path,
        output_dirname: str,
        outfmt: str = "BIN",
    ) -> InferResult:
        """Run every input with ais_bench; check one output per input; read the summary JSON."""
        artifact = _existing_artifact(artifact)
        batch_size = _check_batch_size(batch_size)
        dym = self._dym_batch(batch_size)
        output_dirname = _check_plain_name("output_dirname", output_dirname)
        outfmt = str(outfmt).upper()
        if outfmt not in OUTPUT_FORMATS:
            raise InputError(f"outfmt={outfmt!r} is not allowed: choose one of {', '.join(OUTPUT_FORMATS)}")
        files = list_inputs(inputs)
        # Absolute paths: the runner may use another working directory, and no value can start with '-'.
        input_arg = (
            ",".join(str(Path(p).resolve()) for p in str(inputs).split(",") if p)
            if isinstance(inputs, (str, os.PathLike))
            else ",".join(str(p.resolve()) for p in files)
        )
        output = Path(output).resolve()
        out_dir = output / output_dirname
        _clear_previous_outputs(output, output_dirname)
        output.mkdir(parents=True, exist_ok=True)
        argv = ais_bench_infer_command(
            artifact,
            input_arg,
            batch_size,
            output,
            output_dirname,
            outfmt,
            device=self.device,
            python=self.ais_bench_python,
            dym_batch=dym,
        )
        result = self._run(argv, timeout=self.infer_timeout, title=f"ais_bench: {output_dirname}")
        if result.exit_code != 0 or result.timed_out:
            raise self._ais_bench_failure(result, f"inference on {artifact}", self.infer_timeout)
        missing = [p.stem for p in files if not output_path(out_dir, p.stem, 0, outfmt).is_file()]
        if missing:
            raise MissingOutputError(
                f"ais_bench exited 0 but {len(missing)} of {len(files)} outputs are missing in {out_dir} "
                f"(expected <stem>_0.{outfmt.lower()} per input; first missing: {', '.join(missing[:5])}): "
                "check the ais_bench lines above and the free disk space"
            )
        summary = _read_summary(output, output_dirname)
        seconds = result.seconds
        return InferResult(
            output_dir=str(out_dir),
            num_inputs=len(files),
            num_outputs=len(files),
            batch_size=batch_size,
            seconds=seconds,
            throughput=len(files) / seconds if seconds > 0 else 0.0,
            summary=summary,
        )

    def perf(self, artifact: Path, batch_size: int, *, loop: int = 20, warmup: int = 1) -> PerfResult:
        """Wait for an idle device, then ``ais_bench --loop``; parse its Performance Summary."""
        artifact = _existing_artifact(artifact)
        batch_size = _check_batch_size(batch_size)
        dym = self._dym_batch(batch_size)
        if isinstance(loop, bool) or not isinstance(loop, int) or loop < 1:
            raise InputError(f"loop={loop!r} must be an integer >= 1")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise InputError(f"warmup={warmup!r} must be an integer >= 0")
        if self.idle_aicore_max is None:
            log.warning(
                "Idle check skipped (idle_aicore_max=None): another job on NPU %d would lower these "
                "numbers, and nothing checked that there is none",
                self.device,
            )
            soc = self.soc_version if self.soc_version != "auto" else self.resolved_soc_version
        else:
            soc = self.wait_until_idle(self.device).soc_version
        argv = ais_bench_perf_command(
            artifact,
            batch_size,
            loop=loop,
            warmup=warmup,
            device=self.device,
            python=self.ais_bench_python,
            dym_batch=dym,
        )
        result = self._run(argv, timeout=self.perf_timeout, title=f"ais_bench perf: bs {batch_size}")
        if result.exit_code != 0 or result.timed_out:
            raise self._ais_bench_failure(result, f"performance run on {artifact}", self.perf_timeout)
        perf = parse_summary(result.text, loop=loop, backend=self.name, device=f"{soc}:{self.device}")
        if perf.batch_size != batch_size:
            raise ToolError(
                f"ais_bench reported batch size {perf.batch_size} in its throughput line, expected "
                f"{batch_size}: is {artifact} compiled for another batch size?"
            )
        return perf

    def options_key(self) -> dict[str, Any]:
        return {
            "soc_version": self.resolved_soc_version,
            "precision_mode": self.precision_mode,
            "op_select_implmode": self.op_select_implmode,
            "dynamic_batch_size": self.dynamic_batch_size,
            "insert_op_conf_sha256": sha256_file(self.insert_op_conf) if self.insert_op_conf else None,
            "output_type": self.output_type,
            # A CANN upgrade changes what atc produces: its version (or at least which toolkit) is in the key.
            "cann_version": self.cann_version(),
            "cann_env": self.cann_env,
        }

    def cann_version(self) -> str:
        """The toolkit version from its version files, else the resolved ASCEND_TOOLKIT_HOME dir name."""
        home = self.env.get("ASCEND_TOOLKIT_HOME") or self.env.get("ASCEND_HOME_PATH")
        if not home:
            return "unknown"
        return cann_version_from_home(home)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "backend": self.name,
            "device": self.device,
            "cann_env": self.cann_env,
            "cann_version": self.cann_version(),
            "ais_bench_python": self.ais_bench_python,
        }
        try:
            dev = self.device_info()
        except (ToolError, InputError) as exc:  # a compile-only host has no NPU: say so, don't fail the record
            info.update(chip=None, soc_version=self.soc_version, npu_smi_error=str(exc).splitlines()[0])
        else:
            info.update(
                chip=dev.chip_name,
                soc_version=self.resolved_soc_version,
                npu_id=dev.npu_id,
                chip_id=dev.chip_id,
                bus_id=dev.bus_id,
                health=dev.health,
            )
        return info


def cann_version_from_home(home: str | os.PathLike) -> str:
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


def _artifacts(prefix: Path) -> list[Path]:
    """``<prefix>.om`` or ``<prefix>_linux_<arch>.om``; not ``<prefix>6.om`` (bs1 vs bs16 in one folder)."""
    pattern = re.compile(re.escape(prefix.name) + r"(_linux_[A-Za-z0-9_]+)?\.om")
    return sorted(p for p in prefix.parent.glob(f"{glob.escape(prefix.name)}*.om") if pattern.fullmatch(p.name))


def _signal_name(number: int) -> str:
    try:
        return f"{number} ({signal.Signals(number).name})"
    except ValueError:
        return str(number)


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch size {batch_size!r} must be an integer >= 1")
    return batch_size


def _existing_artifact(artifact: str | os.PathLike) -> Path:
    path = Path(artifact).resolve()
    if not path.is_file():
        raise InputError(f"compiled model {path} not found: run the compile step first")
    if path.suffix != ".om":
        raise InputError(f"compiled model {path} is not an .om file (atc's output)")
    return path


def _clear_previous_outputs(output: Path, output_dirname: str) -> None:
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


def _read_summary(output: Path, output_dirname: str) -> dict[str, Any]:
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
