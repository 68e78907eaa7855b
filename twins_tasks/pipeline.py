"""The whole recipe as reusable steps: what `twins run` chains and what the Airflow tasks call one by one.

Every step takes and returns small JSON-able dicts (paths and numbers), so the same functions serve the CLI
and the DAG's XComs. Heavy imports stay inside the steps.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import re
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from . import DEFAULT_MODEL
from .backends import Backend, add_backend_arguments, backend_from_args
from .cache import compile_cached
from .errors import InputError, MissingOutputError
from .export import prepare_model
from .files import sha256_json, write_text_atomic
from .preprocess import prepare_inputs
from .reference import prepare_reference

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZES = (1, 4, 8, 16, 32, 64)


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


def parse_batch_sizes(value: str | list[int] | tuple[int, ...]) -> list[int]:
    """'1,4,8' or [1, 4, 8] -> [1, 4, 8]; integers 1..256, unique."""
    items = value.split(",") if isinstance(value, str) else list(value)
    sizes: list[int] = []
    for item in items:
        try:
            bs = int(str(item).strip())
        except ValueError:
            raise InputError(f"batch size {item!r} is not an integer (expected e.g. 1,4,8)") from None
        if not 1 <= bs <= 256:
            raise InputError(f"batch size {bs} is out of range: use integers from 1 to 256")
        if bs in sizes:
            raise InputError(f"batch size {bs} is listed twice: batch sizes must be unique")
        sizes.append(bs)
    if not sizes:
        raise InputError("no batch sizes given (expected e.g. 1,4,8)")
    return sizes


# --- steps ------------------------------------------------------------------------------------------------


def compile_step(backend: Backend, model: dict[str, Any], batch_size: int, cache_root: str | Path) -> dict[str, Any]:
    return compile_cached(
        backend, Path(model["onnx"]), batch_size, cache_root, name=f"{model['model_name']}_bs{batch_size}"
    )


def infer_step(
    backend: Backend,
    artifact: str | Path,
    bin_path: str | Path,
    batch_size: int,
    result_root: str | Path,
    name: str,
    outfmt: str = "TXT",
) -> dict[str, Any]:
    """Run inference into a temporary folder and rename it into place when every output is there."""
    result_root = Path(result_root)
    result_root.mkdir(parents=True, exist_ok=True)
    partial = f"{name}.partial"  # a plain name: ais_bench (and our validation) reject a leading dot
    shutil.rmtree(result_root / partial, ignore_errors=True)  # a killed earlier attempt's leftovers
    result = backend.infer(Path(artifact), str(bin_path), batch_size, result_root, partial, outfmt)
    final = result_root / name
    shutil.rmtree(final, ignore_errors=True)
    os.rename(result_root / partial, final)
    for summary in (result_root / f"{partial}_summary.json",):
        if summary.is_file():
            os.replace(summary, result_root / f"{name}_summary.json")
    record = result.to_dict()
    record["output_dir"] = str(final)
    # Per-batch timing lists and file lists grow with the dataset: keep XComs small.
    record["summary"] = {
        k: v for k, v in record.get("summary", {}).items() if k not in ("npu_compute_time_list", "filesinfo")
    }
    return record


def perf_step(backend: Backend, artifact: str | Path, batch_size: int, *, loop: int = 20) -> dict[str, Any]:
    result = backend.perf(Path(artifact), batch_size, loop=loop)
    for line in result.summary_lines():
        log.info("%s", line)
    return result.to_dict()


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
        **{
            k: scored.get(k)
            for k in (
                "top1",
                "top5",
                "num_images",
                "num_missing",
                "agreement_top1",
                "agreement_max_abs_diff",
                "agreement_images",
            )
        },
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
        "started_at": started_at,
        "finished_at": finished_at,
    }


# --- `twins run` --------------------------------------------------------------------------------------------


def run_recipe(args: argparse.Namespace) -> dict[str, Any]:
    from .report import parse_baseline_numbers, render
    from .store import ResultsStore

    batch_sizes = parse_batch_sizes(args.batch_sizes)
    work = Path(args.work_dir).resolve()
    cache_root = work / "cache"
    run_key = args.run_name or f"cli__{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}"
    run_dir = work / "runs" / safe_name(run_key)
    started = dt.datetime.now(dt.UTC)
    backend = backend_from_args(args)
    log.info("Run %s: backend %s, batch sizes %s, work dir %s", run_key, backend.name, batch_sizes, work)

    inputs = prepare_inputs(args.root_path, cache_root, limit=args.limit, workers=args.workers, skip_bad=args.skip_bad)
    model = prepare_model(
        cache_root,
        model_name=args.model,
        resume=args.resume,
        random_init=args.random_init,
        seed=args.seed,
        opset=args.opset,
    )
    reference = (
        prepare_reference(cache_root, inputs, model, limit=args.reference_images) if args.reference_images > 0 else None
    )

    batches = []
    for bs in batch_sizes:
        compiled = compile_step(backend, model, bs, cache_root)
        inferred = infer_step(
            backend,
            compiled["artifact"],
            inputs["bin_path"],
            bs,
            run_dir / "result",
            f"{model['model_name']}_bs{bs}",
            args.outfmt,
        )
        perf = perf_step(backend, compiled["artifact"], bs, loop=args.loop)
        scored = score_step(inferred["output_dir"], inputs, reference)
        batches.append(batch_row(bs, compiled, inferred, perf, scored))

    run = build_run(
        run_key=run_key,
        source="cli",
        inputs=inputs,
        model=model,
        backend=describe_backend(backend),
        options={
            "limit": args.limit,
            "loop": args.loop,
            "batch_sizes": batch_sizes,
            "precision_mode": getattr(args, "precision_mode", None),
        },
        started_at=started,
        finished_at=dt.datetime.now(dt.UTC),
    )

    baseline = parse_baseline_numbers(args.baseline)
    report = render(
        run,
        batches,
        baseline=baseline,
        baseline_label=args.baseline if isinstance(args.baseline, str) and baseline else "baseline",
    )
    report_path = run_dir / "report.md"
    write_text_atomic(report_path, report)
    run["report_path"] = str(report_path)
    store = ResultsStore(args.results_url or None)
    store.record_run(run, batches)
    print(report)
    print(f"\nReport: {report_path}\nResults database: {store.describe()} (run {run_key})")
    return {"run": run, "batches": batches}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="the whole recipe without Airflow, ending with the perf table",
        description="preprocess -> pth2onnx -> per batch size compile, infer, perf -> "
        "postprocess -> results DB -> report",
    )
    p.add_argument("--root_path", required=True, help="ImageNet-layout val folder (<wnid>/<image>.JPEG)")
    p.add_argument("--resume", default=None, help="checkpoint (alt_gvt_large.pth)")
    p.add_argument("--random-init", action="store_true", help="seeded random weights instead of a checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--opset", type=int, default=11)
    p.add_argument("--batch_sizes", default="1,4,8,16,32,64")
    p.add_argument("--limit", type=int, default=None, help="use only N images (round-robin over classes)")
    p.add_argument("--workers", type=int, default=None, help="preprocess processes (default: all cores)")
    p.add_argument("--skip-bad", action="store_true", help="skip undecodable images (recorded in the manifest)")
    p.add_argument("--loop", type=int, default=20, help="perf loop count")
    p.add_argument("--outfmt", default="TXT", choices=["TXT", "NPY", "BIN"])
    p.add_argument("--reference-images", type=int, default=16, help="images compared with PyTorch logits (0 = skip)")
    p.add_argument(
        "--baseline", default=None, help="none, a preset (recipe-gpu, recipe-310p) or numbers like 1:62,4:77"
    )
    p.add_argument("--work_dir", default="twins_work", help="cache and run outputs")
    p.add_argument("--run-name", default=None, help="run id in the results DB (default: cli__<UTC time>)")
    p.add_argument(
        "--results-url", default=None, help="SQLAlchemy URL (default $TWINS_RESULTS_URL or ./twins_results.db)"
    )
    add_backend_arguments(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    run_recipe(args)
    return 0
