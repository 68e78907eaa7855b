"""
### Twins-SVT-L inference validation

The Ascend ModelZoo recipe for Twins-SVT-L (`alt_gvt_large`, timm `twins_svt_large`), unattended:

1. **plan** checks the Params (paths, baseline, results database) and resolves the backend where the device is
   (`auto`: Ascend when `atc`/CANN is installed on the NPU worker, else ONNX Runtime);
2. **preprocess** (ImageNet val JPEGs -> float32 `.bin`) and **export** (checkpoint -> ONNX, with a parity gate
   against PyTorch) run in parallel;
3. per batch size: **compile** (`atc` -> `.om`, or an ONNX Runtime artifact; in parallel, bounded by the
   `ascend_compile` pool) -> **infer** (`ais_bench`, one output per image) -> **perf** (`ais_bench --loop`, in
   rounds), on NPU chips leased from the run's device ids: infer split over the free ones (`infer_chips`), perf
   on one;
4. **accuracy** (top-1/top-5 per batch size, agreement with PyTorch logits; batch sizes whose chain failed are
   recorded with the reason; with *Accuracy batch sizes* set, the others infer only a sample and are checked
   against a full batch size's outputs on it) -> **record** (results database) -> **report** (the recipe's table) ->
   **regression_check** (each batch size against the median of the last accepted runs of the same setup,
   beyond threshold and measured noise, re-measured, and failed only when a second run saw it too; agreement
   with PyTorch against its limits; it also fails a run with a failed batch size, so the alarm shows);
5. **cleanup** (whatever failed before it): the *Retention* Params' policy removes older runs' per-image outputs,
   folders of runs that died before `record` and least recently used cache entries over the budget, never a
   running run's; its log says what went and the space left;
6. **notify** (a teardown after every task, left out of the run's state): when a task failed, one mail with the
   regression check's verdict table, the failed tasks' errors and a link to the run's results (the Airflow
   Connection `twins_notify_smtp`; none: off). A run not finished `TWINS_DEADLINE_HOURS` (6) after it was queued
   is mailed about too (a deadline alert, from the triggerer).

Bad input (a wrong path, checkpoint or baseline) fails its task at once, without retries; tool failures are
retried. Preprocessed inputs, ONNX models and compiled artifacts are cached by content: a nightly run whose
inputs did not change reuses them and says so in the task log. Results go to the database of the Airflow
Connection `twins_results` (any SQLAlchemy URL), else to `$AIRFLOW_HOME/twins_results.db`. The same steps run
without Airflow as `twins run`; both record the same configuration key and are compared with each other.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

from airflow.sdk import CronTriggerTimetable, Param, dag, get_current_context, task, task_group, teardown
from airflow.sdk.exceptions import AirflowFailException

from twins_airflow.dag_names import (
    BATCH_GROUP_ID,
    BATCH_SIZES_TASK_ID,
    BATCH_STEPS,
    COMPILE_TASK_ID,
    DAG_ID,
    INFER_TASK_ID,
    PERF_TASK_ID,
    RECORD_TASK_ID,
)
from twins_airflow.exceptions import maps_failures
from twins_airflow.notify import deadline_alert, remember_error
from twins_airflow.operators import CompileOperator, InferOperator, PerfOperator
from twins_tasks.constants import (
    BACKEND_NAMES,
    MAX_BATCH_SIZE,
    MAX_DEVICE_ID,
    OUTPUT_FORMATS,
    PRECISION_MODES,
    RECIPE_DEFAULT_PRECISION,
)
from twins_tasks.recipe import DEFAULTS, RecipeConfig

log = logging.getLogger(__name__)

# Deployment settings, read when the file is parsed: by the dag-processor AND by every worker that runs a task
# of this DAG (queue and pool cannot be templated), so set them alike on all of them.
NPU_QUEUE = os.environ.get("TWINS_NPU_QUEUE", "ascend")
NPU_POOL = os.environ.get("TWINS_NPU_POOL", "ascend_npu")  # slots: the chips of all NPU hosts together
COMPILE_POOL = os.environ.get("TWINS_COMPILE_POOL", "ascend_compile")  # slots: atc runs the hosts' RAM allows
# The nightly's cron, UTC (default 02:00); "off" = manual runs only (what `make up` sets: a laptop is no nightly
# host). Unpausing waits for the next tick at any hour instead of starting a run with the default Params at once:
# no start_date, and run_immediately=timedelta(0), because Airflow 3.3.2 treats its default False like None
# ("run the last tick if it was under 10% of a period ago", apache/airflow PR #64162).
NIGHTLY = os.environ.get("TWINS_NIGHTLY", "0 2 * * *").strip()
SCHEDULE = (
    None
    if NIGHTLY.lower() in ("", "off", "none")
    else CronTriggerTimetable(NIGHTLY, timezone="UTC", run_immediately=dt.timedelta(0))
)
WORK_DIR_ENV = "TWINS_WORK_DIR"

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
        DEFAULTS.seed,
        type="integer",
        minimum=0,
        title="Random-init seed",
        section="Model",
        description="Seed of the random weights, used only when no checkpoint is given.",
    ),
    "model_name": Param(
        DEFAULTS.model_name,
        type="string",
        pattern="^[a-z0-9_]+$",
        title="timm model name",
        section="Model",
        description="twins_svt_large == Twins alt_gvt_large.",
    ),
    "opset": Param(
        DEFAULTS.opset,
        type="integer",
        minimum=11,
        maximum=21,
        title="ONNX opset",
        section="Model",
        description="The recipe exports with opset 11.",
    ),
    "backend": Param(
        DEFAULTS.backend.name,
        type="string",
        enum=list(BACKEND_NAMES),
        title="Backend",
        section="Backend",
        description="auto = Ascend when atc/CANN is installed on the NPU worker, else ONNX Runtime.",
    ),
    "soc_version": Param(
        DEFAULTS.backend.soc_version,
        type="string",
        pattern="^(auto|Ascend[0-9A-Za-z]+)$",
        title="SoC version",
        section="Backend",
        description="auto = read from npu-smi info (e.g. Ascend310P3).",
    ),
    "device_ids": Param(
        list(DEFAULTS.backend.device_ids),
        anyOf=[
            {
                "type": "array",
                "items": {"type": "integer", "minimum": 0, "maximum": MAX_DEVICE_ID},
                "minItems": 1,
                "uniqueItems": True,
            },
            {"type": "string", "enum": ["auto"]},
        ],
        title="NPU device ids",
        section="Backend",
        description='Chips the batch sizes may use, e.g. [0, 1, 2, 3], or "auto" = every chip npu-smi info '
        "shows. Each batch size's inference is split over the chips free when it starts (and more as they free "
        "up; see 'Chips per inference'); its perf leases one chip.",
    ),  # fmt: skip
    "infer_chips": Param(
        DEFAULTS.infer_chips,
        type="integer",
        minimum=0,
        maximum=MAX_DEVICE_ID + 1,
        title="Chips per inference",
        section="Backend",
        description="At most this many chips one batch size's inference is split over (disjoint slices of the "
        "inputs, one ais_bench per chip, outputs merged): 0 = every chip of the run, 1 = one chip per batch size.",
    ),
    "precision_mode": Param(
        RECIPE_DEFAULT_PRECISION,
        type="string",
        enum=[RECIPE_DEFAULT_PRECISION, *PRECISION_MODES],
        title="atc precision mode",
        section="Backend",
        description="'recipe default' passes no --precision_mode (atc uses force_fp16).",
    ),
    # A multi-select of the recipe's six sizes (Airflow renders an array Param with `examples` as one): nothing to
    # mistype, so the form cannot fall back to the defaults. Its options are strings (the form sends what it
    # offers as text), so the default is text too, or the form would offer the six again beside the chosen ones.
    # REST/CLI conf keeps integers, any size 1-256: {"batch_sizes": [2, 4]}; RecipeConfig parses both forms.
    "batch_sizes": Param(
        [str(bs) for bs in DEFAULTS.batch_sizes],
        type="array",
        minItems=1,
        maxItems=32,
        uniqueItems=True,
        items={
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_BATCH_SIZE},
                {"type": "string", "enum": [str(bs) for bs in DEFAULTS.batch_sizes]},
            ]
        },
        examples=[str(bs) for bs in DEFAULTS.batch_sizes],
        title="Batch sizes",
        section="Run",
        description="One compile -> infer -> perf chain each. Other sizes (1-256): put e.g. "
        '"batch_sizes": [2, 4] in Advanced Options > Configuration JSON, or in a REST/CLI trigger\'s conf.',
    ),
    "perf_loops": Param(
        DEFAULTS.perf_loops,
        type="integer",
        minimum=1,
        maximum=100000,
        title="Perf loops",
        section="Run",
        description="ais_bench --loop for the pure-performance run.",
    ),
    "perf_rounds": Param(
        DEFAULTS.perf_rounds,
        type="integer",
        minimum=1,
        maximum=20,
        title="Perf rounds",
        section="Run",
        description="Rounds of 'Perf loops' runs per batch size: the median round counts, their spread is the "
        "noise the regression check allows for.",
    ),
    "reference_images": Param(
        DEFAULTS.reference_images,
        type="integer",
        minimum=0,
        maximum=10000,
        title="Reference images",
        section="Run",
        description="Images whose outputs are compared with PyTorch fp32 logits (0 = skip).",
    ),
    # Which batch sizes infer and score the whole dataset; the others infer a sample and are checked against the
    # first full one's outputs on it (RecipeConfig.accuracy_scope; `twins run --accuracy-batch-sizes`).
    "accuracy_batch_sizes": Param(
        DEFAULTS.accuracy_batch_sizes,
        anyOf=[
            {"type": "string", "enum": ["all"]},
            {
                "type": "array",
                "items": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH_SIZE},
                "minItems": 1,
                "uniqueItems": True,
            },
        ],
        title="Accuracy batch sizes",
        section="Run",
        description='"all" (as the recipe): every batch size scores top-1/top-5 on the full dataset. Or a few of '
        "the batch sizes, e.g. [1]: the others still run perf, infer only the first 'Accuracy sample images' and "
        "fail when their outputs disagree with the first full batch size's beyond the agreement-with-PyTorch limits.",
    ),
    "accuracy_sample_images": Param(
        DEFAULTS.accuracy_sample_images,
        type="integer",
        minimum=1,
        title="Accuracy sample images",
        section="Run",
        description="Images (the first, in natural order; at most the dataset) a batch size outside 'Accuracy "
        "batch sizes' infers and is checked on.",
    ),
    "outfmt": Param(
        DEFAULTS.outfmt, type="string", enum=sorted(OUTPUT_FORMATS, reverse=True), title="Output format", section="Run"
    ),
    "baseline": Param(
        None,
        type=["null", "string", "object"],
        title="Baseline",
        section="Comparison",
        description="None; a previous run id; a preset (recipe-gpu, recipe-310p); or img/s per batch size "
        'as {"1": 62.0, "4": 77.0} or "1:62,4:77".',
    ),
    "max_top1_drop": Param(
        DEFAULTS.thresholds.max_top1_drop,
        type="number",
        minimum=0,
        title="Max top-1 drop (pp)",
        section="Comparison",
        description="Fail regression_check when top-1 drops more than this many points.",
    ),
    "max_throughput_drop_pct": Param(
        DEFAULTS.thresholds.max_throughput_drop_pct,
        type="number",
        minimum=0,
        title="Max throughput drop (%)",
        section="Comparison",
        description="Fail regression_check when throughput drops more than this below its reference (the "
        "median of the last accepted runs of this setup and batch size) and beyond the measured noise.",
    ),
    "min_agreement_top1": Param(
        DEFAULTS.thresholds.min_agreement_top1,
        type="number",
        minimum=0,
        maximum=100,
        title="Min top-1 agreement with PyTorch (%)",
        section="Comparison",
        description="Fail regression_check when a batch size's top-1 class matches PyTorch's on fewer of the "
        "reference images than this.",
    ),
    "max_agreement_abs_diff": Param(
        DEFAULTS.thresholds.max_agreement_abs_diff,
        type="number",
        minimum=0,
        title="Max logit difference from PyTorch",
        section="Comparison",
        description="Fail regression_check when a batch size's logits differ from PyTorch's by more than this.",
    ),
    "confirm_after_hours": Param(
        DEFAULTS.thresholds.confirm_after_hours,
        type="number",
        minimum=0,
        title="Confirm a slowdown after (hours)",
        section="Comparison",
        description="A throughput drop fails regression_check only when an earlier run at least this long before "
        "saw it too (until then the run is 'suspect': a shared host's environment moves for minutes at a time). "
        "0 = the run's own re-measurement decides.",
    ),
    # The retention policy the cleanup task applies at the end of the run (twins_tasks.retention; `twins run` and
    # `twins clean` take the same as --keep-runs, --keep-failed-days, --grace-hours, --cache-budget-gib).
    "keep_runs": Param(
        DEFAULTS.retention.keep_runs,
        type="integer",
        minimum=0,
        title="Keep runs",
        section="Retention",
        description="Keep the per-image outputs of this many newest recorded runs; older runs keep their report "
        "and results (the database), not their outputs.",
    ),
    "keep_failed_days": Param(
        DEFAULTS.retention.keep_failed_days,
        type="number",
        minimum=0,
        title="Keep failed runs (days)",
        section="Retention",
        description="Also keep the outputs of failed, partial or regressed runs this long, for diagnosis.",
    ),
    "grace_hours": Param(
        DEFAULTS.retention.grace_hours,
        type="number",
        exclusiveMinimum=0,
        title="Grace (hours)",
        section="Retention",
        description="A run folder or cache entry touched within this many hours may belong to a run still going: "
        "left alone. Unrecorded run folders untouched longer (runs that died before record) are removed.",
    ),
    "cache_budget_gib": Param(
        DEFAULTS.retention.cache_budget_gib,
        type=["null", "number"],
        minimum=0,
        title="Cache budget (GiB)",
        section="Retention",
        description="Size budget of the caches (preprocessed bins, ONNX models, compiled artifacts): least "
        "recently used entries go first, never one a running run uses. Empty = no budget.",
    ),
}

DEFAULT_ARGS = {
    "retries": int(os.environ.get("TWINS_TASK_RETRIES", "2")),
    "retry_delay": dt.timedelta(minutes=2),
    "execution_timeout": dt.timedelta(hours=1),
    # Keeps a failed task's first error line for the run's notification mail (twins_airflow.notify).
    "on_failure_callback": remember_error,
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


def _config(planned: dict[str, Any]) -> RecipeConfig:
    """The run's configuration, as the plan task built and checked it from the Params (once per run)."""
    return RecipeConfig.from_dict(planned["config"])


def _work_dir() -> str:
    """Cache and run folders: read on the worker, shared by all workers (``TWINS_WORK_DIR``)."""
    home = os.environ.get("AIRFLOW_HOME", str(Path.home() / "airflow"))
    return os.environ.get(WORK_DIR_ENV) or os.path.join(home, "twins")


def _store():
    from twins_airflow.hooks import ResultsHook

    return ResultsHook().store


@dag(
    dag_id=DAG_ID,
    dag_display_name="Twins-SVT-L validation",
    description="Twins-SVT-L: preprocess, export, compile/infer/perf per batch size, accuracy, results DB.",
    doc_md=__doc__,
    schedule=SCHEDULE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    # "{{ params.perf_loops }}" renders as the int the Param holds, not as its text.
    render_template_as_native_obj=True,
    tags=["twins", "ascend", "validation"],
    # A run not finished TWINS_DEADLINE_HOURS (default 6; "off": none) after it was queued, i.e. after a nightly's
    # schedule, is mailed about from the triggerer (read by the dag-processor: set it there).
    deadline=deadline_alert(),
)
def twins_svt_l_validation():
    @task(queue=NPU_QUEUE, execution_timeout=dt.timedelta(minutes=10))
    @maps_failures
    def plan(params: dict[str, Any]) -> dict[str, Any]:
        """Check what the Params form cannot, and resolve the backend on the NPU worker."""
        from twins_tasks.steps import plan_run

        config = RecipeConfig.from_params(params, cann_env=os.environ.get("TWINS_CANN_ENV"))
        planned = plan_run(config, work_dir=_work_dir(), run_key=get_current_context()["run_id"], store=_store())
        log.info(
            "Backend %s (asked: %s), batch sizes %s, run folder %s",
            planned["backend"],
            config.backend.name,
            planned["batch_sizes"],
            planned["run_dir"],
        )
        return dict(planned)

    @task(execution_timeout=dt.timedelta(hours=6))
    @maps_failures
    def preprocess(planned: dict[str, Any]) -> dict[str, Any]:
        """JPEGs -> float32 .bin (cached by dataset content), in a child process so that it may use every core."""
        from twins_airflow.hooks import ToolHook

        config = _config(planned)
        args = ["--root_path", config.dataset_path, "--cache-dir", planned["cache_dir"]]
        if config.limit is not None:
            args += ["--limit", str(config.limit)]
        return ToolHook().run_twins("prepare-inputs", *args)

    @task(execution_timeout=dt.timedelta(hours=1))
    @maps_failures
    def export(planned: dict[str, Any]) -> dict[str, Any]:
        from twins_tasks.export import prepare_model

        config = _config(planned)
        return prepare_model(
            planned["cache_dir"],
            model_name=config.model_name,
            resume=config.checkpoint,
            random_init=config.random_init,
            seed=config.seed,
            opset=config.opset,
        )

    planned = plan()
    inputs = preprocess(planned)
    model = export(planned)

    @task_group(group_id=BATCH_GROUP_ID)
    def per_batch_size(batch_size: int):
        """compile -> infer -> perf for one batch size."""
        compiled = CompileOperator(
            task_id=COMPILE_TASK_ID,
            backend=planned["backend"],
            backend_options=planned["backend_options"],
            model=model["onnx"],
            batch_size=batch_size,
            cache_dir=planned["cache_dir"],
            failure_dir=planned["failure_dir"],
            queue=NPU_QUEUE,
            pool=COMPILE_POOL,
            execution_timeout=dt.timedelta(hours=2),
        )
        inferred = InferOperator(
            task_id=INFER_TASK_ID,
            backend=planned["backend"],
            backend_options=planned["backend_options"],
            artifact=compiled.output,
            inputs=inputs["bin_path"],
            batch_size=batch_size,
            output_root=planned["result_dir"],
            outfmt="{{ params.outfmt }}",
            device_ids=planned["device_ids"],
            infer_chips="{{ params.infer_chips }}",
            accuracy_scope=planned["accuracy_scope"],
            failure_dir=planned["failure_dir"],
            queue=NPU_QUEUE,
            pool=NPU_POOL,
            execution_timeout=dt.timedelta(hours=4),
        )
        measured = PerfOperator(
            task_id=PERF_TASK_ID,
            backend=planned["backend"],
            backend_options=planned["backend_options"],
            artifact=compiled.output,
            batch_size=batch_size,
            loop="{{ params.perf_loops }}",
            rounds="{{ params.perf_rounds }}",
            device_ids=planned["device_ids"],
            infer_record=inferred.output,
            failure_dir=planned["failure_dir"],
            queue=NPU_QUEUE,
            pool=NPU_POOL,
            execution_timeout=dt.timedelta(hours=1),
        )
        # perf follows infer, never beside it; it reads infer's record to prefer the same chip.
        inferred >> measured
        return dict(zip(BATCH_STEPS, (compiled.output, inferred.output, measured.output), strict=True))

    @task(task_id=BATCH_SIZES_TASK_ID, execution_timeout=dt.timedelta(minutes=5))
    def batch_sizes(sizes: list[int]) -> list[int]:
        """The mapping source (Airflow maps only over a task's return value, not over one of its keys)."""
        return list(sizes)

    chains = per_batch_size.expand(batch_size=batch_sizes(planned["batch_sizes"]))

    # all_done: one failed batch size must not lose the others; they are scored and recorded ("partial").
    @task(trigger_rule="all_done", execution_timeout=dt.timedelta(hours=1))
    @maps_failures
    def accuracy(
        chains: dict[str, Any] | None,
        inputs: dict[str, Any] | None,
        model: dict[str, Any] | None,
        planned: dict[str, Any] | None,
    ) -> list[dict[str, Any]]:
        """Top-1/top-5 per batch size and agreement with the PyTorch reference; why a batch size has no result."""
        from twins_tasks.results import collect_rows
        from twins_tasks.steps import prepare_reference_for

        if planned is None or inputs is None or model is None:
            from airflow.sdk.exceptions import AirflowSkipException

            missing = [
                name for name, value in (("plan", planned), ("preprocess", inputs), ("export", model)) if not value
            ]
            # Skipped, not failed: the task that failed upstream is the run's one red task (and fails the run);
            # a second failure here would only repeat it.
            raise AirflowSkipException(f"nothing to score: no output from {', '.join(missing)} (see the failed task)")
        reference = prepare_reference_for(_config(planned), planned["cache_dir"], inputs, model)
        records = {step: [r for r in _as_list((chains or {}).get(step)) if r] for step in BATCH_STEPS}
        scope = planned.get("accuracy_scope")  # None: planned before it existed (every batch size full)
        return collect_rows(planned["batch_sizes"], records, inputs, reference, planned["failure_dir"], scope)

    @task(task_id=RECORD_TASK_ID, execution_timeout=dt.timedelta(minutes=10))
    @maps_failures
    def record(
        rows: list[dict[str, Any]],
        inputs: dict[str, Any],
        model: dict[str, Any],
        planned: dict[str, Any],
    ) -> dict[str, Any]:
        """Upsert the run and its batch rows (a retry or re-run leaves exactly one set)."""
        from twins_tasks.results import record_results

        dag_run = get_current_context()["dag_run"]
        recorded = record_results(
            _store(),
            _config(planned),
            run_key=dag_run.run_id,
            source=f"airflow:{DAG_ID}",
            inputs=inputs,
            model=model,
            backend_description=planned["backend_description"],
            rows=rows,
            run_uid=planned.get("run_uid"),  # None only in a plan made before run identities (a run across an upgrade)
            started_at=dag_run.start_date,
        )
        return dict(recorded)

    @task(execution_timeout=dt.timedelta(minutes=10))
    @maps_failures
    def report(recorded: dict[str, Any], planned: dict[str, Any]) -> str:
        """Write the recipe's table to <run folder>/report.md and show it in this task's log."""
        from twins_tasks.report import write_report

        store = _store()
        report = write_report(store, recorded["run_key"], _config(planned).baseline, planned["run_dir"])
        # Through the logger, not print(): printed output lands in a collapsed group of the UI's log view. The
        # plain-text rendering (aligned columns, short lines): the graph view's narrow log pane cuts long lines,
        # and markdown's pipes are noise there; report.md keeps the markdown. Its first line names the run.
        log.info("Report:\n%s", report.text)
        log.info("Report written to %s; results database: %s", report.path, store.describe())
        return str(report.path)

    # On the device's queue and pool: a suspect drop is re-measured once before it fails the check.
    @task(retries=0, queue=NPU_QUEUE, pool=NPU_POOL, execution_timeout=dt.timedelta(hours=1))
    @maps_failures
    def regression_check(recorded: dict[str, Any], rows: list[dict[str, Any]], planned: dict[str, Any]) -> str:
        """Fail when accuracy or throughput dropped beyond thresholds and noise, or when a batch size failed."""
        from twins_tasks.regression import regression_step

        outcome = regression_step(_store(), _config(planned), planned, recorded, rows)
        # A suspect (seen once, not yet by a second run) or a slow host does not fail the task: said as a warning.
        log.log(logging.INFO if outcome.status in ("passed", "first") else logging.WARNING, "%s", outcome.text())
        if not outcome.ok:
            problems = outcome.regressions + [f"bs{bs} has no result: {e}" for bs, e in outcome.incomplete.items()]
            compared = f"reference up to run {outcome.compared_with}" if outcome.compared_with else "no reference"
            raise AirflowFailException(
                f"{outcome.headline()}; {len(problems)} problem(s) ({compared}):\n  " + "\n  ".join(problems)
            )
        return outcome.status

    # all_done: it runs whatever failed before it. Beside regression_check, not after it: both are leaves, so the
    # run's state still says whether the check passed (an all_done task after it would decide the state alone).
    # A hiccup (a file that will not go) is logged, not a failure; unreadable run folders or database fail it.
    @task(trigger_rule="all_done", execution_timeout=dt.timedelta(minutes=30))
    @maps_failures
    def cleanup(params: dict[str, Any]) -> dict[str, Any]:
        """Apply the retention policy to the work dir; say what was removed and the space left."""
        from twins_tasks.retention import apply_retention
        from twins_tasks.types import RetentionPolicy

        policy = RetentionPolicy.from_mapping(params)
        run_id = get_current_context()["run_id"]
        report = apply_retention(_work_dir(), _store(), policy, current_run_key=run_id)
        log.info("%s", report.text())
        return report.summary()

    scored = accuracy(chains, inputs, model, planned)
    recorded = record(scored, inputs, model, planned)
    reported = report(recorded, planned)
    reported >> regression_check(recorded, scored, planned)
    reported >> cleanup()

    # Keep this last: downstream of every task above. A teardown runs once they are all done, whatever failed,
    # and Airflow leaves teardowns out of the run's state (the run stays failed or successful as it was). One
    # mail per failed run, with the regression check's verdict table; no `twins_notify_smtp` Connection: off.
    @teardown
    @task(execution_timeout=dt.timedelta(minutes=10))
    def notify() -> str:
        """Mail the verdict and the failed tasks when the run failed (twins_airflow.notify)."""
        from twins_airflow.notify import notify_run

        return notify_run(get_current_context())

    notifier = notify().operator
    for other in notifier.dag.tasks:
        if other is not notifier:
            other >> notifier


twins_svt_l_validation()
