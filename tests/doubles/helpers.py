"""Helpers for tests that drive the Ascend toolchain doubles."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np

DOUBLES = Path(__file__).resolve().parent
SET_ENV = DOUBLES / "set_env.sh"
BIN_BYTES = 3 * 224 * 224 * 4

# Every FAKE_* knob the doubles read: tests clear them so that a developer's shell cannot leak in.
FAKE_VARS = (
    "FAKE_ATC_FAIL",
    "FAKE_ATC_SUFFIX",
    "FAKE_ATC_SLEEP",
    "FAKE_NPU_COUNT",
    "FAKE_NPU_NAME",
    "FAKE_NPU_AICORE",
    "FAKE_NPU_MEMORY",
    "FAKE_NPU_AICORE_FILE",
    "FAKE_AIS_SUMMARY",
    "FAKE_AIS_FORMAT",
    "FAKE_AIS_CRASH",
    "FAKE_AIS_DROP",
    "FAKE_AIS_SLEEP",
    "FAKE_AIS_MS_PER_IMAGE",
    "FAKE_ATC_SECONDS",
    "FAKE_AIS_BATCH_SECONDS",
    "FAKE_AIS_LOOP_SECONDS",
    "FAKE_AIS_IMAGES_PER_S",
    "FAKE_AIS_IMAGES_PER_FILE",
    "FAKE_NPU_LOCK_DIR",
    "TWINS_FAKE_NPUS",
    "FAKE_NPU_IDS",
    "TWINS_FAKE_DELAYS",
    "TWINS_FAKE_TIME_SCALE",
    "TWINS_DOUBLES_LOG",
)


def fake_host(monkeypatch: Any, folder: Path, chips: int) -> None:
    """A fake NPU host of ``chips`` chips for this test: no FAKE_* knob of the developer's shell, and a lease
    folder, chip locks (two users of one chip fail loudly) and a doubles' call log of its own under ``folder``."""
    for var in FAKE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TWINS_LEASE_DIR", str(folder / "leases"))
    monkeypatch.setenv("FAKE_NPU_LOCK_DIR", str(folder / "npu-locks"))
    monkeypatch.setenv("TWINS_DOUBLES_LOG", str(folder / "calls.jsonl"))
    monkeypatch.setenv("TWINS_FAKE_NPUS", str(chips))


def make_inputs(folder: str | os.PathLike, count: int, *, seed: int = 0, prefix: str = "ILSVRC2012_val_") -> list[Path]:
    """``count`` random float32 CHW .bin files (602,112 bytes each), named like the recipe's; random data."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"{prefix}{i + 1:08d}.bin"
        rng.standard_normal(BIN_BYTES // 4, dtype=np.float32).tofile(path)
        paths.append(path)
    return paths


def make_model(path: str | os.PathLike) -> Path:
    """A placeholder 'ONNX' file: the atc double only needs --model to exist (it never parses it)."""
    path = Path(path)
    path.write_bytes(b"not a real ONNX model: placeholder for the atc test double\n")
    return path


def read_log(path: str | os.PathLike, tool: str | None = None) -> list[dict]:
    """The calls the doubles recorded (TWINS_DOUBLES_LOG), optionally only those of one tool.

    The doubles' events (tool ``events``: chip locks held, released, clashing; batches) are not calls:
    they are listed only when asked for by name.
    """
    path = Path(path)
    if not path.exists():
        return []
    calls = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [c for c in calls if c["tool"] == tool or (tool is None and c["tool"] != "events")]


def die_on(item: int, fatal: int = 3) -> int:
    """A pool task that kills its own worker (SIGKILL, as the kernel's out-of-memory killer does) on ``fatal``."""
    if item == fatal:
        os.kill(os.getpid(), signal.SIGKILL)
    return item
