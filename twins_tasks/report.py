"""The recipe's comparison table: throughput per batch size against a baseline, best batch size, accuracy.

Two renderings of one report: markdown for ``report.md`` (and tickets), and plain text with aligned, short
lines for places that show text as is: a task's log in the Airflow UI (a narrow pane in the graph view) and
``twins run``'s terminal.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .baseline import resolve_baseline
from .errors import MissingOutputError
from .files import write_text_atomic
from .labels import LABEL_SCHEME_TEXT, POSITION

if TYPE_CHECKING:
    from .store import ResultsStore

_SKIPPED_SHOWN = 10  # skipped image names in the report; the results DB keeps up to preprocess.SKIPPED_NAMES_CAP
# The plain-text report's line width in a task log. Airflow's log view does not wrap (unless asked to), and its
# pane beside the graph view shows about 35 characters of a message in a 1440-pixel-wide window (29 at 1280, 51 at
# 1920): prose is wrapped to this width and the tables are no wider (a path or a run id longer keeps its line).
TEXT_WIDTH = 35
TERMINAL_WIDTH = 72  # `twins run`'s terminal: the same tables, prose in wider lines


def best_batch_size(throughput: Mapping[int, float | None]) -> int | None:
    valid = {bs: t for bs, t in throughput.items() if t}
    return max(valid, key=lambda bs: valid[bs]) if valid else None


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value and base else None


def perf_table(
    throughput: Mapping[int, float | None],
    *,
    label: str,
    baseline: Mapping[int, float] | None = None,
    baseline_label: str = "baseline",
) -> str:
    """Markdown: a throughput row per batch size, then baseline and ratio rows when a baseline is given."""
    sizes = sorted(throughput)
    header = "| throughput (img/s) | " + " | ".join(f"bs{bs}" for bs in sizes) + " |"
    rows = [
        header,
        "|---|" + "---:|" * len(sizes),
        f"| {label} | " + " | ".join(_fmt(throughput[bs]) for bs in sizes) + " |",
    ]
    if baseline:
        rows.append(f"| {baseline_label} | " + " | ".join(_fmt(baseline.get(bs)) for bs in sizes) + " |")
        ratios = [_ratio(throughput[bs], baseline.get(bs)) for bs in sizes]
        rows.append(f"| {label} / {baseline_label} | " + " | ".join(_fmt(r, ".2f") for r in ratios) + " |")
    best = best_batch_size(throughput)
    lines = "\n".join(rows)
    if best is not None:
        lines += f"\n\nBest batch size: **{best}** ({throughput[best]:.1f} img/s)"
    return lines


def spread_table(batches: Sequence[Mapping[str, Any]]) -> str | None:
    """Markdown: per batch size, the perf rounds' median throughput and spread; None when no round was recorded."""
    measured = [b for b in sorted(batches, key=lambda b: b["batch_size"]) if b.get("perf_rounds")]
    if not measured:
        return None
    rows = ["| batch size | rounds | throughput (img/s) | min | max | CV % |", "|---:|---:|---:|---:|---:|---:|"]
    for b in measured:
        cv = b.get("throughput_cv")
        rows.append(
            f"| {b['batch_size']} | {b['perf_rounds']} | {_fmt(b.get('throughput'))} | {_fmt(b.get('throughput_min'))} "
            f"| {_fmt(b.get('throughput_max'))} | {_fmt(None if cv is None else 100 * cv)} |"
        )
    return "\n".join(rows)


def accuracy_table(batches: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        "| batch size | top-1 % | top-5 % | images | missing | agreement top-1 % | max abs diff vs PyTorch |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in sorted(batches, key=lambda b: b["batch_size"]):
        if b.get("status") == "failed":
            rows.append(f"| {b['batch_size']} | FAILED | | | | | |")
            continue
        rows.append(
            f"| {b['batch_size']} | {_fmt(b.get('top1'))} | {_fmt(b.get('top5'))} | "
            f"{b.get('num_images', '-')} | {b.get('num_missing', '-')} | {_fmt(b.get('agreement_top1'))} | "
            f"{_fmt(b.get('agreement_max_abs_diff'), '.2e')} |"
        )
    return "\n".join(rows)


def sample_checks(run: Mapping[str, Any]) -> dict[int, Mapping[str, Any]]:
    """The run's sample-checked batch sizes (``config.accuracy_scope``, :func:`twins_tasks.results.record_results`):
    what each was checked against, on how many images, how it agreed; {} when every batch size scored in full."""
    scope = (run.get("config") or {}).get("accuracy_scope") or {}
    return {int(bs): check for bs, check in sorted((scope.get("sampled") or {}).items(), key=lambda i: int(i[0]))}


def scope_fact(run: Mapping[str, Any]) -> str | None:
    """Which batch sizes scored the full dataset and which were sample-checked against which; None: all full."""
    checks = sample_checks(run)
    if not checks:
        return None
    full = ", ".join(f"bs{bs}" for bs in (run.get("config") or {}).get("accuracy_scope", {}).get("full") or [])
    checked = ", ".join(
        f"bs{bs} against bs{c['checked_against']}" if c.get("checked_against") is not None else f"bs{bs} (unchecked)"
        for bs, c in checks.items()
    )
    images = next((c["sample_images"] for c in checks.values() if c.get("sample_images")), None)
    sample = f"the first {images} images" if images else "a sample"
    return (
        f"ACCURACY SCOPE: top-1/top-5 on the full dataset: {full or 'none'}; sample-checked ({sample}, outputs "
        f"against a full batch size's, no top-1/top-5 of their own): {checked}"
    )


def sample_table(run: Mapping[str, Any]) -> str | None:
    """Markdown: each sample-checked batch size against its full one; None when every batch size scored in full."""
    checks = sample_checks(run)
    if not checks:
        return None
    rows = [
        "| batch size | checked against | images | top-1 agreement % | max abs diff |",
        "|---:|---:|---:|---:|---:|",
    ]
    for bs, c in checks.items():
        against = "-" if c.get("checked_against") is None else f"bs{c['checked_against']}"
        rows.append(
            f"| {bs} | {against} | {c.get('sample_images') or '-'} | {_fmt(c.get('sample_agreement_top1'))} | "
            f"{_fmt(c.get('sample_max_abs_diff'), '.2e')} |"
        )
    return "\n".join(rows)


def sample_text(run: Mapping[str, Any], *, width: int = TEXT_WIDTH) -> str | None:
    """:func:`sample_table` as plain text."""
    checks = sample_checks(run)
    if not checks:
        return None
    rows = [
        [
            str(bs),
            "-" if c.get("checked_against") is None else f"bs{c['checked_against']}",
            str(c.get("sample_images") or "-"),
            _fmt(c.get("sample_agreement_top1")),
            _fmt(c.get("sample_max_abs_diff"), ".2e"),
        ]
        for bs, c in checks.items()
    ]
    title = _wrap("Sample checks against a full batch size (same top-1 in %, largest logit difference):", width)
    return title + "\n" + plain_table(["bs", "vs", "images", "top-1 %", "max diff"], rows)


def _facts(run: Mapping[str, Any]) -> list[str]:
    """The report's list above the tables: what ran on what, and every caveat a reader must see."""
    weights = run.get("weights", "?")
    facts = [
        f"model: {run.get('model_name', '?')}, weights: {weights}",
        f"backend: {run.get('backend', '?')}, device: {run.get('device') or '?'}"
        + (f", soc_version: {run['soc_version']}" if run.get("soc_version") else ""),
        f"dataset: {run.get('dataset_path', '?')} ({run.get('num_images', '?')} images)",
    ]
    if run.get("random_init"):
        facts.append(
            "NOTE: random weights (no trained checkpoint): accuracy is chance level; agreement with "
            "the PyTorch reference is the meaningful number."
        )
    if (run.get("config") or {}).get("synthetic_data"):
        facts.append("NOTE: generated images, not ImageNet.")
    if (run.get("config") or {}).get("label_scheme") == POSITION:
        facts.append(
            f"NOTE: labels are {LABEL_SCHEME_TEXT[POSITION]}: top-1 means something only for a model "
            "trained on these folders in this order."
        )
    if run.get("num_skipped"):
        shown = list(run.get("skipped_images") or [])[:_SKIPPED_SHOWN]
        rest = int(run["num_skipped"]) - len(shown)
        facts.append(
            f"SKIPPED (--skip-bad): {run['num_skipped']} undecodable image(s), not counted in the accuracy: "
            + ", ".join(shown)
            + (f", ... and {rest} more" if rest > 0 else "")
        )
    failed = run.get("failed_batch_sizes") or {}
    if failed:
        if isinstance(failed, Mapping):
            listed = "; ".join(f"bs{bs}: {why}" for bs, why in failed.items())
        else:
            listed = ", ".join(f"bs{bs}" for bs in failed)
        facts.append(f"FAILED batch sizes (run {run.get('status', 'partial')}): {listed}")
    scope = scope_fact(run)
    if scope:
        facts.append(scope)
    return facts


def _device_label(run: Mapping[str, Any]) -> str:
    return f"{run.get('backend', '?')} ({run.get('device') or 'device ?'})"


def render(
    run: Mapping[str, Any],
    batches: Sequence[Mapping[str, Any]],
    *,
    baseline: Mapping[int, float] | None = None,
    baseline_label: str = "baseline",
) -> str:
    """The whole markdown report for one validation run."""
    throughput = {int(b["batch_size"]): b.get("throughput") for b in batches}
    spread = spread_table(batches)
    samples = sample_table(run)
    parts = [
        f"# Twins-SVT-L validation: {run.get('run_key', '')}",
        "",
        *(f"- {fact}" for fact in _facts(run)),
        "",
        "## Performance",
        "",
        perf_table(throughput, label=_device_label(run), baseline=baseline, baseline_label=baseline_label),
        "",
        *([spread, ""] if spread else []),
        "## Accuracy and agreement",
        "",
        accuracy_table(batches),
        "",
        *(["### Sample checks", "", samples, ""] if samples else []),
    ]
    return "\n".join(parts)


# --- plain text: aligned columns, short lines ---------------------------------------------------------------


# The regression verdict's table per batch size (``regression_details["checks"]``), as the task log and the mail
# print it.
VERDICT_COLUMNS = ("metric", "reference", "new", "change", "allowed", "noise", "verdict")


def plain_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, first_left: bool = False) -> str:
    """Columns padded to their widest cell (numbers right-aligned), two spaces apart, a rule under the header."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            str(cell).ljust(width) if i == 0 and first_left else str(cell).rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)])


def perf_text(
    throughput: Mapping[int, float | None],
    *,
    label: str,
    baseline: Mapping[int, float] | None = None,
    baseline_label: str = "baseline",
    width: int = TEXT_WIDTH,
) -> str:
    """The recipe's throughput table as plain text: one row per batch size (as narrow for 6 sizes as for 1)."""
    sizes = sorted(throughput)
    if baseline:
        title = f"Throughput (img/s) of {label}, against {baseline_label}:"
        header = ["bs", "img/s", "baseline", "ratio"]
        rows = [
            [
                str(bs),
                _fmt(throughput[bs]),
                _fmt(baseline.get(bs)),
                _fmt(_ratio(throughput[bs], baseline.get(bs)), ".2f"),
            ]
            for bs in sizes
        ]
    else:
        title = f"Throughput (img/s) of {label}:"
        header, rows = ["bs", "img/s"], [[str(bs), _fmt(throughput[bs])] for bs in sizes]
    parts = [_wrap(title, width), plain_table(header, rows)]
    best = best_batch_size(throughput)
    if best is not None:
        parts.append(f"Best batch size: {best} ({throughput[best]:.1f} img/s)")
    return "\n".join(parts)


def spread_text(batches: Sequence[Mapping[str, Any]], *, width: int = TEXT_WIDTH) -> str | None:
    """Per batch size, the perf rounds' median throughput and spread, as plain text; None without rounds."""
    measured = [b for b in sorted(batches, key=lambda b: b["batch_size"]) if b.get("perf_rounds")]
    if not measured:
        return None
    rows = []
    for b in measured:
        cv = b.get("throughput_cv")
        rows.append(
            [
                str(b["batch_size"]),
                str(b["perf_rounds"]),
                _fmt(b.get("throughput")),
                _fmt(b.get("throughput_min")),
                _fmt(b.get("throughput_max")),
                _fmt(None if cv is None else 100 * cv),
            ]
        )
    title = _wrap("Perf rounds (n rounds, img/s):", width)
    return title + "\n" + plain_table(["bs", "n", "median", "min", "max", "CV %"], rows)


def accuracy_text(batches: Sequence[Mapping[str, Any]], *, width: int = TEXT_WIDTH) -> str:
    """Accuracy, then agreement with the PyTorch reference: two narrow tables (one would not fit a log pane)."""
    accuracy, agreement = [], []
    for b in sorted(batches, key=lambda b: b["batch_size"]):
        bs = str(b["batch_size"])
        if b.get("status") == "failed":
            accuracy.append([bs, "FAILED", "", "", ""])
            agreement.append([bs, "FAILED", ""])
            continue
        accuracy.append(
            [
                bs,
                _fmt(b.get("top1")),
                _fmt(b.get("top5")),
                str(b.get("num_images", "-")),
                str(b.get("num_missing", "-")),
            ]
        )
        agreement.append([bs, _fmt(b.get("agreement_top1")), _fmt(b.get("agreement_max_abs_diff"), ".2e")])
    return "\n".join(
        [
            _wrap("Accuracy (top-1, top-5 in %):", width),
            plain_table(["bs", "top-1", "top-5", "images", "missing"], accuracy),
            "",
            _wrap("Agreement with the PyTorch reference (same top-1 in %, largest absolute logit difference):", width),
            plain_table(["bs", "top-1 %", "max diff"], agreement),
        ]
    )


def wrap_text(text: str, width: int = TEXT_WIDTH) -> str:
    """Prose in lines of at most ``width``; paths and run ids stay whole on their line (they get copied)."""
    return "\n".join(_wrap(line, width) for line in text.splitlines())


def _wrap(text: str, width: int, *, first: str = "", rest: str = "") -> str:
    return textwrap.fill(
        text,
        width,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )


def render_text(
    run: Mapping[str, Any],
    batches: Sequence[Mapping[str, Any]],
    *,
    baseline: Mapping[int, float] | None = None,
    baseline_label: str = "baseline",
    width: int = TEXT_WIDTH,
) -> str:
    """The report of :func:`render` as plain text for a task log (``width`` :data:`TEXT_WIDTH`) or a terminal
    (:data:`TERMINAL_WIDTH`): the same facts, the tables aligned and narrow."""
    throughput = {int(b["batch_size"]): b.get("throughput") for b in batches}
    spread = spread_text(batches, width=width)
    samples = sample_text(run, width=width)
    label = _device_label(run)
    parts = [
        _wrap(f"Twins-SVT-L validation: {run.get('run_key', '')}", width),
        *(_wrap(fact, width, first="- ", rest="  ") for fact in _facts(run)),
        "",
        perf_text(throughput, label=label, baseline=baseline, baseline_label=baseline_label, width=width),
        "",
        *([spread, ""] if spread else []),
        accuracy_text(batches, width=width),
        *(["", samples] if samples else []),
    ]
    return "\n".join(parts)


class WrittenReport(NamedTuple):
    markdown: str  # what report.md holds
    path: Path  # <run folder>/report.md
    text: str  # the same report as plain text (render_text), for a log or a terminal


def write_report(
    store: ResultsStore, run_key: str, baseline: Any, run_dir: str | Path, *, text_width: int = TEXT_WIDTH
) -> WrittenReport:
    """Render the recipe's table for a recorded run into ``<run folder>/report.md``; note its path in the DB.

    Returns the markdown, the file, and the same report as plain text in lines of ``text_width``."""
    run = store.get_run(run_key)
    if run is None:
        raise MissingOutputError(f"run {run_key!r} is not in {store.describe()}: the record step did not finish")
    label, numbers = resolve_baseline(store, baseline)
    markdown = render(run, run["batches"], baseline=numbers, baseline_label=label)
    path = Path(run_dir) / "report.md"
    write_text_atomic(path, markdown)
    store.update_run(run_key, report_path=str(path))
    text = render_text(run, run["batches"], baseline=numbers, baseline_label=label, width=text_width)
    return WrittenReport(markdown, path, text)
