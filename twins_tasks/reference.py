"""PyTorch reference logits, and how far a backend's outputs are from them.

``twins reference`` runs the model in PyTorch eager fp32 on the first ``--limit`` preprocessed inputs (in
ais_bench's natural order) and saves the logits. ``twins compare`` reads any backend's ais_bench-layout outputs
(TXT/NPY/BIN) for the same inputs and reports top-1 agreement, top-5 overlap and logit differences. This is
meaningful even with random weights: it checks the compiled model computes what PyTorch computes.
The same comparison checks one inference's outputs against another's (:func:`compare_outputs`: a batch
size that infers only a sample against a batch size that scored the full dataset).
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .cache import mark_used, sweep_stale_temps
from .constants import DEFAULT_MODEL, IMAGE_SIZE, NUM_CLASSES
from .errors import InputError, MissingOutputError, ParityError
from .files import atomic_path, sha256_json, write_json_atomic
from .layout import find_outputs, list_inputs, load_input, read_output
from .progress import Progress

log = logging.getLogger(__name__)

# ais_bench TXT outputs are written "%f": each value is off by up to half a unit in the 6th decimal.
TXT_ROUNDING = 5e-7
_NAMED = 10  # missing/invalid stems named in a printed line (the record keeps them all)


def reference_logits(
    bin_path: str | Path,
    output: str | Path,
    *,
    model_name: str = DEFAULT_MODEL,
    resume: str | Path | None = None,
    random_init: bool = False,
    seed: int = 0,
    limit: int | None = 16,
    batch_size: int = 8,
) -> dict[str, Any]:
    """PyTorch eager fp32 logits for the first ``limit`` inputs of ``bin_path``; saved as ``output`` (.npz).

    The .npz holds ``stems`` (str), ``logits`` (float32, (K, 1000)) and ``meta`` (a JSON string with the model,
    the weights record and the input folder). ``limit=None`` takes every input. Returns the record.
    """
    import torch

    from .export import load_model

    if limit is not None and limit < 1:
        raise InputError(f"--limit {limit} must be at least 1 (or omitted for every input)")
    if batch_size < 1:
        raise InputError(f"--batch_size {batch_size} must be at least 1")
    files = list_inputs(bin_path)
    if limit is not None:
        files = files[:limit]
    model, weights = load_model(model_name, resume, random_init, seed)

    start = time.perf_counter()
    expected_values = 3 * IMAGE_SIZE * IMAGE_SIZE
    progress = Progress("PyTorch reference", len(files), unit="images", logger=log)
    chunks: list[np.ndarray] = []
    for first in range(0, len(files), batch_size):
        batch_files = files[first : first + batch_size]
        arrays = []
        for path in batch_files:
            values = load_input(path)
            if values.size != expected_values:
                raise InputError(
                    f"input {path} has {values.size} float32 values, expected {expected_values} "
                    f"(3x{IMAGE_SIZE}x{IMAGE_SIZE}): is this a `twins preprocess` output?"
                )
            arrays.append(values.reshape(3, IMAGE_SIZE, IMAGE_SIZE))
        with torch.no_grad():
            chunks.append(model(torch.from_numpy(np.stack(arrays))).numpy().astype(np.float32, copy=False))
        progress.update(len(batch_files))
    progress.finish()
    logits = np.concatenate(chunks)
    seconds = time.perf_counter() - start

    stems = [p.stem for p in files]
    meta = {
        "model": model_name,
        **weights,
        "bin_path": str(bin_path),
        "limit": limit,
        "num_images": len(stems),
        "dtype": "float32",
        "runtime": "pytorch eager cpu",
        "seconds": seconds,
    }
    output = Path(output)
    with atomic_path(output) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, stems=np.array(stems, dtype=str), logits=logits, meta=np.array(json.dumps(meta)))
    log.info("Saved PyTorch reference logits for %d images to %s (weights: %s)", len(stems), output, weights["weights"])
    return {"reference": str(output), **meta, "first_stem": stems[0], "last_stem": stems[-1]}


def load_reference(path: str | Path) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """``(stems, logits, meta)`` from a file written by :func:`reference_logits`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"reference {path} does not exist: write it with `twins reference`")
    try:
        with np.load(path, allow_pickle=False) as data:
            stems = [str(s) for s in data["stems"]]
            logits = data["logits"].astype(np.float32, copy=False)
            meta = json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"reference {path} is not a `twins reference` .npz file ({exc})") from exc
    if logits.ndim != 2 or logits.shape[0] != len(stems):
        raise InputError(f"reference {path} is inconsistent: {len(stems)} stems, logits {logits.shape}")
    return stems, logits, meta


def name_list(stems: list[str]) -> str:
    more = f" ... and {len(stems) - _NAMED} more" if len(stems) > _NAMED else ""
    return ", ".join(stems[:_NAMED]) + more


def compare_with_reference(
    reference: str | Path,
    pred_dir: str | Path,
    *,
    min_top1_agreement: float | None = None,
    atol: float | None = None,
    json_path: str | Path | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """Compare a backend's outputs in ``pred_dir`` with the reference logits; return the numbers.

    Missing outputs and unreadable ones (wrong size, bad file) are counted and named, never fatal; an output
    folder with none of the reference's stems is (MissingOutputError). Differences of TXT outputs include their
    ``%f`` rounding, so ``atol`` is widened by that rounding where any TXT output was read. With
    ``min_top1_agreement`` (a fraction) or ``atol`` given, a failed check raises ParityError after the record
    is written to ``json_path`` (``check=False``: only ``passed``/``failures`` in the record say so).
    """
    stems, ref_logits, meta = load_reference(reference)
    about = {
        "reference": str(reference),
        "model": meta.get("model"),
        "reference_weights": meta.get("weights"),
        "random_init": meta.get("random_init"),
    }
    return compare_logits(
        stems,
        ref_logits,
        pred_dir,
        about=about,
        min_top1_agreement=min_top1_agreement,
        atol=atol,
        json_path=json_path,
        check=check,
    )


def compare_outputs(
    reference_dir: str | Path,
    pred_dir: str | Path,
    stems: list[str],
    *,
    against: str,
    min_top1_agreement: float | None = None,
    atol: float | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """:func:`compare_logits` of the outputs in ``pred_dir`` against another inference's outputs in
    ``reference_dir`` (``against`` names them in messages, e.g. "bs1's outputs"), on ``stems``.

    Stems without a readable output in ``reference_dir`` are left out (said in the log); none at all is a
    MissingOutputError. Both sides' TXT rounding widens ``atol``.
    """
    reference_dir = Path(reference_dir)
    found = find_outputs(reference_dir) if reference_dir.is_dir() else {}
    kept: list[str] = []
    rows: list[np.ndarray] = []
    formats: Counter[str] = Counter()
    for stem in stems:
        path = found.get(stem)
        if path is None:
            continue
        try:
            rows.append(read_output(path, NUM_CLASSES))
        except (OSError, ValueError, InputError):
            continue
        kept.append(stem)
        formats[path.suffix.lower().lstrip(".")] += 1
    if not kept:
        raise MissingOutputError(
            f"none of the {len(stems)} images has a readable output in {reference_dir} ({against})"
        )
    if len(kept) < len(stems):
        log.warning("%d of %d images have no readable output in %s: left out", len(stems) - len(kept), len(stems),
                    reference_dir)  # fmt: skip
    ref = np.stack(rows)
    ref_rounding = TXT_ROUNDING + float(np.spacing(np.abs(ref).max())) if formats.get("txt") else 0.0
    about = {"reference": str(reference_dir), "against": against}
    return compare_logits(
        kept,
        ref,
        pred_dir,
        about=about,
        ref_rounding=ref_rounding,
        min_top1_agreement=min_top1_agreement,
        atol=atol,
        check=check,
    )


def compare_logits(
    stems: list[str],
    ref_logits: np.ndarray,
    pred_dir: str | Path,
    *,
    about: dict[str, Any],
    ref_rounding: float = 0.0,
    min_top1_agreement: float | None = None,
    atol: float | None = None,
    json_path: str | Path | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """The comparison of :func:`compare_with_reference` against any logits (one row per stem); ``about`` says
    what they are (``reference``, and ``against`` for messages: the PyTorch reference by default) and is kept
    in the record; ``ref_rounding`` is the references' own text rounding (outputs of another inference)."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError(
            f"prediction folder {pred_dir} does not exist: pass --pred the folder of output files "
            "(<output>/<output_dirname> of the inference step)"
        )
    outputs = find_outputs(pred_dir)
    num_classes = ref_logits.shape[1]

    compared: list[int] = []
    preds: list[np.ndarray] = []
    missing: list[str] = []
    invalid: dict[str, str] = {}
    formats: Counter[str] = Counter()
    progress = Progress("Compare with reference", len(stems), unit="outputs", logger=log)
    for i, stem in enumerate(stems):
        path = outputs.get(stem)
        progress.update()
        if path is None:
            missing.append(stem)
            continue
        try:
            values = read_output(path, num_classes)  # the size tells float16 BIN outputs (FP16) from float32
        except (OSError, ValueError, InputError) as exc:
            invalid[stem] = f"{path.name}: {exc}"
            continue
        compared.append(i)
        preds.append(values)
        formats[path.suffix.lower().lstrip(".")] += 1
    progress.finish()
    if not compared:
        raise MissingOutputError(
            f"none of the {len(stems)} reference images has a readable output in {pred_dir} "
            f"({len(outputs)} output files found there, {len(invalid)} unreadable): is --pred "
            "the output folder of an inference run on the same inputs?"
        )

    ref = ref_logits[compared]
    pred = np.stack(preds)
    diff = np.abs(pred - ref)
    top1 = float((pred.argmax(1) == ref.argmax(1)).mean())
    top5_ref = np.argsort(-ref, axis=1)[:, :5]
    top5_pred = np.argsort(-pred, axis=1)[:, :5]
    top5 = float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top5_ref, top5_pred, strict=False)]))
    # One ulp of the largest logit: float32 parsing of the rounded text adds at most that.
    rounding = TXT_ROUNDING + float(np.spacing(np.abs(ref).max())) if formats.get("txt") else 0.0
    rounding += ref_rounding

    failures: list[str] = []
    if min_top1_agreement is not None and top1 < min_top1_agreement:
        failures.append(f"top-1 agreement {top1:.1%} < {min_top1_agreement:.1%}")
    if atol is not None and float(diff.max()) > atol + rounding:
        failures.append(
            f"max abs diff {float(diff.max()):.3g} > atol {atol:g}"
            + (f" + TXT rounding {rounding:.2g}" if rounding else "")
        )
    record: dict[str, Any] = {
        **about,
        "pred": str(pred_dir),
        "num_reference": len(stems),
        "num_compared": len(compared),
        "num_missing": len(missing),
        "missing": missing,
        "num_invalid": len(invalid),
        "invalid": invalid,
        "formats": dict(formats),
        "top1_agreement": top1,
        "top5_overlap": top5,
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "txt_rounding": rounding,
        "min_top1_agreement": min_top1_agreement,
        "atol": atol,
        "passed": not failures,
        "failures": failures,
    }
    if missing:
        log.warning(
            "%d of %d reference images have no output in %s: %s", len(missing), len(stems), pred_dir, name_list(missing)
        )
    if invalid:
        log.warning(
            "%d outputs in %s could not be read: %s",
            len(invalid),
            pred_dir,
            "; ".join(f"{k} ({v})" for k, v in list(invalid.items())[:_NAMED]),
        )
    log.info("%s", agreement_line(record))
    if json_path is not None:
        write_json_atomic(json_path, record)
    if failures and check:
        raise ParityError(failure_message(record))
    return record


def failure_message(record: dict[str, Any]) -> str:
    against = record.get("against") or f"the PyTorch reference {record['reference']}"
    return f"outputs in {record['pred']} disagree with {against}: " + "; ".join(record["failures"])


def agreement_line(record: dict[str, Any]) -> str:
    line = (
        f"Agreement with {record.get('against') or 'PyTorch reference'} on {record['num_compared']} images: "
        f"top-1 {100 * record['top1_agreement']:.1f}%, top-5 overlap {100 * record['top5_overlap']:.1f}%, "
        f"max abs diff {record['max_abs_diff']:.2g}, mean abs diff {record['mean_abs_diff']:.2g}"
    )
    if record["txt_rounding"]:
        line += f" (TXT outputs: %f rounding contributes up to {record['txt_rounding']:.1g})"
    return line


# ----------------------------------------------------------------------------------------------- CLI


def prepare_reference(
    cache_root: str | Path, inputs: dict[str, Any], model: dict[str, Any], *, limit: int = 16
) -> dict[str, Any]:
    """PyTorch reference logits for the first ``limit`` inputs (cached by weights + inputs + limit)."""
    key = sha256_json({"inputs": inputs["key"], "model": model["key"], "limit": limit})[:16]
    section = Path(cache_root) / "reference"
    sweep_stale_temps(section)
    path = section / f"{key}.npz"
    mark_used(path)  # before the check: the cache budget keeps what a run is about to reuse
    if path.is_file():
        # Cheap integrity check: an .npz is a zip whose directory sits at its end, so a truncated one fails.
        if zipfile.is_zipfile(path):
            log.info("Reusing PyTorch reference logits %s", path)
            return {"reference": str(path), "limit": limit, "cached": True}
        log.warning("PyTorch reference logits %s are damaged (not a complete .npz): rebuilding them", path)
        path.unlink(missing_ok=True)
    record = reference_logits(
        Path(inputs["bin_path"]),
        path,
        model_name=model["model_name"],
        resume=model.get("resume"),
        random_init=model.get("random_init", False),
        seed=model.get("seed", 0),
        limit=limit,
    )
    return {**record, "reference": str(path), "limit": limit, "cached": False}
