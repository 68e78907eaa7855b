"""Compare a run with the last successful run of the same configuration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


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


def compare(
    current: Sequence[Mapping[str, Any]], previous: Sequence[Mapping[str, Any]], thresholds: Thresholds
) -> tuple[list[str], list[str]]:
    """Return (regressions, notes): one line per batch size and metric, with old -> new values."""
    before = {int(b["batch_size"]): b for b in previous}
    regressions: list[str] = []
    notes: list[str] = []
    for cur in sorted(current, key=lambda b: b["batch_size"]):
        bs = int(cur["batch_size"])
        old = before.get(bs)
        if old is None:
            notes.append(f"bs{bs}: no previous result to compare with")
            continue
        if cur.get("top1") is not None and old.get("top1") is not None:
            drop = old["top1"] - cur["top1"]
            line = (
                f"bs{bs} top-1: {old['top1']:.2f}% -> {cur['top1']:.2f}% (drop {drop:+.2f} pp, "
                f"allowed {thresholds.max_top1_drop:.2f} pp)"
            )
            (regressions if drop > thresholds.max_top1_drop else notes).append(line)
        if cur.get("throughput") and old.get("throughput"):
            drop_pct = 100.0 * (old["throughput"] - cur["throughput"]) / old["throughput"]
            line = (
                f"bs{bs} throughput: {old['throughput']:.2f} -> {cur['throughput']:.2f} img/s "
                f"(drop {drop_pct:+.1f}%, allowed {thresholds.max_throughput_drop_pct:.1f}%)"
            )
            (regressions if drop_pct > thresholds.max_throughput_drop_pct else notes).append(line)
    return regressions, notes
