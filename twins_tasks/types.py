"""The typed results and records steps hand each other (XComs in the DAG, plain values in ``twins run``).

The bottom of the import graph with ``constants`` and ``errors``: backends return these, steps and the
orchestration pass them on, and nothing here imports a step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict

import numpy as np

from .errors import InputError


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
    """The regression check's limits (``twins run`` flags and DAG Params of the same names)."""

    max_top1_drop: float = 0.5  # percentage points below the reference's top-1
    # Percent below the reference (and beyond the measured noise). Below the 10% step the nightly must catch
    # within two nights: benchmarks/bench_alarm_history.py measures what each value catches and false-alarms.
    max_throughput_drop_pct: float = 5.0
    min_agreement_top1: float = 90.0  # percent of the reference images whose top-1 class matches PyTorch's
    max_agreement_abs_diff: float = 0.5  # largest |logit - PyTorch's logit| over those images
    # A throughput drop (confirmed by the run's re-measurement) fails only when an earlier run at least this many
    # hours before saw it too: a shared host's environment moves for minutes at a time. 0: the re-measurement decides.
    confirm_after_hours: float = 1.0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Thresholds:
        data = data or {}
        return cls(**{name: float(data.get(name, getattr(cls, name))) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class RetentionPolicy:
    """What the end of a run (and ``twins clean``) keeps in the work dir (:mod:`twins_tasks.retention`).

    The results database and every run's report are kept for ever; per-image outputs are bulky and needed only
    until they are scored. Field names are the DAG's Param names and, in ``--kebab-case``, the flags'.
    """

    keep_runs: int = 3  # per-image outputs of the newest recorded runs are kept
    keep_failed_days: float = 7.0  # ... and of failed, partial or regressed runs, this long, for diagnosis
    # A run folder or cache entry touched within this many hours may belong to a run still going: never removed.
    # Unrecorded run folders older than that are runs that died before `record`: removed whole.
    grace_hours: float = 24.0
    cache_budget_gib: float | None = 64.0  # caches (bins, ONNX, compiled, reference); None = no budget

    def __post_init__(self) -> None:
        if self.keep_runs < 0:
            raise InputError(f"keep_runs {self.keep_runs} must be 0 or more (--keep-runs, or the 'Keep runs' Param)")
        if not self.keep_failed_days >= 0:  # also refuses NaN
            raise InputError(
                f"keep_failed_days {self.keep_failed_days} must be 0 or more (--keep-failed-days, or the "
                "'Keep failed runs (days)' Param)"
            )
        if not 0 < self.grace_hours < float("inf"):
            raise InputError(
                f"grace_hours {self.grace_hours} must be above 0 and finite: longer than any run takes (--grace-hours, "
                "or the 'Grace (hours)' Param)"
            )
        if self.cache_budget_gib is not None and not 0 <= self.cache_budget_gib < float("inf"):
            raise InputError(
                f"cache_budget_gib {self.cache_budget_gib} must be 0 or more, or empty for no budget "
                "(--cache-budget-gib, or the 'Cache budget (GiB)' Param)"
            )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> RetentionPolicy:
        """From the DAG's Params, a plan's ``config["retention"]`` or any mapping with these keys (others ignored)."""
        data = data or {}
        budget = data.get("cache_budget_gib", cls.cache_budget_gib)
        return cls(
            keep_runs=int(data.get("keep_runs", cls.keep_runs)),
            keep_failed_days=float(data.get("keep_failed_days", cls.keep_failed_days)),
            grace_hours=float(data.get("grace_hours", cls.grace_hours)),
            cache_budget_gib=None if budget is None or budget == "" else float(budget),
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
    run_uid: str  # the run's identity: its retries share it, and only it may replace the run's recorded rows
    # RecipeConfig.accuracy_scope(): batch sizes that score the full dataset, those that check a sample, the limits
    accuracy_scope: dict[str, Any]


class RecordedRun(TypedDict):
    """What the record step wrote: the run's key, its configuration's key and the database (no password)."""

    run_key: str
    config_key: str
    results_db: str
