"""What a notification says: a failed run (with the regression check's verdict table) or an overdue run.

Pure functions from plain values to a :class:`Message` (subject, plain text and HTML): no Airflow, no sending.
The DAG's ``notify`` task and its deadline alert (``plugins/twins_airflow/notify.py``) gather the facts (task
states, errors, the recorded verdict, links) and send what these build. Everything that came from a run (error
messages, run ids) is escaped in the HTML part.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .report import VERDICT_COLUMNS, plain_table

SUBJECT_PREFIX = "[Twins-SVT-L]"
# The verdict table's columns (as the regression check's task log shows them), from a check's recorded fields.
MAX_ERROR_CHARS = 300  # one line of an error in a mail; the task's log has all of it


@dataclass(frozen=True)
class Message:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class FailedTask:
    """A task instance that failed: ``map_index`` -1 when not mapped; ``label`` e.g. ``bs4`` for a mapped one."""

    task_id: str
    map_index: int = -1
    error: str | None = None  # the first line of the exception it failed with, when known
    log_url: str | None = None
    label: str | None = None

    @property
    def name(self) -> str:
        if self.map_index < 0:
            return self.task_id
        return f"{self.task_id} [{self.label or f'map index {self.map_index}'}]"


@dataclass(frozen=True)
class RunLinks:
    """Where a reader goes next: the run's results page (the Twins results tab) and its Airflow page."""

    results: str
    airflow: str | None = None


def first_line(error: object, limit: int = MAX_ERROR_CHARS) -> str:
    """The first non-empty line of an error, clipped: what a mail shows of it."""
    line = next((part.strip() for part in str(error).splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


# --- the verdict table ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerdictTable:
    """The regression check's verdict as recorded (``regression_details``): a headline, then per batch size the
    rows of :data:`VERDICT_COLUMNS`, and lines for what has no row (batch sizes without a result, older records)."""

    status: str
    headline: str
    by_batch_size: dict[int, list[list[str]]]
    lines: list[str]


def verdict_table(status: str | None, details: Mapping[str, Any] | None) -> VerdictTable | None:
    """The verdict of a recorded run; None when its check did not record one."""
    if not status and not details:
        return None
    details = details or {}
    status = str(status or details.get("status") or "unknown")
    by_size: dict[int, list[list[str]]] = {}
    for check in details.get("checks") or []:
        if isinstance(check, Mapping) and check.get("batch_size") is not None:
            row = [str(check.get(column) or "-") for column in VERDICT_COLUMNS]
            by_size.setdefault(int(check["batch_size"]), []).append(row)
    lines = [f"bs{bs} has no result: {why}" for bs, why in (details.get("incomplete") or {}).items()]
    if not by_size:  # a verdict recorded before the table existed: its lines
        lines += [f"REGRESSION {line}" for line in details.get("regressions") or []]
        lines += [f"ok {line}" for line in details.get("notes") or []]
    headline = str(details.get("headline") or f"Regression check: {status.upper()}")
    return VerdictTable(status, headline, dict(sorted(by_size.items())), lines)


def _verdict_text(verdict: VerdictTable) -> list[str]:
    lines = [verdict.headline]
    for bs, rows in verdict.by_batch_size.items():
        table = plain_table(VERDICT_COLUMNS, rows, first_left=True)
        lines += ["", f"bs{bs}", *("  " + line for line in table.split("\n"))]
    if verdict.lines:
        lines += ["", *verdict.lines]
    return lines


def _verdict_html(verdict: VerdictTable) -> list[str]:
    parts = [f"<p><b>{_e(verdict.headline)}</b></p>"]
    for bs, rows in verdict.by_batch_size.items():
        parts.append(_html_table(f"bs{bs}", VERDICT_COLUMNS, rows))
    if verdict.lines:
        parts.append("<ul>" + "".join(f"<li>{_e(line)}</li>" for line in verdict.lines) + "</ul>")
    return parts


def _html_table(caption: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cell = 'style="border:1px solid #999;padding:2px 6px;text-align:{}"'
    head = "".join(f"<th {cell.format('left')}>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td {cell.format('left' if i == 0 else 'right')}>{_e(value)}</td>" for i, value in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return (
        '<table style="border-collapse:collapse;margin:6px 0">'
        f'<caption style="text-align:left;font-weight:bold">{_e(caption)}</caption>'
        f"<tr>{head}</tr>{body}</table>"
    )


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _link(url: str, text: str | None = None) -> str:
    return f'<a href="{_e(url)}">{_e(text or url)}</a>'


# --- the messages -----------------------------------------------------------------------------------------------


def run_failed_message(
    *,
    dag_id: str,
    run_id: str,
    links: RunLinks,
    failed: Sequence[FailedTask],
    verdict: VerdictTable | None = None,
    regression_failed: bool = False,
    not_run: int = 0,
) -> Message:
    """A run that failed: the verdict table (when the check recorded one) and the failed tasks with their errors.

    ``regression_failed``: the regression check is what failed (the subject says so); ``not_run``: tasks that
    did not run because an upstream task failed.
    """
    if regression_failed:
        what = "regression check failed"
        intro = f"The regression check of run {run_id} ({dag_id}) failed."
    else:
        what = "run failed"
        intro = f"Run {run_id} ({dag_id}) failed."
    subject = f"{SUBJECT_PREFIX} {what}: {run_id}"
    text = [intro, "", f"Results: {links.results}"]
    body = [f"<p>{_e(intro)}</p>", f"<p>Results: {_link(links.results)}</p>"]
    if links.airflow:
        text.append(f"Airflow: {links.airflow}")
        body.append(f"<p>Airflow: {_link(links.airflow)}</p>")
    if verdict is not None:
        text += ["", *_verdict_text(verdict)]
        body += _verdict_html(verdict)
    if failed:
        text += ["", f"Failed tasks ({len(failed)}):"]
        items = []
        for task in failed:
            error = task.error or "no error recorded: see its log"
            text.append(f"- {task.name}: {error}" + (f"\n  log: {task.log_url}" if task.log_url else ""))
            log = f" ({_link(task.log_url, 'log')})" if task.log_url else ""
            items.append(f"<li><b>{_e(task.name)}</b>: {_e(error)}{log}</li>")
        body += [f"<p>Failed tasks ({len(failed)}):</p>", "<ul>" + "".join(items) + "</ul>"]
    if not_run:
        line = f"{not_run} task(s) did not run because a task before them failed."
        text += ["", line]
        body.append(f"<p>{_e(line)}</p>")
    return Message(subject, "\n".join(text) + "\n", _document(subject, body))


def overdue_message(
    *,
    dag_id: str,
    run_id: str,
    links: RunLinks,
    hours: float,
    queued_at: dt.datetime | str | None,
    state: str | None,
) -> Message:
    """A run still not finished ``hours`` after it was queued (a nightly: after its schedule)."""
    since = _when(queued_at)
    subject = f"{SUBJECT_PREFIX} run not finished after {_hours(hours)}: {run_id}"
    intro = (
        f"Run {run_id} ({dag_id}) was queued at {since} and has not finished {_hours(hours)} later "
        f"(state: {state or 'unknown'})."
    )
    hint = "A task may be stuck (a device, a pool without free slots, a worker that is down): see the run in Airflow."
    text = [intro, hint, "", f"Results: {links.results}"]
    body = [f"<p>{_e(intro)}</p>", f"<p>{_e(hint)}</p>", f"<p>Results: {_link(links.results)}</p>"]
    if links.airflow:
        text.append(f"Airflow: {links.airflow}")
        body.append(f"<p>Airflow: {_link(links.airflow)}</p>")
    return Message(subject, "\n".join(text) + "\n", _document(subject, body))


def _document(title: str, body: Sequence[str]) -> str:
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{_e(title)}</title></head>'
        f'<body style="font-family:sans-serif">{"".join(body)}</body></html>'
    )


def _hours(hours: float) -> str:
    if hours >= 1:
        return f"{hours:g} h"
    return f"{hours * 60:g} min" if hours * 60 >= 1 else f"{hours * 3600:.0f} s"


def _when(value: dt.datetime | str | None) -> str:
    if value is None or value == "":
        return "an unknown time"
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    else:
        when = value
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC)
    return when.strftime("%Y-%m-%d %H:%M UTC")
