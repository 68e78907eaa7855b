"""The whole recipe as reusable steps: what `twins run` chains and what the Airflow tasks call one by one.

Every step takes and returns small JSON-able dicts (paths and numbers), so the same functions serve the CLI
and the DAG's XComs. Heavy imports stay inside the steps.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import re
import shutil
import socket
import statistics
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backends import Backend, get_backend, resolve_backend_name
from .cache import compile_cached
from .errors import InputError, MissingOutputError, TwinsError
from .export import prepare_model
from .files import create_run_dir, sha256_json, write_json_atomic, write_text_atomic
from .inference import infer_checked
from .preprocess import prepare_inputs, skipped_fields
from .recipe import RecipeConfig, add_recipe_arguments
from .records import PlanRecord, RecordedRun
from .reference import prepare_reference

if TYPE_CHECKING:
    from .regression import RegressionOutcome
    from .store import ResultsStore

log = logging.getLogger(__name__)

FAILURES_DIR = "failures"  # <run folder>/failures/bs<N>_<step>.json: why a chain step failed
EXIT_REGRESSION = 3  # `twins run`: the run was recorded, and the regression check failed
# Per-batch lists in the ais_bench summary: 50,000 entries do not belong in an XCom.
_BIG_SUMMARY_KEYS = ("npu_compute_time_list", "filesinfo")


def software_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("twins-tasks", "torch", "timm", "onnx", "onnxruntime", "numpy", "Pillow", "apache-airflow"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


def safe_name(text: str) -> str:
    """A run id as a directory name (Airflow run ids hold ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "run"


# --- steps ------------------------------------------------------------------------------------------------


def plan_run(config: RecipeConfig, *, work_dir: str | Path, run_key: str, store: ResultsStore) -> PlanRecord:
    """Everything that can fail before hours of work, checked on the host that will do it; the run's folders."""
    config.check_paths()
    store.check_writable()  # before hours of compute whose results it must keep
    resolve_baseline(store, config.baseline)  # an unknown run id fails now, not after the run
    backend = resolve_backend_name(config.backend.name, cann_env=config.backend.cann_env)
    options = config.backend.options(backend)
    instance = get_backend(backend, **options)
    description = describe_backend(instance)
    device_ids = resolve_chips(instance, config.backend.device_ids)
    work = Path(work_dir).resolve()
    run_dir = work / "runs" / safe_name(run_key)
    return {
        "backend": backend,
        "backend_options": options,
        "backend_description": description,
        "batch_sizes": list(config.batch_sizes),
        "cache_dir": str(work / "cache"),
        "run_dir": str(run_dir),
        "result_dir": str(run_dir / "result"),
        "failure_dir": str(run_dir / FAILURES_DIR),
        "device_ids": device_ids,
    }


def prepare_reference_for(
    config: RecipeConfig, cache_root: str | Path, inputs: dict[str, Any], model: dict[str, Any]
) -> dict[str, Any] | None:
    """The PyTorch reference logits the run compares with, or None when ``reference_images`` is 0."""
    if config.reference_images <= 0:
        return None
    return prepare_reference(cache_root, inputs, model, limit=config.reference_images)


def result_name(artifact: str | Path) -> str:
    """The recipe names the result folder after the model: ``<name>_bs<N>`` (atc may add ``_linux_<arch>``)."""
    return re.sub(r"_linux_[a-z0-9_]+$", "", Path(artifact).stem)


def compile_step(
    backend: Backend, onnx: str | Path, batch_size: int, cache_root: str | Path, *, name: str | None = None
) -> dict[str, Any]:
    """Compile (or reuse) the artifact for one batch size, named ``<model stem>_bs<N>`` as in the recipe."""
    onnx = Path(onnx)
    if not onnx.is_file():  # before the cache hashes it
        raise InputError(f"ONNX model {onnx} not found: run the export step (twins pth2onnx) first")
    return compile_cached(backend, onnx, batch_size, cache_root, name=name or f"{onnx.stem}_bs{batch_size}")


def resolve_chips(backend: Backend, device_ids: tuple[int, ...] | str) -> list[int]:
    """The chips a run may use, on the host that does its device work; [] for a backend without chips."""
    if not hasattr(backend, "list_chips"):
        return []
    from .devices import resolve_device_ids

    return resolve_device_ids(device_ids if isinstance(device_ids, str) else list(device_ids), backend.list_chips)


@contextlib.contextmanager
def on_chip(backend: Backend, device_ids: list[int] | None, purpose: str) -> Iterator[tuple[Backend, dict[str, Any]]]:
    """The backend on a chip leased for the block (:func:`twins_tasks.devices.lease_chip`), and where that is.

    Backends without chips (ONNX Runtime) run as they are. The lease keeps two batch sizes off one chip; it is
    a host-local lock the kernel drops when its holder dies, so a crashed worker loses no chip.
    """
    host = socket.gethostname()
    if not device_ids or not hasattr(backend, "with_device"):
        yield backend, {"host": host, "chip": None, "device": None}
        return
    from .devices import lease_chip

    chipped: Any = backend  # a backend with chips (Ascend): npu_devices, idle, with_device
    with lease_chip(device_ids, purpose=purpose, read_devices=chipped.npu_devices, idle=chipped.idle) as chip:
        yield chipped.with_device(chip), {"host": host, "chip": chip, "device": f"{host}:npu{chip}"}


def chips_for_perf(device_ids: list[int] | None, infer_record: dict[str, Any] | None) -> list[int] | None:
    """Perf prefers the chip that ran the batch size's inference (on the same host), then any of the run's chips.

    Pinning perf to that chip left chips idle while perfs queued for a busy one (on 2 chips, 5 of 6 batch sizes
    once waited for chip 0 while chip 1 sat idle). Each task still holds its chip alone, the artifact and the
    outputs are in the shared work folder, and the recorded device says where perf measured. On another host
    (several NPU hosts on one queue) the run's chips there are tried in order.
    """
    if device_ids and infer_record and infer_record.get("chip") is not None:
        if infer_record.get("host") == socket.gethostname():
            chip = int(infer_record["chip"])
            return [chip, *(c for c in device_ids if c != chip)]
    return device_ids


def infer_step(
    backend: Backend,
    artifact: str | Path,
    bin_path: str | Path,
    batch_size: int,
    result_root: str | Path,
    name: str,
    outfmt: str = "TXT",
    *,
    device_ids: list[int] | None = None,
    purpose: str = "",
) -> dict[str, Any]:
    """Run inference into a temporary folder and rename it into place when every output is there."""
    result_root = Path(result_root)
    result_root.mkdir(parents=True, exist_ok=True)
    partial = f"{name}.partial"  # a plain name: ais_bench (and our validation) reject a leading dot
    shutil.rmtree(result_root / partial, ignore_errors=True)  # a killed earlier attempt's leftovers
    with on_chip(backend, device_ids, f"{purpose} bs{batch_size} infer".strip()) as (on, where):
        # A full disk: "no space left on <folder>", and no half-written output left behind.
        result = infer_checked(on, Path(artifact), str(bin_path), batch_size, result_root, partial, outfmt)
    final = result_root / name
    shutil.rmtree(final, ignore_errors=True)
    os.rename(result_root / partial, final)
    for summary in (result_root / f"{partial}_summary.json",):
        if summary.is_file():
            os.replace(summary, result_root / f"{name}_summary.json")
    record = {**result.to_dict(), **where}
    record["output_dir"] = str(final)
    # Per-batch timing lists and file lists grow with the dataset: keep XComs small.
    record["summary"] = {k: v for k, v in record.get("summary", {}).items() if k not in _BIG_SUMMARY_KEYS}
    log.info(
        "%d outputs in %s (%.1f images/s end to end)", record["num_outputs"], record["output_dir"], record["throughput"]
    )
    return record


def perf_step(
    backend: Backend,
    artifact: str | Path,
    batch_size: int,
    *,
    loop: int = 20,
    warmup: int = 1,
    rounds: int = 1,
    device_ids: list[int] | None = None,
    purpose: str = "",
) -> dict[str, Any]:
    """Pure performance (ais_bench --loop) in ``rounds`` rounds; the record is the median round's, with the spread.

    One mean of a few loops is as noisy as the host: the regression check compares medians of rounds and treats
    a drop within the measured spread of the two runs as noise.
    """
    results = []
    with on_chip(backend, device_ids, f"{purpose} bs{batch_size} perf".strip()) as (on, where):
        for i in range(rounds):
            result = on.perf(Path(artifact), batch_size, loop=loop, warmup=warmup)
            for line in result.summary_lines():
                log.info("%s", line)
            if rounds > 1:
                log.info("bs%d perf round %d/%d: %.2f img/s", batch_size, i + 1, rounds, result.throughput)
            results.append(result)
    throughputs = [r.throughput for r in results]
    median = sorted(results, key=lambda r: r.throughput)[(len(results) - 1) // 2]
    record = {**median.to_dict(), **{k: v for k, v in where.items() if v is not None}}
    mean = statistics.fmean(throughputs)
    record.update(
        rounds=rounds,
        throughput_rounds=throughputs,
        throughput_min=min(throughputs),
        throughput_max=max(throughputs),
        throughput_cv=statistics.pstdev(throughputs) / mean if mean else None,
    )
    return record


def score_step(pred_dir: str | Path, inputs: dict[str, Any], reference: dict[str, Any] | None) -> dict[str, Any]:
    """Top-1/top-5 against the labels, and agreement with the PyTorch reference logits."""
    from .postprocess import score
    from .reference import compare

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
    if reference:
        try:
            agreement = compare(Path(reference["reference"]), Path(pred_dir))
        except MissingOutputError as exc:  # no output of the reference images at all: counted above
            log.warning("No agreement with the PyTorch reference: %s", exc)
        else:
            out.update(
                agreement_top1=100.0 * agreement["top1_agreement"],
                agreement_max_abs_diff=agreement["max_abs_diff"],
                agreement_images=agreement["num_compared"],
            )
    return out


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


def failure_note(failure_dir: str | Path, batch_size: int, step: str) -> Path:
    """Where a failed step of one batch size's chain leaves its error for the accuracy step to record."""
    return Path(failure_dir) / f"bs{batch_size}_{step}.json"


def note_failure(failure_dir: str | Path, batch_size: int, step: str, error: str) -> None:
    write_json_atomic(
        failure_note(failure_dir, batch_size, step), {"batch_size": batch_size, "step": step, "error": error}
    )


def clear_failure(failure_dir: str | Path, batch_size: int, step: str) -> None:
    """A later try of the step succeeded: its earlier failure is no longer the batch size's story."""
    failure_note(failure_dir, batch_size, step).unlink(missing_ok=True)


def failed_row(batch_size: int, error: str, compiled: dict[str, Any] | None = None) -> dict[str, Any]:
    """The results-DB row of a batch size whose chain failed: what is known, and why."""
    log.error("bs%d failed: %s", batch_size, error)
    compiled = compiled or {}
    return {
        "batch_size": batch_size,
        "status": "failed",
        "error": error,
        "artifact": compiled.get("artifact"),
        "compile_seconds": compiled.get("compile_seconds"),
        "compile_cached": compiled.get("cached"),
    }


CHAIN_STEPS = ("compile", "infer", "perf")


def collect_rows(
    batch_sizes: list[int],
    records: dict[str, list[dict[str, Any] | None]],
    inputs: dict[str, Any],
    reference: dict[str, Any] | None,
    failure_dir: str | Path,
) -> list[dict[str, Any]]:
    """Score every batch size whose chain finished; a row with the error for each one that did not.

    ``records`` holds each chain step's records (``compile``, ``infer``, ``perf``), in any order, with gaps
    where a step failed.
    """
    by_step = {step: {int(r["batch_size"]): r for r in records.get(step, []) if r} for step in CHAIN_STEPS}
    rows = []
    for bs in sorted(batch_sizes):
        compiled, inferred, perf = (by_step[step].get(bs) for step in CHAIN_STEPS)
        if compiled and inferred and perf:
            try:
                rows.append(score_batch(compiled, inferred, perf, inputs, reference))
            except TwinsError as exc:
                rows.append(failed_row(bs, f"accuracy: {exc}", compiled))
            continue
        step = next(s for s, r in zip(CHAIN_STEPS, (compiled, inferred, perf), strict=True) if not r)
        note = failure_note(failure_dir, bs, step)
        reason = (
            json.loads(note.read_text())["error"]
            if note.is_file()
            else f"no result (see the log of per_batch_size.{step} for batch size {bs})"
        )
        rows.append(failed_row(bs, f"{step}: {reason}", compiled))
    return rows


def run_status(rows: list[dict[str, Any]]) -> str:
    """``success`` when every batch size has a result, ``partial`` when some do, ``failed`` when none does."""
    ok = sum(1 for r in rows if r.get("status", "ok") == "ok")
    return "success" if ok == len(rows) else "partial" if ok else "failed"


def config_key(config: dict[str, Any]) -> str:
    """Runs with the same key are comparable for regression checks."""
    keys = (
        "model_name",
        "weights_id",
        "dataset_fingerprint",
        "limit",
        "opset",
        "backend",
        "soc_version",
        "precision_mode",
        "loop",
    )
    return sha256_json({k: config.get(k) for k in keys})[:16]


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
        "status": "ok",
        **{k: scored.get(k) for k in (*scored_keys, "agreement_images")},
    }


def weights_id(model: dict[str, Any]) -> str:
    return model.get("checkpoint_sha256") or f"random-init seed={model.get('seed', 0)}"


def describe_backend(backend: Backend) -> dict[str, Any]:
    return {"backend": backend.name, **backend.describe()}


def build_run(
    *,
    run_key: str,
    source: str,
    inputs: dict[str, Any],
    model: dict[str, Any],
    backend: dict[str, Any],
    options: dict[str, Any],
    started_at: Any = None,
    finished_at: Any = None,
) -> dict[str, Any]:
    """The results-DB row of a run, from the records the steps returned (``backend`` = Backend.describe())."""
    config = {
        "model_name": model["model_name"],
        "weights_id": weights_id(model),
        "dataset_fingerprint": inputs["dataset_fingerprint"],
        "opset": model.get("opset"),
        "backend": backend.get("backend"),
        "soc_version": backend.get("soc_version"),
        "synthetic_data": bool(inputs.get("synthetic_data")),
        "label_scheme": inputs.get("label_scheme"),
        **options,
    }
    return {
        "run_key": run_key,
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
        "versions": {**software_versions(), **backend.get("versions", {})},
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
    started_at: Any = None,
) -> RecordedRun:
    """Upsert the run and its batch rows (a retry or re-run leaves exactly one set)."""
    run = build_run(
        run_key=run_key,
        source=source,
        inputs=inputs,
        model=model,
        backend=backend_description,
        options=config.key_options,
        started_at=started_at,
        finished_at=dt.datetime.now(dt.UTC),
    )
    run["status"] = run_status(rows)
    failed = {str(r["batch_size"]): r["error"] for r in rows if r.get("status") == "failed"}
    run["failed_batch_sizes"] = failed or None
    store.record_run(run, rows)
    runs, batches = store.count_rows()
    log.info(
        "Recorded run %s (%d batch sizes, status %s) in %s; the database now holds %d runs, %d batch results",
        run_key,
        len(rows),
        run["status"],
        store.describe(),
        runs,
        batches,
    )
    return {"run_key": run_key, "config_key": run["config_key"], "results_db": store.describe()}


def resolve_baseline(store: ResultsStore, spec: Any) -> tuple[dict[int, float] | None, str]:
    """The baseline's img/s per batch size and its label: numbers, a preset, or a previous run's throughput."""
    from .report import parse_baseline_numbers

    numbers = parse_baseline_numbers(spec)
    if numbers is not None:
        return numbers, spec if isinstance(spec, str) else "baseline"
    if not spec:
        return None, "baseline"
    previous = store.get_run(str(spec))
    if previous is None:
        raise InputError(
            f"baseline run {spec!r} is not in {store.describe()}: use a run id listed by `twins results`, "
            f"a preset (recipe-gpu, recipe-310p), or numbers per batch size like 1:62,4:77"
        )
    return {b["batch_size"]: b["throughput"] for b in previous["batches"] if b["throughput"]}, f"run {spec}"


def write_report(store: ResultsStore, run_key: str, baseline: Any, run_dir: str | Path) -> tuple[str, Path]:
    """Render the recipe's table for a recorded run into ``<run folder>/report.md``; note its path in the DB."""
    from .report import render

    run = store.get_run(run_key)
    if run is None:
        raise MissingOutputError(f"run {run_key!r} is not in {store.describe()}: the record step did not finish")
    numbers, label = resolve_baseline(store, baseline)
    text = render(run, run["batches"], baseline=numbers, baseline_label=label)
    path = Path(run_dir) / "report.md"
    write_text_atomic(path, text)
    store.update_run(run_key, report_path=str(path))
    return text, path


def regression_step(
    store: ResultsStore, config: RecipeConfig, plan: PlanRecord, recorded: RecordedRun, rows: list[dict[str, Any]]
) -> RegressionOutcome:
    """The regression check of a recorded run; a suspect throughput drop is re-measured here, on the run's chips."""
    from .regression import check_regression

    backend = get_backend(plan["backend"], **plan["backend_options"])
    artifacts = {r["batch_size"]: r["artifact"] for r in rows if r.get("status") == "ok"}

    def remeasure(batch_size: int) -> dict[str, Any]:
        log.info("Re-measuring bs%d before calling it a regression", batch_size)
        return perf_step(
            backend,
            artifacts[batch_size],
            batch_size,
            loop=config.perf_loops,
            rounds=config.perf_rounds,
            device_ids=plan["device_ids"],
            purpose=f"{recorded['run_key']} re-measure",
        )

    return check_regression(store, recorded["run_key"], recorded["config_key"], config.thresholds, remeasure=remeasure)


# --- `twins run` --------------------------------------------------------------------------------------------


def run_recipe(
    config: RecipeConfig, *, work_dir: str | Path, run_key: str, results_url: str | None = None
) -> dict[str, Any]:
    """The whole recipe in this process: the same steps, in the same order, as the DAG's tasks."""
    from .store import ResultsStore

    started = dt.datetime.now(dt.UTC)
    store = ResultsStore(results_url)
    plan = plan_run(config, work_dir=work_dir, run_key=run_key, store=store)
    # Exclusively: two `twins run`s never share (and clean) one run folder.
    create_run_dir(Path(plan["run_dir"]).parent, Path(plan["run_dir"]).name)
    backend = get_backend(plan["backend"], **plan["backend_options"])
    log.info("Run %s: backend %s, batch sizes %s, run folder %s", run_key, backend.name, plan["batch_sizes"],
             plan["run_dir"])  # fmt: skip
    cache_root = plan["cache_dir"]
    inputs = prepare_inputs(
        config.dataset_path, cache_root, limit=config.limit, workers=config.workers, skip_bad=config.skip_bad
    )
    model = prepare_model(
        cache_root,
        model_name=config.model_name,
        resume=config.checkpoint,
        random_init=config.random_init,
        seed=config.seed,
        opset=config.opset,
    )
    reference = prepare_reference_for(config, cache_root, inputs, model)
    rows = []
    failure_dir = plan["failure_dir"]
    for bs in plan["batch_sizes"]:
        # One batch size failing must not lose the others (as timm's validate.py carries on past a bad config).
        records: dict[str, list[dict[str, Any] | None]] = {}
        step = "compile"
        try:
            compiled = compile_step(backend, model["onnx"], bs, cache_root)
            records["compile"] = [compiled]
            artifact = compiled["artifact"]
            step = "infer"
            inferred = infer_step(
                backend,
                artifact,
                inputs["bin_path"],
                bs,
                plan["result_dir"],
                result_name(artifact),
                config.outfmt,
                device_ids=plan["device_ids"],
                purpose=run_key,
            )
            records["infer"] = [inferred]
            step = "perf"
            records["perf"] = [
                perf_step(
                    backend,
                    artifact,
                    bs,
                    loop=config.perf_loops,
                    rounds=config.perf_rounds,
                    device_ids=chips_for_perf(plan["device_ids"], inferred),
                    purpose=run_key,
                )
            ]
        except TwinsError as exc:
            note_failure(failure_dir, bs, step, str(exc))
        rows += collect_rows([bs], records, inputs, reference, failure_dir)
    recorded = record_results(
        store,
        config,
        run_key=run_key,
        source="cli",
        inputs=inputs,
        model=model,
        backend_description=plan["backend_description"],
        rows=rows,
        started_at=started,
    )
    report, report_path = write_report(store, run_key, config.baseline, plan["run_dir"])
    print(report)
    print(f"\nReport: {report_path}\nResults database: {store.describe()} (run {run_key})")
    outcome = regression_step(store, config, plan, recorded, rows)
    print(outcome.text())
    return {"recorded": recorded, "rows": rows, "regression": outcome.status, "ok": outcome.ok}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="the whole recipe without Airflow, ending with the perf table",
        description="preprocess -> pth2onnx -> per batch size compile, infer, perf -> postprocess -> results DB "
        "-> report -> regression check against the last good run of the same setup (exit code 3 on a regression)",
    )
    add_recipe_arguments(p)
    p.add_argument("--work-dir", "--work_dir", dest="work_dir", default="twins_work", help="cache and run outputs")
    p.add_argument(
        "--run-name", default=None, help="run id in the results DB, unique (default: cli__<UTC time>_<random>)"
    )
    p.add_argument(
        "--results-url", default=None, help="SQLAlchemy URL (default $TWINS_RESULTS_URL or ./twins_results.db)"
    )
    p.set_defaults(func=_main)

    p = subparsers.add_parser(
        "prepare-inputs",
        help="preprocess into the content-addressed cache (what the DAG's preprocess task runs)",
        description="twins preprocess into <cache>/bins/<key>, reused when the dataset, transform and limit are "
        "unchanged; writes the cache record as JSON to --record",
    )
    p.add_argument("--root_path", required=True, help="ImageNet-layout val folder (<wnid>/<image>.JPEG)")
    p.add_argument("--cache-dir", required=True, help="cache root (TWINS_WORK_DIR/cache)")
    p.add_argument("--limit", type=int, default=None, help="use only N images (round-robin over classes)")
    p.add_argument("--workers", type=int, default=None, help="preprocess processes (default: all cores)")
    p.add_argument("--skip-bad", action="store_true", help="skip undecodable images (recorded in the manifest)")
    p.add_argument("--record", required=True, help="where to write the cache record (JSON)")
    p.set_defaults(func=_prepare_inputs_main)


def _main(args: argparse.Namespace) -> int:
    from .store import new_run_id

    config = RecipeConfig.from_args(args)
    run_key = args.run_name or new_run_id("cli")
    result = run_recipe(config, work_dir=args.work_dir, run_key=run_key, results_url=args.results_url)
    if result["regression"] == "failed":
        return EXIT_REGRESSION
    return 0 if result["ok"] else 1  # some batch sizes failed: recorded as a partial run, said above


def _prepare_inputs_main(args: argparse.Namespace) -> int:
    record = prepare_inputs(
        args.root_path, args.cache_dir, limit=args.limit, workers=args.workers, skip_bad=args.skip_bad
    )
    write_json_atomic(Path(args.record), record)
    return 0
