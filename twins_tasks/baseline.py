"""The baseline a run's throughput is compared with: the recipe's published numbers, numbers given per batch
size, or another recorded run. One resolution for the report, ``twins run``, the DAG and the results pages."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .constants import MAX_BATCH_SIZE, MIN_BATCH_SIZE
from .errors import InputError

if TYPE_CHECKING:
    from .store import ResultsStore

# Published numbers from the recipe (shared/toolchain-contract.md), img/s per batch size.
BASELINE_PRESETS: dict[str, dict[int, float]] = {
    "recipe-gpu": {1: 62.0, 4: 77.0, 8: 79.5, 16: 83.6, 32: 83.8, 64: 89.8},
    "recipe-310p": {1: 131.1, 4: 129.7, 8: 175.2, 16: 161.2, 32: 156.1, 64: 148.1},
}


# What to write instead, ending every refusal of baseline numbers.
_NUMBERS_HINT = """write one img/s number per batch size, each batch size once: '1:62,4:77' or {"1": 62, "4": 77}"""


def _checked_numbers(shown: str, pairs: list[tuple[Any, Any]]) -> dict[int, float]:
    """{batch size: img/s} from (key, value) pairs: batch sizes 1..256, each once; img/s finite and positive."""
    numbers: dict[int, float] = {}
    for key, value in pairs:
        try:
            # bools and floats are not batch sizes (int(True) == 1, int(1.5) == 1 would pass silently)
            if isinstance(key, bool | float):
                raise ValueError(key)
            batch_size = int(str(key).strip())
            throughput = float(value)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"baseline {shown}: keys must be batch sizes and values img/s numbers ({exc}): {_NUMBERS_HINT}"
            ) from exc
        if not MIN_BATCH_SIZE <= batch_size <= MAX_BATCH_SIZE:
            raise InputError(
                f"baseline {shown}: batch size {batch_size} is out of range "
                f"(use {MIN_BATCH_SIZE} to {MAX_BATCH_SIZE}): {_NUMBERS_HINT}"
            )
        if batch_size in numbers:
            raise InputError(f"baseline {shown} lists batch size {batch_size} twice: {_NUMBERS_HINT}")
        # nan passes `<= 0`, and inf would make every ratio 0: both are refused with the non-positive numbers
        if not math.isfinite(throughput) or throughput <= 0:
            raise InputError(
                f"baseline {shown}: throughputs must be positive finite img/s numbers, "
                f"got {value!r} for batch size {batch_size}: {_NUMBERS_HINT}"
            )
        numbers[batch_size] = throughput
    return numbers


def parse_baseline_numbers(spec: Any) -> dict[int, float] | None:
    """``{"1": 62.0, "4": 77.0}`` / ``"1:62,4:77"`` / a preset name -> {batch size: img/s}; else None.

    Numbers are checked whatever the form: batch sizes 1..256 listed once, img/s finite and positive.
    """
    if spec is None or spec == "" or (isinstance(spec, str) and spec.lower() == "none"):
        return None
    if isinstance(spec, str) and spec in BASELINE_PRESETS:
        return dict(BASELINE_PRESETS[spec])
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("{"):
            try:
                # as (key, value) pairs: json.loads would keep the last of a batch size given twice, silently
                pairs = json.loads(text, object_pairs_hook=list)
            except ValueError as exc:  # JSONDecodeError
                raise InputError(f"baseline {text!r} is not valid JSON ({exc}): {_NUMBERS_HINT}") from exc
            return _checked_numbers(repr(text), pairs)
        if ":" in text and all(part.count(":") == 1 for part in text.split(",")):
            return _checked_numbers(repr(text), [(k, v) for k, v in (part.split(":") for part in text.split(","))])
        return None  # not numbers: a previous run id, resolved by the caller against the results DB
    if isinstance(spec, Mapping):
        return _checked_numbers(repr(spec), list(spec.items()))
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
