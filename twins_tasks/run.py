"""``twins run``'s engine: the whole recipe in one process, the same steps in the same order as the DAG's tasks."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from .backends import get_backend
from .errors import TwinsError
from .export import prepare_model
from .files import create_run_dir
from .preprocess.inputs import prepare_inputs
from .recipe import RecipeConfig
from .regression import regression_step
from .report import TERMINAL_WIDTH, write_report
from .results import collect_rows, record_results
from .retention import apply_retention, own_run_folder
from .steps import (
    chips_for_perf,
    compile_step,
    infer_step,
    note_failure,
    perf_step,
    plan_run,
    prepare_reference_for,
    result_name,
    sample_for,
)
from .store import ResultsStore, new_run_uid

log = logging.getLogger(__name__)


def run_recipe(
    config: RecipeConfig, *, work_dir: str | Path, run_key: str, results_url: str | None = None
) -> dict[str, Any]:
    """The whole recipe in this process: the same steps, in the same order, as the DAG's tasks."""
    started = dt.datetime.now(dt.UTC)
    store = ResultsStore(results_url)
    # A new identity per `twins run`: a --run-name another run recorded is refused at plan (and at record).
    plan = plan_run(config, work_dir=work_dir, run_key=run_key, store=store, run_uid=new_run_uid())
    # Exclusively: two `twins run`s never share (and clean) one run folder.
    create_run_dir(Path(plan["run_dir"]).parent, Path(plan["run_dir"]).name)
    owner = own_run_folder(plan["run_dir"])  # till the end: retention (here or elsewhere) leaves a live run alone
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
    failure_dir = plan["failure_dir"]
    scope = plan["accuracy_scope"]
    # Every batch size's records, scored together at the end (as the DAG's accuracy task): a sampled batch size
    # is checked against a full one's outputs, whichever comes first.
    records: dict[str, list[dict[str, Any] | None]] = {"compile": [], "infer": [], "perf": []}
    for bs in plan["batch_sizes"]:
        # One batch size failing must not lose the others (as timm's validate.py carries on past a bad config).
        step = "compile"
        try:
            compiled = compile_step(backend, model["onnx"], bs, cache_root)
            records["compile"].append(compiled)
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
                sample_images=sample_for(scope, bs),
                max_chips=config.infer_chips,
            )
            records["infer"].append(inferred)
            step = "perf"
            records["perf"].append(
                perf_step(
                    backend,
                    artifact,
                    bs,
                    loop=config.perf_loops,
                    rounds=config.perf_rounds,
                    device_ids=chips_for_perf(plan["device_ids"], inferred),
                    purpose=run_key,
                )
            )
        except TwinsError as exc:
            note_failure(failure_dir, bs, step, str(exc))
    rows = collect_rows(plan["batch_sizes"], records, inputs, reference, failure_dir, scope)
    recorded = record_results(
        store,
        config,
        run_key=run_key,
        source="cli",
        inputs=inputs,
        model=model,
        backend_description=plan["backend_description"],
        rows=rows,
        run_uid=plan["run_uid"],
        started_at=started,
    )
    report = write_report(store, run_key, config.baseline, plan["run_dir"], text_width=TERMINAL_WIDTH)
    print(report.text)  # aligned plain text for the terminal; report.md holds the markdown
    print(f"\nReport: {report.path}\nResults database: {store.describe()} (run {run_key})")
    outcome = regression_step(store, config, plan, recorded, rows)
    print(outcome.text())
    print(apply_retention(work_dir, store, config.retention, current_run_key=run_key).text())
    owner.close()
    return {"recorded": recorded, "rows": rows, "regression": outcome.status, "ok": outcome.ok}
