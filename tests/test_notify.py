"""Notifications: the message builder (twins_tasks.notification) and the mail glue (twins_airflow.notify), against a
real SMTP server (tests/_smtp.py). The DAG's own runs mail in tests/test_dag.py and tests/test_deploy.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any
from urllib.parse import quote

import pytest
from _smtp import RECIPIENTS, SENDER, assert_verdict_table, html, plain

DAG_ID = "twins_svt_l_validation"
RUN_ID = "scheduled__2026-11-29T02:00:00+00:00"
BASE_URL = "https://airflow.example.com"
CONN_ENV = "AIRFLOW_CONN_TWINS_NOTIFY_SMTP"
RESULTS_TAB = f"{BASE_URL}/dags/{DAG_ID}/runs/{quote(RUN_ID, safe='')}/plugin/twins-run-results"


def _verdict_details() -> dict[str, Any]:
    """A failed check's ``regression_details`` as the regression check records them."""
    from twins_tasks.regression import Check, RegressionOutcome

    checks = [
        Check(1, "throughput", "10.61 img/s (median of 7 runs)", "10.55 img/s", "-0.6%", "-10.0%", "±2.1%", "ok"),
        Check(
            4, "throughput", "11.80 img/s (median of 7 runs)", "9.02 img/s", "-23.6%", "-10.0%", "±1.9%", "regression"
        ),
        Check(4, "top-1", "100.00%", "100.00%", "+0.00 pp", "-0.50 pp", "", "ok"),
    ]
    return RegressionOutcome("failed", checks=checks, changed=["onnxruntime 1.31.1 -> 1.32.0"]).details()


class StubTaskInstance:
    """What notify_run asks of the running task instance: the run's task states and XComs."""

    dag_id, run_id, task_id = DAG_ID, RUN_ID, "notify"

    def __init__(self, states: dict[tuple[str, int], str], xcoms: dict[tuple[str, int, str], Any]) -> None:
        self.states, self.xcoms = states, xcoms

    def get_task_breadcrumbs(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        assert (dag_id, run_id) == (DAG_ID, RUN_ID)
        return [{"task_id": t, "map_index": i, "state": s} for (t, i), s in self.states.items()]

    def xcom_pull(self, task_ids: str, map_indexes: int = -1, key: str = "return_value") -> Any:
        return self.xcoms.get((task_ids, map_indexes, key))


class StubStore:
    def __init__(self, run: dict[str, Any] | None) -> None:
        self.run = run

    def get_run(self, run_key: str) -> dict[str, Any] | None:
        assert run_key == RUN_ID
        return self.run


@pytest.fixture
def mail_on(smtp_server, monkeypatch):
    monkeypatch.setenv(CONN_ENV, smtp_server.connection())
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE_URL + "/")
    return smtp_server


@pytest.fixture
def mail_off(monkeypatch):
    monkeypatch.delenv(CONN_ENV, raising=False)


def _notify(states, xcoms=None, run=None) -> str:
    from twins_airflow.notify import notify_run

    ti = StubTaskInstance(states, xcoms or {})
    return notify_run({"ti": ti}, store=lambda: StubStore(run))


def test_failed_regression_check_mails_the_verdict_table_once(mail_on):
    states = {
        ("plan", -1): "success",
        ("batch_sizes", -1): "success",
        ("per_batch_size.perf", 0): "success",
        ("per_batch_size.perf", 1): "failed",
        ("record", -1): "success",
        ("regression_check", -1): "failed",
    }
    xcoms = {
        ("batch_sizes", -1, "return_value"): [1, 4],
        ("per_batch_size.perf", 1, "twins_error"): "TwinsTaskError: perf of bs4 crashed <exit 139> {{ ti }}",
        ("regression_check", -1, "twins_error"): "AirflowFailException: 1 problem(s) (compared with run a)",
    }
    details = _verdict_details()
    outcome = _notify(states, xcoms, {"regression_status": "failed", "regression_details": details})
    assert outcome == f"mailed {', '.join(RECIPIENTS)}"
    (mail,) = mail_on.mails  # one mail for the run, however many tasks failed
    assert mail["Subject"] == f"[Twins-SVT-L] regression check failed: {RUN_ID}"
    assert mail["From"] == SENDER and mail["To"] == ", ".join(RECIPIENTS)
    assert mail.get_content_type() == "multipart/alternative"
    text = plain(mail)
    assert "Regression check: FAILED: onnxruntime 1.31.1 -> 1.32.0, bs4 -23.6% beyond noise" in text
    # The verdict table of each batch size, as the task log shows it.
    assert_verdict_table(text, details)
    assert "  throughput  11.80 img/s (median of 7 runs)  9.02 img/s    -23.6%    -10.0%  ±1.9%  regression" in text
    assert f"Results: {RESULTS_TAB}" in text
    # An error quoted as it is: not a template.
    assert "- per_batch_size.perf [bs4]: TwinsTaskError: perf of bs4 crashed <exit 139> {{ ti }}" in text
    assert f"log: {BASE_URL}/dags/{DAG_ID}/runs/{quote(RUN_ID, safe='')}/tasks/per_batch_size.perf/mapped/1" in text
    page = html(mail)
    assert page.count("<table") == 2 and f'href="{RESULTS_TAB}"' in page
    assert '<td style="border:1px solid #999;padding:2px 6px;text-align:right">regression</td>' in page
    assert "crashed &lt;exit 139&gt; {{ ti }}" in page and "<exit 139>" not in page  # escaped, not rendered


def test_failed_run_without_results_mails_its_failed_tasks(mail_on):
    states = {("plan", -1): "failed", ("preprocess", -1): "upstream_failed", ("export", -1): "upstream_failed"}
    error = "TwinsInputError: bad input (not retried): dataset folder /nowhere does not exist"
    _notify(states, {("plan", -1, "twins_error"): error}, run=None)
    (mail,) = mail_on.mails
    assert mail["Subject"] == f"[Twins-SVT-L] run failed: {RUN_ID}"
    text = plain(mail)
    assert f"- plan: {error}" in text and "Regression check" not in text
    assert "2 task(s) did not run because a task before them failed." in text
    assert f"Results: {RESULTS_TAB}" in text


def test_a_successful_run_mails_nothing(mail_on):
    assert _notify({("plan", -1): "success", ("regression_check", -1): "success"}) == "nothing to notify"
    assert mail_on.mails == []


def test_notifications_are_off_without_the_connection(mail_off, caplog):
    from twins_airflow.notify import run_overdue

    caplog.set_level(logging.INFO, logger="twins_airflow.notify")
    assert _notify({("plan", -1): "failed"}) == "notifications off"
    running = {"dag_id": DAG_ID, "dag_run_id": RUN_ID, "state": "running", "queued_at": "2026-11-29T02:00:05Z"}
    assert asyncio.run(run_overdue({"dag_run": running}, hours=6)) == "notifications off"
    off = [r.getMessage() for r in caplog.records if "Notifications are off" in r.getMessage()]
    assert len(off) == 2 and "'twins_notify_smtp'" in off[0]


def test_a_connection_without_recipients_is_an_error(smtp_server, monkeypatch):
    monkeypatch.setenv(CONN_ENV, smtp_server.connection(to=""))
    with pytest.raises(ValueError, match="has no recipients: set its extra to e.g."):
        _notify({("plan", -1): "failed"})


def test_an_overdue_run_is_mailed_and_a_finished_one_is_not(mail_on):
    from twins_airflow.notify import run_overdue

    run = {"dag_id": DAG_ID, "dag_run_id": RUN_ID, "state": "running", "queued_at": "2026-11-29T02:00:05Z"}
    assert asyncio.run(run_overdue({"dag_run": run}, hours=6)).startswith("mailed")
    # Airflow keeps a failed run's deadline: a run that failed in time already had its mail.
    assert asyncio.run(run_overdue({"dag_run": {**run, "state": "failed"}}, hours=6)) == "run failed: nothing to notify"
    (mail,) = mail_on.mails
    assert mail["Subject"] == f"[Twins-SVT-L] run not finished after 6 h: {RUN_ID}"
    assert "was queued at 2026-11-29 02:00 UTC and has not finished 6 h later (state: running)" in plain(mail)
    assert f"Results: {RESULTS_TAB}" in plain(mail)


def test_deadline_setting():
    from airflow.sdk import DeadlineReference

    from twins_airflow.notify import deadline_alert, deadline_hours, run_overdue

    assert (
        deadline_hours({"TWINS_DEADLINE_HOURS": "6"}) == 6.0 and deadline_hours({"TWINS_DEADLINE_HOURS": "0.5"}) == 0.5
    )
    assert (
        deadline_hours({}) is None  # off unless a deployment sets it: `airflow dags test` cannot run a deadline
        and deadline_hours({"TWINS_DEADLINE_HOURS": "off"}) is None
        and deadline_alert({"TWINS_DEADLINE_HOURS": "OFF"}) is None
    )
    for bad in ("0", "-1", "six", "inf"):
        with pytest.raises(ValueError, match=f"TWINS_DEADLINE_HOURS='{bad}': give hours above 0"):
            deadline_hours({"TWINS_DEADLINE_HOURS": bad})
    alert = deadline_alert({"TWINS_DEADLINE_HOURS": "2"})
    assert alert.reference == DeadlineReference.DAGRUN_QUEUED_AT and alert.interval == dt.timedelta(hours=2)
    assert alert.callback.path == f"{run_overdue.__module__}.run_overdue" and alert.callback.kwargs == {"hours": 2.0}


def test_a_failed_task_keeps_the_first_line_of_its_error():
    from twins_airflow.exceptions import TwinsInputError
    from twins_airflow.notify import remember_error

    pushed: dict[str, Any] = {}

    class TI:
        def xcom_push(self, key: str, value: Any) -> None:
            pushed[key] = value

    remember_error({"ti": TI(), "exception": TwinsInputError("bad input (not retried): no such folder\n  more")})
    assert pushed == {"twins_error": "TwinsInputError: bad input (not retried): no such folder"}
