"""Compare a run with the last successful run of the same configuration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import ResultsStore


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


@dataclass
class RegressionOutcome:
    """``first`` (nothing to compare with: this run becomes the reference), ``passed`` or ``failed``."""

    status: str
    previous_run_key: str | None = None
    previous_recorded_at: Any = None
    regressions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        """What was compared and the verdict, one line per batch size and metric."""
        if self.status == "first":
            return "Regression check: first run of this configuration; it becomes the reference."
        lines = [f"Regression check against run {self.previous_run_key} (recorded {self.previous_recorded_at}):"]
        lines += [f"  ok  {line}" for line in self.notes]
        lines += [f"  REGRESSION  {line}" for line in self.regressions]
        lines.append(f"Regression check: {self.status}")
        return "\n".join(lines)


def check_regression(store: ResultsStore, run_key: str, config_key: str, thresholds: Thresholds) -> RegressionOutcome:
    """Compare a recorded run with the last good run of the same configuration; record the verdict."""
    current = store.get_run(run_key)
    if current is None:
        raise LookupError(f"no run {run_key!r} in {store.describe()}")
    previous = store.last_successful(config_key, exclude_run_key=run_key)
    if previous is None:
        outcome = RegressionOutcome("first")
    else:
        regressions, notes = compare(current["batches"], previous["batches"], thresholds)
        outcome = RegressionOutcome(
            "failed" if regressions else "passed",
            previous_run_key=previous["run_key"],
            previous_recorded_at=previous["recorded_at"],
            regressions=regressions,
            notes=notes,
        )
    store.update_run(run_key, regression_status=outcome.status)
    return outcome
