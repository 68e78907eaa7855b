"""Read-only views of the results database for people: run list, one run, history of a configuration, compare.

Used by the "Twins results" Airflow UI plugin (``plugins/twins_airflow/ui``) and usable without Airflow. All
queries go through SQLAlchemy's ORM on the models of :mod:`twins_tasks.store`; the recipe's table comes from
:mod:`twins_tasks.report`. Every function returns plain JSON-ready dicts (datetimes as ISO strings, UTC).

Columns that newer versions of the store add (a run's ``skipped_images``/``num_skipped``/``regression_details``,
a batch row's ``status``/``error``/``device``/``perf_rounds``/``throughput_min``/``throughput_max``/
``throughput_cv``) are passed through when the model has them, so the pages can show them without a change here.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from .baseline import BASELINE_PRESETS, resolve_baseline
from .errors import InputError
from .history import ACCEPT, EXCLUDE, WINDOW_RUNS, HistoryRun, run_marks, select_reference
from .history import MAX_HISTORY as HISTORY_READ
from .report import best_batch_size, perf_table, sample_checks, scope_fact
from .store import BATCH_FIELDS, RUN_FIELDS, BatchResult, ResultsStore, ValidationRun

# The numbers shown per batch size in the compare view, with the direction that is better.
COMPARED_METRICS: dict[str, str] = {
    "throughput": "higher",
    "latency_min_ms": "lower",
    "latency_median_ms": "lower",
    "latency_p99_ms": "lower",
    "top1": "higher",
    "top5": "higher",
    "num_missing": "lower",
    "agreement_top1": "higher",
    "agreement_max_abs_diff": "lower",
    "compile_seconds": "lower",
}
# Run-level fields shown side by side in the compare view.
COMPARED_RUN_FIELDS = (
    "source",
    "status",
    "regression_status",
    "backend",
    "device",
    "soc_version",
    "model_name",
    "weights",
    "onnx_sha256",
    "opset",
    "dataset_path",
    "dataset_fingerprint",
    "num_images",
    "config_key",
)
MAX_PAGE = 500
MAX_HISTORY = 1000
# Largest page offset accepted: far beyond any results database, and within every database's integer range (an
# offset past SQLite's 64-bit integers was a 500).
MAX_OFFSET = 1_000_000_000
# The runs page's configuration filter lists this many configurations (the newest) plus the selected one.
MAX_CONFIGS = 50


def iso(value: Any) -> str | None:
    """A datetime as ISO 8601 in UTC. SQLite gives naive datetimes back; the store writes them in UTC."""
    if not isinstance(value, dt.datetime):
        return None if value is None else str(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return iso(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def dag_id_of(source: str | None) -> str | None:
    """``"airflow:<dag_id>"`` -> the DAG id; a CLI run has none."""
    if source and source.startswith("airflow:"):
        return source.split(":", 1)[1] or None
    return None


def weights_label(run: Mapping[str, Any]) -> str:
    """What a person needs to tell weights apart: the checkpoint hash, or that the weights were random."""
    if run.get("random_init"):
        return "random weights"
    sha = run.get("checkpoint_sha256")
    return f"checkpoint {sha[:12]}" if sha else str(run.get("weights") or "?")


def dataset_label(run: Mapping[str, Any]) -> str:
    path = str(run.get("dataset_path") or "")
    name = os.path.basename(path.rstrip("/\\")) or path or "?"
    return name


def first_top1(batches: Sequence[Mapping[str, Any]]) -> float | None:
    """Top-1 of a run: every batch size scores the same images, so the first scored one stands for all."""
    return next((b["top1"] for b in sorted(batches, key=lambda b: b["batch_size"]) if b.get("top1") is not None), None)


def _run_dict(row: ValidationRun) -> dict[str, Any]:
    data = {name: getattr(row, name) for name in ["id", *RUN_FIELDS, "recorded_at"]}
    data["batches"] = [{name: getattr(b, name) for name in BATCH_FIELDS} for b in row.batches]
    return data


def summarize(run: Mapping[str, Any]) -> dict[str, Any]:
    """One line of the runs list."""
    batches = run.get("batches") or []
    throughput = {int(b["batch_size"]): b.get("throughput") for b in batches}
    best = best_batch_size(throughput)
    config = run.get("config") or {}
    return {
        "run_key": run["run_key"],
        "source": run.get("source"),
        "dag_id": dag_id_of(run.get("source")),
        "recorded_at": iso(run.get("recorded_at")),
        "started_at": iso(run.get("started_at")),
        "finished_at": iso(run.get("finished_at")),
        "backend": run.get("backend"),
        "device": run.get("device"),
        "soc_version": run.get("soc_version"),
        "weights": weights_label(run),
        "random_init": bool(run.get("random_init")),
        "checkpoint_sha256": run.get("checkpoint_sha256"),
        "dataset": dataset_label(run),
        "dataset_path": run.get("dataset_path"),
        "synthetic_data": bool(config.get("synthetic_data")),
        "num_images": run.get("num_images"),
        "num_skipped": run.get("num_skipped"),
        "status": run.get("status"),
        "regression_status": run.get("regression_status"),
        "config_key": run.get("config_key"),
        "batch_sizes": sorted(throughput),
        "best_batch_size": best,
        "best_throughput": throughput[best] if best is not None else None,
        "top1": first_top1(batches),
    }


def list_runs(
    store: ResultsStore, *, config_key: str | None = None, limit: int = 50, offset: int = 0
) -> dict[str, Any]:
    """Runs, newest first (optionally of one configuration), one page; plus the configurations to filter by (the
    newest :data:`MAX_CONFIGS` and the selected one, see :func:`list_configs`)."""
    limit = max(1, min(int(limit), MAX_PAGE))
    offset = max(0, min(int(offset), MAX_OFFSET))
    query = select(ValidationRun).options(selectinload(ValidationRun.batches))
    count = select(func.count()).select_from(ValidationRun)
    if config_key:
        query = query.where(ValidationRun.config_key == config_key)
        count = count.where(ValidationRun.config_key == config_key)
    query = query.order_by(ValidationRun.recorded_at.desc(), ValidationRun.id.desc()).limit(limit).offset(offset)
    with Session(store.engine) as session:
        rows = session.scalars(query).all()
        total = session.scalar(count) or 0
        runs = [summarize(_run_dict(r)) for r in rows]
        configs = list_configs(session, selected=config_key)
    marks = run_marks(store, [r["run_key"] for r in runs])
    for r in runs:
        r["mark"] = _latest_mark(marks.get(r["run_key"]))
    return {
        "runs": runs,
        "total": total,
        "limit": limit,
        "offset": offset,
        "config_key": config_key,
        **configs,
    }


def _latest_mark(marks: Sequence[Mapping[str, Any]] | None) -> dict[str, Any] | None:
    """The mark that counts (the latest: action, by, at, why), JSON-ready; None when a person never marked it."""
    return _jsonable(marks[-1]) if marks else None


def marks_of(store: ResultsStore, run_key: str) -> dict[str, Any]:
    """People's marks on a run (twins_tasks.history): ``marks`` oldest first, and ``mark``, the one that counts."""
    marks = run_marks(store, [run_key]).get(run_key, [])
    return {"marks": _jsonable(marks), "mark": _latest_mark(marks)}


def list_configs(session: Session, *, selected: str | None = None, limit: int = MAX_CONFIGS) -> dict[str, Any]:
    """The ``limit`` configurations with the most recent runs, plus ``selected`` when it is not among them, each
    with its number of runs and a label (backend, SoC, weights) from its latest run; newest first. Bounded: a
    database with thousands of configurations must not make every page and response that big.

    Returns ``configs``, ``configs_total`` (every configuration) and ``all_runs`` (runs of every configuration).
    """
    grouped = (
        select(
            ValidationRun.config_key,
            func.count(ValidationRun.id).label("runs"),
            func.max(ValidationRun.id).label("latest_id"),
            func.max(ValidationRun.recorded_at).label("latest"),
        )
        .group_by(ValidationRun.config_key)
        .subquery()
    )
    columns = select(
        grouped.c.config_key,
        grouped.c.runs,
        grouped.c.latest,
        ValidationRun.backend,
        ValidationRun.soc_version,
        ValidationRun.random_init,
        ValidationRun.checkpoint_sha256,
    ).join(ValidationRun, ValidationRun.id == grouped.c.latest_id)
    newest = columns.order_by(grouped.c.latest.desc(), grouped.c.latest_id.desc())
    rows = list(session.execute(newest.limit(limit))) if limit > 0 else []
    if selected and all(r.config_key != selected for r in rows):
        rows += session.execute(columns.where(grouped.c.config_key == selected)).all()
    configs_total, all_runs = session.execute(select(func.count(), func.sum(grouped.c.runs)).select_from(grouped)).one()
    configs = []
    for key, runs, recorded, backend, soc, random_init, sha in rows:
        weights = weights_label({"random_init": random_init, "checkpoint_sha256": sha})
        label = " · ".join(str(p) for p in (backend, soc, weights) if p)
        configs.append({"config_key": key, "runs": runs, "label": label, "latest": iso(recorded)})
    return {"configs": configs, "configs_total": configs_total or 0, "all_runs": int(all_runs or 0)}


def default_baseline(run: Mapping[str, Any]) -> Any:
    """The baseline the run's own report used: the spec its configuration recorded ("none" when it had none).

    A run recorded before the configuration kept it: the recipe's published numbers for the device it used
    (310P on Ascend, else the recipe's GPU), what the page showed for such runs before.
    """
    config = run.get("config") or {}
    if "baseline" in config:
        return config["baseline"] if config["baseline"] not in (None, "") else "none"
    return "recipe-310p" if run.get("backend") == "ascend" else "recipe-gpu"


def baseline_text(spec: Any) -> str:
    """A baseline spec as the page's baseline field takes it: numbers as ``1:62,4:77``, else the text itself."""
    if isinstance(spec, Mapping):
        return ",".join(f"{k}:{v:g}" if isinstance(v, int | float) else f"{k}:{v}" for k, v in spec.items())
    return "none" if spec is None else str(spec)


def run_detail(store: ResultsStore, run_key: str, *, baseline: str | None = None) -> dict[str, Any] | None:
    """One run in full, with the recipe's table (throughput, baseline, ratio, best batch size); None if absent.

    Without ``baseline`` the table compares with the run's own baseline (:func:`default_baseline`): the page
    shows the same table as the run's report.md.
    """
    run = store.get_run(run_key)
    if run is None:
        return None
    batches = sorted(run["batches"], key=lambda b: b["batch_size"])
    throughput = {int(b["batch_size"]): b.get("throughput") for b in batches}
    own = default_baseline(run)
    chosen = (baseline or "").strip()
    spec: Any = chosen or own
    try:
        label, numbers = resolve_baseline(store, spec)
    except InputError:
        if chosen:
            raise  # the user's choice: the caller says what is wrong with it
        # The run's own baseline was a run id that is gone from the database: the table without it.
        spec, (label, numbers) = "none", ("none", None)
    best = best_batch_size(throughput)
    rows = []
    for b in batches:
        bs = int(b["batch_size"])
        base = numbers.get(bs) if numbers else None
        rows.append(
            {
                "batch_size": bs,
                "throughput": b.get("throughput"),
                "baseline": base,
                # Same ratio as the report's table: only when both numbers are there.
                "ratio": b["throughput"] / base if b.get("throughput") and base else None,
            }
        )
    device_label = f"{run.get('backend', '?')} ({run.get('device') or 'device ?'})"
    return {
        "run": _jsonable({k: v for k, v in run.items() if k != "batches"}),
        "summary": summarize(run),
        **marks_of(store, run_key),
        "batches": _jsonable(batches),
        # Which batch sizes scored the full dataset and which were sample-checked against which (as the report).
        "accuracy_scope": {
            "fact": scope_fact(run),
            "checks": [{"batch_size": bs, **_jsonable(dict(c))} for bs, c in sample_checks(run).items()],
        },
        "regression": regression_view(run.get("regression_details")),
        "perf": {
            "label": device_label,
            "baseline_label": label,
            "baseline": baseline_text(spec),  # what the page's baseline field shows
            "report_baseline": baseline_text(own),  # the run's own (report.md's) baseline
            "baseline_choices": [*BASELINE_PRESETS, "none"],
            "rows": rows,
            "best_batch_size": best,
            "best_throughput": throughput[best] if best is not None else None,
            # The recipe's table exactly as the report prints it, for pasting into a ticket.
            "markdown": perf_table(throughput, label=device_label, baseline=numbers, baseline_label=label),
        },
    }


# The regression check's lines (twins_tasks.regression): "bs4 throughput: 10.60 -> 6.50 img/s (drop +38.7%, allowed
# 10.0%; rounds 10.50-10.70 -> 6.40-6.60 img/s)", "bs1 top-1: 83.70% -> 82.00% (drop +1.70 pp, allowed 1.00 pp)",
# "bs8: no previous result to compare with"; a re-measured suspect adds "; confirmed by a re-measurement: <line>".
_CHECK_LINE = re.compile(r"^bs(?P<bs>\d+)(?: (?P<metric>[\w-]+))?: (?P<rest>.*)$", re.S)
_OLD_NEW = re.compile(r"^(?P<old>\S+) -> (?P<new>\S+?)(?P<unit> img/s)? \((?P<how>[^()]*)\)(?P<then>.*)$", re.S)
_NOISE_VERDICTS = {"ranges overlap: within noise": "ok: within noise", "faster beyond noise": "ok: faster"}


def _check_row(line: str, verdict: str) -> dict[str, Any]:
    """One line of the regression check -> what was compared, old and new value, the change, and the verdict."""
    row: dict[str, Any] = {
        "batch_size": None,
        "metric": None,
        "old": None,
        "new": None,
        "change": line,
        "rounds": None,
        "then": None,
        "verdict": verdict,
    }
    match = _CHECK_LINE.match(line.strip())
    if match is None:
        return row  # a line of another format: shown whole
    row["batch_size"], row["metric"] = int(match["bs"]), match["metric"]
    values = _OLD_NEW.match(match["rest"])
    if values is None:
        row["change"] = match["rest"]
        if verdict == "ok" and match["rest"].startswith("no previous result"):
            row["verdict"] = "not compared"
        return row
    unit = values["unit"] or ""
    row["old"], row["new"] = values["old"] + unit, values["new"] + unit
    change, _, rounds = values["how"].partition("; rounds ")
    row["change"] = change
    if rounds:
        rounds, comma, noise = rounds.partition(" img/s, ")
        row["rounds"] = rounds + " img/s" if comma else rounds
        if verdict == "ok" and noise in _NOISE_VERDICTS:
            row["verdict"] = _NOISE_VERDICTS[noise]
    then = values["then"].lstrip("; ").strip()
    if then:
        # The re-measurement repeats the line's "bsN throughput: " prefix: left out, the row says it.
        row["then"] = re.sub(r": bs\d+ [\w-]+: ", ": ", then, count=1)
        if "NOT confirmed" in then:
            row["verdict"] = "ok: noise (re-measured)"
        elif "confirmed" in then:
            row["verdict"] = "regression (confirmed)"
    return row


def _table_row(check: Mapping[str, Any]) -> dict[str, Any]:
    """One row of a verdict recorded as a table (issue 18's ``checks``), in the shape of :func:`_check_row`."""
    change = check.get("change") or ""
    if change and check.get("allowed"):
        change = f"{change} (allowed {check['allowed']})"
    changed = f"changed since the reference: {check['changed']}" if check.get("changed") else ""
    then = "; ".join(part for part in (check.get("note"), changed) if part)
    return {
        "batch_size": check.get("batch_size"),
        "metric": check.get("metric"),
        "old": check.get("reference") if check.get("reference") not in (None, "-") else None,
        "new": check.get("new") if check.get("new") not in (None, "-") else None,
        "change": change or "-",
        "rounds": check.get("noise") or None,  # the noise the change had to exceed
        "then": then or None,
        "verdict": check.get("verdict") or "",
    }


def regression_view(details: Any) -> dict[str, Any] | None:
    """A run's stored regression details, for people: per batch size and metric, old -> new and the verdict.

    Details are the check's dict: since issue 18 with ``checks`` (the verdict table) and a ``headline``; before
    that with lines (regressions, notes) parsed here; older records may hold a list of lines or a text, shown as
    rows without a verdict or as the text.
    """
    if not details:
        return None
    if isinstance(details, Mapping) and details.get("checks"):
        return {
            "status": details.get("status"),
            "compared_with": details.get("compared_with"),
            "headline": details.get("headline"),
            "rows": [_table_row(c) for c in details["checks"] if isinstance(c, Mapping)],
            "text": None,
        }
    if isinstance(details, str):
        return {"status": None, "compared_with": None, "rows": [], "text": details}
    if not isinstance(details, Mapping):
        lines = details if isinstance(details, list | tuple) else [details]
        return {"status": None, "compared_with": None, "rows": [_check_row(str(x), "") for x in lines], "text": None}
    rows = [_check_row(str(x), "regression") for x in details.get("regressions") or []]
    rows += [_check_row(str(x), "ok") for x in details.get("notes") or []]
    for bs, error in (details.get("incomplete") or {}).items():
        rows.append({**_check_row(f"bs{bs}: {error}", "no result"), "metric": "result"})
    metric_order = {"top-1": 0, "throughput": 1}
    rows.sort(key=lambda r: (r["batch_size"] is None, r["batch_size"] or 0, metric_order.get(r["metric"] or "", 2)))
    return {"status": details.get("status"), "compared_with": details.get("compared_with"), "rows": rows, "text": None}


def history(store: ResultsStore, config_key: str, *, limit: int = 200) -> dict[str, Any]:
    """The last ``limit`` runs of one configuration, oldest first: throughput per batch size and top-1 over time.

    Marks runs whose regression check failed, people's marks (accepted as the new normal: a change point;
    excluded from references) and, per batch size, the reference window the next run is compared with: chosen by
    :func:`twins_tasks.history.select_reference` from the configuration's last :data:`twins_tasks.history.MAX_HISTORY`
    runs, as the regression check chooses it (read here in a few light queries for all batch sizes at once, not
    one :func:`~twins_tasks.history.batch_history` per batch size: the page must answer within 300 ms).
    """
    limit = max(1, min(int(limit), MAX_HISTORY))
    run_columns = [
        ValidationRun.id,
        ValidationRun.run_key,
        ValidationRun.source,
        ValidationRun.status,
        ValidationRun.regression_status,
        ValidationRun.started_at,
        ValidationRun.recorded_at,
    ]
    batch_columns: list[Any] = [BatchResult.run_id, BatchResult.batch_size, BatchResult.throughput, BatchResult.top1]
    if "status" in BATCH_FIELDS:  # a newer store marks failed batch sizes
        batch_columns.append(BatchResult.__table__.c.status)
    query = (
        select(*run_columns)
        .where(ValidationRun.config_key == config_key)
        .order_by(ValidationRun.recorded_at.desc(), ValidationRun.id.desc())
        .limit(max(limit, HISTORY_READ))
    )
    with Session(store.engine) as session:
        read = list(reversed(session.execute(query).all()))  # what the references are chosen from, oldest first
        ids = [r.id for r in read]
        per_run: dict[int, list[Any]] = {i: [] for i in ids}
        if ids:
            for b in session.execute(select(*batch_columns).where(BatchResult.run_id.in_(ids))):
                per_run[b.run_id].append(b)
        total = session.scalar(select(func.count()).where(ValidationRun.config_key == config_key)) or 0
        this = list_configs(session, selected=config_key, limit=0)["configs"]
        label = this[0]["label"] if this else config_key
    marks = run_marks(store, [r.run_key for r in read])
    runs = read[-limit:]
    sizes = sorted({int(b.batch_size) for r in runs for b in per_run[r.id]})
    references = {
        bs: select_reference(
            [
                HistoryRun(
                    run_key=r.run_key,
                    at=r.started_at or r.recorded_at,
                    status=r.status,
                    regression_status=r.regression_status,
                    row={"throughput": b.throughput, "status": getattr(b, "status", None)},
                    mark=marks[r.run_key][-1] if r.run_key in marks else None,
                )
                for r in read
                for b in per_run[r.id]
                if b.batch_size == bs
            ]
        )
        for bs in sizes
    }
    in_window: dict[str, list[int]] = {}  # run key -> the batch sizes whose reference window holds it
    for bs, ref in references.items():
        for h in ref.window:
            in_window.setdefault(h.run_key, []).append(bs)
    points = []
    for r in runs:
        batches = per_run[r.id]
        throughput = {int(b.batch_size): b.throughput for b in batches}
        scored = sorted((b for b in batches if b.top1 is not None), key=lambda b: b.batch_size)
        mark = _latest_mark(marks.get(r.run_key))
        points.append(
            {
                "run_key": r.run_key,
                "dag_id": dag_id_of(r.source),
                "recorded_at": iso(r.recorded_at),
                "status": r.status,
                "regression_status": r.regression_status,
                "regressed": r.regression_status == "failed",
                "reference": r.run_key in in_window,
                "reference_batch_sizes": in_window.get(r.run_key, []),
                "mark": mark,
                "accepted": bool(mark) and mark["action"] == ACCEPT,  # type: ignore[index]
                "excluded": bool(mark) and mark["action"] == EXCLUDE,  # type: ignore[index]
                "throughput": {str(bs): t for bs, t in sorted(throughput.items())},
                "top1": scored[0].top1 if scored else None,
            }
        )
    windows = {
        str(bs): {
            "runs": [h.run_key for h in ref.window],
            "change_point": ref.change_point.run_key if ref.change_point else None,
        }
        for bs, ref in references.items()
    }
    newest = [r.run_key for r in read if r.run_key in in_window][-1:]
    return {
        "config_key": config_key,
        "label": label,
        "total": total,
        "limit": limit,
        "batch_sizes": sizes,
        # The newest run in any batch size's window (None: nothing accepted yet, the next run starts the reference).
        "reference_run_key": newest[0] if newest else None,
        "references": windows,  # per batch size: the window's runs, oldest first, and the change point it starts at
        "window_runs": WINDOW_RUNS,
        "change_points": [p["run_key"] for p in points if p["accepted"]],
        "excluded": [p["run_key"] for p in points if p["excluded"]],
        "points": points,
    }


def _side_by_side(name: str, a: Any, b: Any) -> dict[str, Any]:
    return {"name": name, "a": _jsonable(a), "b": _jsonable(b), "differs": a != b}


def _delta(a: Any, b: Any) -> tuple[float | None, float | None]:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or isinstance(a, bool):
        return None, None
    diff = b - a
    return diff, (100.0 * diff / a if a else None)


def compare_runs(store: ResultsStore, run_a: str, run_b: str) -> dict[str, Any] | None:
    """Two runs side by side (A = before, B = after): run fields, software versions, and per batch size
    metrics with B − A and the percentage change. None when either run is absent (``missing`` says which)."""
    a, b = store.get_run(run_a), store.get_run(run_b)
    missing = [key for key, run in ((run_a, a), (run_b, b)) if run is None]
    if a is None or b is None:
        return {"missing": missing}
    fields = [_side_by_side(name, a.get(name), b.get(name)) for name in COMPARED_RUN_FIELDS]
    fields.append(_side_by_side("weights (short)", weights_label(a), weights_label(b)))
    va, vb = a.get("versions") or {}, b.get("versions") or {}
    versions = [_side_by_side(name, va.get(name), vb.get(name)) for name in sorted(set(va) | set(vb))]
    ca, cb = a.get("config") or {}, b.get("config") or {}
    config = [_side_by_side(name, ca.get(name), cb.get(name)) for name in sorted(set(ca) | set(cb))]
    by_a = {int(x["batch_size"]): x for x in a["batches"]}
    by_b = {int(x["batch_size"]): x for x in b["batches"]}
    batches = []
    for bs in sorted(set(by_a) | set(by_b)):
        xa, xb = by_a.get(bs, {}), by_b.get(bs, {})
        metrics = []
        for metric, better in COMPARED_METRICS.items():
            ma, mb = xa.get(metric), xb.get(metric)
            diff, pct = _delta(ma, mb)
            metrics.append(
                {
                    "metric": metric,
                    "better": better,
                    "a": ma,
                    "b": mb,
                    "diff": diff,
                    "pct": pct,
                    "improved": None if diff in (None, 0) else (diff > 0) == (better == "higher"),
                }
            )
        batches.append({"batch_size": bs, "in_a": bs in by_a, "in_b": bs in by_b, "metrics": metrics})
    return {
        "missing": [],
        "a": summarize(a),
        "b": summarize(b),
        "fields": fields,
        "versions": versions,
        "config": config,
        "batches": batches,
        "same_config": a.get("config_key") == b.get("config_key"),
    }
