"""The Airflow operators inside real DAG runs (``dag.test()``), on the Ascend toolchain doubles.

Airflow 3.3 reads its configuration when first imported and ``dag.test()`` needs a migrated metadata DB
and the DAG in a file of the dags folder (it re-parses the bundle and refuses a DAG that is not
serialized), so this module points AIRFLOW_HOME at a temporary folder before importing Airflow, migrates
it once, and writes each test DAG into that folder.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# tests/conftest.py points AIRFLOW_HOME at a throw-away folder before anything imports Airflow (which reads
# its configuration at import time). Run alone without it, do the same here; never touch a real ~/airflow.
if not os.environ.get("AIRFLOW_HOME"):
    if "airflow" in sys.modules:
        import pytest

        pytest.skip(
            "Airflow was imported before AIRFLOW_HOME pointed at a test folder (see tests/conftest.py)",
            allow_module_level=True,
        )
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="twins-airflow-test-")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"

import signal
import subprocess
import threading
import time

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from airflow.utils.state import DagRunState, TaskInstanceState

from tests.doubles.helpers import FAKE_VARS, SET_ENV, make_inputs, make_model, read_log
from twins_airflow.operators import CompileOperator, InferOperator, PerfOperator


@pytest.fixture(scope="module")
def dags_folder(tmp_path_factory):
    """A migrated metadata DB, and a dags folder of this module's own for the DAG files it writes.

    dag.test() re-parses the "dags-folder" bundle, whose path is ``airflow.settings.DAGS_FOLDER`` (read when
    Airflow is imported): point it at a temporary folder so that the project's dags/ is neither written to
    nor parsed here.
    """
    from airflow import settings

    folder = tmp_path_factory.mktemp("dags")
    proc = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(settings, "DAGS_FOLDER", str(folder))
        mp.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(folder))
        yield folder


@pytest.fixture
def fake(monkeypatch, tmp_path):
    for var in FAKE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TWINS_DOUBLES_LOG", str(tmp_path / "calls.jsonl"))
    make_inputs(tmp_path / "bin_path", 6)
    return {
        "model": str(make_model(tmp_path / "alt_gvt_large.onnx")),
        "inputs": str(tmp_path / "bin_path"),
        "cache_dir": str(tmp_path / "cache"),
        "result": str(tmp_path / "result"),
        "backend_options": {"cann_env": str(SET_ENV), "idle_wait_s": 0},
        "log": tmp_path / "calls.jsonl",
    }


DAG_FILE = '''\
"""Test DAG written by tests/test_operators.py: compile -> infer -> perf on the Ascend doubles."""
import pendulum
from airflow.sdk import DAG
from twins_airflow.operators import CompileOperator, InferOperator, PerfOperator

CFG = {cfg}

with DAG({dag_id!r}, schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False,
         default_args={{"retries": 0}}) as dag:
    compile_ = CompileOperator(task_id="compile", backend="ascend", backend_options=CFG["backend_options"],
                               model=CFG["model"], batch_size=CFG["batch_size"], cache_dir=CFG["cache_dir"])
    infer = InferOperator(task_id="infer", backend="{{{{ 'ascend' }}}}", backend_options=CFG["backend_options"],
                          artifact=compile_.output["artifact"], inputs=CFG["inputs"],
                          batch_size="{{{{ ti.xcom_pull(task_ids='compile', key='batch_size') }}}}",
                          output_root=CFG["result"], output_dirname="alt_gvt_large_bs" + str(CFG["batch_size"]))
    perf = PerfOperator(task_id="perf", backend="ascend", backend_options=CFG["backend_options"],
                        artifact=compile_.output, batch_size=CFG["batch_size"], loop=5)
    compile_ >> infer >> perf
'''


def run_dag(dags_folder: Path, dag_id: str, cfg: dict):
    """Write the DAG file, load it as Airflow does, and run it with dag.test(); return the DagRun."""
    from airflow.dag_processing.dagbag import DagBag

    path = dags_folder / f"{dag_id}.py"
    cfg = {k: v for k, v in cfg.items() if k != "log"}
    path.write_text(DAG_FILE.format(cfg=repr(cfg), dag_id=dag_id))
    bag = DagBag(dag_folder=str(path))
    assert not bag.import_errors, bag.import_errors
    # dag.test() runs the task runner in this process, which installs a SIGTERM handler that ignores the
    # signal in forked children and never removes it: a multiprocessing.Pool created later in this process
    # then hangs in terminate(). Leave the process as we found it.
    previous = signal.getsignal(signal.SIGTERM)
    try:
        return bag.get_dag(dag_id).test()
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_dag_test_leaves_its_sigterm_handler_behind(dags_folder, fake):
    """The Airflow 3.3.2 quirk run_dag() undoes: if this fails, Airflow cleans up and the workaround can go."""
    before = signal.getsignal(signal.SIGTERM)
    run_dag(dags_folder, "twins_test_operators_signals", {**fake, "batch_size": 1})
    assert signal.getsignal(signal.SIGTERM) is before  # run_dag restored it ...
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(dags_folder / "twins_test_operators_signals.py")).get_dag(
        "twins_test_operators_signals"
    )
    try:
        dag.test()
        assert signal.getsignal(signal.SIGTERM) is not before  # ... because dag.test() alone does not
        assert signal.getsignal(signal.SIGTERM).__name__ == "_on_term"
    finally:
        signal.signal(signal.SIGTERM, before)


def states(dag_run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


def test_compile_infer_perf_in_a_dag_run(dags_folder, fake, capfd):
    dag_run = run_dag(dags_folder, "twins_test_operators_ok", {**fake, "batch_size": 4})
    out = capfd.readouterr().out
    assert dag_run.state == DagRunState.SUCCESS, out[-5000:]
    assert f"Filling up the DagBag from {dags_folder} " in out  # this module's folder, not the project's dags/
    assert states(dag_run) == {"compile": "success", "infer": "success", "perf": "success"}
    tis = {ti.task_id: ti for ti in dag_run.get_task_instances()}

    compiled = tis["compile"].xcom_pull(task_ids="compile")
    assert compiled["artifact"].endswith("/alt_gvt_large_bs4.om") and Path(compiled["artifact"]).is_file()
    assert compiled["cached"] is False and compiled["batch_size"] == 4
    assert tis["compile"].xcom_pull(task_ids="compile", key="artifact") == compiled["artifact"]  # multiple_outputs

    inferred = tis["infer"].xcom_pull(task_ids="infer")
    assert inferred["num_inputs"] == inferred["num_outputs"] == 6
    assert len(list(Path(inferred["output_dir"]).glob("*_0.txt"))) == 6
    assert "npu_compute_time_list" not in inferred["summary"] and "filesinfo" not in inferred["summary"]
    assert inferred["summary"]["NPU_compute_time"]["count"] == 2

    perf = tis["perf"].xcom_pull(task_ids="perf")
    assert perf["batch_size"] == 4 and perf["loop"] == 5 and perf["throughput"] == pytest.approx(4000 / perf["mean_ms"])

    # The tools' own lines are in the task log, folded under a group per tool.
    for line in (
        "ATC start working now, please wait for a moment.",
        "ATC run success, welcome to the next use.",
        "::group::atc: alt_gvt_large_bs4",
        "::group::ais_bench: alt_gvt_large_bs4",
        "[INFO] -----------------Performance Summary------------------",
        f"throughput 1000*batchsize(4)/NPU_compute_time.mean({perf['mean_ms']}): {perf['throughput']}",
    ):
        assert line in out, line
    assert [call["argv"][:2] for call in read_log(fake["log"], "ais_bench")] == [["--model", compiled["artifact"]]] * 2


def test_second_run_reuses_the_compiled_artifact(dags_folder, fake, caplog):
    run_dag(dags_folder, "twins_test_operators_reuse", {**fake, "batch_size": 1})
    dag_run = run_dag(dags_folder, "twins_test_operators_reuse", {**fake, "batch_size": 1})
    assert dag_run.state == DagRunState.SUCCESS
    record = next(ti for ti in dag_run.get_task_instances() if ti.task_id == "compile").xcom_pull(task_ids="compile")
    assert record["cached"] is True
    assert len([c for c in read_log(fake["log"], "atc") if "argv" in c]) == 1
    # twins_tasks' own log lines reach pytest's log capture (the tools' lines reach stdout: see above).
    assert "Reusing compiled artifact" in caplog.text


def test_atc_failure_fails_the_task_with_its_error_codes(dags_folder, fake, monkeypatch, capfd):
    monkeypatch.setenv("FAKE_ATC_FAIL", "1")
    dag_run = run_dag(dags_folder, "twins_test_operators_atc_fail", {**fake, "batch_size": 1})
    out = capfd.readouterr().out
    assert dag_run.state == DagRunState.FAILED
    assert states(dag_run) == {
        "compile": TaskInstanceState.FAILED,
        "infer": TaskInstanceState.UPSTREAM_FAILED,
        "perf": TaskInstanceState.UPSTREAM_FAILED,
    }
    assert "TwinsTaskError: atc failed (exit 255)" in out  # an AirflowException: retries apply
    assert out.count("error codes: E10001, EZ3003") == 1  # one traceback, not the same message twice
    assert "EZ3003: No supported Ops kernel and engine are found" in out


def test_operator_execute_maps_errors(fake, monkeypatch, tmp_path):
    missing = CompileOperator(
        task_id="c",
        backend="ascend",
        backend_options=fake["backend_options"],
        model=str(tmp_path / "missing.onnx"),
        batch_size=1,
        cache_dir=fake["cache_dir"],
    )
    with pytest.raises(AirflowFailException, match="ONNX model .*missing.onnx not found"):  # no retries
        missing.execute({})
    busy = PerfOperator(
        task_id="p",
        backend="ascend",
        backend_options={**fake["backend_options"], "soc_version": "Ascend310P3"},
        artifact=str(tmp_path / "x.om"),
        batch_size=1,
    )
    (tmp_path / "x.om").write_text("{}")
    monkeypatch.setenv("FAKE_NPU_AICORE", "60")
    with pytest.raises(AirflowException, match="AICore 60%.*requires an idle device") as err:
        busy.execute({})
    assert not isinstance(err.value, AirflowFailException)  # a busy device may be free at the next try


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"loop": 0}, "loop=0 must be an integer >= 1"),
        ({"loop": "many"}, "loop='many' must be an integer >= 1"),
        ({"warmup": -1}, "warmup=-1 must be an integer >= 0"),
        ({"batch_size": True}, "batch_size=True must be an integer >= 1"),
    ],
)
def test_perf_operator_validates_literal_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PerfOperator(task_id="p", **{"artifact": "a.om", "batch_size": 1, **kwargs})
    PerfOperator(task_id="templated", artifact="a.om", batch_size="{{ params.bs }}", loop="{{ params.loop }}")


def test_auto_backend_finds_the_cann_env_and_runs_tools_through_the_hook(fake):
    op = PerfOperator(task_id="p", backend_options=fake["backend_options"], artifact="a.om", batch_size=1)
    assert op.backend == "auto"
    backend = op.make_backend()
    assert backend.name == "ascend" and backend.runner is op.hook


def test_backend_name_is_checked():
    with pytest.raises(ValueError, match="backend='npu' must be one of auto, onnxruntime, ascend"):
        PerfOperator(task_id="p", backend="npu", artifact="a.om", batch_size=1)


def test_infer_operator_validates_outfmt():
    with pytest.raises(ValueError, match="outfmt='CSV' must be one of BIN, NPY, TXT"):
        InferOperator(
            task_id="i", artifact="a.om", inputs="in", batch_size=1, output_root="o", output_dirname="d", outfmt="CSV"
        )
    assert (
        InferOperator(
            task_id="ok", artifact="a.om", inputs="in", batch_size=1, output_root="o", output_dirname="d", outfmt="npy"
        ).outfmt
        == "npy"
    )


def proc_stat(pid: int) -> list[str] | None:
    """State, ppid, pgrp, ... of a process (fields 3.. of /proc/PID/stat), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def alive(pid: int) -> bool:
    """Running: a killed process stays a zombie until its parent reaps it, and a zombie runs nothing."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def running_in_group(pgid: int) -> list[int]:
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    return [pid for pid in pids if (stat := proc_stat(pid)) and int(stat[2]) == pgid and stat[0] != "Z"]


def test_on_kill_stops_the_tool_and_its_children(fake, monkeypatch):
    monkeypatch.setenv("FAKE_ATC_SLEEP", "300")
    op = CompileOperator(
        task_id="compile",
        backend="ascend",
        backend_options=fake["backend_options"],
        model=fake["model"],
        batch_size=1,
        cache_dir=fake["cache_dir"],
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            op.execute({})
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    deadline = time.monotonic() + 60
    while not [c for c in read_log(fake["log"], "atc") if c.get("sleeping")]:
        assert time.monotonic() < deadline and worker.is_alive(), errors
        time.sleep(0.05)
    (event,) = [c for c in read_log(fake["log"], "atc") if c.get("sleeping")]
    assert op.hook.sub_process is not None and op.hook.sub_process.pid == event["pid"]
    assert alive(event["pid"]) and alive(event["child_pid"])
    assert sorted(running_in_group(event["pid"])) == sorted([event["pid"], event["child_pid"]])

    op.on_kill()
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert not alive(event["pid"]) and not alive(event["child_pid"])
    assert running_in_group(event["pid"]) == []  # the tool ran in its own process group: all of it stopped
    assert len(errors) == 1 and isinstance(errors[0], AirflowException)
    assert "atc was stopped by signal 15 (SIGTERM)" in str(errors[0])
