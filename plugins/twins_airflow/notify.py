"""Notifications by mail: a failed run or regression check (the DAG's ``notify`` task), an overdue run (a deadline).

Sent through Airflow's notifier mechanism and the SMTP provider (:class:`TwinsNotifier`, an ``SmtpNotifier``) on
the Airflow Connection ``twins_notify_smtp`` (type SMTP: host, port, login, password; its extra holds ``to``, the
recipients, comma-separated, and the provider's own keys such as ``from_email``, ``disable_tls``,
``disable_ssl``). Without that Connection notifications are off: a log line says so, nothing fails.

- :func:`notify_run` is the body of the DAG's last task, a *teardown* downstream of every other task: it runs
  once the run's tasks are done, whatever their states, and Airflow leaves teardowns out of the run's state, so
  the run stays failed or successful as it was. One mail per failed run, not one per failed (mapped) task.
- :func:`remember_error` (every task's ``on_failure_callback``) keeps the first line of a failed task's error
  in an XCom, which is how the mail names each failed task's error whichever worker ran it.
- :func:`deadline_alert` is the DAG's deadline (``TWINS_DEADLINE_HOURS`` after a run was queued, i.e. after
  a nightly's schedule): the scheduler queues :func:`run_overdue` in the triggerer when a run misses it.

What a mail says is built by :mod:`twins_tasks.notification` (no Airflow there).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
from collections.abc import Callable, Mapping
from email.mime.text import MIMEText
from functools import cached_property
from typing import Any, NamedTuple
from urllib.parse import quote

from airflow.providers.smtp.hooks.smtp import SmtpHook
from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import BaseHook, conf
from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference
from airflow.sdk.exceptions import AirflowNotFoundException

from twins_airflow.dag_names import BATCH_GROUP_ID, BATCH_SIZES_TASK_ID, RUN_RESULTS_ROUTE
from twins_tasks.notification import (
    FailedTask,
    Message,
    RunLinks,
    first_line,
    overdue_message,
    run_failed_message,
    verdict_table,
)

log = logging.getLogger(__name__)

NOTIFY_CONN_ID = "twins_notify_smtp"
ERROR_XCOM_KEY = "twins_error"  # a failed task's first error line (remember_error)
REGRESSION_TASK_ID = "regression_check"
DEADLINE_ENV = "TWINS_DEADLINE_HOURS"
DEFAULT_DEADLINE_HOURS = 6.0  # what the deployments set
FINISHED_RUN_STATES = ("success", "failed")


class MailSettings(NamedTuple):
    conn_id: str
    to: list[str]


def _recipients(conn_id: str, extra: Mapping[str, Any]) -> list[str]:
    raw = extra.get("to")
    parts = raw if isinstance(raw, list) else str(raw or "").replace(";", ",").split(",")
    to = [str(p).strip() for p in parts if str(p).strip()]
    if not to:
        # A Connection without recipients is a mistake, not "off": the task (or the deadline callback) fails.
        raise ValueError(
            f"Airflow Connection {conn_id!r} has no recipients: set its extra to e.g. "
            '{"to": "a@example.com, b@example.com", "from_email": "airflow@example.com"}'
        )
    return to


def _off(conn_id: str) -> None:
    log.info("Notifications are off: no Airflow Connection %r (type SMTP; see README, 'Notifications')", conn_id)


def mail_settings(conn_id: str = NOTIFY_CONN_ID) -> MailSettings | None:
    """The Connection's recipients; None (notifications off, logged) when the Connection does not exist."""
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        _off(conn_id)
        return None
    return MailSettings(conn_id, _recipients(conn_id, conn.extra_dejson))


async def amail_settings(conn_id: str = NOTIFY_CONN_ID) -> MailSettings | None:
    """:func:`mail_settings` for async code (the triggerer)."""
    try:
        conn = await BaseHook.aget_connection(conn_id)
    except AirflowNotFoundException:
        _off(conn_id)
        return None
    return MailSettings(conn_id, _recipients(conn_id, conn.extra_dejson))


class TwinsSmtpHook(SmtpHook):
    """The SMTP provider's hook, sending the plain text beside the HTML (``multipart/alternative``).

    :param text_content: the plain-text part, put before the HTML one (mail readers show the last part they can).
    """

    def __init__(
        self,
        smtp_conn_id: str = SmtpHook.default_conn_name,
        auth_type: str = "basic",
        *,
        text_content: str | None = None,
    ) -> None:
        super().__init__(smtp_conn_id=smtp_conn_id, auth_type=auth_type)
        self.text_content = text_content

    def _build_mime_message(self, *args: Any, **kwargs: Any) -> Any:
        msg, recipients = super()._build_mime_message(*args, **kwargs)
        if self.text_content is not None:
            text = MIMEText(self.text_content, "plain", kwargs.get("mime_charset", "utf-8"))
            msg.set_payload([text, *msg.get_payload()])
        return msg, recipients


class TwinsNotifier(SmtpNotifier):
    """An ``SmtpNotifier`` for a :class:`~twins_tasks.notification.Message` already built: plain text and HTML.

    Its fields are not templates (an error message quoted in a mail may contain ``{{``): nothing is rendered.
    The Connection's ``from_email`` is the sender, as for any ``SmtpNotifier``.
    """

    def __init__(self, message: Message, *, to: list[str], smtp_conn_id: str = NOTIFY_CONN_ID, **kwargs: Any) -> None:
        super().__init__(
            to=to,
            subject=message.subject,
            html_content=message.html,
            smtp_conn_id=smtp_conn_id,
            mime_subtype="alternative",
            **kwargs,
        )
        self.text_content = message.text

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Nothing to render: the message is built, and a ``{{`` quoted from an error must stay as it is."""

    @cached_property
    def hook(self) -> SmtpHook:
        return TwinsSmtpHook(smtp_conn_id=self.smtp_conn_id, auth_type=self.auth_type, text_content=self.text_content)


def send(message: Message, settings: MailSettings) -> None:
    TwinsNotifier(message, to=settings.to, smtp_conn_id=settings.conn_id)({})
    log.info("Mailed %r to %s", message.subject, ", ".join(settings.to))


async def asend(message: Message, settings: MailSettings) -> None:
    await TwinsNotifier(message, to=settings.to, smtp_conn_id=settings.conn_id, context={})
    log.info("Mailed %r to %s", message.subject, ", ".join(settings.to))


# --- links ------------------------------------------------------------------------------------------------------


def airflow_base_url() -> str:
    """The Airflow UI's address (``[api] base_url``), with Airflow's own fallback for its task-log links."""
    return str(conf.get("api", "base_url", fallback="http://localhost:8080/") or "http://localhost:8080/").rstrip("/")


def _run_url(dag_id: str, run_id: str) -> str:
    return f"{airflow_base_url()}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def run_links(dag_id: str, run_id: str) -> RunLinks:
    """The run's "Twins results" tab and its page in the Airflow UI."""
    run = _run_url(dag_id, run_id)
    return RunLinks(results=f"{run}/plugin/{RUN_RESULTS_ROUTE}", airflow=run)


def task_log_url(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """A task instance's page in the Airflow UI (its log), as Airflow's own ``log_url`` builds it."""
    mapped = f"/mapped/{map_index}" if map_index >= 0 else ""
    return f"{_run_url(dag_id, run_id)}/tasks/{quote(task_id, safe='')}{mapped}"


# --- a failed run -----------------------------------------------------------------------------------------------


def remember_error(context: Mapping[str, Any]) -> None:
    """``on_failure_callback``: keep the first line of the task's error (an XCom) for the run's notification."""
    error = context.get("exception")
    if error is None:
        return
    text = first_line(f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error)
    try:
        context["ti"].xcom_push(key=ERROR_XCOM_KEY, value=text)
    except Exception:  # the mail then says "see its log"; the task's own failure must stay what it was
        log.warning("Could not keep the error of the failed task for its notification", exc_info=True)


def _batch_labels(ti: Any) -> list[str]:
    """``bs<N>`` for each map index of the batch-size group (empty when the mapping source has no output)."""
    try:
        sizes = ti.xcom_pull(task_ids=BATCH_SIZES_TASK_ID) or []
    except Exception:
        log.warning("Could not read the run's batch sizes", exc_info=True)
        return []
    return [f"bs{bs}" for bs in sizes]


def _failed_tasks(ti: Any, crumbs: list[dict[str, Any]]) -> list[FailedTask]:
    labels = _batch_labels(ti) if any(c["task_id"].startswith(BATCH_GROUP_ID + ".") for c in crumbs) else []
    failed = []
    for crumb in crumbs:
        task_id, map_index = str(crumb["task_id"]), int(crumb.get("map_index", -1))
        try:
            error = ti.xcom_pull(task_ids=task_id, map_indexes=map_index, key=ERROR_XCOM_KEY)
        except Exception:
            log.warning("Could not read the error of %s[%d]", task_id, map_index, exc_info=True)
            error = None
        failed.append(
            FailedTask(
                task_id=task_id,
                map_index=map_index,
                error=error,
                log_url=task_log_url(ti.dag_id, ti.run_id, task_id, map_index),
                label=labels[map_index] if 0 <= map_index < len(labels) else None,
            )
        )
    return failed


def notify_run(
    context: Mapping[str, Any], *, conn_id: str = NOTIFY_CONN_ID, store: Callable[[], Any] | None = None
) -> str:
    """Mail once when a task of this run failed: the regression check's verdict table (from the results
    database) and each failed task with its error and a link to its log. What it did, in words.

    :param store: returns the results database (default: the ``twins_results`` Connection's).
    """
    ti = context["ti"]
    crumbs = [c for c in ti.get_task_breadcrumbs(dag_id=ti.dag_id, run_id=ti.run_id) if c["task_id"] != ti.task_id]
    failed_crumbs = [c for c in crumbs if c.get("state") == "failed"]
    if not failed_crumbs:
        log.info("No task of run %s failed: nothing to notify", ti.run_id)
        return "nothing to notify"
    settings = mail_settings(conn_id)
    if settings is None:
        return "notifications off"
    verdict = None
    try:
        if store is None:
            from twins_airflow.hooks import ResultsHook

            store = lambda: ResultsHook().store  # noqa: E731
        recorded = store().get_run(ti.run_id)
        if recorded:
            verdict = verdict_table(recorded.get("regression_status"), recorded.get("regression_details"))
    except Exception:  # the mail goes out without the table rather than not at all
        log.warning("Could not read run %s from the results database", ti.run_id, exc_info=True)
    message = run_failed_message(
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        links=run_links(ti.dag_id, ti.run_id),
        failed=_failed_tasks(ti, failed_crumbs),
        verdict=verdict,
        regression_failed=any(c["task_id"] == REGRESSION_TASK_ID for c in failed_crumbs),
        not_run=sum(1 for c in crumbs if c.get("state") == "upstream_failed"),
    )
    log.info("Notification:\n%s", message.text)
    send(message, settings)
    return f"mailed {', '.join(settings.to)}"


# --- an overdue run ---------------------------------------------------------------------------------------------


def deadline_hours(environ: Mapping[str, str] = os.environ) -> float | None:
    """``TWINS_DEADLINE_HOURS``: hours after a run is queued (a nightly: its schedule) by which it must have
    finished; unset or ``off``: no deadline. The deployments set it (docker-compose.yaml and ``make up``:
    :data:`DEFAULT_DEADLINE_HOURS`); it is not on by itself because Airflow 3.3.2's ``dag.test()`` (``airflow
    dags test``, ``make demo``) fails at the end of a successful run of a DAG with a deadline: its
    ``DagRun.update_state`` looks the alerts up by id where the test's DAG holds their definitions."""
    raw = environ.get(DEADLINE_ENV, "").strip()
    if raw.lower() in ("", "off"):
        return None
    try:
        hours = float(raw)
    except ValueError:
        hours = math.nan
    if not 0 < hours < math.inf:
        raise ValueError(f"{DEADLINE_ENV}={raw!r}: give hours above 0 (e.g. 6 or 0.5), or 'off' for no deadline")
    return hours


def deadline_alert(environ: Mapping[str, str] = os.environ) -> DeadlineAlert | None:
    """The DAG's ``deadline``: :func:`run_overdue` in the triggerer when a run is not finished
    :func:`deadline_hours` after it was queued; None when off. (Deadline alerts are experimental in Airflow 3.)"""
    hours = deadline_hours(environ)
    if hours is None:
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=dt.timedelta(hours=hours),
        callback=AsyncCallback(run_overdue, kwargs={"hours": hours}),
    )


async def run_overdue(
    context: Mapping[str, Any] | None = None, hours: float = DEFAULT_DEADLINE_HOURS, conn_id: str = NOTIFY_CONN_ID
) -> str:
    """The deadline's callback (in the triggerer): mail that the run has not finished. ``context`` is the
    scheduler's: the DAG run as it was when the deadline passed."""
    dag_run = dict((context or {}).get("dag_run") or {})
    dag_id, run_id, state = dag_run.get("dag_id", "?"), dag_run.get("dag_run_id", "?"), dag_run.get("state")
    # Airflow drops a run's deadline when the run succeeds in time, not when it fails: a failed run was mailed.
    if state in FINISHED_RUN_STATES:
        log.info("Run %s finished (%s) before its deadline: nothing to notify", run_id, state)
        return f"run {state}: nothing to notify"
    settings = await amail_settings(conn_id)
    if settings is None:
        return "notifications off"
    message = overdue_message(
        dag_id=dag_id,
        run_id=run_id,
        links=run_links(dag_id, run_id),
        hours=hours,
        queued_at=dag_run.get("queued_at"),
        state=state,
    )
    await asend(message, settings)
    return f"mailed {', '.join(settings.to)}"
