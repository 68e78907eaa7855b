"""The history a regression check compares with, and the marks people put on it.

Per configuration key and batch size, :func:`batch_history` reads the recorded runs (oldest first) with their
marks; :func:`select_reference` picks the reference from them:

* **eligible** runs only: the run completed (status ``success``) and its regression check completed and passed
  (``passed``, or ``first``: nothing to compare with yet), or a person accepted it. Partial and failed runs,
  runs whose check failed, is only ``suspect``/``noisy`` or never finished (``regression_status`` NULL: killed
  mid-check), and excluded runs never enter;
* since the **change point**: the newest run a person accepted as the new normal (else the oldest run read);
* the **window**: the last :data:`WINDOW_RUNS` eligible runs, what a new run is compared with (a median);
* the **anchor**: the first :data:`ANCHOR_RUNS` eligible runs since the change point, the level a slow drift is
  measured against, whatever its night-to-night steps.

People's marks (:func:`mark_run`): ``accept`` starts a new window at that run, ``exclude`` takes it out of every
reference; who, when and why are kept (table ``run_mark``), the latest mark of a run counts.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from .errors import InputError
from .store import BATCH_FIELDS, BatchResult, ResultsStore, RunMark, ValidationRun

ACCEPT = "accept"
EXCLUDE = "exclude"
MARK_ACTIONS = (ACCEPT, EXCLUDE)
PASSED_STATUSES = ("passed", "first")  # a completed check that passed; "first": nothing to compare with yet
WINDOW_RUNS = 7  # the recent reference: enough for a median that one odd night cannot move
ANCHOR_RUNS = 7  # the level at the change point (as many as the window: a noisy start moves it as little)
MAX_HISTORY = 1000  # runs read per configuration and batch size (a change point older than that is not seen)


@dataclass
class HistoryRun:
    """One run's result at one batch size, with what decides whether it may be a reference."""

    run_key: str
    at: dt.datetime | None  # when it measured (started, else recorded)
    status: str | None  # the run's: success | partial | failed
    regression_status: str | None
    row: dict[str, Any]  # its batch row at this batch size
    versions: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] | None = None  # its regression_details
    mark: dict[str, Any] | None = None  # the latest person's mark: action, by, at, why

    @property
    def measured(self) -> bool:
        return self.row.get("status", "ok") in (None, "ok") and bool(self.row.get("throughput"))

    @property
    def accepted(self) -> bool:
        return bool(self.mark) and self.mark["action"] == ACCEPT  # type: ignore[index]

    @property
    def excluded(self) -> bool:
        return bool(self.mark) and self.mark["action"] == EXCLUDE  # type: ignore[index]

    @property
    def eligible(self) -> bool:
        """May be part of a reference (see the module's docstring)."""
        if not self.measured or self.excluded:
            return False
        return self.accepted or (self.status == "success" and self.regression_status in PASSED_STATUSES)


@dataclass
class Reference:
    """The reference of one batch size: the window, the anchor, and what came after the window's newest run."""

    window: list[HistoryRun]
    anchor: list[HistoryRun]
    change_point: HistoryRun | None  # the accepted run the window starts at; None: the start of the history
    since: list[HistoryRun]  # runs after the window's newest (none of them eligible), oldest first


def select_reference(
    history: Sequence[HistoryRun], *, window: int = WINDOW_RUNS, anchor: int = ANCHOR_RUNS
) -> Reference:
    """The reference in ``history`` (oldest first) for the run that comes after it."""
    start = max((i for i, h in enumerate(history) if h.accepted and h.measured), default=None)
    since_change = history[start:] if start is not None else history
    eligible = [h for h in since_change if h.eligible]
    newest = max((i for i, h in enumerate(since_change) if h.eligible), default=-1)
    return Reference(
        window=eligible[-window:],
        anchor=eligible[:anchor],
        change_point=history[start] if start is not None else None,
        since=list(since_change[newest + 1 :]),
    )


def _when(run: ValidationRun) -> dt.datetime | None:
    when = run.started_at or run.recorded_at
    if when is not None and when.tzinfo is None:  # SQLite gives naive datetimes back; the store writes UTC
        when = when.replace(tzinfo=dt.UTC)
    return when


def _mark_dict(mark: RunMark) -> dict[str, Any]:
    at = mark.marked_at if mark.marked_at.tzinfo else mark.marked_at.replace(tzinfo=dt.UTC)
    return {"action": mark.action, "by": mark.marked_by, "at": at, "why": mark.why}


def _marks(session: Session, run_ids: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
    """Every mark of these runs, oldest first (the last one counts)."""
    ids = list(run_ids)
    found: dict[int, list[dict[str, Any]]] = {}
    if not ids:
        return found
    query = select(RunMark).where(RunMark.run_id.in_(ids)).order_by(RunMark.marked_at, RunMark.id)
    for mark in session.scalars(query):
        found.setdefault(mark.run_id, []).append(_mark_dict(mark))
    return found


def batch_history(
    store: ResultsStore, config_key: str, batch_size: int, *, before: str | None = None, limit: int = MAX_HISTORY
) -> list[HistoryRun]:
    """The runs of ``config_key`` that have a row for ``batch_size``, oldest first; with ``before`` (a run key)
    only those recorded before that run."""
    query = (
        select(ValidationRun, BatchResult)
        .join(BatchResult, BatchResult.run_id == ValidationRun.id)
        .where(ValidationRun.config_key == config_key, BatchResult.batch_size == batch_size)
        .order_by(ValidationRun.recorded_at.desc(), ValidationRun.id.desc())
        .limit(limit)
    )
    with Session(store.engine) as session:
        if before is not None:
            current = session.scalar(select(ValidationRun).where(ValidationRun.run_key == before))
            if current is not None:
                query = query.where(
                    or_(
                        ValidationRun.recorded_at < current.recorded_at,
                        and_(ValidationRun.recorded_at == current.recorded_at, ValidationRun.id < current.id),
                    ),
                    ValidationRun.id != current.id,
                )
        rows = list(reversed(session.execute(query).all()))
        marks = _marks(session, (run.id for run, _ in rows))
        return [
            HistoryRun(
                run_key=run.run_key,
                at=_when(run),
                status=run.status,
                regression_status=run.regression_status,
                row={name: getattr(batch, name) for name in BATCH_FIELDS},
                versions=dict(run.versions or {}),
                details=run.regression_details if isinstance(run.regression_details, Mapping) else None,
                mark=marks[run.id][-1] if marks.get(run.id) else None,
            )
            for run, batch in rows
        ]


def current_user() -> str:
    """Who is marking: the OS user (``--by`` names someone else)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return os.environ.get("USER") or f"uid {os.getuid()}"


def mark_run(store: ResultsStore, run_key: str, action: str, why: str, *, by: str | None = None) -> dict[str, Any]:
    """Record a person's mark on a run: ``accept`` (the new normal) or ``exclude`` (out of every reference)."""
    if action not in MARK_ACTIONS:
        raise InputError(f"unknown mark {action!r}: use {' or '.join(MARK_ACTIONS)}")
    why = (why or "").strip()
    if not why:
        raise InputError(
            f"say why you {action} run {run_key} (--why TEXT): the next person reading the history needs it"
        )
    by = (by or "").strip() or current_user()
    with Session(store.engine) as session, session.begin():
        run = session.scalar(select(ValidationRun).where(ValidationRun.run_key == run_key))
        if run is None:
            raise InputError(f"no run {run_key!r} in {store.describe()}: `twins results` lists the recorded runs")
        if action == ACCEPT and not any(b.status in (None, "ok") and b.throughput for b in run.batches):
            raise InputError(
                f"run {run_key} has no batch size with a result: it cannot be the new normal; accept a run that "
                f"measured"
            )
        mark = RunMark(run_id=run.id, action=action, marked_by=by, marked_at=dt.datetime.now(dt.UTC), why=why)
        session.add(mark)
        session.flush()
        return _mark_dict(mark)


def run_marks(store: ResultsStore, run_keys: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Every mark of these runs, oldest first (the last one counts), by run key."""
    with Session(store.engine) as session:
        ids = dict(
            session.execute(
                select(ValidationRun.id, ValidationRun.run_key).where(ValidationRun.run_key.in_(list(run_keys)))
            ).all()
        )
        return {ids[run_id]: marks for run_id, marks in _marks(session, ids).items()}


def mark_text(mark: Mapping[str, Any]) -> str:
    """One line: ``accepted by ana at 2026-12-02 09:14 UTC: CANN 8.0.RC2 is the new normal``."""
    verb = {ACCEPT: "accepted as the new normal", EXCLUDE: "excluded from references"}.get(
        mark["action"], mark["action"]
    )
    at = mark["at"]
    when = at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if isinstance(at, dt.datetime) else str(at)
    return f"{verb} by {mark['by']} at {when}: {mark['why']}"
