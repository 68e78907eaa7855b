"""The DAG's ids, one place for the DAG file and the UI's links.

``dags/twins_svt_l_validation.py`` names its DAG, task group and tasks with these; the results UI
(:mod:`twins_airflow.ui.app`) builds its links to DAG runs and task logs from them, so a renamed task cannot
leave the UI pointing at a task that no longer exists. Plain strings: importing this costs nothing.
"""

from __future__ import annotations

DAG_ID = "twins_svt_l_validation"

# The task group mapped over the batch sizes, and its tasks (one instance of each per batch size).
BATCH_GROUP_ID = "per_batch_size"
COMPILE_TASK_ID = "compile"
INFER_TASK_ID = "infer"
PERF_TASK_ID = "perf"
BATCH_STEPS = (COMPILE_TASK_ID, INFER_TASK_ID, PERF_TASK_ID)
# Task ids as Airflow shows them (group id prefixed): what the UI's task-log links and REST calls use.
BATCH_TASK_IDS = tuple(f"{BATCH_GROUP_ID}.{step}" for step in BATCH_STEPS)

# The task that writes the run to the results database: a DAG run that did not reach it has no results.
RECORD_TASK_ID = "record"

# The task whose return value the batch-size group is mapped over: map index i is its i-th batch size.
BATCH_SIZES_TASK_ID = "batch_sizes"

# The "Twins results" tab of a DAG run in the Airflow UI (the plugin's ``url_route``, plugins/twins_results_plugin.py):
# ``{base_url}/dags/{dag_id}/runs/{run_id}/plugin/{RUN_RESULTS_ROUTE}``, the page a notification links to.
RUN_RESULTS_ROUTE = "twins-run-results"
