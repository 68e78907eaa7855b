"""The nightly alarm over months: synthetic nightly histories replayed through the real regression check.

Each night of a history measures one batch size in 3 perf rounds and is judged by
``twins_tasks.regression.assess_run`` against ``twins_tasks.history.select_reference`` of the nights before it,
as ``check_regression`` does with the rows it reads from the results database (the database itself is left out
so that tens of thousands of nights take seconds). A suspect drop is re-measured in the same night's
environment; the host calibration is drawn beside it; the night's status, recorded row (the re-measurement
where there was one) and verdict go into the history the next night reads. Nights are a day apart.

The noise, from the spreads we measured (issue 18's case 9, benchmarks/bench_alarm.py):

* perf rounds: a coefficient of variation of 1-3% (drawn per history); one round in 50 an outlier at 40-80%;
* night to night: the whole night (its rounds and its re-measure) moves by a normal 1%;
* a passing dip on 3 nights in 100: the first measurement 10-20% slow, the re-measure minutes later normal
  (case 9's run 3: 9.19, re-measured 11.00);
* a slow night on 2 nights in 100: the whole night 10-20% slow with tight rounds and the re-measure as slow
  (case 9's runs 6-8: 8.35-8.96 against 10.61, "the re-measure agreed"); the host calibration is as slow,
  give or take 3% (1.5% noise on other nights);
* a noisy stretch starting on 2 nights in 100: 2-4 nights, each a slow night with a chance of 0.6.

Three kinds of history, each after 15 unchanged nights (the reference fills): unchanged (100 nights), a 10%
step, a drift of 2% a night (watched for 15 nights). Rules, on the same measurements: the new check; the new
check without the host calibration; the OLD check (before issue 18): the previous successful run that did not
fail its check (unchecked ones included) is the reference, a drop beyond 10% with disjoint round ranges is
re-measured and fails when the re-measure agrees, and the first measurement is recorded.

Goals (exit 1 when the new check misses one): at most 1 false alarm per 100 unchanged nights; a 10% step caught
within 2 nights in at least 95% of histories; a 2%-a-night drift caught at a cumulative loss of at most 15% in
every history. ~20 s for the default 200 histories of each kind.

    .venv/bin/python benchmarks/bench_alarm_history.py [--histories 200] [--seed 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from twins_tasks.history import HistoryRun, select_reference
from twins_tasks.regression import FAILED, assess_run
from twins_tasks.types import Thresholds

WARMUP = 15
UNCHANGED_NIGHTS = 100
WATCH_NIGHTS = 15  # nights after a step or the start of a drift that are watched for the alarm
OLD_THRESHOLD_PCT = 10.0  # the old rule's default
DIP_RATE = 0.03  # nights whose first measurement dips (the re-measure is normal)
SLOW_RATE = 0.02  # single slow nights (the re-measure as slow)
STRETCH_RATE = 0.02  # nights a noisy stretch starts on (2-4 nights, each slow with a chance of 0.6)
START = dt.datetime(2026, 1, 1, 2, 0, tzinfo=dt.UTC)
VERSIONS = {"onnxruntime": "1.22.0"}
RULES = {
    "new": "new: window per batch size, noise, re-measure, 2 witnesses, host calibration",
    "uncalibrated": "new without the host calibration",
    "old": "old: previous run, 10%, re-measure",
}


@dataclass
class Night:
    """One night's environment: what every measurement that night shares."""

    speed: float  # the model's true level times the night's drift
    dip: bool  # the first measurement is slow, the re-measure is not
    slow: float  # the whole night's factor (1.0: a normal night)


class Host:
    """Draws nights, measurements and host calibrations of one history."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.cv = rng.uniform(0.01, 0.03)
        self.stretch_left = 0

    def night(self, level: float) -> Night:
        rng = self.rng
        if self.stretch_left == 0 and rng.random() < STRETCH_RATE:
            self.stretch_left = rng.randint(2, 4)
        slow_chance = 0.6 if self.stretch_left else SLOW_RATE
        self.stretch_left = max(0, self.stretch_left - 1)
        slow = rng.uniform(0.80, 0.90) if rng.random() < slow_chance else 1.0
        return Night(level * (1 + rng.gauss(0, 0.01)), rng.random() < DIP_RATE, slow)

    def calibrate(self, night: Night) -> float:
        """The host's speed: slowed as the model is on a slow night (give or take 3%), 1.5% noise otherwise."""
        factor = night.slow * (1 + self.rng.gauss(0, 0.03)) if night.slow < 1 else 1.0
        return 1000.0 * factor * (1 + self.rng.gauss(0, 0.015))

    def measure(self, night: Night, *, first: bool) -> dict[str, Any]:
        rng = self.rng
        dip = rng.uniform(0.80, 0.90) if first and night.dip else 1.0
        rounds = []
        for _ in range(3):
            value = night.speed * night.slow * dip * (1 + rng.gauss(0, self.cv))
            if rng.random() < 0.02:
                value *= rng.uniform(0.4, 0.8)
            rounds.append(value)
        median = sorted(rounds)[1]
        return {
            "batch_size": 1,
            "status": "ok",
            "throughput": median,
            "throughput_min": min(rounds),
            "throughput_max": max(rounds),
            "throughput_rounds": rounds,
            "perf_rounds": 3,
            "top1": 0.1,
        }


class OldRule:
    """The check before issue 18: the previous good run, > 10% and disjoint ranges, re-measured."""

    def __init__(self) -> None:
        self.reference: dict[str, Any] | None = None

    @staticmethod
    def dropped(old: dict[str, Any], new: dict[str, Any]) -> bool:
        drop = 100.0 * (old["throughput"] - new["throughput"]) / old["throughput"]
        return drop > OLD_THRESHOLD_PCT and new["throughput_max"] < old["throughput_min"]

    def check(self, row: dict[str, Any], remeasure: Callable[[], dict[str, Any]]) -> bool:
        failed = False
        if self.reference is not None and self.dropped(self.reference, row):
            failed = self.dropped(self.reference, remeasure())
        if not failed:
            self.reference = row  # the first measurement, recorded as it was
        return failed


def replay(rng: random.Random, level_at: Callable[[int], float], nights: int, thresholds: Thresholds) -> dict[str, Any]:
    """One history: the statuses each rule gave each night (the new rule with and without the host calibration,
    on the same measurements)."""
    host = Host(rng)
    histories: dict[str, list[HistoryRun]] = {"new": [], "uncalibrated": []}
    statuses: dict[str, list[Any]] = {"new": [], "uncalibrated": [], "old": []}
    old = OldRule()
    for n in range(nights):
        night = host.night(level_at(n))
        row = host.measure(night, first=True)
        again: list[dict[str, Any]] = []

        def remeasure(_bs: int = 1, _night: Night = night, _again: list[dict[str, Any]] = again) -> dict[str, Any]:
            if not _again:  # both rules re-measure the same night: one re-measurement, shared
                _again.append(host.measure(_night, first=False))
            return _again[0]

        at = START + dt.timedelta(days=n)
        calibration = host.calibrate(night)

        def calibrate(_c: float = calibration) -> float:
            return _c

        for rule, history in histories.items():
            outcome, remeasured = assess_run(
                [row],
                {1: select_reference(history)},
                thresholds,
                versions=VERSIONS,
                now=at,
                remeasure=remeasure,
                calibrate=calibrate if rule == "new" else None,
            )
            recorded = {**row, **remeasured.get(1, {})}
            history.append(
                HistoryRun(f"night-{n}", at, "success", outcome.status, recorded, VERSIONS, outcome.details())
            )
            statuses[rule].append(outcome.status)
        statuses["old"].append(old.check(row, lambda: remeasure()))
    return statuses


def first_alarm(statuses: list[Any], start: int) -> int | None:
    """Nights from ``start`` to the first failed check (1 = the night of the change); None if never."""
    for n in range(start, len(statuses)):
        if statuses[n] is True or statuses[n] == FAILED:
            return n - start + 1
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--histories", type=int, default=200, help="histories of each kind (default 200)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    thresholds = Thresholds()
    began = time.perf_counter()
    alarms = dict.fromkeys(RULES, 0)
    seen = {"suspect": 0, "noisy": 0}
    unchanged_nights = 0
    for _ in range(args.histories):
        result = replay(rng, lambda n: 100.0, WARMUP + UNCHANGED_NIGHTS, thresholds)
        unchanged_nights += UNCHANGED_NIGHTS
        for rule in RULES:
            alarms[rule] += sum(1 for s in result[rule][WARMUP:] if s is True or s == FAILED)
        for status in seen:
            seen[status] += sum(s == status for s in result["new"][WARMUP:])
    step: dict[str, list[int | None]] = {rule: [] for rule in RULES}
    drift: dict[str, list[float | None]] = {rule: [] for rule in RULES}

    def drifting(n: int) -> float:
        return 100.0 * 0.98 ** max(0, n - WARMUP + 1)

    for _ in range(args.histories):
        result = replay(rng, lambda n: 100.0 if n < WARMUP else 90.0, WARMUP + WATCH_NIGHTS, thresholds)
        for rule in RULES:
            step[rule].append(first_alarm(result[rule], WARMUP))
        result = replay(rng, drifting, WARMUP + WATCH_NIGHTS, thresholds)
        for rule in RULES:
            caught = first_alarm(result[rule], WARMUP)
            drift[rule].append(None if caught is None else 100.0 * (1 - 0.98**caught))
    elapsed = time.perf_counter() - began

    def step_cell(rule: str) -> tuple[str, float]:
        found = step[rule]
        within = 100.0 * sum(1 for n in found if n is not None and n <= 2) / len(found)
        detected = [n for n in found if n is not None]
        median = f"{statistics.median(detected):.0f}" if detected else "-"
        missed = len(found) - len(detected)
        return f"{within:.1f}% (median {median}; {missed} missed in {WATCH_NIGHTS})", within

    def drift_cell(rule: str) -> tuple[str, float]:
        losses = [x for x in drift[rule] if x is not None]
        missed = len(drift[rule]) - len(losses)
        if not losses:
            return f"never caught in {WATCH_NIGHTS} nights", float("inf")
        text = f"median {statistics.median(losses):.1f}%, worst {max(losses):.1f}%"
        if missed:
            return f"{text}; {missed} not caught in {WATCH_NIGHTS} nights", float("inf")
        return text, max(losses)

    print(
        f"{args.histories} histories of each kind, seed {args.seed}, {elapsed:.0f} s. New check: {thresholds}. "
        f"Noise: rounds CV 1-3%, 1 outlier round in 50, nights 1%; dips {DIP_RATE:.0%}, slow nights "
        f"{SLOW_RATE:.0%}, noisy stretches starting on {STRETCH_RATE:.0%} of nights."
    )
    print(
        "| rule | false alarms / 100 unchanged nights | 10% step caught within 2 nights (median nights) "
        "| loss when a 2%/night drift is caught |"
    )
    print("|:--|--:|--:|--:|")
    results = {}
    for rule, label in RULES.items():
        rate = 100.0 * alarms[rule] / unchanged_nights
        step_text, within = step_cell(rule)
        drift_text, worst = drift_cell(rule)
        results[rule] = (rate, within, worst)
        print(f"| {label} | {rate:.2f} | {step_text} | {drift_text} |")
    suspect, noisy = (100.0 * seen[status] / unchanged_nights for status in ("suspect", "noisy"))
    print(
        f"New check on unchanged nights, neither paged nor a reference: {suspect:.2f} suspect and {noisy:.2f} "
        "slow-host nights per 100."
    )
    rate, within, worst = results["new"]
    goals = {
        "false alarms <= 1 per 100 unchanged nights": rate <= 1.0,
        "a 10% step caught within 2 nights in >= 95% of histories": within >= 95.0,
        "a 2%/night drift caught at <= 15% loss in every history": worst <= 15.0,
    }
    for goal, met in goals.items():
        print(f"{'PASS' if met else 'MISS'}  {goal}")
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
