"""The recipe's comparison table: throughput per batch size against a baseline, best batch size, accuracy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .baseline import resolve_baseline
from .errors import MissingOutputError
from .files import write_text_atomic
from .labels import LABEL_SCHEME_TEXT, POSITION

if TYPE_CHECKING:
    from .store import ResultsStore

_SKIPPED_SHOWN = 10  # skipped image names in the report; the results DB keeps up to preprocess.SKIPPED_NAMES_CAP


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


def render(
    run: Mapping[str, Any],
    batches: Sequence[Mapping[str, Any]],
    *,
    baseline: Mapping[int, float] | None = None,
    baseline_label: str = "baseline",
) -> str:
    """The whole markdown report for one validation run."""
    throughput = {int(b["batch_size"]): b.get("throughput") for b in batches}
    label = f"{run.get('backend', '?')} ({run.get('device') or 'device ?'})"
    weights = run.get("weights", "?")
    parts = [
        f"# Twins-SVT-L validation: {run.get('run_key', '')}",
        "",
        f"- model: {run.get('model_name', '?')}, weights: {weights}",
        f"- backend: {run.get('backend', '?')}, device: {run.get('device') or '?'}"
        + (f", soc_version: {run['soc_version']}" if run.get("soc_version") else ""),
        f"- dataset: {run.get('dataset_path', '?')} ({run.get('num_images', '?')} images)",
    ]
    if run.get("random_init"):
        parts.append(
            "- NOTE: random weights (no trained checkpoint): accuracy is chance level; agreement with "
            "the PyTorch reference is the meaningful number."
        )
    if (run.get("config") or {}).get("synthetic_data"):
        parts.append("- NOTE: generated images, not ImageNet.")
    if (run.get("config") or {}).get("label_scheme") == POSITION:
        parts.append(
            f"- NOTE: labels are {LABEL_SCHEME_TEXT[POSITION]}: top-1 means something only for a model "
            "trained on these folders in this order."
        )
    if run.get("num_skipped"):
        shown = list(run.get("skipped_images") or [])[:_SKIPPED_SHOWN]
        rest = int(run["num_skipped"]) - len(shown)
        parts.append(
            f"- SKIPPED (--skip-bad): {run['num_skipped']} undecodable image(s), not counted in the accuracy: "
            + ", ".join(shown)
            + (f", ... and {rest} more" if rest > 0 else "")
        )
    failed = run.get("failed_batch_sizes") or {}
    if failed:
        if isinstance(failed, Mapping):
            listed = "; ".join(f"bs{bs}: {why}" for bs, why in failed.items())
        else:
            listed = ", ".join(f"bs{bs}" for bs in failed)
        parts.append(f"- FAILED batch sizes (run {run.get('status', 'partial')}): {listed}")
    spread = spread_table(batches)
    parts += [
        "",
        "## Performance",
        "",
        perf_table(throughput, label=label, baseline=baseline, baseline_label=baseline_label),
        "",
        *([spread, ""] if spread else []),
        "## Accuracy and agreement",
        "",
        accuracy_table(batches),
        "",
    ]
    return "\n".join(parts)


def write_report(store: ResultsStore, run_key: str, baseline: Any, run_dir: str | Path) -> tuple[str, Path]:
    """Render the recipe's table for a recorded run into ``<run folder>/report.md``; note its path in the DB."""
    run = store.get_run(run_key)
    if run is None:
        raise MissingOutputError(f"run {run_key!r} is not in {store.describe()}: the record step did not finish")
    label, numbers = resolve_baseline(store, baseline)
    text = render(run, run["batches"], baseline=numbers, baseline_label=label)
    path = Path(run_dir) / "report.md"
    write_text_atomic(path, text)
    store.update_run(run_key, report_path=str(path))
    return text, path
