"""A run's results: each batch size scored and turned into a results-DB row, the run's row, and recording both.

Orchestration above the steps: it reads the chain steps' records (:mod:`twins_tasks.steps`), scores outputs
(:mod:`twins_tasks.postprocess`, :mod:`twins_tasks.reference`) and writes to the results store.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MissingOutputError, TwinsError
from .files import sha256_json
from .layout import list_inputs, output_stem
from .postprocess import score
from .preprocess.inputs import skipped_fields
from .reference import compare_outputs, compare_with_reference
from .steps import CHAIN_STEPS, failure_note
from .types import RecordedRun
from .versions import software_versions

if TYPE_CHECKING:
    from .recipe import RecipeConfig
    from .store import ResultsStore

log = logging.getLogger(__name__)


def score_step(pred_dir: str | Path, inputs: dict[str, Any], reference: dict[str, Any] | None) -> dict[str, Any]:
    """Top-1/top-5 against the labels, and agreement with the PyTorch reference logits."""
    accuracy = score(pred_dir, inputs["bin_path"])
    acc = accuracy.to_dict()
    out = {
        "top1": acc["top1"],
        "top5": acc["top5"],
        "num_images": acc["n_total"],
        "num_missing": len(acc["missing"]) + len(acc["unreadable"]),
        "missing": acc["missing"][:20],
        "unreadable": acc["unreadable"][:20],
    }
    out.update(pytorch_agreement(pred_dir, reference))
    return out


def pytorch_agreement(pred_dir: str | Path, reference: dict[str, Any] | None) -> dict[str, Any]:
    """The row's agreement with the PyTorch reference logits ({} without a reference or any of its outputs)."""
    if not reference:
        return {}
    try:
        agreement = compare_with_reference(Path(reference["reference"]), Path(pred_dir))
    except MissingOutputError as exc:  # no output of the reference images at all: counted as missing
        log.warning("No agreement with the PyTorch reference: %s", exc)
        return {}
    return {
        "agreement_top1": 100.0 * agreement["top1_agreement"],
        "agreement_max_abs_diff": agreement["max_abs_diff"],
        "agreement_images": agreement["num_compared"],
    }


def sample_check_batch(
    compiled: dict[str, Any],
    inferred: dict[str, Any],
    perf: dict[str, Any],
    inputs: dict[str, Any],
    reference: dict[str, Any] | None,
    full: dict[str, Any] | None,
    scope: dict[str, Any],
) -> dict[str, Any]:
    """The row of a batch size that inferred only a sample: its outputs against a full batch size's (``full``:
    that one's infer record) on the same images, top-1 agreement and largest logit difference within the
    limits of agreement with PyTorch (``scope``); beyond them, or with nothing to compare with, it fails as a
    compile bug would. No top-1/top-5: those are the full batch sizes'."""
    bs = int(compiled["batch_size"])
    stems = [output_stem(p) for p in list_inputs(inputs["bin_path"])[: int(scope["sample_images"])]]
    check: dict[str, Any] = {"accuracy_scope": "sample", "sample_images": len(stems)}
    if full is None:
        return failed_row(
            bs,
            f"accuracy: no full batch size ({', '.join(f'bs{b}' for b in scope['full'])}) has outputs to check "
            f"bs{bs}'s sample of {len(stems)} images against",
            compiled,
            **check,
        )
    against = int(full["batch_size"])
    check["checked_against"] = against
    try:
        record = compare_outputs(
            full["output_dir"],
            inferred["output_dir"],
            stems,
            against=f"bs{against}'s outputs",
            min_top1_agreement=float(scope["min_agreement_top1"]) / 100.0,
            atol=float(scope["max_abs_diff"]),
            check=False,
        )
    except TwinsError as exc:
        return failed_row(bs, f"accuracy: bs{bs}'s sample cannot be checked against bs{against}'s outputs: {exc}",
                          compiled, **check)  # fmt: skip
    check.update(
        sample_agreement_top1=100.0 * record["top1_agreement"],
        sample_max_abs_diff=record["max_abs_diff"],
        sample_compared=record["num_compared"],
    )
    missing = record["num_missing"] + record["num_invalid"]
    problems = list(record["failures"]) + ([f"{missing} of its outputs missing or unreadable"] if missing else [])
    if problems:
        return failed_row(
            bs,
            f"accuracy: bs{bs}'s outputs disagree with bs{against}'s on the first {len(stems)} images: "
            + "; ".join(problems),
            compiled,
            **check,
        )
    scored = {"num_images": len(stems), "num_missing": missing, **pytorch_agreement(inferred["output_dir"], reference)}
    row = {**batch_row(bs, compiled, inferred, perf, scored), **check}
    log.info(
        "bs%d: sample of %d images checked against bs%d: top-1 agreement %.1f%%, max abs diff %.2g, %.2f img/s",
        bs,
        len(stems),
        against,
        check["sample_agreement_top1"],
        check["sample_max_abs_diff"],
        row["throughput"] or 0.0,
    )
    return row


def score_batch(
    compiled: dict[str, Any],
    inferred: dict[str, Any],
    perf: dict[str, Any],
    inputs: dict[str, Any],
    reference: dict[str, Any] | None,
) -> dict[str, Any]:
    """One batch size's results-DB row: its chain's records plus top-1/top-5 and agreement with PyTorch."""
    row = batch_row(
        int(compiled["batch_size"]), compiled, inferred, perf, score_step(inferred["output_dir"], inputs, reference)
    )
    agreement = row.get("agreement_top1")
    log.info(
        "bs%d: top-1 %.1f%%, top-5 %.1f%%, %d missing, agreement with PyTorch %s, %.2f img/s",
        row["batch_size"],
        row["top1"],
        row["top5"],
        row["num_missing"],
        "-" if agreement is None else f"{agreement:.1f}%",
        row["throughput"] or 0.0,
    )
    return row


def failed_row(batch_size: int, error: str, compiled: dict[str, Any] | None = None, **known: Any) -> dict[str, Any]:
    """The results-DB row of a batch size whose chain failed: what is known, and why."""
    log.error("bs%d failed: %s", batch_size, error)
    compiled = compiled or {}
    return {
        **known,
        "batch_size": batch_size,
        "status": "failed",
        "error": error,
        "artifact": compiled.get("artifact"),
        "compile_seconds": compiled.get("compile_seconds"),
        "compile_cached": compiled.get("cached"),
    }


def collect_rows(
    batch_sizes: list[int],
    records: dict[str, list[dict[str, Any] | None]],
    inputs: dict[str, Any],
    reference: dict[str, Any] | None,
    failure_dir: str | Path,
    scope: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Score every batch size whose chain finished; a row with the error for each one that did not.

    ``records`` holds each chain step's records (``compile``, ``infer``, ``perf``), in any order, with gaps
    where a step failed. ``scope`` is the plan's ``accuracy_scope``: its sampled batch sizes are checked against
    the outputs of the first full one that has them (:func:`sample_check_batch`); None: every one is full.
    """
    by_step = {step: {int(r["batch_size"]): r for r in records.get(step, []) if r} for step in CHAIN_STEPS}
    sampled = set(scope["sampled"]) if scope else set()
    full = next((by_step["infer"][b] for b in sorted(scope["full"]) if b in by_step["infer"]), None) if scope else None
    rows = []
    for bs in sorted(batch_sizes):
        compiled, inferred, perf = (by_step[step].get(bs) for step in CHAIN_STEPS)
        tag = {"accuracy_scope": "sample"} if bs in sampled else {}  # a failed row still says what it was
        if compiled and inferred and perf:
            try:
                if bs in sampled and scope:
                    rows.append(sample_check_batch(compiled, inferred, perf, inputs, reference, full, scope))
                else:
                    rows.append(score_batch(compiled, inferred, perf, inputs, reference))
            except TwinsError as exc:
                rows.append(failed_row(bs, f"accuracy: {exc}", compiled, **tag))
            continue
        step = next(s for s, r in zip(CHAIN_STEPS, (compiled, inferred, perf), strict=True) if not r)
        note = failure_note(failure_dir, bs, step)
        reason = (
            json.loads(note.read_text())["error"]
            if note.is_file()
            else f"no result (see the log of per_batch_size.{step} for batch size {bs})"
        )
        rows.append(failed_row(bs, f"{step}: {reason}", compiled, **tag))
    return rows


SAMPLE_CHECK_FIELDS = ("checked_against", "sample_images", "sample_agreement_top1", "sample_max_abs_diff")


def accuracy_scope_record(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's accuracy scope as recorded (in its ``config``, for the report and the run page): the batch sizes
    that scored the full dataset, and each sample-checked one with what it was checked against and how it did."""
    sampled = {r["batch_size"]: r for r in rows if r.get("accuracy_scope") == "sample"}
    return {
        "full": sorted(r["batch_size"] for r in rows if r["batch_size"] not in sampled),
        "sampled": {str(bs): {k: r.get(k) for k in SAMPLE_CHECK_FIELDS} for bs, r in sorted(sampled.items())},
    }


def run_status(rows: list[dict[str, Any]]) -> str:
    """``success`` when every batch size has a result, ``partial`` when some do, ``failed`` when none does."""
    ok = sum(1 for r in rows if r.get("status", "ok") == "ok")
    return "success" if ok == len(rows) else "partial" if ok else "failed"


# What makes two runs' numbers comparable: every setting the user chose that changes what is measured, and the
# hardware class. Not the batch size: each batch size of a configuration has its own reference (regression.py).
# Not the software versions: their changes are what the nightly exists to catch, and each verdict names them.
# Changing this tuple changes every key: add a migration that recomputes the recorded ones (as r0004 does).
CONFIG_KEY_FIELDS = (
    "model_name",
    "weights_id",
    "dataset_fingerprint",
    "limit",
    "opset",
    "backend",
    "hardware",  # the SoC (Ascend); the execution provider, CPU model and cores (ONNX Runtime)
    "precision_mode",
    "op_select_implmode",
    "loop",
    "rounds",
    "threads",  # ONNX Runtime intra-op threads as they ran (no --threads = all usable cores)
    "providers",  # ONNX Runtime execution providers as they ran
)


def config_key(config: dict[str, Any]) -> str:
    """Runs with the same key are comparable for regression checks (per batch size)."""
    return sha256_json({k: config.get(k) for k in CONFIG_KEY_FIELDS})[:16]


def hardware_class(backend: dict[str, Any]) -> str | None:
    """What the run ran on, as far as it changes the numbers: the SoC of an Ascend backend; otherwise the
    backend's device (ONNX Runtime: execution provider, CPU model and usable cores, or the GPU's name)."""
    if backend.get("backend") == "ascend":
        return backend.get("soc_version")
    device = backend.get("device")
    return None if device is None else str(device)


def backend_versions(backend: dict[str, Any]) -> dict[str, str]:
    """The backend's own software versions (CANN for Ascend; ONNX Runtime's is among the installed packages)."""
    versions = dict(backend.get("versions") or {})
    if backend.get("cann_version"):
        versions["CANN"] = str(backend["cann_version"])
    return versions


def weights_id(model: dict[str, Any]) -> str:
    return model.get("checkpoint_sha256") or f"random-init seed={model.get('seed', 0)}"


def batch_row(
    batch_size: int, compiled: dict[str, Any], inferred: dict[str, Any], perf: dict[str, Any], scored: dict[str, Any]
) -> dict[str, Any]:
    """One batch size's results as a results-DB row."""
    scored_keys = ("top1", "top5", "num_images", "num_missing", "agreement_top1", "agreement_max_abs_diff")
    return {
        "batch_size": batch_size,
        "artifact": compiled.get("artifact"),
        "compile_seconds": compiled.get("compile_seconds"),
        "compile_cached": compiled.get("cached"),
        "infer_seconds": inferred.get("seconds"),
        "infer_throughput": inferred.get("throughput"),
        "perf_loop": perf.get("loop"),
        "latency_min_ms": perf.get("min_ms"),
        "latency_max_ms": perf.get("max_ms"),
        "latency_mean_ms": perf.get("mean_ms"),
        "latency_median_ms": perf.get("median_ms"),
        "latency_p99_ms": perf.get("p99_ms"),
        "throughput": perf.get("throughput"),
        "perf_rounds": perf.get("rounds"),
        "throughput_min": perf.get("throughput_min"),
        "throughput_max": perf.get("throughput_max"),
        "throughput_cv": perf.get("throughput_cv"),
        "throughput_rounds": perf.get("throughput_rounds"),
        "device": perf.get("device") or None,
        "infer_device": inferred.get("device") or None,
        "status": "ok",
        **{k: scored.get(k) for k in (*scored_keys, "agreement_images")},
    }


def build_run(
    *,
    run_key: str,
    source: str,
    inputs: dict[str, Any],
    model: dict[str, Any],
    backend: dict[str, Any],
    options: dict[str, Any],
    baseline: Any = None,
    started_at: Any = None,
    finished_at: Any = None,
    run_uid: str | None = None,
) -> dict[str, Any]:
    """The results-DB row of a run, from the records the steps returned (``backend`` = Backend.describe()).

    ``baseline`` is the spec the run's report compares with (RecipeConfig.baseline: None, a preset, numbers or a
    run id): kept in ``config`` (not part of ``config_key``) so that the results pages show the report's table.
    """
    config = {
        "model_name": model["model_name"],
        "weights_id": weights_id(model),
        "dataset_fingerprint": inputs["dataset_fingerprint"],
        "opset": model.get("opset"),
        "backend": backend.get("backend"),
        "soc_version": backend.get("soc_version"),
        "hardware": hardware_class(backend),
        # As they ran (the backend resolves an unset --threads and --providers), so a 1-thread run and a 2-thread
        # run are not compared; None for a backend without them.
        "threads": backend.get("threads"),
        "providers": backend.get("providers"),
        "synthetic_data": bool(inputs.get("synthetic_data")),
        "label_scheme": inputs.get("label_scheme"),
        **options,
        "baseline": baseline,
    }
    return {
        "run_key": run_key,
        "run_uid": run_uid,
        "source": source,
        "config_key": config_key(config),
        "config": config,
        "model_name": model["model_name"],
        "weights": model["weights"],
        "random_init": model["random_init"],
        "checkpoint_sha256": model.get("checkpoint_sha256"),
        "onnx_sha256": model.get("sha256"),
        "opset": model.get("opset"),
        "export_parity": model.get("parity"),
        "backend": backend.get("backend"),
        "device": backend.get("device"),
        "soc_version": backend.get("soc_version"),
        "dataset_path": inputs["root_path"],
        "dataset_fingerprint": inputs["dataset_fingerprint"],
        "num_images": inputs["num_images"],
        "versions": {**software_versions(), **backend_versions(backend)},
        "status": "success",
        **skipped_fields(inputs),
        "started_at": started_at,
        "finished_at": finished_at,
    }


def record_results(
    store: ResultsStore,
    config: RecipeConfig,
    *,
    run_key: str,
    source: str,
    inputs: dict[str, Any],
    model: dict[str, Any],
    backend_description: dict[str, Any],
    rows: list[dict[str, Any]],
    run_uid: str | None,
    started_at: Any = None,
) -> RecordedRun:
    """Upsert the run and its batch rows (a retry or re-run leaves exactly one set).

    ``run_uid`` is the run's identity from its plan (``PlanRecord["run_uid"]``): a run name another run
    recorded is refused (:class:`~twins_tasks.errors.InputError`), a retry of this run replaces its own rows.
    None only for a plan made by an older twins_tasks (see :meth:`ResultsStore.record_run`).
    """
    run = build_run(
        run_key=run_key,
        source=source,
        inputs=inputs,
        model=model,
        backend=backend_description,
        options=config.key_options,
        baseline=config.baseline,
        started_at=started_at,
        finished_at=dt.datetime.now(dt.UTC),
        run_uid=run_uid,
    )
    run["status"] = run_status(rows)
    run["config"]["accuracy_scope"] = accuracy_scope_record(rows)
    failed = {str(r["batch_size"]): r["error"] for r in rows if r.get("status") == "failed"}
    run["failed_batch_sizes"] = failed or None
    store.record_run(run, rows)
    runs, batches = store.count_rows()
    log.info(
        "Recorded run %s (%d batch size%s, status %s) in %s; the database now holds %d run%s, %d batch result%s",
        run_key,
        len(rows),
        "" if len(rows) == 1 else "s",
        run["status"],
        store.describe(),
        runs,
        "" if runs == 1 else "s",
        batches,
        "" if batches == 1 else "s",
    )
    return {"run_key": run_key, "config_key": run["config_key"], "results_db": store.describe()}
