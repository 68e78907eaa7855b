"""The regression check: compare a run with the last successful run of the same configuration, re-measuring a
suspect batch size on the run's chips before calling it a regression."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .backends import get_backend
from .steps import perf_step
from .types import PlanRecord, RecordedRun, Thresholds

if TYPE_CHECKING:
    from .recipe import RecipeConfig
    from .store import ResultsStore

log = logging.getLogger(__name__)


def _spread(row: Mapping[str, Any]) -> tuple[float, float]:
    """(min, max) throughput over the row's perf rounds; one round (or an older row) spreads nothing."""
    tp = float(row["throughput"])
    return float(row.get("throughput_min") or tp), float(row.get("throughput_max") or tp)


def throughput_drop(old: Mapping[str, Any], new: Mapping[str, Any], thresholds: Thresholds) -> tuple[bool, str]:
    """Is ``new`` slower than ``old`` beyond the threshold AND beyond the noise both runs measured?

    Each run's throughput is the median of its perf rounds, with their min and max. A drop counts only when it
    exceeds the threshold and the two runs' ranges do not overlap (the new run's fastest round is slower than
    the old run's slowest): on a loaded host one round can be far off, a whole run's rounds rarely are.
    """
    bs = int(new["batch_size"])
    drop_pct = 100.0 * (old["throughput"] - new["throughput"]) / old["throughput"]
    old_min, old_max = _spread(old)
    new_min, new_max = _spread(new)
    beyond_noise = new_max < old_min
    if beyond_noise:
        verdict = ""
    elif new_min > old_max:
        verdict = ", faster beyond noise"
    else:
        verdict = ", ranges overlap: within noise"
    line = (
        f"bs{bs} throughput: {old['throughput']:.2f} -> {new['throughput']:.2f} img/s (drop {drop_pct:+.1f}%, "
        f"allowed {thresholds.max_throughput_drop_pct:.1f}%; rounds {old_min:.2f}-{old_max:.2f} -> "
        f"{new_min:.2f}-{new_max:.2f} img/s{verdict})"
    )
    return drop_pct > thresholds.max_throughput_drop_pct and beyond_noise, line


def compare(
    current: Sequence[Mapping[str, Any]], previous: Sequence[Mapping[str, Any]], thresholds: Thresholds
) -> tuple[list[str], list[str], list[int]]:
    """Return (regressions, notes, suspect batch sizes): one line per batch size and metric, old -> new values.

    Suspects are batch sizes whose throughput dropped beyond threshold and noise: the caller re-measures them.
    """
    before = {int(b["batch_size"]): b for b in previous if b.get("status", "ok") == "ok"}
    regressions: list[str] = []
    notes: list[str] = []
    suspects: list[int] = []
    for cur in sorted(current, key=lambda b: b["batch_size"]):
        bs = int(cur["batch_size"])
        if cur.get("status", "ok") != "ok":
            continue  # a failed batch size has no numbers; the run is incomplete (reported separately)
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
            dropped, line = throughput_drop(old, cur, thresholds)
            (regressions if dropped else notes).append(line)
            if dropped:
                suspects.append(bs)
    return regressions, notes, suspects


@dataclass
class RegressionOutcome:
    """``first`` (nothing to compare with: this run becomes the reference), ``passed`` or ``failed``.

    ``incomplete`` names the batch sizes of this run that have no result, and why: the run is then not
    ``ok`` even when nothing regressed.
    """

    status: str
    previous_run_key: str | None = None
    previous_recorded_at: Any = None
    regressions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    incomplete: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status != "failed" and not self.incomplete

    def text(self) -> str:
        """What was compared and the verdict, one line per batch size and metric."""
        if self.status == "first":
            lines = ["Regression check: first run of this configuration; it becomes the reference."]
        else:
            lines = [f"Regression check against run {self.previous_run_key} (recorded {self.previous_recorded_at}):"]
            lines += [f"  ok  {line}" for line in self.notes]
            lines += [f"  REGRESSION  {line}" for line in self.regressions]
            lines.append(f"Regression check: {self.status}")
        lines += [f"Incomplete: bs{bs} has no result: {error}" for bs, error in self.incomplete.items()]
        return "\n".join(lines)

    def details(self) -> dict[str, Any]:
        """For the results database: what was compared, and why the check passed or failed."""
        return {
            "status": self.status,
            "compared_with": self.previous_run_key,
            "regressions": self.regressions,
            "notes": self.notes,
            "incomplete": self.incomplete,
        }


def check_regression(
    store: ResultsStore,
    run_key: str,
    config_key: str,
    thresholds: Thresholds,
    *,
    remeasure: Callable[[int], Mapping[str, Any]] | None = None,
) -> RegressionOutcome:
    """Compare a recorded run with the last good run of the same configuration; record the verdict.

    A throughput drop beyond threshold and noise is confirmed before it fails the check: ``remeasure(bs)``
    measures the suspect batch size once more (the perf step's record); the drop stands only if the new
    measurement drops too. Without ``remeasure`` the first measurement decides.
    """
    current = store.get_run(run_key)
    if current is None:
        raise LookupError(f"no run {run_key!r} in {store.describe()}")
    incomplete = {
        str(b["batch_size"]): b.get("error") or "failed" for b in current["batches"] if b.get("status") == "failed"
    }
    previous = store.last_successful(config_key, exclude_run_key=run_key)
    if previous is None:
        outcome = RegressionOutcome("first", incomplete=incomplete)
    else:
        regressions, notes, suspects = compare(current["batches"], previous["batches"], thresholds)
        if suspects and remeasure is not None:
            regressions, notes = _confirm(previous["batches"], thresholds, suspects, remeasure, regressions, notes)
        outcome = RegressionOutcome(
            "failed" if regressions else "passed",
            previous_run_key=previous["run_key"],
            previous_recorded_at=previous["recorded_at"],
            regressions=regressions,
            notes=notes,
            incomplete=incomplete,
        )
    store.update_run(run_key, regression_status=outcome.status, regression_details=outcome.details())
    return outcome


def _confirm(
    previous: Sequence[Mapping[str, Any]],
    thresholds: Thresholds,
    suspects: list[int],
    remeasure: Callable[[int], Mapping[str, Any]],
    regressions: list[str],
    notes: list[str],
) -> tuple[list[str], list[str]]:
    """Re-measure each suspect batch size once; keep its throughput regression only if the drop repeats."""
    before = {int(b["batch_size"]): b for b in previous}
    regressions, notes = list(regressions), list(notes)
    for bs in suspects:
        again = {**remeasure(bs), "batch_size": bs}
        dropped, line = throughput_drop(before[bs], again, thresholds)
        first = next(r for r in regressions if r.startswith(f"bs{bs} throughput:"))
        if dropped:
            regressions[regressions.index(first)] = f"{first}; confirmed by a re-measurement: {line}"
        else:
            regressions.remove(first)
            notes.append(f"{first}; NOT confirmed by a re-measurement (noise): {line}")
    return regressions, notes


def regression_step(
    store: ResultsStore, config: RecipeConfig, plan: PlanRecord, recorded: RecordedRun, rows: list[dict[str, Any]]
) -> RegressionOutcome:
    """The regression check of a recorded run; a suspect throughput drop is re-measured here, on the run's chips."""
    backend = get_backend(plan["backend"], **plan["backend_options"])
    artifacts = {r["batch_size"]: r["artifact"] for r in rows if r.get("status") == "ok"}

    def remeasure(batch_size: int) -> dict[str, Any]:
        log.info("Re-measuring bs%d before calling it a regression", batch_size)
        return perf_step(
            backend,
            artifacts[batch_size],
            batch_size,
            loop=config.perf_loops,
            rounds=config.perf_rounds,
            device_ids=plan["device_ids"],
            purpose=f"{recorded['run_key']} re-measure",
        )

    return check_regression(store, recorded["run_key"], recorded["config_key"], config.thresholds, remeasure=remeasure)
