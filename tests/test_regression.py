"""The regression alarm: medians of perf rounds, a drop counts only beyond threshold AND measured noise, and a
suspect drop is re-measured before it fails; an incomplete run is reported, not silently passed."""

from __future__ import annotations

import pytest

from twins_tasks.regression import check_regression, compare, throughput_drop
from twins_tasks.store import ResultsStore
from twins_tasks.types import Thresholds


def _row(bs: int, tp: float, lo: float | None = None, hi: float | None = None, **extra):
    return {"batch_size": bs, "throughput": tp, "throughput_min": lo, "throughput_max": hi, "top1": 50.0, **extra}


def test_a_drop_inside_the_measured_spread_is_noise():
    # The case: bs1 0.95 -> 0.78 img/s on a loaded host, but each run's own rounds spread as widely.
    dropped, line = throughput_drop(_row(1, 0.95, 0.70, 1.60), _row(1, 0.78, 0.62, 1.40), Thresholds())
    assert not dropped and "ranges overlap: within noise" in line and "drop +17.9%" in line


def test_a_drop_beyond_threshold_and_spread_is_a_suspect():
    dropped, line = throughput_drop(_row(1, 10.0, 9.5, 10.4), _row(1, 6.8, 6.5, 7.1), Thresholds())
    assert dropped and "drop +32.0%" in line and "within noise" not in line
    # Beyond the spread but within the threshold: not a regression either.
    assert not throughput_drop(_row(1, 10.0, 9.9, 10.1), _row(1, 9.5, 9.4, 9.6), Thresholds())[0]


def test_a_speed_up_is_not_called_overlapping_noise():
    # Seen in a deployed run: 4.69 -> 5.30 img/s with disjoint rounds was reported as "ranges overlap".
    dropped, line = throughput_drop(_row(1, 4.69, 4.68, 4.73), _row(1, 5.30, 5.21, 5.30), Thresholds())
    assert not dropped and "faster beyond noise" in line and "overlap" not in line


def test_failed_batch_sizes_are_not_compared_as_zero():
    regressions, notes, suspects = compare(
        [_row(1, 5.0, 4.9, 5.1), {"batch_size": 4, "status": "failed", "error": "perf: boom"}],
        [_row(1, 5.0, 4.9, 5.1), _row(4, 8.0, 7.9, 8.1)],
        Thresholds(),
    )
    assert regressions == [] and suspects == [] and len(notes) == 2  # bs1 top-1 and throughput only


def _record(store: ResultsStore, key: str, rows, status: str = "success") -> None:
    run = {
        "run_key": key,
        "source": "cli",
        "config_key": "cfg",
        "config": {},
        "model_name": "twins_svt_large",
        "weights": "random-init seed=0",
        "random_init": True,
        "backend": "onnxruntime",
        "status": status,
    }
    store.record_run(run, rows)


@pytest.fixture
def store(tmp_path):
    return ResultsStore(f"sqlite:///{tmp_path / 'results.db'}")


def test_a_suspect_drop_is_re_measured_and_noise_passes(store):
    _record(store, "before", [_row(1, 10.0, 9.8, 10.2, status="ok")])
    assert check_regression(store, "before", "cfg", Thresholds()).status == "first"
    _record(store, "after", [_row(1, 6.0, 5.9, 6.1, status="ok")])
    calls = []

    def remeasure(bs):
        calls.append(bs)
        return {"throughput": 9.9, "throughput_min": 9.7, "throughput_max": 10.1}

    outcome = check_regression(store, "after", "cfg", Thresholds(), remeasure=remeasure)
    assert calls == [1] and outcome.status == "passed" and outcome.ok
    assert any("NOT confirmed by a re-measurement" in n for n in outcome.notes)
    run = store.get_run("after")
    assert run["regression_status"] == "passed" and run["regression_details"]["compared_with"] == "before"


def test_a_confirmed_drop_fails_and_names_both_measurements(store):
    _record(store, "before", [_row(1, 10.0, 9.8, 10.2, status="ok")])
    _record(store, "after", [_row(1, 6.0, 5.9, 6.1, status="ok")])
    outcome = check_regression(
        store, "after", "cfg", Thresholds(), remeasure=lambda bs: {"throughput": 6.1, "throughput_min": 6.0}
    )
    assert outcome.status == "failed" and not outcome.ok
    (line,) = outcome.regressions
    assert "10.00 -> 6.00 img/s" in line and "confirmed by a re-measurement" in line and "-> 6.10 img/s" in line
    assert store.get_run("after")["regression_status"] == "failed"
    assert "REGRESSION  bs1 throughput" in outcome.text()


def test_an_incomplete_run_is_not_ok_and_says_why(store):
    _record(store, "before", [_row(1, 10.0, 9.8, 10.2, status="ok"), _row(4, 20.0, 19.8, 20.2, status="ok")])
    _record(
        store,
        "partial",
        [_row(1, 10.0, 9.8, 10.2, status="ok"), {"batch_size": 4, "status": "failed", "error": "perf: device lost"}],
        status="partial",
    )
    outcome = check_regression(store, "partial", "cfg", Thresholds())
    assert outcome.status == "passed" and not outcome.ok
    assert outcome.incomplete == {"4": "perf: device lost"}
    assert "Incomplete: bs4 has no result: perf: device lost" in outcome.text()
    # A partial run never becomes the reference of the next comparison.
    assert store.last_successful("cfg")["run_key"] == "before"
