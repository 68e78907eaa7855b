"""Retention (issue 19): run folders classified and pruned by the policy, caches held to a budget, `twins clean`."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from twins_tasks.backends.base import Backend
from twins_tasks.cache import USE_STAMP, compile_cached, in_use, mark_used
from twins_tasks.cli import main
from twins_tasks.errors import InputError
from twins_tasks.retention import (
    DEAD,
    FAILED,
    LIVE,
    RECORDED,
    apply_retention,
    classify_runs,
    enforce_cache_budget,
    own_run_folder,
)
from twins_tasks.store import ResultsStore, ValidationRun
from twins_tasks.types import CompileResult, RetentionPolicy

HOUR = 3600.0
DAY = 24 * HOUR
NOW = time.time()


def _age(path: Path, seconds: float) -> None:
    """Make ``path`` and everything in it look last changed ``seconds`` ago."""
    when = NOW - seconds
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (when, when), follow_symlinks=False)
        os.utime(dirpath, (when, when))


def _run_folder(work: Path, name: str, *, age: float, report: bool = False, outputs: int = 3) -> Path:
    folder = work / "runs" / name
    result = folder / "result" / "twins_bs1"
    result.mkdir(parents=True)
    for i in range(outputs):
        (result / f"img{i}_0.txt").write_text("0.5 " * 1000)
    (folder / "result" / "twins_bs1_summary.json").write_text("{}")
    if report:
        (folder / "report.md").write_text("# report\n")
    _age(folder, age)
    return folder


def _record(store: ResultsStore, run_key: str, *, status: str = "success", regression: str | None = None,
            age: float = 0.0) -> None:  # fmt: skip
    store.record_run(
        {"run_key": run_key, "source": "cli", "config_key": "k", "config": {}, "model_name": "m", "weights": "w",
         "backend": "onnxruntime", "status": status, "regression_status": regression},
        [],
    )  # fmt: skip
    with Session(store.engine) as session, session.begin():  # record_run stamps "now"
        session.execute(
            update(ValidationRun)
            .where(ValidationRun.run_key == run_key)
            .values(recorded_at=dt.datetime.fromtimestamp(NOW - age, dt.UTC))
        )


@pytest.fixture
def store(tmp_path) -> ResultsStore:
    return ResultsStore(f"sqlite:///{tmp_path / 'twins_results.db'}")


@pytest.fixture
def work(tmp_path, store) -> Path:
    """A work dir with one run folder of every kind (newest first by when it was recorded or last touched)."""
    work = tmp_path / "work"
    _run_folder(work, "current", age=0.1 * HOUR)  # the run applying the policy (not recorded yet)
    _run_folder(work, "new_ok", age=1 * HOUR, report=True)
    _record(store, "new_ok", age=1 * HOUR)
    _run_folder(work, "cli_running", age=30 * HOUR)  # an old-looking folder whose twins run holds the lock
    _run_folder(work, "young_unrecorded", age=2 * HOUR)  # running (or just died): within the grace
    _run_folder(work, "failed_recent", age=2 * DAY, report=True)
    _record(store, "failed_recent", status="partial", age=2 * DAY)
    _run_folder(work, "old_ok", age=3 * DAY, report=True)
    _record(store, "old_ok", age=3 * DAY)
    _run_folder(work, "elsewhere", age=4 * DAY, report=True)  # reported, recorded in another database
    _run_folder(work, "dead", age=5 * DAY)  # never recorded, untouched for days: died before record
    _run_folder(work, "regressed_old", age=10 * DAY, report=True)
    _record(store, "regressed_old", regression="failed", age=10 * DAY)
    return work


POLICY = RetentionPolicy(keep_runs=1, keep_failed_days=7, grace_hours=24, cache_budget_gib=None)


def test_run_folders_are_classified_recorded_failed_live_or_dead(work, store):
    with own_run_folder(work / "runs" / "cli_running"):
        _age(work / "runs" / "cli_running", 30 * HOUR)  # the lock, not a recent change, says it is live
        states = {f.path.name: f.state for f in classify_runs(work, store, grace_hours=24, current_run_key="current")}
    assert states == {
        "current": LIVE,
        "new_ok": RECORDED,
        "cli_running": LIVE,
        "young_unrecorded": LIVE,
        "failed_recent": FAILED,
        "old_ok": RECORDED,
        "elsewhere": RECORDED,
        "dead": DEAD,
        "regressed_old": FAILED,
    }
    # Once its twins run is gone (the lock released), the same old unrecorded folder is dead.
    after = {f.path.name: f.state for f in classify_runs(work, store, grace_hours=24, current_run_key="current")}
    assert after["cli_running"] == DEAD


def test_policy_keeps_recent_and_failed_outputs_removes_old_outputs_and_dead_runs(work, store):
    runs = work / "runs"
    with own_run_folder(runs / "cli_running"):
        _age(runs / "cli_running", 30 * HOUR)
        dry = apply_retention(work, store, POLICY, current_run_key="current", dry_run=True)
        assert all((runs / name / "result").is_dir() for name in ("old_ok", "elsewhere", "regressed_old", "dead"))
        report = apply_retention(work, store, POLICY, current_run_key="current")
    removed = {str(r.path.relative_to(work)) for r in report.removals}
    assert (
        removed
        == {str(r.path.relative_to(work)) for r in dry.removals}
        == {
            "runs/old_ok/result",  # recorded, not the newest
            "runs/elsewhere/result",
            "runs/regressed_old/result",  # failed, but older than keep_failed_days
            "runs/dead",  # the whole folder of a run that died before record
        }
    )
    assert all(r.error is None and r.size > 0 for r in report.removals)
    assert report.freed == sum(r.size for r in report.removals)
    for name in ("current", "new_ok", "cli_running", "young_unrecorded", "failed_recent"):
        assert (runs / name / "result" / "twins_bs1" / "img0_0.txt").is_file(), name
    for name in ("old_ok", "elsewhere", "regressed_old"):
        assert not (runs / name / "result").exists() and (runs / name / "report.md").is_file(), name
    assert not (runs / "dead").exists()
    assert (work.parent / "twins_results.db").is_file() and store.get_run("old_ok") is not None
    text = report.text()
    assert "removed runs/dead:" in text and "died before record" in text
    assert "the work dir's filesystem has" in text and "free of" in text
    assert "would remove runs/old_ok/result" in dry.text() and "nothing removed" in dry.text()
    # Applied again: nothing left to do.
    with own_run_folder(runs / "cli_running"):
        assert apply_retention(work, store, POLICY, current_run_key="current").removals == []


def test_a_large_keep_removes_only_dead_runs(work, store):
    report = apply_retention(work, store, RetentionPolicy(keep_runs=100, cache_budget_gib=None))
    assert {r.path.name for r in report.removals} == {"dead", "cli_running"}  # no lock held here: dead too


def test_the_recorded_run_applying_the_policy_takes_one_of_the_kept_places(work, store):
    # As at the end of `twins run` and the DAG's cleanup: the current run is recorded by then. With keep_runs 1
    # its outputs are the ones kept (never touched), so the previous run's go: keep_runs, not keep_runs + 1.
    _record(store, "current", age=0.1 * HOUR)
    report = apply_retention(work, store, POLICY, current_run_key="current")
    removed = {str(r.path.relative_to(work)) for r in report.removals}
    assert "runs/new_ok/result" in removed and not (work / "runs" / "new_ok" / "result").exists()
    assert (work / "runs" / "current" / "result" / "twins_bs1" / "img0_0.txt").is_file()


def test_policy_values_are_checked():
    for bad, words in (
        ({"keep_runs": -1}, "keep_runs -1"),
        ({"grace_hours": 0}, "grace_hours 0"),
        ({"keep_failed_days": float("nan")}, "keep_failed_days nan"),
        ({"cache_budget_gib": -2}, "cache_budget_gib -2"),
    ):
        with pytest.raises(InputError, match=words):
            RetentionPolicy(**bad)
    assert RetentionPolicy.from_mapping({"cache_budget_gib": None, "dataset_path": "x"}).cache_budget_gib is None


# ------------------------------------------------------------------------------------------ the cache budget


def _entry(cache: Path, section: str, name: str, size: int, used_ago: float) -> Path:
    path = cache / section / name
    path.mkdir(parents=True)
    (path / "data").write_bytes(b"\1" * size)
    _age(path, used_ago)
    return path


def test_cache_budget_evicts_least_recently_used_first_never_an_entry_in_use(tmp_path):
    cache = tmp_path / "cache"
    oldest = _entry(cache, "bins", "a", 400_000, 10 * DAY)
    held = _entry(cache, "compiled", "held", 400_000, 9 * DAY)  # old, but a running step holds it
    older = _entry(cache, "onnx", "b", 400_000, 8 * DAY)
    newer = _entry(cache, "bins", "c", 400_000, 3 * DAY)
    recent = _entry(cache, "compiled", "d", 400_000, 1 * HOUR)  # within the grace: a run may still use it
    mark_used(newer)  # used just now (a reuse): most recently used, although its files are old
    with in_use(held / "data"):
        _age(held, 9 * DAY)  # held since long before the grace began (a twins run going on for days)
        removals, left, notes = enforce_cache_budget(cache, 1_000_000, grace_hours=24, now=NOW)
    assert [r.path for r in removals] == [oldest, older]  # least recently used first
    assert not oldest.exists() and not older.exists()
    assert held.is_dir() and newer.is_dir() and recent.is_dir()
    assert {e.path for e in left} == {held, newer, recent}
    assert not [p for p in (cache / "bins").iterdir() if p.name.startswith(".")]  # nothing left aside
    assert "stays over its budget" in notes[0]  # the three left are in use


def test_cache_over_budget_with_only_entries_in_use_says_so(tmp_path):
    cache = tmp_path / "cache"
    _entry(cache, "bins", "a", 300_000, 1 * HOUR)
    removals, _left, notes = enforce_cache_budget(cache, 1000, grace_hours=24, now=NOW)
    assert removals == [] and "stays over its budget" in notes[0] and "in use" in notes[0]


def test_no_budget_removes_nothing_and_a_dry_run_removes_nothing(tmp_path):
    cache = tmp_path / "cache"
    old = _entry(cache, "reference", "x", 100_000, 30 * DAY)
    assert enforce_cache_budget(cache, None, grace_hours=24, now=NOW)[0] == []
    removals, _left, _notes = enforce_cache_budget(cache, 0, grace_hours=24, dry_run=True, now=NOW)
    assert [r.path for r in removals] == [old] and old.is_dir()


class _Compiler(Backend):
    name = "fake"
    artifact_suffix = ".bin"

    def compile(self, model: Path, batch_size: int, output_dir: Path, *, name: str | None = None) -> CompileResult:
        artifact = Path(output_dir) / f"m_bs{batch_size}.bin"
        artifact.write_bytes(b"compiled")
        return CompileResult(artifact=str(artifact), batch_size=batch_size, compile_seconds=0.1, backend=self.name)

    def infer(self, *args: Any, **kwargs: Any):  # pragma: no cover - not used here
        raise NotImplementedError

    def perf(self, *args: Any, **kwargs: Any):  # pragma: no cover - not used here
        raise NotImplementedError

    def options_key(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        return {}


def test_a_reused_cache_entry_counts_as_just_used(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"onnx")
    record = compile_cached(_Compiler(), model, 4, tmp_path / "cache")
    entry = Path(record["artifact"]).parent
    _age(entry, 5 * DAY)
    assert compile_cached(_Compiler(), model, 4, tmp_path / "cache")["cached"] is True
    assert time.time() - (entry / USE_STAMP).stat().st_mtime < HOUR
    # So the budget takes another entry first, or none.
    assert enforce_cache_budget(tmp_path / "cache", 0, grace_hours=24)[0] == []


# ------------------------------------------------------------------------------------------ twins clean


def test_twins_clean_dry_run_then_for_real(work, store, capsys):
    argv = ["clean", "--work-dir", str(work), "--results-url", store.url, "--keep-runs", "1", "--cache-budget-gib",
            "none"]  # fmt: skip
    assert main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: nothing removed" in out and "would remove runs/dead:" in out and "Would free" in out
    assert (work / "runs" / "dead").is_dir()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "removed runs/dead:" in out and "removed runs/old_ok/result:" in out
    assert "the work dir's filesystem has" in out
    assert not (work / "runs" / "dead").exists() and (work / "runs" / "old_ok" / "report.md").is_file()


def test_twins_clean_refuses_a_missing_database_or_work_dir(work, tmp_path, capsys):
    assert main(["clean", "--work-dir", str(work), "--results-url", f"sqlite:///{tmp_path / 'typo.db'}"]) == 2
    assert "no results database at" in capsys.readouterr().err
    assert not (tmp_path / "typo.db").exists() and (work / "runs" / "dead").is_dir()
    assert main(["clean", "--work-dir", str(tmp_path / "nowhere")]) == 2
    assert main(["clean", "--work-dir", str(work), "--keep-runs", "-1"]) == 2


def test_a_folder_whose_run_was_refused_at_record_is_not_the_recorded_run(work: Path, store: ResultsStore) -> None:
    # Two deployments' runs of one run id: the second was refused at record (its identity differs from the
    # row's). Its folder is not the recorded run's: once untouched past the grace period it is a dead run's.
    from twins_tasks.store import RUN_UID_FILE

    store.record_run(
        {"run_key": "scheduled__x", "source": "airflow:d", "config_key": "k", "config": {}, "model_name": "m",
         "weights": "w", "backend": "onnxruntime", "run_uid": "first-deployment"},
        [],
    )  # fmt: skip
    refused = _run_folder(work, "scheduled__x", age=0)
    (refused / RUN_UID_FILE).write_text("second-deployment\n")
    _age(refused, 2 * DAY)
    [folder] = [f for f in classify_runs(work, store, grace_hours=24, now=NOW) if f.path == refused]
    assert folder.state == DEAD, folder
    (refused / RUN_UID_FILE).write_text("first-deployment\n")  # the row's own run: recorded
    _age(refused, 2 * DAY)
    [folder] = [f for f in classify_runs(work, store, grace_hours=24, now=NOW) if f.path == refused]
    assert folder.state == RECORDED, folder
