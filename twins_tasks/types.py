"""The typed results and records steps hand each other (XComs in the DAG, plain values in ``twins run``).

The bottom of the import graph with ``constants`` and ``errors``: backends return these, steps and the
orchestration pass them on, and nothing here imports a step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict

import numpy as np


@dataclass
class CompileResult:
    artifact: str  # path of the compiled model file
    batch_size: int
    compile_seconds: float
    backend: str
    command: list[str] | None = None  # the tool's argv, where a tool ran (atc)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class InferResult:
    output_dir: str  # <output>/<output_dirname>: one file per input
    num_inputs: int
    num_outputs: int
    batch_size: int
    seconds: float
    throughput: float  # images/s end to end, including file I/O
    summary: dict[str, Any] = field(default_factory=dict)  # ais_bench summary JSON, where there is one

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The rules around ais_bench's summary (its logger format: ``[%(levelname)s] %(message)s``).
SUMMARY_RULE = "-----------------Performance Summary------------------"
END_RULE = "------------------------------------------------------"


@dataclass
class PerfResult:
    """One batch size's performance, the same record for every backend."""

    batch_size: int
    loop: int
    min_ms: float
    max_ms: float
    mean_ms: float
    median_ms: float
    p99_ms: float
    throughput: float  # images/s = 1000 * batch_size / mean_ms
    backend: str = ""
    device: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. H2D/D2H latency stats from ais_bench

    @classmethod
    def from_latencies(cls, latencies_ms: list[float] | np.ndarray, batch_size: int, **kw: Any) -> PerfResult:
        lat = np.asarray(latencies_ms, dtype=np.float64)
        if lat.size == 0:
            raise ValueError("no latency samples")
        mean = float(lat.mean())
        return cls(
            batch_size=batch_size,
            loop=int(lat.size),
            min_ms=float(lat.min()),
            max_ms=float(lat.max()),
            mean_ms=mean,
            median_ms=float(np.median(lat)),
            p99_ms=float(np.percentile(lat, 99)),
            throughput=1000.0 * batch_size / mean,
            **kw,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_lines(self) -> list[str]:
        """The lines ais_bench prints (logger format ``[%(levelname)s] %(message)s``).

        Verbatim for Ascend; another backend's timings are not an NPU's, so they are labelled ``compute_time``.
        """
        timing = "NPU_compute_time" if self.backend in ("", "ascend") else "compute_time"
        return [
            f"[INFO] {SUMMARY_RULE}",
            f"[INFO] {timing} (ms): min = {self.min_ms}, max = {self.max_ms}, mean = {self.mean_ms}, "
            f"median = {self.median_ms}, percentile(99%) = {self.p99_ms}",
            f"[INFO] throughput 1000*batchsize({self.batch_size})/{timing}.mean({self.mean_ms}): {self.throughput}",
            f"[INFO] {END_RULE}",
        ]


@dataclass
class Thresholds:
    max_top1_drop: float = 0.5  # percentage points
    max_throughput_drop_pct: float = 10.0  # percent of the previous throughput

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Thresholds:
        data = data or {}
        return cls(
            max_top1_drop=float(data.get("max_top1_drop", cls.max_top1_drop)),
            max_throughput_drop_pct=float(data.get("max_throughput_drop_pct", cls.max_throughput_drop_pct)),
        )


class PlanRecord(TypedDict):
    """What the plan step resolved on the host that does the work."""

    backend: str  # resolved: "ascend" or "onnxruntime", never "auto"
    backend_options: dict[str, Any]  # the backend's constructor arguments
    backend_description: dict[str, Any]  # describe_backend(): device, SoC, versions
    batch_sizes: list[int]
    cache_dir: str
    run_dir: str
    result_dir: str
    failure_dir: str  # bs<N>_<step>.json: why a batch size's chain step failed
    device_ids: list[int]  # the chips the batch sizes lease from ([] for a backend without chips)
    config: dict[str, Any]  # RecipeConfig.to_dict(): the run's settings, built from the Params once, at plan


class RecordedRun(TypedDict):
    """What the record step wrote: the run's key, its configuration's key and the database (no password)."""

    run_key: str
    config_key: str
    results_db: str
