"""The pure-performance step: latency statistics, ais_bench's "Performance Summary", the perf table."""

from __future__ import annotations

import logging
import re

from .errors import ToolError
from .types import PerfResult

log = logging.getLogger(__name__)

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|nan|inf)"
_STATS = re.compile(
    r"(?P<name>NPU_compute_time|compute_time|H2D_latency|D2H_latency) \(ms\): min = "
    + _NUM
    + r", max = "
    + _NUM
    + r", mean = "
    + _NUM
    + r", median = "
    + _NUM
    + r", percentile\(99%\) = "
    + _NUM
)
# Older ais_bench: "1000*batchsize(64)/"; newer: "1000*batchsize.mean(64)/". "compute_time" is the label
# PerfResult.summary_lines gives a backend that is not an NPU's.
_THROUGHPUT = re.compile(
    r"throughput 1000\*batchsize(?:\.mean)?\(" + _NUM + r"\)/(?:NPU_)?compute_time\.mean\(" + _NUM + r"\): " + _NUM
)


def parse_summary(text: str, *, loop: int = 0, backend: str = "", device: str = "") -> PerfResult:
    """Parse an ais_bench "Performance Summary" from its printed output (both throughput formats)."""
    stats: dict[str, tuple[float, ...]] = {}
    for match in _STATS.finditer(text):
        name = "NPU_compute_time" if match["name"] == "compute_time" else match["name"]
        stats[name] = tuple(float(v) for v in match.groups()[1:])
    throughput = _THROUGHPUT.search(text)
    if "NPU_compute_time" not in stats or throughput is None:
        raise ToolError(
            "ais_bench printed no Performance Summary (no 'NPU_compute_time (ms)' and "
            "'throughput' lines): check the tool output above; is this ais_bench?"
        )
    mn, mx, mean, median, p99 = stats["NPU_compute_time"]
    batch = float(throughput.group(1))
    extra = {
        name.split("_")[0] + "_ms": dict(zip(("min", "max", "mean", "median", "p99"), values, strict=False))
        for name, values in stats.items()
        if name != "NPU_compute_time"
    }
    return PerfResult(
        batch_size=int(batch),
        loop=loop,
        min_ms=mn,
        max_ms=mx,
        mean_ms=mean,
        median_ms=median,
        p99_ms=p99,
        throughput=float(throughput.group(3)),
        backend=backend,
        device=device,
        extra=extra,
    )
