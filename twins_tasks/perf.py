"""The pure-performance step: latency statistics, ais_bench's "Performance Summary", the perf table."""

from __future__ import annotations

import argparse
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ToolError
from .files import check_output_file, write_json_atomic
from .inference import batch_size_arg

log = logging.getLogger(__name__)

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
        """The lines ais_bench prints (logger format ``[%(levelname)s] %(message)s``)."""
        return [
            f"[INFO] {SUMMARY_RULE}",
            f"[INFO] NPU_compute_time (ms): min = {self.min_ms}, max = {self.max_ms}, mean = {self.mean_ms}, "
            f"median = {self.median_ms}, percentile(99%) = {self.p99_ms}",
            f"[INFO] throughput 1000*batchsize({self.batch_size})/NPU_compute_time.mean({self.mean_ms}): "
            f"{self.throughput}",
            f"[INFO] {END_RULE}",
        ]


_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|nan|inf)"
_STATS = re.compile(
    r"(?P<name>NPU_compute_time|H2D_latency|D2H_latency) \(ms\): min = "
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
# Older ais_bench: "1000*batchsize(64)/"; newer: "1000*batchsize.mean(64)/".
_THROUGHPUT = re.compile(
    r"throughput 1000\*batchsize(?:\.mean)?\(" + _NUM + r"\)/NPU_compute_time\.mean\(" + _NUM + r"\): " + _NUM
)


def parse_summary(text: str, *, loop: int = 0, backend: str = "", device: str = "") -> PerfResult:
    """Parse an ais_bench "Performance Summary" from its printed output (both throughput formats)."""
    stats: dict[str, tuple[float, ...]] = {}
    for match in _STATS.finditer(text):
        stats[match["name"]] = tuple(float(v) for v in match.groups()[1:])
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


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "perf",
        help="pure-performance loop on a compiled artifact (ais_bench --loop)",
        description="Run the compiled model LOOP times on random input and print ais_bench's Performance Summary.",
    )
    from .backends import add_backend_arguments

    add_backend_arguments(p)
    p.add_argument("--model", "-m", required=True, help="compiled artifact (from `twins compile`)")
    p.add_argument("--batchsize", type=batch_size_arg, required=True, help="batch size (1-256)")
    p.add_argument("--loop", "-l", type=int, default=20)
    p.add_argument("--warmup_count", type=int, default=1)
    p.add_argument("--json", dest="json_path", help="write the numbers as JSON here")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from .backends import backend_from_args

    check_output_file(args.json_path, "--json")
    backend = backend_from_args(args)
    result = backend.perf(Path(args.model), args.batchsize, loop=args.loop, warmup=args.warmup_count)
    for line in result.summary_lines():
        print(line, flush=True)
    if args.json_path:
        write_json_atomic(args.json_path, result.to_dict())
    else:
        print(json.dumps(result.to_dict()))
    return 0
