"""
### Twins-SVT-L inference validation

The Ascend ModelZoo recipe for Twins-SVT-L (`alt_gvt_large`, timm `twins_svt_large`), unattended:

1. **plan** checks the Params and resolves the backend where the device is (`auto`: Ascend when `atc`/CANN is
   installed on the NPU worker, else ONNX Runtime);
2. **preprocess** (ImageNet val JPEGs -> float32 `.bin`) and **export** (checkpoint -> ONNX, with a parity gate
   against PyTorch) run in parallel;
3. per batch size: **compile** (`atc` -> `.om`, or an ONNX Runtime artifact) -> **infer** (`ais_bench`, one
   output per image) -> **perf** (`ais_bench --loop`), device work serialised by a one-slot pool;
4. **accuracy** (top-1/top-5 per batch size, agreement with PyTorch logits) -> **record** (results database)
   -> **report** (the recipe's table) -> **regression_check** (against the last good run of the same setup).

Preprocessed inputs, ONNX models and compiled artifacts are cached by content: a nightly run whose inputs did
not change reuses them and says so in the task log. Results go to the database of the Airflow Connection
`twins_results` (any SQLAlchemy URL), else to `$AIRFLOW_HOME/twins_results.db`.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task, task_group

from twins_airflow.operators import CompileOperator, InferOperator, PerfOperator

# Deployment settings (environment, read at parse time because queue and pool cannot be templated).
NPU_QUEUE = os.environ.get("TWINS_NPU_QUEUE", "ascend")
NPU_POOL = os.environ.get("TWINS_NPU_POOL", "ascend_npu")
AIRFLOW_HOME = os.environ.get("AIRFLOW_HOME", str(Path.home() / "airflow"))
WORK_DIR = os.environ.get("TWINS_WORK_DIR", os.path.join(AIRFLOW_HOME, "twins"))
RESULTS_CONN_ID = "twins_results"

PRECISION_MODES = [
    "recipe default",
    "force_fp16",
    "allow_mix_precision",
    "allow_fp32_to_fp16",
    "must_keep_origin_dtype",
    "force_fp32",
]

PARAMS = {
    "dataset_path": Param(
        os.environ.get("TWINS_DATASET_PATH", "/data/imagenet/val"),
        type="string",
        minLength=1,
        title="Dataset folder",
        section="Data",
        description="ImageNet-layout val folder: one sub-folder per class (<wnid>/<image>.JPEG).",
    ),
    "image_limit": Param(
        None,
        type=["null", "integer"],
        minimum=1,
        title="Image limit",
        section="Data",
        description="Use only this many images (round-robin over classes); empty = all.",
    ),
    "checkpoint_path": Param(
        os.environ.get("TWINS_CHECKPOINT") or None,
        type=["null", "string"],
        title="Checkpoint",
        section="Model",
        description="alt_gvt_large.pth (plain state dict, {'model': ...} or {'state_dict': ...}). "
        "Empty = seeded random weights (a toolchain check; accuracy is then chance level).",
    ),
    "random_init_seed": Param(
        0,
        type="integer",
        minimum=0,
        title="Random-init seed",
        section="Model",
        description="Seed of the random weights, used only when no checkpoint is given.",
    ),
    "model_name": Param(
        "twins_svt_large",
        type="string",
        pattern="^[a-z0-9_]+$",
        title="timm model name",
        section="Model",
        description="twins_svt_large == Twins alt_gvt_large.",
    ),
    "opset": Param(
        11,
        type="integer",
        minimum=11,
        maximum=21,
        title="ONNX opset",
        section="Model",
        description="The recipe exports with opset 11.",
    ),
    "backend": Param(
        "auto",
        type="string",
        enum=["auto", "ascend", "onnxruntime"],
        title="Backend",
        section="Backend",
        description="auto = Ascend when atc/CANN is installed on the NPU worker, else ONNX Runtime.",
    ),
    "soc_version": Param(
        "auto",
        type="string",
        pattern="^(auto|Ascend[0-9A-Za-z]+)$",
        title="SoC version",
        section="Backend",
        description="auto = read from npu-smi info (e.g. Ascend310P3).",
    ),
    "device_id": Param(0, type="integer", minimum=0, maximum=63, title="NPU device id", section="Backend"),
    "precision_mode": Param(
        "recipe default",
        type="string",
        enum=PRECISION_MODES,
        title="atc precision mode",
        section="Backend",
        description="'recipe default' passes no --precision_mode (atc uses force_fp16).",
    ),
    "batch_sizes": Param(
        [1, 4, 8, 16, 32, 64],
        type="array",
        minItems=1,
        maxItems=32,
        uniqueItems=True,
        items={"type": "integer", "minimum": 1, "maximum": 256},
        title="Batch sizes",
        section="Run",
        description="One compile -> infer -> perf chain each; integers 1-256, unique.",
    ),
    "perf_loops": Param(
        20,
        type="integer",
        minimum=1,
        maximum=100000,
        title="Perf loops",
        section="Run",
        description="ais_bench --loop for the pure-performance run.",
    ),
    "reference_images": Param(
        16,
        type="integer",
        minimum=0,
        maximum=10000,
        title="Reference images",
        section="Run",
        description="Images whose outputs are compared with PyTorch fp32 logits (0 = skip).",
    ),
    "outfmt": Param("TXT", type="string", enum=["TXT", "NPY", "BIN"], title="Output format", section="Run"),
    "baseline": Param(
        None,
        type=["null", "string", "object"],
        title="Baseline",
        section="Comparison",
        description="None; a previous run id; a preset (recipe-gpu, recipe-310p); or img/s per batch size "
        'as {"1": 62.0, "4": 77.0} or "1:62,4:77".',
    ),
    "max_top1_drop": Param(
        0.5,
        type="number",
        minimum=0,
        title="Max top-1 drop (pp)",
        section="Comparison",
        description="Fail regression_check when top-1 drops more than this many points.",
    ),
    "max_throughput_drop_pct": Param(
        10.0,
        type="number",
        minimum=0,
        title="Max throughput drop (%)",
        section="Comparison",
        description="Fail regression_check when throughput drops more than this.",
    ),
}

DEFAULT_ARGS = {
    "retries": int(os.environ.get("TWINS_TASK_RETRIES", "2")),
    "retry_delay": dt.timedelta(minutes=2),
    "execution_timeout": dt.timedelta(hours=1),
}


def _as_list(value: Any) -> list:
    """Outputs of a mapped task group, as a list.

    Airflow 3.3.2 hands the join a bare dict instead of a one-element list when the group is expanded over a
    single element (shared/platform-notes.md); every other case is a lazy sequence.
    """
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    return list(value)


def _results_url() -> str:
    """The ``twins_results`` Connection's URI, else a SQLite file under AIRFLOW_HOME (never Airflow's own DB)."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(RESULTS_CONN_ID)
    except AirflowNotFoundException:
        return f"sqlite:///{os.path.join(AIRFLOW_HOME, 'twins_results.db')}"
    return conn.get_uri()


@dag(
    dag_id="twins_svt_l_validation",
    dag_display_name="Twins-SVT-L validation",
    description="Twins-SVT-L: preprocess, export, compile/infer/perf per batch size, accuracy, results DB.",
    doc_md=__doc__,
    schedule="0 2 * * *",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    tags=["twins", "ascend", "validation"],
)
def twins_svt_l_validation():
    @task(queue=NPU_QUEUE, multiple_outputs=True, execution_timeout=dt.timedelta(minutes=10))
    def plan(params: dict[str, Any]) -> dict[str, Any]:
        """Check what the Params form cannot, and resolve the backend on the NPU worker."""
        from twins_tasks.backends import get_backend, resolve_backend_name
        from twins_tasks.errors import InputError
        from twins_tasks.pipeline import describe_backend, parse_batch_sizes, safe_name
        from twins_tasks.report import parse_baseline_numbers

        batch_sizes = parse_batch_sizes(params["batch_sizes"])
        if params["checkpoint_path"] and not Path(params["checkpoint_path"]).is_file():
            raise InputError(
                f"checkpoint {params['checkpoint_path']} does not exist on this worker: fix the "
                f"'Checkpoint' Param, or leave it empty for seeded random weights"
            )
        if not Path(params["dataset_path"]).is_dir():
            raise InputError(
                f"dataset folder {params['dataset_path']} does not exist on this worker: fix the "
                f"'Dataset folder' Param (ImageNet val layout: <wnid>/<image>.JPEG)"
            )
        parse_baseline_numbers(params["baseline"])  # bad numbers fail here, before hours of work
        cann_env = os.environ.get("TWINS_CANN_ENV")
        backend = resolve_backend_name(params["backend"], cann_env=cann_env)
        options: dict[str, Any] = {}
        if backend == "ascend":
            options = {"device": params["device_id"], "soc_version": params["soc_version"]}
            if cann_env:
                options["cann_env"] = cann_env
            if params["precision_mode"] != "recipe default":
                options["precision_mode"] = params["precision_mode"]
        description = describe_backend(get_backend(backend, **options))
        run_id = get_current_context()["run_id"]
        run_dir = Path(WORK_DIR) / "runs" / safe_name(run_id)
        print(f"Backend {backend} (asked: {params['backend']}), batch sizes {batch_sizes}, run folder {run_dir}")
        return {
            "backend": backend,
            "backend_options": options,
            "backend_description": description,
            "batch_sizes": batch_sizes,
            "cache_dir": str(Path(WORK_DIR) / "cache"),
            "run_dir": str(run_dir),
            "result_dir": str(run_dir / "result"),
        }

    @task(multiple_outputs=True, execution_timeout=dt.timedelta(hours=6))
    def preprocess(cache_dir: str, params: dict[str, Any]) -> dict[str, Any]:
        from twins_tasks.pipeline import prepare_inputs

        return prepare_inputs(params["dataset_path"], cache_dir, limit=params["image_limit"])

    @task(multiple_outputs=True, execution_timeout=dt.timedelta(hours=1))
    def export(cache_dir: str, params: dict[str, Any]) -> dict[str, Any]:
        from twins_tasks.pipeline import prepare_model

        checkpoint = params["checkpoint_path"]
        return prepare_model(
            cache_dir,
            model_name=params["model_name"],
            resume=checkpoint,
            random_init=not checkpoint,
            seed=params["random_init_seed"],
            opset=params["opset"],
        )

    planned = plan()
    inputs = preprocess(planned["cache_dir"])
    model = export(planned["cache_dir"])

    @task_group(group_id="per_batch_size")
    def per_batch_size(batch_size: int):
        """compile -> infer -> perf for one batch size."""
        compiled = CompileOperator(
            task_id="compile",
            backend=planned["backend"],
            backend_options=planned["backend_options"],
            model=model["onnx"],
            batch_size=batch_size,
            cache_dir=planned["cache_dir"],
            queue=NPU_QUEUE,
            execution_timeout=dt.timedelta(hours=2),
        )
        inferred = InferOperator(
            task_id="infer",
            backend=planned["backend"],
            backend_options=planned["backend_options"],
            artifact=compiled.output,
            inputs=inputs["bin_path"],
            batch_size=batch_size,
            output_root=planned["result_dir"],
            outfmt="{{ params.outfmt }}",
            queue=NPU_QUEUE,
            pool=NPU_POOL,
            execution_timeout=dt.timedelta(hours=4),
        )
        measured = PerfOperator(
            task_id="perf",
            backend=planned["backend"],
            backend_options=planned["backend_options"],
            artifact=compiled.output,
            batch_size=batch_size,
            loop="{{ params.perf_loops }}",
            queue=NPU_QUEUE,
            pool=NPU_POOL,
            execution_timeout=dt.timedelta(hours=1),
        )
        # perf consumes only compile's XCom: without this it could share the device with infer.
        inferred >> measured
        return {"compile": compiled.output, "infer": inferred.output, "perf": measured.output}

    @task(execution_timeout=dt.timedelta(minutes=5))
    def batch_sizes(sizes: list[int]) -> list[int]:
        """The mapping source (Airflow maps only over a task's return value, not over one of its keys)."""
        return list(sizes)

    chains = per_batch_size.expand(batch_size=batch_sizes(planned["batch_sizes"]))

    @task(execution_timeout=dt.timedelta(hours=1))
    def accuracy(
        chains: dict[str, Any], inputs: dict[str, Any], model: dict[str, Any], cache_dir: str, params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Top-1/top-5 per batch size and agreement with the PyTorch reference logits."""
        from twins_tasks.pipeline import batch_row, prepare_reference, score_step

        compiled, inferred, perfs = (_as_list(chains[k]) for k in ("compile", "infer", "perf"))
        reference = (
            prepare_reference(cache_dir, inputs, model, limit=params["reference_images"])
            if params["reference_images"] > 0
            else None
        )
        rows = []
        for c, i, p in zip(compiled, inferred, perfs, strict=True):
            scored = score_step(i["output_dir"], inputs, reference)
            row = batch_row(int(c["batch_size"]), c, i, p, scored)
            print(
                f"bs{row['batch_size']}: top-1 {row['top1']:.1f}%, top-5 {row['top5']:.1f}%, "
                f"{row['num_missing']} missing, agreement {row.get('agreement_top1')}%, "
                f"{row['throughput']:.2f} img/s"
            )
            rows.append(row)
        return sorted(rows, key=lambda r: r["batch_size"])

    @task(execution_timeout=dt.timedelta(minutes=10))
    def record(
        rows: list[dict[str, Any]],
        inputs: dict[str, Any],
        model: dict[str, Any],
        backend: dict[str, Any],
        params: dict[str, Any],
    ) -> dict[str, Any]:
        """Upsert the run and its batch rows (a retry or re-run leaves exactly one set)."""
        from twins_tasks.pipeline import build_run
        from twins_tasks.store import ResultsStore

        context = get_current_context()
        dag_run = context["dag_run"]
        run = build_run(
            run_key=dag_run.run_id,
            source="airflow:twins_svt_l_validation",
            inputs=inputs,
            model=model,
            backend=backend,
            options={
                "limit": params["image_limit"],
                "loop": params["perf_loops"],
                "precision_mode": params["precision_mode"],
                "batch_sizes": sorted(r["batch_size"] for r in rows),
            },
            started_at=dag_run.start_date,
            finished_at=dt.datetime.now(dt.UTC),
        )
        store = ResultsStore(_results_url())
        store.record_run(run, rows)
        runs, batches = store.count_rows()
        print(
            f"Recorded run {run['run_key']} ({len(rows)} batch sizes) in {store.describe()}; "
            f"the database now holds {runs} runs, {batches} batch results"
        )
        return {"run_key": run["run_key"], "config_key": run["config_key"], "results_db": store.describe()}

    @task(execution_timeout=dt.timedelta(minutes=10))
    def report(recorded: dict[str, Any], run_dir: str, params: dict[str, Any]) -> str:
        """Print the recipe's table into the log and write it to <run folder>/report.md."""
        from twins_tasks.files import write_text_atomic
        from twins_tasks.report import parse_baseline_numbers, render
        from twins_tasks.store import ResultsStore

        store = ResultsStore(_results_url())
        run = store.get_run(recorded["run_key"])
        baseline_spec = params["baseline"]
        baseline = parse_baseline_numbers(baseline_spec)
        label = str(baseline_spec) if isinstance(baseline_spec, str) else "baseline"
        if baseline is None and baseline_spec:  # a previous run id
            previous = store.get_run(str(baseline_spec))
            if previous is None:
                from twins_tasks.errors import InputError

                raise InputError(
                    f"baseline run {baseline_spec!r} is not in {store.describe()}: use a run id "
                    f"listed by `twins results`, a preset, or numbers per batch size"
                )
            baseline = {b["batch_size"]: b["throughput"] for b in previous["batches"] if b["throughput"]}
            label = f"run {baseline_spec}"
        text = render(run, run["batches"], baseline=baseline, baseline_label=label)
        path = Path(run_dir) / "report.md"
        write_text_atomic(path, text)
        print(text)
        print(f"\nReport written to {path}; results database: {store.describe()}")
        return str(path)

    @task(retries=0, execution_timeout=dt.timedelta(minutes=10))
    def regression_check(recorded: dict[str, Any], params: dict[str, Any]) -> str:
        """Fail when accuracy or throughput dropped beyond the thresholds since the last good run."""
        from airflow.sdk.exceptions import AirflowFailException

        from twins_tasks.regression import Thresholds, compare
        from twins_tasks.store import ResultsStore

        store = ResultsStore(_results_url())
        current = store.get_run(recorded["run_key"])
        previous = store.last_successful(recorded["config_key"], exclude_run_key=recorded["run_key"])
        if previous is None:
            store.set_regression_status(recorded["run_key"], "first")
            print("First run of this configuration: nothing to compare with; it becomes the reference.")
            return "first"
        thresholds = Thresholds.from_mapping(params)
        regressions, notes = compare(current["batches"], previous["batches"], thresholds)
        print(f"Compared with run {previous['run_key']} (recorded {previous['recorded_at']}):")
        for line in notes:
            print(f"  ok  {line}")
        if regressions:
            store.set_regression_status(recorded["run_key"], "failed")
            raise AirflowFailException(
                f"{len(regressions)} regression(s) against run {previous['run_key']}:\n  " + "\n  ".join(regressions)
            )
        store.set_regression_status(recorded["run_key"], "passed")
        return "passed"

    scored = accuracy(chains, inputs, model, planned["cache_dir"])
    recorded = record(scored, inputs, model, planned["backend_description"])
    report(recorded, planned["run_dir"]) >> regression_check(recorded)


twins_svt_l_validation()
