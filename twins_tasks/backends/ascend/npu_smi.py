"""``npu-smi info``: the chip table, and waiting for a chip to be idle.

Device ids: ``device`` is the *logical* device id that ``ais_bench --device`` and ACL take. In
``npu-smi info`` that is the ``Device`` column of each chip row (the row under the ``NPU Name`` row); on
tables without a ``Device`` column (Atlas 800 / 910 series print only ``Chip``) it is the NPU id, which is
what ACL numbers single-chip cards by. See :func:`parse_npu_smi`.

``npu-smi`` runs through the backend's tool runner like every other tool, so that the Airflow hook's
``on_kill`` can stop a task that is waiting for an idle chip.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ...errors import InputError, ToolError
from ...toolrun import ToolRunner
from .commands import TAIL_LINES, failure_reason

log = logging.getLogger(__name__)

_HEALTH = re.compile(r"[A-Za-z][A-Za-z ]*")
NPU_SMI_TIMEOUT_S = 60.0
# How often a wait says where it stands in the log.
PROGRESS_EVERY_S = 30.0


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


def read_npu_smi(npu_smi: str, *, runner: ToolRunner, env: Mapping[str, str] | None = None) -> list[NpuDevice]:
    """Run ``npu-smi info`` through ``runner`` and parse its table; an error that shows what it printed."""
    result = runner([npu_smi, "info"], env=env, timeout=NPU_SMI_TIMEOUT_S, title="npu-smi info")
    if result.exit_code != 0 or result.timed_out:
        reason = failure_reason(result, NPU_SMI_TIMEOUT_S)
        hint = ": is the driver healthy?" if result.timed_out else ""
        raise ToolError(
            f"npu-smi info {reason}{hint}: " + " | ".join(result.tail(TAIL_LINES)),
            exit_code=result.exit_code,
            lines=result.lines,
        )
    devices = parse_npu_smi(result.text)
    if not devices:
        lines = result.text.strip().splitlines()
        raise ToolError(
            "found no NPU in the output of `npu-smi info` (is the driver loaded; in a container, "
            "are /dev/davinci* passed through?). If the table below lists devices, its layout is "
            "new to this parser: set soc_version explicitly and idle_aicore_max=None to run "
            "without reading it.\n" + "\n".join(lines[:TAIL_LINES]),
            lines=lines,
        )
    return devices


@dataclass(frozen=True)
class IdlePolicy:
    """When a chip counts as idle: AICore at most ``aicore_max`` % and, if set, memory at most ``memory_max_mb``.

    Another job on the same chip would halve the measured throughput: the recipe asks for an idle device,
    and a number measured on a busy one is not comparable with the published table.
    """

    aicore_max: float | None = 5.0
    memory_max_mb: int | None = None

    def is_idle(self, dev: NpuDevice) -> bool:
        if self.aicore_max is not None and dev.aicore_percent is not None and dev.aicore_percent > self.aicore_max:
            return False
        if self.memory_max_mb is not None and dev.used_mb is not None and dev.used_mb > self.memory_max_mb:
            return False
        return True

    def limits(self) -> str:
        parts = [] if self.aicore_max is None else [f"AICore <= {self.aicore_max:g}%"]
        if self.memory_max_mb is not None:
            parts.append(f"memory <= {self.memory_max_mb} MB")
        return " and ".join(parts)


def wait_until_idle(
    read_devices: Callable[[], list[NpuDevice]],
    device: int,
    policy: IdlePolicy,
    *,
    wait_s: float,
    poll_s: float,
) -> NpuDevice:
    """Poll ``read_devices`` (``npu-smi info``) until ``device`` is idle; a ToolError after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    next_log = 0.0
    while True:
        dev = find_device(read_devices(), device)
        if policy.is_idle(dev):
            if dev.aicore_percent is None:
                log.warning("npu-smi shows no AICore figure for %s: cannot confirm the device is idle", dev.status())
            else:
                log.info("NPU idle: %s", dev.status())
            return dev
        now = time.monotonic()
        left = deadline - now
        if left <= 0:
            raise ToolError(
                f"NPU {dev.status()} stayed busy for {wait_s:g} s (limits: {policy.limits()}): "
                "the recipe requires an idle device for honest performance numbers; stop the "
                "other job (see the process table of `npu-smi info`), pick another device, or "
                "raise idle_aicore_max / idle_wait_s"
            )
        if now >= next_log:
            log.info(
                "Waiting for an idle NPU: %s; need AICore <= %s%%, memory <= %s MB; %.0f s left",
                dev.status(),
                policy.aicore_max,
                policy.memory_max_mb,
                left,
            )
            next_log = now + PROGRESS_EVERY_S
        time.sleep(min(poll_s, max(left, 0.0)))
