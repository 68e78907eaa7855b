"""The baseline a run's throughput is compared with: the recipe's published numbers, numbers given per batch
size, or another recorded run. One resolution for the report, ``twins run``, the DAG and the results pages."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import InputError

if TYPE_CHECKING:
    from .store import ResultsStore

# Published numbers from the recipe (shared/toolchain-contract.md), img/s per batch size.
BASELINE_PRESETS: dict[str, dict[int, float]] = {
    "recipe-gpu": {1: 62.0, 4: 77.0, 8: 79.5, 16: 83.6, 32: 83.8, 64: 89.8},
    "recipe-310p": {1: 131.1, 4: 129.7, 8: 175.2, 16: 161.2, 32: 156.1, 64: 148.1},
}


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


def resolve_baseline(store: ResultsStore, spec: Any) -> tuple[str, dict[int, float] | None]:
    """(label, img/s per batch size) of a baseline given as none, numbers, a preset or a recorded run's id.

    An unknown run id is an :class:`InputError` (the DAG's plan checks it before any work is done).
    """
    numbers = parse_baseline_numbers(spec)
    if numbers is not None:
        return (spec if isinstance(spec, str) else "baseline"), numbers
    if not spec or (isinstance(spec, str) and spec.strip().lower() == "none"):
        return "none", None
    previous = store.get_run(str(spec))
    if previous is None:
        raise InputError(
            f"baseline {spec!r} is neither a preset ({', '.join(BASELINE_PRESETS)}), numbers like '1:62,4:77', "
            f"nor a run id in {store.describe()}: use one of those (`twins results` lists the run ids)"
        )
    return f"run {spec}", {b["batch_size"]: b["throughput"] for b in previous["batches"] if b.get("throughput")}
