"""The recipe's comparison table: throughput per batch size against a baseline, best batch size, accuracy."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import InputError
from .labels import LABEL_SCHEME_TEXT, POSITION

# Published numbers from the recipe (shared/toolchain-contract.md), img/s per batch size.
BASELINE_PRESETS: dict[str, dict[int, float]] = {
    "recipe-gpu": {1: 62.0, 4: 77.0, 8: 79.5, 16: 83.6, 32: 83.8, 64: 89.8},
    "recipe-310p": {1: 131.1, 4: 129.7, 8: 175.2, 16: 161.2, 32: 156.1, 64: 148.1},
}


_SKIPPED_SHOWN = 10  # skipped image names in the report; the results DB keeps up to preprocess.SKIPPED_NAMES_CAP


def parse_baseline_numbers(spec: Any) -> dict[int, float] | None:
    """``{"1": 62.0, "4": 77.0}`` / ``"1:62,4:77"`` / a preset name -> {batch size: img/s}; else None."""
    if spec is None or spec == "" or (isinstance(spec, str) and spec.lower() == "none"):
        return None
    if isinstance(spec, str) and spec in BASELINE_PRESETS:
        return dict(BASELINE_PRESETS[spec])
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("{"):
            spec = json.loads(text)
        elif ":" in text and all(part.count(":") == 1 for part in text.split(",")):
            try:
                spec = {int(k): float(v) for k, v in (part.split(":") for part in text.split(","))}
            except ValueError as exc:
                raise InputError(f"baseline {text!r}: expected 'bs:img_per_s,…' e.g. '1:62,4:77' ({exc})") from exc
        else:
            return None  # not numbers: a previous run id, resolved by the caller against the results DB
    if isinstance(spec, Mapping):
        try:
            numbers = {int(k): float(v) for k, v in spec.items()}
        except (TypeError, ValueError) as exc:
            raise InputError(f"baseline {spec!r}: keys must be batch sizes and values img/s numbers") from exc
        if any(v <= 0 for v in numbers.values()):
            raise InputError(f"baseline {spec!r}: throughputs must be positive")
        return numbers
    raise InputError(
        f"baseline {spec!r}: use none, a previous run id, a preset "
        f'({", ".join(BASELINE_PRESETS)}) or numbers per batch size like {{"1": 62.0}}'
    )


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
