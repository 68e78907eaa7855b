"""The DAG twins_svt_l_validation: import, structure, Params, and full runs with dag.test().

Every test has a results database of its own (the ``twins_results`` Connection), so none sees another's runs;
a test that compares with an earlier run gets a copy of the one reference run's database (``with_reference_run``).
The work folder (compile cache, run folders) is the session's, shared: a cached compile saves minutes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from _smtp import assert_verdict_table, plain

ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "twins_svt_l_validation"
DOUBLES = ROOT / "tests" / "doubles"
RESULTS_CONN_ENV = "AIRFLOW_CONN_TWINS_RESULTS"  # the DAG's results database (ResultsHook)


def test_dag_file_imports_without_errors_or_heavy_modules():
    # A fresh interpreter, as the dag-processor parses it: no import errors, and no torch/onnx at parse time.
    code = (
        "import sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(ROOT / 'dags')!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        f"assert {DAG_ID!r} in bag.dag_ids, bag.dag_ids\n"
        "heavy = sorted(m for m in ('torch', 'timm', 'onnx', 'onnxruntime', 'torchvision') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HEAVY []" in proc.stdout


@pytest.fixture(scope="module")
def dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors
    return bag.get_dag(DAG_ID)


def test_structure(dag):
    assert set(dag.task_ids) == {
        "plan",
        "batch_sizes",
        "preprocess",
        "export",
        "per_batch_size.compile",
        "per_batch_size.infer",
        "per_batch_size.perf",
        "accuracy",
        "record",
        "report",
        "regression_check",
        "cleanup",
        "notify",
    }
    up = {t: set(dag.get_task(t).upstream_task_ids) for t in dag.task_ids}
    assert {"plan"} == up["preprocess"] == up["export"]
    assert "per_batch_size.compile" in up["per_batch_size.infer"]
    assert "per_batch_size.infer" in up["per_batch_size.perf"]  # perf never shares the device with infer
    assert {"per_batch_size.compile", "per_batch_size.infer", "per_batch_size.perf"} <= up["accuracy"]
    assert "accuracy" in up["record"] and "record" in up["report"] and "report" in up["regression_check"]
    # Retention runs whatever failed before it, beside the check: both leaves, so the check still decides the state.
    assert up["cleanup"] == {"report"} and dag.get_task("cleanup").trigger_rule == "all_done"
    after_check = dag.get_task("regression_check").downstream_task_ids
    assert all(dag.get_task(t).is_teardown for t in after_check)  # nothing that would decide the run's state
    # The notification: a teardown after every other task (it sees them all done; the run's state leaves it out),
    # and no deadline unless a deployment sets TWINS_DEADLINE_HOURS (dag.test cannot run one: see notify.py).
    notify = dag.get_task("notify")
    assert notify.is_teardown and set(notify.upstream_task_ids) == set(dag.task_ids) - {"notify"}
    assert not dag.deadline
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert type(dag.timetable).__name__ == "CronTriggerTimetable" and dag.timetable.expression == "0 2 * * *"
    # No start_date and run_immediately=0: unpausing waits for the next 02:00 UTC (test_unpausing_waits_...).
    assert dag.start_date is None
    for task_id in ("per_batch_size.infer", "per_batch_size.perf", "regression_check"):
        assert dag.get_task(task_id).pool == "ascend_npu"
    assert dag.get_task("per_batch_size.compile").pool == "ascend_compile"  # atc runs bounded by host RAM
    for task_id in ("plan", "per_batch_size.compile", "per_batch_size.infer", "per_batch_size.perf"):
        assert dag.get_task(task_id).queue == "ascend"
    for task_id in ("preprocess", "export", "batch_sizes", "accuracy", "record", "report", "cleanup"):
        assert dag.get_task(task_id).queue != "ascend"
    for task in dag.tasks:
        assert task.execution_timeout is not None, task.task_id
    assert dag.get_task("export").retries == 0  # TWINS_TASK_RETRIES=0 in tests; 2 by default


@pytest.mark.parametrize(
    ("now", "next_run"),
    [
        ("2026-11-29T01:59:00", "2026-11-29T02:00:00"),
        ("2026-11-29T02:00:01", "2026-11-30T02:00:00"),
        ("2026-11-29T02:08:00", "2026-11-30T02:00:00"),
        ("2026-11-29T02:30:00", "2026-11-30T02:00:00"),
        ("2026-11-29T04:20:00", "2026-11-30T02:00:00"),
        ("2026-11-29T12:00:00", "2026-11-30T02:00:00"),
    ],
)
def test_unpausing_waits_for_the_next_0200_at_any_hour(dag, monkeypatch, now, next_run):
    """Unpaused (no earlier run) at any hour, the first run is the next 02:00 UTC, never the one just past.

    Airflow 3.3.2's CronTriggerTimetable runs the last tick at once when it was under 10% of a day ago unless
    run_immediately is a timedelta (apache/airflow PR #64162). Checked on the scheduler's own (decoded) timetable
    with its clock patched, as the scheduler computes the next run when a DAG is unpaused.
    """
    import datetime as dt

    import airflow.timetables.trigger as trigger
    from airflow.serialization.decoders import decode_timetable
    from airflow.serialization.encoders import encode_timetable
    from airflow.timetables.base import TimeRestriction

    def at(text: str) -> dt.datetime:
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)

    monkeypatch.setattr(trigger, "utcnow", lambda: at(now))
    timetable = decode_timetable(encode_timetable(dag.timetable))
    info = timetable.next_dagrun_info(
        last_automated_data_interval=None, restriction=TimeRestriction(earliest=None, latest=None, catchup=False)
    )
    assert info is not None and info.run_after == at(next_run)


def test_param_defaults_valid_and_bad_batch_sizes_rejected(dag):
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    params = dag.params.validate()
    assert params["batch_sizes"] == ["1", "4", "8", "16", "32", "64"]  # the form's multi-select sends text
    for bad, words in (([0], "minimum"), ([4, 4], "unique"), ([512], "maximum"), (["x"], "not one of"), ([], "")):
        copy = ParamsDict({k: v for k, v in dag.params.items()})
        copy["batch_sizes"] = dag.params.get_param("batch_sizes").__class__(
            bad, **dag.params.get_param("batch_sizes").schema
        )
        with pytest.raises(ParamValidationError, match="batch_sizes") as info:
            copy.validate()
        assert words in str(info.value).lower() or not words
    # Accuracy scope: "all" (the recipe's way) by default; a list of at least one batch size otherwise.
    assert (params["accuracy_batch_sizes"], params["accuracy_sample_images"]) == ("all", 500)
    for name, bad in (("accuracy_batch_sizes", []), ("accuracy_batch_sizes", "some"), ("accuracy_batch_sizes", [0]),
                      ("accuracy_sample_images", 0)):  # fmt: skip
        copy = ParamsDict({k: v for k, v in dag.params.items()})
        copy[name] = dag.params.get_param(name).__class__(bad, **dag.params.get_param(name).schema)
        with pytest.raises(ParamValidationError, match=name):
            copy.validate()


def _run(dag, conf):
    dr = dag.test(run_conf=conf)
    states = {(ti.task_id, ti.map_index): ti.state for ti in dr.get_task_instances()}
    return dr, states


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from twins_tasks.sample import make_sample

    root = tmp_path_factory.mktemp("val")
    make_sample(root, classes=2, per_class=3, seed=1)
    return root


def _conf(dataset, **extra):
    return {"dataset_path": str(dataset), "backend": "onnxruntime", "perf_loops": 2, "reference_images": 3, **extra}


def _store():
    """The results database the DAG writes to in this test (``results_db``)."""
    from twins_tasks.store import ResultsStore

    return ResultsStore(os.environ[RESULTS_CONN_ENV])


@pytest.fixture(autouse=True)
def results_db(tmp_path, monkeypatch) -> Path:
    """This test's own results database, named by the Connection the DAG's tasks (and their subprocesses) read."""
    path = tmp_path / "twins_results.db"
    monkeypatch.setenv(RESULTS_CONN_ENV, f"sqlite:///{path}")
    return path


@dataclass(frozen=True)
class ReferenceRun:
    """The DAG run of the [1, 4] onnxruntime configuration, and the results database holding only it."""

    dag_run: Any
    states: dict[tuple[str, int], Any]
    results_db: Path


@pytest.fixture(scope="module")
def reference_run(dag, dataset, airflow_db, tmp_path_factory) -> ReferenceRun:
    """Made once, when a test first asks for it (a model run takes a minute), into a database of its own: it is
    its configuration's first run whichever tests ran before it."""
    results_db = tmp_path_factory.mktemp("reference") / "twins_results.db"
    sigterm = signal.getsignal(signal.SIGTERM)  # conftest's _restore_sigterm only sees function-scoped runs
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(RESULTS_CONN_ENV, f"sqlite:///{results_db}")
        dr, states = _run(dag, _conf(dataset, batch_sizes=[1, 4], baseline="recipe-gpu"))
    signal.signal(signal.SIGTERM, sigterm)
    return ReferenceRun(dr, states, results_db)


@pytest.fixture
def with_reference_run(reference_run, results_db) -> ReferenceRun:
    """This test's results database starts as a copy of the reference run's: that run and nothing else."""
    # SQLite's backup API, not a file copy: it also takes what is still in a journal.
    with contextlib.closing(sqlite3.connect(reference_run.results_db)) as source:
        with contextlib.closing(sqlite3.connect(results_db)) as copy:
            source.backup(copy)
    return reference_run


@pytest.mark.model
def test_full_run_onnxruntime_two_batch_sizes(with_reference_run):
    from airflow.utils.state import TaskInstanceState

    dr, states = with_reference_run.dag_run, with_reference_run.states
    assert str(dr.state).endswith("success"), states
    assert states[("per_batch_size.perf", 1)] == TaskInstanceState.SUCCESS, states
    run = _store().get_run(dr.run_id)
    assert run["backend"] == "onnxruntime" and run["random_init"] is True
    assert [b["batch_size"] for b in run["batches"]] == [1, 4]
    for b in run["batches"]:
        assert b["num_images"] == 6 and b["num_missing"] == 0
        assert b["throughput"] > 0 and b["agreement_top1"] == 100.0 and b["agreement_max_abs_diff"] < 1e-3
    assert run["config"]["synthetic_data"] is True  # make-sample's marker reached the record
    # This run's report (other tests' runs write theirs beside it in the session's work folder).
    report = Path(run["report_path"])
    assert report.name == "report.md" and report.parent.parent == Path(os.environ["TWINS_WORK_DIR"]) / "runs"
    assert "recipe-gpu" in report.read_text() and "Best batch size" in report.read_text()
    assert "NOTE: generated images, not ImageNet." in report.read_text()
    assert run["regression_status"] == "first"
    # Re-run the real `record` task on this run (as a retry or a cleared task would): still one set of rows.
    before = _store().count_rows()
    proc = subprocess.run(
        [sys.executable, "-m", "airflow", "tasks", "test", DAG_ID, "record", dr.run_id],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"Recorded run {dr.run_id} (2 batch sizes, status success)" in proc.stdout + proc.stderr
    assert _store().count_rows() == before
    assert [b["batch_size"] for b in _store().get_run(dr.run_id)["batches"]] == [1, 4]


@pytest.mark.model
def test_cli_run_of_the_same_setup_compares_with_the_dag_run(with_reference_run, dataset):
    # One recipe core: `twins run` with the flags that match the DAG run's Params records the same config_key,
    # and its regression check compares it with the DAG's run (the reference run, the only one in this database).
    store = _store()
    dag_run = store.get_run(with_reference_run.dag_run.run_id)
    assert dag_run["source"].startswith("airflow:") and dag_run["config"]["batch_sizes"] == [1, 4]
    twins = str(Path(sys.executable).with_name("twins"))
    argv = [twins, "run", "--root_path", str(dataset), "--random-init", "--backend", "onnxruntime",
            "--batch-sizes", "1,4", "--loop", "2", "--reference-images", "3", "--max-throughput-drop-pct", "1000",
            "--work-dir", os.environ["TWINS_WORK_DIR"], "--run-name", "cli-same-setup",
            "--results-url", store.url]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cli_run = store.get_run("cli-same-setup")
    assert cli_run["source"] == "cli" and cli_run["config_key"] == dag_run["config_key"]
    assert f"the median of its last accepted runs (up to run {dag_run['run_key']})" in proc.stdout


def test_bad_dataset_path_fails_plan_without_retry(dag, tmp_path, capfd):
    from twins_airflow.exceptions import TwinsInputError

    dr, states = _run(dag, {"dataset_path": str(tmp_path / "nowhere"), "backend": "onnxruntime"})
    assert str(states[("plan", -1)]).endswith("failed") and not str(dr.state).endswith("success")
    assert str(states[("preprocess", -1)]).endswith("upstream_failed")
    out = capfd.readouterr().out
    assert (
        f"{TwinsInputError.__name__}: bad input (not retried): dataset folder {tmp_path / 'nowhere'} does not exist"
        in out
    )


def test_a_failed_run_mails_once_naming_its_failed_task(dag, tmp_path, smtp_server, monkeypatch):
    # The notify teardown under dag.test: one mail (not one per task that did not run), the error of the failed
    # task kept by its failure callback, a link to the run's results tab; the run stays failed.
    monkeypatch.setenv("AIRFLOW_CONN_TWINS_NOTIFY_SMTP", smtp_server.connection())
    dr, states = _run(dag, {"dataset_path": str(tmp_path / "nowhere"), "backend": "onnxruntime"})
    assert str(dr.state).endswith("failed") and str(states[("notify", -1)]).endswith("success"), states
    (mail,) = smtp_server.mails
    assert mail["Subject"] == f"[Twins-SVT-L] run failed: {dr.run_id}"
    text = plain(mail)
    error = f"TwinsInputError: bad input (not retried): dataset folder {tmp_path / 'nowhere'} does not exist"
    assert f"- plan: {error}" in text and "task(s) did not run because a task before them failed" in text
    assert f"/dags/{DAG_ID}/runs/{quote(dr.run_id, safe='')}/plugin/twins-run-results" in text


@pytest.mark.model
def test_single_batch_size_and_regression_trip(dag, dataset, with_reference_run):
    # One batch size: Airflow 3.3.2 hands the join a bare dict for a one-element mapped group.
    # Same configuration as the [1, 4] reference run, whose bs4 result it is compared with: 2-loop CPU timings on
    # a busy 2-core machine vary by more than the default 10%, so this run allows any throughput change.
    dr, states = _run(dag, _conf(dataset, batch_sizes=[4], max_throughput_drop_pct=1000.0))
    assert str(dr.state).endswith("success"), states
    store = _store()
    run = store.get_run(dr.run_id)
    assert [b["batch_size"] for b in run["batches"]] == [4]
    assert run["regression_details"]["compared_with"] == with_reference_run.dag_run.run_id
    # The reference run compiled batch size 4 from the same model: the artifact is reused by content.
    assert run["batches"][0]["compile_cached"] is True
    # A constructed drop: pretend the previous good run was 100x faster, in every one of its perf rounds.
    fake = {k: v for k, v in run.items() if k not in ("id", "batches", "recorded_at")}
    fake.update(run_key="constructed-fast-run", regression_status="passed")
    fast = {k: run["batches"][0][k] * 100 for k in ("throughput", "throughput_min", "throughput_max")}
    store.record_run(fake, [{**run["batches"][0], **fast}])
    # Accepted as the new normal, so that it alone is the reference; a re-measurement confirms at once (no second
    # run an hour later needed).
    from twins_tasks.history import mark_run

    mark_run(store, "constructed-fast-run", "accept", "a constructed 100x faster reference", by="test")
    dr2, states2 = _run(dag, _conf(dataset, batch_sizes=[4], max_throughput_drop_pct=10.0, confirm_after_hours=0))
    assert str(states2[("regression_check", -1)]).endswith("failed")
    assert not str(dr2.state).endswith("success")
    details = store.get_run(dr2.run_id)["regression_details"]
    assert store.get_run(dr2.run_id)["regression_status"] == "failed"
    # The drop was re-measured before it failed the check, and both measurements are named.
    (line,) = details["regressions"]
    assert details["compared_with"] == "constructed-fast-run" and "confirmed by a re-measurement" in line


@pytest.mark.model
def test_full_run_ascend_backend_on_doubles(dag, dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("TWINS_CANN_ENV", str(DOUBLES / "set_env.sh"))
    monkeypatch.setenv("TWINS_DOUBLES_LOG", str(tmp_path / "argv.jsonl"))
    # A host with two chips; "auto" = every chip npu-smi shows. Each batch size's infer and perf lease one.
    monkeypatch.setenv("TWINS_FAKE_NPUS", "2")
    monkeypatch.setenv("TWINS_LEASE_DIR", str(tmp_path / "leases"))
    monkeypatch.setenv("FAKE_NPU_LOCK_DIR", str(tmp_path / "npu-locks"))
    # reference_images 0: the doubles' "logits" are not the model's, so they cannot agree with PyTorch's.
    conf = _conf(dataset, backend="ascend", batch_sizes=[1, 4], device_ids="auto", reference_images=0)
    dr, states = _run(dag, conf)
    assert str(dr.state).endswith("success"), states
    run = _store().get_run(dr.run_id)
    assert run["backend"] == "ascend" and run["soc_version"] == "Ascend310P3"
    assert all(b["num_missing"] == 0 and b["throughput"] > 0 for b in run["batches"])
    # Which chip ran each batch size's perf is recorded (host:npu<chip>), and the chip was one of the host's two;
    # so are the chips its inference was split over (host:npu<chip>,npu<chip>), on the same host.
    for b in run["batches"]:
        host, chip = b["device"].rsplit(":npu", 1)
        assert host and int(chip) in (0, 1), b["device"]
        infer_host, chips = b["infer_device"].split(":", 1)
        assert infer_host == host and chips and set(chips.split(",")) <= {"npu0", "npu1"}, b["infer_device"]
    calls = [json.loads(line) for line in (tmp_path / "argv.jsonl").read_text().splitlines()]
    tools = [c.get("tool") or c.get("argv", [""])[0] for c in calls]
    assert any("atc" in str(t) for t in tools) and any("ais_bench" in str(t) for t in tools)


@pytest.mark.model
def test_one_failed_batch_size_keeps_the_others_and_fails_the_run(dag, dataset, monkeypatch, smtp_server):
    from twins_tasks.backends.onnxruntime import OnnxRuntimeBackend
    from twins_tasks.errors import ToolError

    real_perf = OnnxRuntimeBackend.perf

    def perf(self, artifact, batch_size, **kw):
        if batch_size == 4:
            raise ToolError("perf of bs4 crashed (a constructed failure)")
        return real_perf(self, artifact, batch_size, **kw)

    monkeypatch.setattr(OnnxRuntimeBackend, "perf", perf)
    monkeypatch.setenv("AIRFLOW_CONN_TWINS_NOTIFY_SMTP", smtp_server.connection())
    # bs1 alone scores the full dataset; bs4 infers the first 4 of the 6 images (its perf then fails).
    conf = _conf(dataset, batch_sizes=[1, 4], max_throughput_drop_pct=1000.0, accuracy_batch_sizes=[1],
                 accuracy_sample_images=4)  # fmt: skip
    dr, states = _run(dag, conf)
    assert str(states[("per_batch_size.perf", 1)]).endswith("failed")
    for task_id in ("accuracy", "record", "report"):
        assert str(states[(task_id, -1)]).endswith("success"), states
    # The alarm shows: the run ends failed, through the regression check that names the missing batch size.
    assert str(states[("regression_check", -1)]).endswith("failed") and not str(dr.state).endswith("success")
    # The retention policy was applied all the same, and its success did not turn the failed run green.
    assert str(states[("cleanup", -1)]).endswith("success"), states
    run = _store().get_run(dr.run_id)
    assert run["status"] == "partial"
    assert run["failed_batch_sizes"] == {"4": "perf: perf of bs4 crashed (a constructed failure)"}
    ok, failed = run["batches"]
    assert ok["batch_size"] == 1 and ok["status"] == "ok" and ok["throughput"] > 0 and ok["perf_rounds"] == 3
    assert failed["batch_size"] == 4 and failed["status"] == "failed" and failed["throughput"] is None
    assert "perf of bs4 crashed" in failed["error"]
    assert run["regression_details"]["incomplete"] == {"4": failed["error"]}
    # The accuracy scope reached the infer tasks: bs1 inferred every image, bs4 the sample; the record says so.
    result = Path(run["report_path"]).parent / "result"
    assert len(list((result / "twins_svt_large_bs1").glob("*_0.txt"))) == 6
    assert len(list((result / "twins_svt_large_bs4").glob("*_0.txt"))) == 4
    assert run["config"]["accuracy_scope"]["full"] == [1] and list(run["config"]["accuracy_scope"]["sampled"]) == ["4"]
    # One mail for the run: the check's verdict table as recorded, and each failed task with its error.
    (mail,) = smtp_server.mails
    assert mail["Subject"] == f"[Twins-SVT-L] regression check failed: {dr.run_id}"
    text = plain(mail)
    assert_verdict_table(text, run["regression_details"])
    assert f"bs4 has no result: {failed['error']}" in text
    assert "- per_batch_size.perf [bs4]: TwinsTaskError: perf of bs4 crashed (a constructed failure)" in text
    assert re.search(r"^- regression_check: \w+: .", text, re.MULTILINE), text  # its error, not "see its log"


@pytest.mark.model
def test_twins_run_keeps_the_other_batch_sizes_when_one_fails(dataset, airflow_db, monkeypatch, capsys):
    # The CLI's side of partial results: the same steps carry on past a failed batch size and record "partial".
    from twins_tasks.backends.onnxruntime import OnnxRuntimeBackend
    from twins_tasks.errors import ToolError
    from twins_tasks.layout import list_inputs
    from twins_tasks.recipe import BackendSettings, RecipeConfig
    from twins_tasks.run import run_recipe

    real_infer = OnnxRuntimeBackend.infer
    inferred: dict[int, int] = {}

    def infer(self, artifact, inputs, batch_size, *args, **kw):
        inferred[batch_size] = len(list_inputs(inputs))
        if batch_size == 4:
            raise ToolError("inference of bs4 crashed (a constructed failure)")
        return real_infer(self, artifact, inputs, batch_size, *args, **kw)

    monkeypatch.setattr(OnnxRuntimeBackend, "infer", infer)
    config = RecipeConfig(
        dataset_path=str(dataset), random_init=True, backend=BackendSettings(name="onnxruntime"),
        batch_sizes=(1, 4), perf_loops=2, perf_rounds=2, reference_images=0, accuracy_batch_sizes=(1,),
        accuracy_sample_images=4,
    )  # fmt: skip
    result = run_recipe(config, work_dir=os.environ["TWINS_WORK_DIR"], run_key="cli-partial", results_url=_store().url)
    assert not result["ok"]
    run = _store().get_run("cli-partial")
    assert run["status"] == "partial" and list(run["failed_batch_sizes"]) == ["4"]
    assert [b["status"] for b in run["batches"]] == ["ok", "failed"]
    assert "infer: inference of bs4 crashed" in run["batches"][1]["error"]
    # `twins run` infers bs4 (outside accuracy_batch_sizes) on the first 4 images only, and records it as sampled.
    assert inferred == {1: 6, 4: 4}
    assert run["config"]["accuracy_scope"] == {
        "full": [1],
        "sampled": {"4": dict.fromkeys(("checked_against", "sample_images", "sample_agreement_top1",
                                        "sample_max_abs_diff"))},
    }  # fmt: skip
    out = capsys.readouterr().out
    assert "FAILED batch sizes" in out and "it is partial, so it will not be a reference" in out
    bs4 = out[out.index("\nbs4\n") :]  # the verdict table's bs4 section: no result, and why
    assert "no result" in bs4 and "infer: inference of bs4 crashed" in bs4
    assert "Retention in " in out and "the work dir's filesystem has" in out  # applied at the end, as by the DAG
