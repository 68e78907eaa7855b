"""Checks of single values that every entry point shares (flags, Params, backends, operators): one rule each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .constants import BIN_BYTES, MAX_BATCH_SIZE, MAX_DEVICE_ID, MIN_BATCH_SIZE
from .errors import InputError


def _integer(value: Any) -> int | None:
    """``value`` as an int (numpy integers and numeric strings too), or None; bools and floats are not."""
    if isinstance(value, bool):
        return None
    if hasattr(value, "__index__"):
        return int(value)
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def batch_size_problem(value: Any) -> str | None:
    """What is wrong with ``value`` as a batch size (an integer from 1 to 256), in argparse's words, or None."""
    number = _integer(value)
    if number is None:
        return f"{value!r} is not an integer"
    if not MIN_BATCH_SIZE <= number <= MAX_BATCH_SIZE:
        # bs 100000 would try to allocate 56 GiB per batch.
        return (
            f"{number} is out of range: use {MIN_BATCH_SIZE} to {MAX_BATCH_SIZE} (the DAG's batch_sizes range; "
            f"one input is {BIN_BYTES:,} bytes, so bs {number} needs {number * BIN_BYTES / 2**30:.1f} GiB per batch)"
        )
    return None


def check_batch_size(value: Any) -> int:
    """``value`` as an ``int`` batch size, or an :class:`InputError` that says what is wrong."""
    number = _integer(value)
    if number is None or not MIN_BATCH_SIZE <= number <= MAX_BATCH_SIZE:
        reason = "not an integer" if number is None else "out of range"
        raise InputError(
            f"batch size must be an integer >= {MIN_BATCH_SIZE} and <= {MAX_BATCH_SIZE}, got {value!r} ({reason})"
        )
    return number


def parse_batch_sizes(value: str | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """'1,4,8' or [1, 4, 8] -> (1, 4, 8); integers 1..256, unique."""
    items = value.split(",") if isinstance(value, str) else list(value)
    sizes: list[int] = []
    for item in items:
        bs = check_batch_size(item.strip() if isinstance(item, str) else item)
        if bs in sizes:
            raise InputError(f"batch size {bs} is listed twice: batch sizes must be unique")
        sizes.append(bs)
    if not sizes:
        raise InputError("no batch sizes given (expected e.g. 1,4,8)")
    return tuple(sizes)


def parse_accuracy_batch_sizes(value: str | list[int] | tuple[int, ...]) -> tuple[int, ...] | str:
    """``all`` (every batch size scores the full dataset, as the recipe), or the batch sizes that do: '1,4' or
    [1, 4] -> (1, 4). At least one: the others are checked against its outputs. Whether they are among the run's
    batch sizes is :meth:`twins_tasks.recipe.RecipeConfig.validate`'s check."""
    if isinstance(value, str) and value.strip().lower() == "all":
        return "all"
    items = value.split(",") if isinstance(value, str) else list(value)
    if not [item for item in items if str(item).strip()]:
        raise InputError(
            "no accuracy batch size given: name at least one batch size that scores the full dataset (the others "
            "are checked against its outputs), e.g. 1, or all"
        )
    try:
        return parse_batch_sizes(value)
    except InputError as exc:
        raise InputError(f"accuracy batch sizes {value!r}: {exc}") from None


def parse_device_ids(value: str | list[int] | tuple[int, ...]) -> tuple[int, ...] | str:
    """``auto``, ``0,1,2`` or [0, 1, 2] -> "auto" or (0, 1, 2); 0 to MAX_DEVICE_ID, unique.

    Whether the chips exist is checked at plan, on the NPU host (:func:`twins_tasks.devices.check_chips`).
    """
    if isinstance(value, str) and value.strip() == "auto":
        return "auto"
    items = value.split(",") if isinstance(value, str) else list(value)
    ids: list[int] = []
    for item in items:
        try:
            chip = int(str(item).strip())
        except ValueError:
            raise InputError(f"device id {item!r} is not an integer (expected e.g. 0,1 or auto)") from None
        if not 0 <= chip <= MAX_DEVICE_ID:
            # 99999999999999999999 used to reach the results database and overflow its integer column.
            raise InputError(
                f"device id {item!r} is out of range: use 0 to {MAX_DEVICE_ID} (a chip's Device id in npu-smi info)"
            )
        if chip in ids:
            raise InputError(f"device ids {value!r}: {chip} is listed twice")
        ids.append(chip)
    if not ids:
        raise InputError("no device ids given (expected e.g. 0,1 or auto)")
    return tuple(ids)


def check_weights_choice(resume: str | Path | None, random_init: bool) -> None:
    """Exactly one of a checkpoint or an explicit random init."""
    if resume is None and not random_init:
        raise InputError(
            "no checkpoint given: pass --resume CHECKPOINT.pth (e.g. alt_gvt_large.pth), or "
            "--random-init --seed S to use untrained random weights on purpose"
        )
    if resume is not None and random_init:
        raise InputError(f"both a checkpoint ({resume}) and --random-init given: choose one")
