"""How a failed DAG run of twins_svt_l_validation looks in Airflow: one red task for one cause.

A run whose first task fails (a wrong dataset path) must show that task failed and nothing else: ``accuracy``
(trigger rule all_done) has nothing to score and ends skipped, the tasks after it skipped or upstream_failed,
and the DAG run still ends failed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "twins_svt_l_validation"
RESULTS_CONN_ENV = "AIRFLOW_CONN_TWINS_RESULTS"


@pytest.fixture(scope="module")
def dag(airflow_db: Path):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors
    return bag.get_dag(DAG_ID)


def test_bad_dataset_path_fails_plan_only(dag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    from airflow.utils.state import DagRunState, TaskInstanceState

    monkeypatch.setenv(RESULTS_CONN_ENV, f"sqlite:///{tmp_path / 'twins_results.db'}")
    dr = dag.test(run_conf={"dataset_path": str(tmp_path / "nowhere"), "backend": "onnxruntime"})
    states = {(ti.task_id, ti.map_index): ti.state for ti in dr.get_task_instances()}

    assert dr.state == DagRunState.FAILED, states
    failed = [key for key, state in states.items() if state == TaskInstanceState.FAILED]
    assert failed == [("plan", -1)], states
    assert states[("accuracy", -1)] == TaskInstanceState.SKIPPED, states
    for task_id in ("preprocess", "export", "record", "report", "regression_check"):
        assert states[(task_id, -1)] in (TaskInstanceState.UPSTREAM_FAILED, TaskInstanceState.SKIPPED), (
            task_id,
            states,
        )
    # accuracy says why it skipped, pointing at the task that failed rather than failing beside it.
    out = capfd.readouterr().out
    assert "nothing to score: no output from plan, preprocess, export" in out
