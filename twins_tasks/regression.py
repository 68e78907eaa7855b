"""The regression check: each batch size against a reference window of its configuration's accepted history.

Per batch size (:mod:`twins_tasks.history` picks the runs):

* **throughput** against the *window*, the median of the last accepted runs since the change point, and against
  the *anchor*, the level at the change point (``drift``): a drop counts only beyond the threshold AND beyond
  the noise, ``NOISE_SIGMAS`` times the night-to-night spread the window measured (at least what its runs'
  rounds spread makes of a median of rounds; robust statistics: one outlier round or night moves neither). A
  cumulative drop against the anchor counts whatever the night-to-night steps;
* such a drop is re-measured at once on the run's chips, and the re-measurement is what the run records: within
  noise, the run passes ("a passing dip"). If it repeats and the host's own calibration (:func:`host_speed`,
  measured beside it) explains it, the verdict is ``slow host``: the environment's, not judged. Otherwise it
  fails (pages people) only when an earlier run at least ``Thresholds.confirm_after_hours`` before saw it too,
  normally last night's: a shared host's environment moves for minutes at a time, and a re-measure minutes
  later sits in the same stretch. Until then the run is ``suspect``: said loudly, not failed, never a reference;
* **top-1** against the window's (deterministic: no noise, no re-measure), **agreement with PyTorch** (top-1
  agreement, max abs diff of the logits) against fixed limits.

Every verdict names what changed in the software since its reference (the runs' recorded ``versions``).
``benchmarks/bench_alarm_history.py`` replays synthetic nightly histories through :func:`assess_run`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .backends import get_backend
from .history import HistoryRun, Reference, batch_history, select_reference
from .report import VERDICT_COLUMNS, plain_table
from .results import batch_row
from .steps import perf_step
from .types import PlanRecord, RecordedRun, Thresholds

if TYPE_CHECKING:
    from .recipe import RecipeConfig
    from .store import ResultsStore

log = logging.getLogger(__name__)

NOISE_SIGMAS = 2.0  # a change counts beyond this many times the measured spread (percent of the reference)
MIN_NOISE_PCT = 1.0  # night-to-night spread assumed at the least, where too few runs measured it
HOST_SLOW_MIN_PCT = 5.0  # a host calibration this much below its usual speed explains a share of a slowdown
# Batch-row fields that a perf record fills (a re-measurement replaces them).
PERF_ROW_FIELDS = (
    "perf_loop",
    "latency_min_ms",
    "latency_max_ms",
    "latency_mean_ms",
    "latency_median_ms",
    "latency_p99_ms",
    "throughput",
    "perf_rounds",
    "throughput_min",
    "throughput_max",
    "throughput_cv",
    "throughput_rounds",
    "device",
)
# Run statuses, worst first; verdicts of one check (one row of the table) map onto them.
FAILED, SUSPECT, NOISY, PASSED, FIRST, NO_RESULT = "failed", "suspect", "noisy", "passed", "first", "no result"
REGRESSION = "regression"
SLOW_HOST = "slow host"  # slower, and the host's calibration as slow: the environment's, not judged
SLOWER_VERDICTS = (SUSPECT, REGRESSION)


# --- numbers -------------------------------------------------------------------------------------------------


def rounds_of(row: Mapping[str, Any]) -> list[float]:
    """The throughput of each perf round of a row; older rows: min, median and max; one number without them."""
    rounds = row.get("throughput_rounds")
    if isinstance(rounds, list) and rounds and all(isinstance(r, int | float) for r in rounds):
        return [float(r) for r in rounds]
    tp = float(row["throughput"])
    if row.get("throughput_min") is not None and row.get("throughput_max") is not None:
        return [float(row["throughput_min"]), tp, float(row["throughput_max"])]
    return [tp]


def robust_cv(values: Sequence[float]) -> float | None:
    """Spread of ``values`` as a fraction of their median: 1.4826 x the median absolute deviation (the standard
    deviation for normal noise, but one outlier moves it little); two values: their standard deviation."""
    if len(values) < 2:
        return None
    mid = statistics.median(values)
    if not mid:
        return None
    if len(values) == 2:
        return math.sqrt(2) * abs(values[0] - values[1]) / (values[0] + values[1])
    return 1.4826 * statistics.median(abs(v - mid) for v in values) / mid


@dataclass
class Level:
    """A reference throughput: the median of its runs' (each a median of rounds), and the spreads it measured."""

    value: float
    runs: list[str]
    spread_pct: float | None  # night to night: the robust CV of the runs' values (3 runs or more)
    rounds_pct: float | None  # within a run: the median of the runs' robust round CVs
    rounds: int = 1  # perf rounds per run (the most the runs had)

    @classmethod
    def of(cls, runs: Sequence[HistoryRun]) -> Level | None:
        values = [float(r.row["throughput"]) for r in runs]
        if not values:
            return None
        spread = robust_cv(values) if len(values) >= 3 else None
        cvs = [cv for cv in (robust_cv(rounds_of(r.row)) for r in runs) if cv is not None]
        return cls(
            value=statistics.median(values),
            runs=[r.run_key for r in runs],
            spread_pct=None if spread is None else 100 * spread,
            rounds_pct=100 * statistics.median(cvs) if cvs else None,
            rounds=max(len(rounds_of(r.row)) for r in runs),
        )


@dataclass
class Judgement:
    """One throughput comparison: ``slower``, ``faster`` (each beyond threshold and noise) or ``ok``."""

    kind: str
    change_pct: float  # (new - reference) / reference; negative: slower
    noise_pct: float  # the change must exceed this to be beyond noise
    level: Level


def median_noise(cv_pct: float, rounds: int) -> float:
    """How much a median of ``rounds`` rounds varies, when one round varies by ``cv_pct`` (normal noise)."""
    return 1.2533 * cv_pct / math.sqrt(max(1, rounds))


def judge_throughput(row: Mapping[str, Any], level: Level, threshold_pct: float) -> Judgement:
    """Is ``row``'s throughput slower than ``level`` beyond ``threshold_pct`` AND beyond the noise?

    The noise of the difference: the night-to-night spread of the window's runs (at least what their rounds'
    spread makes of a median of rounds, and ``MIN_NOISE_PCT``), for the new night and for the window's median.
    The new run's own rounds count through its median only: with a few rounds their spread is itself too noisy
    to widen or narrow the verdict (benchmarks/bench_alarm_history.py: it hid real steps).
    """
    change = 100.0 * (float(row["throughput"]) - level.value) / level.value
    night = max(level.spread_pct or 0.0, median_noise(level.rounds_pct or 0.0, level.rounds), MIN_NOISE_PCT)
    noise = NOISE_SIGMAS * night * math.sqrt(1 + 1 / len(level.runs))
    if -change > threshold_pct and -change > noise:
        kind = "slower"
    elif change > threshold_pct and change > noise:
        kind = "faster"
    else:
        kind = "ok"
    return Judgement(kind, change, noise, level)


# --- the verdict ---------------------------------------------------------------------------------------------


@dataclass
class Check:
    """One row of the verdict table: one batch size, one metric."""

    batch_size: int
    metric: str  # throughput | drift | top-1 | agreement top-1 | max abs diff | result
    reference: str  # e.g. "10.61 img/s (median of 7 runs)", ">= 90.0%"
    new: str
    change: str  # e.g. "-13.3%"
    allowed: str  # e.g. "-5.0%"
    noise: str  # e.g. "±6.3%"
    verdict: str  # ok | faster | noisy | suspect | regression | no reference | not measured | no result
    note: str = ""  # the re-measurement, the witness, the reason
    changed: str = ""  # what changed in the software since this batch size's reference
    runs: list[str] = field(default_factory=list)  # the reference's runs

    def line(self) -> str:
        """The check as one line (the DAG's failure message, the summary)."""
        parts = [f"bs{self.batch_size} {self.metric}: {self.reference} -> {self.new}"]
        if self.change:
            parts.append(f" ({self.change}, allowed {self.allowed}{', noise ' + self.noise if self.noise else ''})")
        parts.append(f": {self.verdict}")
        if self.note:
            parts.append(f"; {self.note}")
        if self.changed:
            parts.append(f"; changed since the reference: {self.changed}")
        return "".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "metric": self.metric,
            "reference": self.reference,
            "new": self.new,
            "change": self.change,
            "allowed": self.allowed,
            "noise": self.noise,
            "verdict": self.verdict,
            "note": self.note,
            "changed": self.changed,
            "runs": self.runs,
        }


@dataclass
class RegressionOutcome:
    """The verdict of a run. ``status``: ``failed``, ``suspect``, ``noisy``, ``passed``, ``first`` (no batch size
    had a reference), ``no result`` (no batch size measured). ``incomplete`` names the batch sizes without a
    result, and why: the run is then not ``ok`` even when nothing regressed."""

    status: str
    checks: list[Check] = field(default_factory=list)
    incomplete: dict[str, str] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)  # software changes since the reference, "name old -> new"
    compared_with: str | None = None  # the newest reference run (the run page links it)
    change_points: dict[str, str] = field(default_factory=dict)  # batch size -> the accepted run its window starts at
    complete: bool = True  # the run's status is success (only then can it become a reference)
    host_speed: float | None = None  # the host's calibration at the check (host_speed())
    confirm_after_hours: float = 1.0  # Thresholds.confirm_after_hours of the check
    run_key: str | None = None  # the run judged, where known

    @property
    def ok(self) -> bool:
        return self.status not in (FAILED, NO_RESULT) and not self.incomplete

    @property
    def regressions(self) -> list[str]:
        return [c.line() for c in self.checks if c.verdict == REGRESSION]

    @property
    def notes(self) -> list[str]:
        return [c.line() for c in self.checks if c.verdict != REGRESSION and c.metric != "result"]

    def headline(self) -> str:
        """What a person reads first: the verdict, what changed, and which batch sizes moved beyond noise."""
        beyond: dict[int, Check] = {}  # per batch size, throughput before drift
        for c in self.checks:
            if c.verdict in (*SLOWER_VERDICTS, "faster") and c.metric in ("throughput", "drift"):
                beyond.setdefault(c.batch_size, c)
        moved = [
            f"bs{c.batch_size} {c.change} beyond noise"
            + (" (drift since the change point)" if c.metric == "drift" else "")
            for c in beyond.values()
        ]
        moved += [
            f"bs{c.batch_size} {c.metric} {c.new}"
            for c in self.checks
            if c.verdict == REGRESSION and c.metric not in ("throughput", "drift")
        ]
        if self.status in (FIRST, NO_RESULT):
            return f"Regression check: {self.status.upper()}: nothing to compare with"
        what = ", ".join([*self.changed, *moved]) or "nothing moved beyond noise"
        return f"Regression check: {self.status.upper()}: {what}"

    def text(self) -> str:
        """The verdict for the task log and the terminal: a table per batch size."""
        lines = [self.headline()]
        if self.compared_with:
            lines.append(
                f"Reference: each batch size against the median of its last accepted runs (up to run "
                f"{self.compared_with}) and the level at their change point."
            )
        if self.status == NO_RESULT:
            lines.append("No batch size has a result: nothing was compared, and this run will not be a reference.")
        elif self.status == FIRST:
            lines.append(
                "First run of this configuration: nothing to compare with; "
                + ("it starts the reference." if self.complete else "it is partial, so it will not be a reference.")
            )
        elif self.status == SUSPECT:
            lines.append(
                "Slower beyond noise, and the re-measurement agrees, but no earlier run (at least "
                f"{self.confirm_after_hours:g} hour(s) before) saw it: not failed yet, and not a reference. If the "
                "next run is as slow the check fails; a noisy host is back to normal by then."
            )
        elif self.status == NOISY:
            lines.append(
                "Slower, but so was the host itself (its calibration beside the measurement): the environment's, "
                "not the model's. Not failed, and not a reference."
            )
        by_size: dict[int, list[Check]] = {}
        for c in self.checks:
            by_size.setdefault(c.batch_size, []).append(c)
        for bs, checks in sorted(by_size.items()):
            lines.append("")
            start = self.change_points.get(str(bs))
            lines.append(
                f"bs{bs}" + (f" (reference window since run {start}, accepted as the new normal)" if start else "")
            )
            rows = [
                [c.metric, c.reference, c.new, c.change or "-", c.allowed or "-", c.noise or "-", c.verdict]
                for c in checks
            ]
            lines += ["  " + line for line in plain_table(VERDICT_COLUMNS, rows, first_left=True).splitlines()]
            lines += [f"  {c.metric}: {c.note}" for c in checks if c.note]
            changed = next((c.changed for c in checks if c.changed), "")
            if changed:
                lines.append(f"  changed since the reference: {changed}")
        if self.status == FAILED:
            lines += [
                "",
                "If the new level is intended (a toolchain or hardware change), make it the reference: "
                f"twins results --accept {self.run_key or 'RUN'} --why TEXT",
            ]
        return "\n".join(lines)

    def details(self) -> dict[str, Any]:
        """For the results database and the run page: the table, and the lines."""
        return {
            "status": self.status,
            "compared_with": self.compared_with,
            "headline": self.headline(),
            "changed": self.changed,
            "checks": [c.to_dict() for c in self.checks],
            "change_points": self.change_points,
            "host_speed": self.host_speed,
            "regressions": self.regressions,
            "notes": self.notes,
            "incomplete": self.incomplete,
        }


def _pct(value: float) -> str:
    return f"{value:+.1f}%"


def version_changes(new: Mapping[str, Any], reference: Sequence[Mapping[str, Any]]) -> list[str]:
    """``name old -> new`` for each software version of ``new`` that its reference runs did not all have."""
    changes = []
    for name in sorted(set(new) | {k for versions in reference for k in versions}):
        seen = list(dict.fromkeys(str(v.get(name, "-")) for v in reference))
        now = str(new.get(name, "-"))
        if seen and seen != [now]:
            changes.append(f"{name} {'/'.join(seen)} -> {now}")
    return changes


def _witness(
    since: Sequence[HistoryRun], batch_size: int, now: dt.datetime | None, gap: dt.timedelta
) -> HistoryRun | None:
    """An earlier run (after the reference, at least ``gap`` before ``now``, not excluded) that saw this batch size
    slower."""
    for run in reversed(since):
        if run.excluded or (now is not None and run.at is not None and now - run.at < gap):
            continue
        details = run.details or {}
        checks = details.get("checks") or []
        slower = any(
            c.get("batch_size") == batch_size
            and c.get("metric") in ("throughput", "drift")
            and c.get("verdict") in SLOWER_VERDICTS
            for c in checks
        ) or any(str(line).startswith(f"bs{batch_size} throughput:") for line in details.get("regressions") or [])
        if slower:
            return run
    return None


def _throughput_checks(
    row: Mapping[str, Any], ref: Reference, threshold: float
) -> tuple[list[Judgement], list[tuple[str, Judgement]]]:
    """Judge ``row`` against the window and (where it differs) the anchor: (all judgements, (metric, j) pairs)."""
    pairs: list[tuple[str, Judgement]] = []
    window = Level.of(ref.window)
    if window is not None:
        pairs.append(("throughput", judge_throughput(row, window, threshold)))
    anchor = Level.of(ref.anchor)
    if anchor is not None and window is not None and anchor.runs != window.runs:
        # The noise of the calmer of the two: a drift widens the window's spread, a noisy start the anchor's.
        calm = dataclasses.replace(
            anchor,
            spread_pct=_least(anchor.spread_pct, window.spread_pct),
            rounds_pct=_least(anchor.rounds_pct, window.rounds_pct),
        )
        pairs.append(("drift", judge_throughput(row, calm, threshold)))
    return [j for _, j in pairs], pairs


def _least(a: float | None, b: float | None) -> float | None:
    return min(a, b) if a is not None and b is not None else a if a is not None else b


def _worst(judgements: Sequence[Judgement]) -> str:
    kinds = {j.kind for j in judgements}
    return next((k for k in ("slower", "faster") if k in kinds), "ok")


def host_level(ref: Reference) -> float | None:
    """The host's usual speed: the median calibration (:func:`host_speed`) the window's runs recorded."""
    speeds = [float(r.details["host_speed"]) for r in ref.window if r.details and r.details.get("host_speed")]
    return statistics.median(speeds) if speeds else None


def assess_batch(
    row: Mapping[str, Any],
    ref: Reference,
    thresholds: Thresholds,
    *,
    versions: Mapping[str, Any],
    now: dt.datetime | None,
    remeasure: Callable[[int], Mapping[str, Any]] | None = None,
    calibrate: Callable[[], float] | None = None,
) -> tuple[list[Check], dict[str, Any] | None, float | None]:
    """The checks of one measured batch size; the re-measured perf fields and the host's speed beside them, where
    it was re-measured."""
    bs = int(row["batch_size"])
    threshold = thresholds.max_throughput_drop_pct
    changed = ", ".join(version_changes(versions, [r.versions for r in ref.window]))
    checks: list[Check] = []
    remeasured: dict[str, Any] | None = None
    speed: float | None = None
    judgements, pairs = _throughput_checks(row, ref, threshold)
    notes: list[str] = []
    kind = _worst(judgements)
    if not pairs:
        checks.append(
            Check(
                bs,
                "throughput",
                "-",
                f"{row['throughput']:.2f} img/s",
                "",
                "",
                "",
                "no reference",
                "no accepted run of this configuration measured this batch size yet",
            )
        )
    else:
        if kind == "slower" and remeasure is not None:
            again = remeasure(bs)
            fields = batch_row(bs, {}, {}, dict(again), {})
            remeasured = {k: fields[k] for k in PERF_ROW_FIELDS if fields.get(k) is not None}
            first = float(row["throughput"])
            row = {**row, **remeasured}
            judgements, pairs = _throughput_checks(row, ref, threshold)
            kind = _worst(judgements)
            again_text = f"{row['throughput']:.2f} img/s (first {first:.2f}; the re-measurement is recorded)"
            if kind == "slower":
                notes.append(f"confirmed by a re-measurement: {again_text}")
            else:
                notes.append(f"NOT confirmed by a re-measurement: {again_text}: a passing dip, not a change")
        usual = host_level(ref)
        if kind == "slower" and calibrate is not None and usual:
            speed = calibrate()  # beside the (re-)measurement: was the host itself slow just now?
            host_drop = 100.0 * (usual - speed) / usual
            if host_drop >= HOST_SLOW_MIN_PCT:
                # Judge what the host does not explain: the throughput at the host's usual speed.
                host_free = {**row, "throughput": float(row["throughput"]) * usual / speed}
                if _worst(_throughput_checks(host_free, ref, threshold)[0]) == "slower":
                    notes.append(f"slower even allowing for the host's own {host_drop:.0f}% (calibration)")
                else:
                    kind = SLOW_HOST
                    notes.append(f"the host itself ran {host_drop:.0f}% slower (calibration): the environment's")
        gap = dt.timedelta(hours=thresholds.confirm_after_hours)
        witness = _witness(ref.since, bs, now, gap) if kind == "slower" and gap else None
        for metric, j in pairs:
            verdict = {"slower": SUSPECT, "faster": "faster", "ok": "ok"}[j.kind]
            extra = list(notes) if metric == "throughput" else []
            if j.kind == "slower" and kind == SLOW_HOST:
                verdict = SLOW_HOST
            elif j.kind == "slower" and not gap:
                verdict = REGRESSION  # confirm_after_hours 0: this run's own (re-)measurement decides
            elif j.kind == "slower" and witness is not None:
                verdict = REGRESSION
                extra.append(f"run {witness.run_key} saw it too")
            elif j.kind == "slower":
                extra.append("no earlier run saw it yet: suspect")
            label = "median of" if metric == "throughput" else "level at the change point, median of first"
            n = len(j.level.runs)
            checks.append(
                Check(
                    bs,
                    metric,
                    f"{j.level.value:.2f} img/s ({label} {n} run{'s' if n != 1 else ''})",
                    f"{row['throughput']:.2f} img/s",
                    _pct(j.change_pct),
                    _pct(-threshold),
                    f"±{j.noise_pct:.1f}%",
                    verdict,
                    "; ".join(extra),
                    changed,
                    j.level.runs,
                )
            )
    checks += _accuracy_checks(bs, row, ref, thresholds, changed)
    return checks, remeasured, speed


def _accuracy_checks(
    bs: int, row: Mapping[str, Any], ref: Reference, thresholds: Thresholds, changed: str
) -> list[Check]:
    """Top-1 against the window's (the same images every run: no noise), agreement with PyTorch against limits."""
    checks = []
    top1s = [float(r.row["top1"]) for r in ref.window if r.row.get("top1") is not None]
    if row.get("top1") is not None and top1s:
        before = statistics.median(top1s)
        drop = before - float(row["top1"])
        checks.append(
            Check(
                bs,
                "top-1",
                f"{before:.2f}% (median of {len(top1s)} runs)",
                f"{float(row['top1']):.2f}%",
                f"{-drop:+.2f} pp",
                f"-{thresholds.max_top1_drop:.2f} pp",
                "",
                REGRESSION if drop > thresholds.max_top1_drop else "ok",
                "",
                changed,
                [r.run_key for r in ref.window],
            )
        )
    agreement, diff = row.get("agreement_top1"), row.get("agreement_max_abs_diff")
    if agreement is None and diff is None:
        checks.append(
            Check(
                bs,
                "agreement",
                "-",
                "-",
                "",
                "",
                "",
                "not measured",
                "no PyTorch reference images in this run (reference images 0)",
            )
        )
        return checks
    if agreement is not None:
        low = float(agreement) < thresholds.min_agreement_top1
        checks.append(
            Check(
                bs,
                "agreement top-1",
                f">= {thresholds.min_agreement_top1:.1f}%",
                f"{float(agreement):.1f}%",
                "",
                "",
                "",
                REGRESSION if low else "ok",
                "outputs disagree with PyTorch's" if low else "",
            )
        )
    if diff is not None:
        high = float(diff) > thresholds.max_agreement_abs_diff
        checks.append(
            Check(
                bs,
                "max abs diff",
                f"<= {thresholds.max_agreement_abs_diff:g}",
                f"{float(diff):.3g}",
                "",
                "",
                "",
                REGRESSION if high else "ok",
                "logits differ from PyTorch's" if high else "",
            )
        )
    return checks


def run_status(checks: Sequence[Check], measured: int) -> str:
    """The run's status from its checks: the worst verdict."""
    verdicts = {c.verdict for c in checks}
    if REGRESSION in verdicts:
        return FAILED
    if not measured:
        return NO_RESULT
    if SUSPECT in verdicts:
        return SUSPECT
    if SLOW_HOST in verdicts:
        return NOISY
    if not any(c.metric == "throughput" and c.verdict != "no reference" for c in checks):
        return FIRST
    return PASSED


def assess_run(
    batches: Sequence[Mapping[str, Any]],
    references: Mapping[int, Reference],
    thresholds: Thresholds,
    *,
    versions: Mapping[str, Any],
    now: dt.datetime | None,
    complete: bool = True,
    remeasure: Callable[[int], Mapping[str, Any]] | None = None,
    calibrate: Callable[[], float] | None = None,
) -> tuple[RegressionOutcome, dict[int, dict[str, Any]]]:
    """The verdict of a run's batch rows against each batch size's reference, and the re-measured perf fields by
    batch size. No database here: ``check_regression`` reads and writes it, the benchmark replays histories."""
    checks: list[Check] = []
    remeasured: dict[int, dict[str, Any]] = {}
    incomplete: dict[str, str] = {}
    measured = 0
    speed = calibrate() if calibrate is not None else None  # recorded: the host's usual speed for later runs
    for row in sorted(batches, key=lambda b: int(b["batch_size"])):
        bs = int(row["batch_size"])
        if row.get("status", "ok") not in (None, "ok") or not row.get("throughput"):
            error = row.get("error") or "failed"
            incomplete[str(bs)] = error
            checks.append(Check(bs, "result", "-", "-", "", "", "", "no result", error))
            continue
        measured += 1
        ref = references.get(bs) or Reference([], [], None, [])
        found, again, _ = assess_batch(
            row, ref, thresholds, versions=versions, now=now, remeasure=remeasure, calibrate=calibrate
        )
        checks += found
        if again:
            remeasured[bs] = again
    changed = list(
        dict.fromkeys(
            part for ref in references.values() for part in version_changes(versions, [r.versions for r in ref.window])
        )
    )
    newest = max(
        (r for ref in references.values() for r in ref.window[-1:]),
        key=lambda r: r.at or dt.datetime.min.replace(tzinfo=dt.UTC),
        default=None,
    )
    outcome = RegressionOutcome(
        run_status(checks, measured),
        checks=checks,
        incomplete=incomplete,
        changed=changed,
        compared_with=newest.run_key if newest else None,
        change_points={str(bs): ref.change_point.run_key for bs, ref in references.items() if ref.change_point},
        complete=complete,
        host_speed=speed,
        confirm_after_hours=thresholds.confirm_after_hours,
    )
    return outcome, remeasured


def check_regression(
    store: ResultsStore,
    run_key: str,
    config_key: str,
    thresholds: Thresholds,
    *,
    remeasure: Callable[[int], Mapping[str, Any]] | None = None,
    calibrate: Callable[[], float] | None = None,
) -> RegressionOutcome:
    """Judge a recorded run against each batch size's reference window; record the verdict (and a re-measurement).

    ``remeasure(bs)`` measures a suspect batch size once more (the perf step's record); without it the first
    measurement decides. ``calibrate()`` measures the host's speed (:func:`host_speed`): a slowdown that the
    host shows as well is the environment's, not the model's.
    """
    current = store.get_run(run_key)
    if current is None:
        raise LookupError(f"no run {run_key!r} in {store.describe()}")
    references = {
        int(b["batch_size"]): select_reference(batch_history(store, config_key, int(b["batch_size"]), before=run_key))
        for b in current["batches"]
    }
    now = current.get("started_at") or current.get("recorded_at")
    if now is not None and now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    outcome, remeasured = assess_run(
        current["batches"],
        references,
        thresholds,
        versions=current.get("versions") or {},
        now=now,
        complete=current.get("status") == "success",
        remeasure=remeasure,
        calibrate=calibrate,
    )
    outcome.run_key = run_key
    for bs, fields in remeasured.items():
        store.update_batch(run_key, bs, **fields)
    store.update_run(run_key, regression_status=outcome.status, regression_details=outcome.details())
    return outcome


def host_speed(rounds: int = 3) -> float:
    """The host's speed now, in runs/s of a fixed numpy workload (the median of ``rounds`` rounds of ~0.1 s): a
    calibration measured beside the model, so that a host slowed by its neighbours is told from a slower model."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    speeds = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(20):
            b = np.tanh(a @ a.T * 1e-3)
        speeds.append(20 / (time.perf_counter() - start))
        a = b if b.shape == a.shape else a
    return statistics.median(speeds)


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

    return check_regression(
        store, recorded["run_key"], recorded["config_key"], config.thresholds, remeasure=remeasure, calibrate=host_speed
    )
