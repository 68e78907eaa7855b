"""The nightly throughput alarm on a loaded host: false alarms on unchanged runs, detections of a real slowdown.

Measures the REAL ``twins_svt_large`` (seeded random weights, ``twins_tasks.export.prepare_model``, cached
under ``var/bench-alarm/``) on the ONNX Runtime backend at batch size 1 (``--batch-sizes 1,4`` adds 4) with
``steps.perf_step`` (``--loop`` timed runs in ``--rounds`` rounds), while background processes load the
CPUs at a randomly varying intensity (bounded in time, always stopped at the end, Ctrl-C included).

Every run goes through the real regression flow, exactly as the DAG does: its perf records become a
results-DB row (``results.batch_row``, a SQLite file in a temp folder), then
``regression.check_regression(..., remeasure=perf_step again, calibrate=host_speed)`` compares it with the
reference window of the same configuration (the runs are minutes apart: ``confirm_after_hours`` 0, the
re-measurement decides). The sequence: one reference run, ``--unchanged`` runs of the unchanged model (every
failure is a false alarm), then ``--slowed`` runs with a real slowdown: each ``session.run`` of the model is
followed by a ``time.sleep`` of ``--slowdown``/(1 - ``--slowdown``) times its own measured duration, inside
the timed region, so throughput really drops by ``--slowdown`` (default 30%); the re-measurement runs slowed
too. The sleep share of the timed time is measured and printed, as is the drop of the median throughput
(the latter also moves with the host's other load between the phases: the load average is printed).

For comparison, the OLD rule is applied in the same run to the same measurements: the first round's mean
only, compared with the old rule's own last good run, ``drop > 10%`` fails, no noise check, no re-measure.
A "new rule, no re-measure" row shows what the range check alone would have decided.

Goals (exit 1 when missed): the new rule raises 0 false alarms on the unchanged runs and detects 100% of the
slowed runs.

The ORT session of each artifact is loaded once and reused by every round (``backend.perf`` would reload
it each round, ~1-2 s of each round on 2 cores); ``--reopen`` measures with a reload per round instead.
The defaults took ~12 minutes on a 2-core host that other work kept at load average 6-9 (~15 s per
unchanged run, ~50 s per slowed run with its re-measurement); ``--loop 2`` or fewer runs go faster.

    .venv/bin/python benchmarks/bench_alarm.py [--batch-sizes 1] [--loop 3] [--rounds 3] [--unchanged 10]
        [--slowed 10] [--slowdown 0.30] [--load-workers 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import multiprocessing as mp
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from twins_tasks.backends.onnxruntime import OnnxRuntimeBackend, cpu_model_name, usable_cores

OLD_THRESHOLD_PCT = 10.0
CONFIG_KEY = "bench-alarm"
ROOT = Path(__file__).resolve().parents[1]


# --- background load ---------------------------------------------------------------------------------------


def _load_worker(stop: Any, seed: int, max_duty: float, deadline: float) -> None:
    """Spin at a duty cycle that changes every 0.5-3 s (0 .. max_duty), until stopped, the deadline or orphaned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us; Ctrl-C goes to it
    import numpy as np

    rng = random.Random(seed)
    parent = os.getppid()
    a = np.random.default_rng(seed).standard_normal((160, 160))
    slice_s = 0.1
    while not stop.is_set() and time.time() < deadline and os.getppid() == parent:
        duty = rng.uniform(0.0, max_duty)
        use_numpy = rng.random() < 0.5  # memory/FPU-heavy or interpreter-heavy work
        phase_end = time.perf_counter() + rng.uniform(0.5, 3.0)
        while time.perf_counter() < phase_end and not stop.is_set():
            busy_until = time.perf_counter() + duty * slice_s
            while time.perf_counter() < busy_until:
                if use_numpy:
                    a = np.tanh(a @ a.T * 1e-3)
                else:
                    sum(i * i for i in range(2000))
            time.sleep(max(0.0, (1.0 - duty) * slice_s))


class BackgroundLoad:
    """``workers`` processes loading the CPUs at varying intensity; a context manager that always stops them."""

    def __init__(self, workers: int, max_duty: float, max_seconds: float) -> None:
        self.workers, self.max_duty, self.max_seconds = workers, max_duty, max_seconds
        self._ctx = mp.get_context("spawn")  # no fork of a process holding ONNX Runtime's thread pool
        self._stop = self._ctx.Event()
        self._procs: list[Any] = []

    def __enter__(self) -> BackgroundLoad:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = "1"  # each load worker is one busy thread (inherited by the spawned children)
        deadline = time.time() + self.max_seconds
        for i in range(self.workers):
            proc = self._ctx.Process(
                target=_load_worker, args=(self._stop, 1000 + i, self.max_duty, deadline), daemon=True
            )
            proc.start()
            self._procs.append(proc)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for proc in self._procs:
            proc.join(timeout=3)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=3)
            if proc.is_alive():
                proc.kill()
                proc.join()


# --- the backend under test ----------------------------------------------------------------------------------


class _SlowedSession:
    """An ORT session whose ``run`` sleeps ``extra`` times its own measured duration after running."""

    def __init__(self, session: Any, owner: BenchBackend) -> None:
        self._session, self._owner = session, owner

    def run(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = self._session.run(*args, **kwargs)
        ran = time.perf_counter() - t0
        slept = 0.0
        if self._owner.extra > 0:
            t1 = time.perf_counter()
            time.sleep(ran * self._owner.extra)
            slept = time.perf_counter() - t1
        self._owner.ran_s += ran
        self._owner.slept_s += slept
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


class BenchBackend(OnnxRuntimeBackend):
    """The real ONNX Runtime backend (its ``perf`` unchanged); sessions are reused and can be slowed down."""

    def __init__(self, *, reopen: bool, **kw: Any) -> None:
        super().__init__(**kw)
        self.reopen = reopen
        self.extra = 0.0  # sleep this many times each run's duration after it
        self.ran_s = 0.0
        self.slept_s = 0.0
        self._sessions: dict[Path, Any] = {}

    def _open(self, artifact: Path) -> Any:
        artifact = Path(artifact)
        if self.reopen or artifact not in self._sessions:
            self._sessions[artifact] = super()._open(artifact)
        return _SlowedSession(self._sessions[artifact], self)

    def slow_down(self, drop: float) -> None:
        """Throughput falls by ``drop`` (0.3 = 30%): each run takes 1/(1 - drop) times as long."""
        self.extra = drop / (1.0 - drop) if drop > 0 else 0.0
        self.ran_s = self.slept_s = 0.0

    def injected_pct(self) -> float:
        """The sleep share of all model-run time since ``slow_down``: the throughput drop actually injected."""
        total = self.ran_s + self.slept_s
        return 100.0 * self.slept_s / total if total else 0.0


# --- one nightly run -------------------------------------------------------------------------------------------


def record_run(store: Any, run_key: str, perfs: dict[int, dict[str, Any]], compiled: dict[int, dict[str, Any]]) -> None:
    from twins_tasks.results import batch_row

    rows = [batch_row(bs, compiled[bs], {}, perfs[bs], {}) for bs in sorted(perfs)]
    store.record_run(
        {
            "run_key": run_key,
            "source": "bench_alarm",
            "config_key": CONFIG_KEY,
            "model_name": "twins_svt_large",
            "weights": "random-init seed=0",
            "random_init": True,
            "backend": "onnxruntime",
            "status": "success",
            "started_at": dt.datetime.now(dt.UTC),
            "finished_at": dt.datetime.now(dt.UTC),
        },
        rows,
    )


class OldRule:
    """Before: one mean (the first round's) against the last run the old rule passed; > 10% drop fails."""

    def __init__(self) -> None:
        self.good: dict[int, float] | None = None

    def check(self, first_rounds: dict[int, float]) -> bool:
        if self.good is None:
            self.good = dict(first_rounds)
            return False
        failed = any(
            100.0 * (self.good[bs] - tp) / self.good[bs] > OLD_THRESHOLD_PCT for bs, tp in first_rounds.items()
        )
        if not failed:
            self.good = dict(first_rounds)
        return failed


def _loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def fmt_perf(p: dict[str, Any]) -> str:
    return f"{p['throughput']:.2f} ({p['throughput_min']:.2f}-{p['throughput_max']:.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", default="1", help="comma-separated (default 1; e.g. 1,4)")
    parser.add_argument("--loop", type=int, default=3, help="timed runs per perf round (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before each round (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="perf rounds per measurement (default 3, as the DAG)")
    parser.add_argument("--unchanged", type=int, default=10, help="unchanged runs after the reference (default 10)")
    parser.add_argument("--slowed", type=int, default=10, help="runs with the injected slowdown (default 10)")
    parser.add_argument("--slowdown", type=float, default=0.30, help="throughput drop to inject (default 0.30)")
    parser.add_argument("--threshold", type=float, default=10.0, help="max_throughput_drop_pct (default 10)")
    parser.add_argument("--threads", type=int, default=None, help="ORT intra-op threads (default: cores)")
    parser.add_argument("--load-workers", type=int, default=1, help="background load processes (default 1)")
    parser.add_argument("--load-max-duty", type=float, default=0.7, help="their busiest duty cycle (default 0.7)")
    parser.add_argument("--load-max-seconds", type=float, default=1800, help="load stops after this (default 1800)")
    parser.add_argument("--reopen", action="store_true", help="reload the ORT session every round (slower)")
    parser.add_argument("--cache", default=str(ROOT / "var" / "bench-alarm"), help="ONNX/artifact cache folder")
    parser.add_argument("--verbose", action="store_true", help="print each regression check's text")
    args = parser.parse_args()
    if args.unchanged < 1 or args.slowed < 1 or not 0.0 < args.slowdown < 0.95:
        parser.error("--unchanged and --slowed must be >= 1 and --slowdown in (0, 0.95)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    signal.signal(signal.SIGTERM, _interrupt)  # ends like Ctrl-C: the context managers stop the load

    from twins_tasks.export import prepare_model
    from twins_tasks.regression import check_regression, host_speed
    from twins_tasks.steps import compile_step, perf_step
    from twins_tasks.store import ResultsStore
    from twins_tasks.types import Thresholds

    start = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {text}", flush=True)

    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    backend = BenchBackend(reopen=args.reopen, threads=args.threads)
    print(
        f"CPU: {cpu_model_name()}, {usable_cores()} cores, load average {_loadavg()}"
        f"; onnxruntime {backend.ort_version} ({backend.threads} threads, {','.join(backend.providers)})"
    )
    print(
        f"Model: real twins_svt_large, RANDOM weights (seed 0); batch sizes {batch_sizes}; perf loop {args.loop}, "
        f"warmup {args.warmup}, {args.rounds} rounds; threshold {args.threshold:.0f}%; background load "
        f"{args.load_workers} process(es), duty 0-{args.load_max_duty:.0%} varying"
        f"{'; session reloaded each round' if args.reopen else '; session loaded once'}",
        flush=True,
    )
    cache = Path(args.cache) / "cache"
    model = prepare_model(cache, model_name="twins_svt_large", random_init=True, seed=0, opset=11)
    compiled = {bs: compile_step(backend, model["onnx"], bs, cache) for bs in batch_sizes}
    artifacts = {bs: compiled[bs]["artifact"] for bs in batch_sizes}
    say(f"model and artifacts ready ({'cached' if model.get('cached') else 'exported'})")
    # confirm_after_hours 0: the runs here are minutes apart, so the run's own re-measurement decides (the nightly's
    # second witness a night later is measured by bench_alarm_history.py).
    thresholds = Thresholds(max_throughput_drop_pct=args.threshold, confirm_after_hours=0)

    def measure(bs: int) -> dict[str, Any]:
        return perf_step(backend, artifacts[bs], bs, loop=args.loop, warmup=args.warmup, rounds=args.rounds)

    counts = {"new": [0, 0], "new_first": [0, 0], "old": [0, 0]}  # [unchanged flagged, slowed flagged]
    medians: dict[str, list[float]] = {"unchanged": [], "slowed": []}
    remeasures = 0
    old_rule = OldRule()
    with (
        tempfile.TemporaryDirectory(prefix="bench_alarm_") as tmp,
        BackgroundLoad(args.load_workers, args.load_max_duty, args.load_max_seconds),
    ):
        store = ResultsStore(f"sqlite:///{tmp}/results.db")
        plan = [("reference", 0)] + [("unchanged", i) for i in range(1, args.unchanged + 1)]
        plan += [("slowed", i) for i in range(1, args.slowed + 1)]
        for phase, i in plan:
            if phase == "slowed" and i == 1:
                backend.slow_down(args.slowdown)
                say(
                    f"now injecting a {args.slowdown:.0%} slowdown (sleep {backend.extra:.3f}x each model run); "
                    f"load average {_loadavg()}"
                )
            run_key = f"{phase}-{i:02d}"
            perfs = {bs: measure(bs) for bs in batch_sizes}
            record_run(store, run_key, perfs, compiled)
            remeasured: list[str] = []

            def remeasure(bs: int, _log: list[str] = remeasured) -> dict[str, Any]:
                again = measure(bs)
                _log.append(f"bs{bs} {fmt_perf(again)}")
                return again

            outcome = check_regression(
                store, run_key, CONFIG_KEY, thresholds, remeasure=remeasure, calibrate=host_speed
            )
            remeasures += len(remeasured)
            old_failed = old_rule.check({bs: p["throughput_rounds"][0] for bs, p in perfs.items()})
            first_failed = outcome.status == "failed" or any("NOT confirmed" in n for n in outcome.notes)
            if phase != "reference":
                col = 0 if phase == "unchanged" else 1
                counts["new"][col] += outcome.status == "failed"
                counts["new_first"][col] += first_failed
                counts["old"][col] += old_failed
                medians[phase].append(perfs[batch_sizes[0]]["throughput"])
            shown = ", ".join(f"bs{bs} {fmt_perf(p)} img/s" for bs, p in perfs.items())
            say(
                f"{run_key}: {shown} vs window up to {outcome.compared_with or '-'}: {outcome.status}"
                f"{'; re-measured ' + ', '.join(remeasured) if remeasured else ''}; old rule "
                f"{'FAIL' if old_failed else 'pass'} | alarms on unchanged new {counts['new'][0]} old "
                f"{counts['old'][0]}, detections new {counts['new'][1]} old {counts['old'][1]}"
            )
            if args.verbose or (phase == "unchanged" and outcome.status == "failed"):
                print("    " + outcome.text().replace("\n", "\n    "), flush=True)
    injected = backend.injected_pct()
    elapsed = time.perf_counter() - start

    observed = 100.0 * (1.0 - statistics.median(medians["slowed"]) / statistics.median(medians["unchanged"]))
    slow = f"{injected:.1f}% (observed {observed:.1f}%)"
    n_u, n_s = args.unchanged, args.slowed
    print()
    print(
        f"bs{batch_sizes[0]} median throughput: unchanged runs {statistics.median(medians['unchanged']):.2f} img/s, "
        f"slowed runs {statistics.median(medians['slowed']):.2f} img/s. 'slowdown injected' is the sleep share of "
        f"the slowed model runs' time; 'observed' the drop of the median throughput. {remeasures} re-measurement(s)."
    )
    print("| rule | false alarms / unchanged | detections / slowed | slowdown injected | result |")
    print("|:-----|-------------------------:|--------------------:|------------------:|:------:|")
    rows = [
        ("new: median of rounds, ranges, re-measure", "new"),
        ("new without the re-measure", "new_first"),
        (f"old: first round's mean, >{OLD_THRESHOLD_PCT:.0f}%, no re-measure", "old"),
    ]
    failed = False
    for label, key in rows:
        alarms, detected = counts[key]
        if key == "new":
            ok = alarms == 0 and detected == n_s
            failed = not ok
            result = "PASS" if ok else "FAIL"
        else:
            result = "-"
        print(f"| {label} | {alarms} / {n_u} | {detected} / {n_s} | {slow} | {result} |")
    print(
        f"Goals (new rule): 0 false alarms, {n_s}/{n_s} detections. Total {elapsed:.0f} s; load average {_loadavg()}."
    )
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; background load stopped", file=sys.stderr)
        sys.exit(130)
