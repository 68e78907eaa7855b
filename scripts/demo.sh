#!/usr/bin/env bash
# The main job, from nothing: set up .venv, generate a small ImageNet-layout dataset, and run the
# twins_svt_l_validation DAG end to end with `airflow dags test` on the embedded defaults (SQLite metadata and
# results DB, ONNX Runtime on the CPU, seeded random weights, batch sizes 1,4,8). Ends with the report table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
export AIRFLOW_HOME=${AIRFLOW_HOME:-$PWD/var/demo/airflow}
source scripts/airflow-env.sh
unset TWINS_DEADLINE_HOURS  # Airflow 3.3.2's `dags test` fails at the end of a DAG with a deadline (README)
data=$PWD/var/demo/data/val

echo "== Airflow metadata DB ($AIRFLOW_HOME)"
airflow db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1 || { cat "$AIRFLOW_HOME/db-migrate.log"; exit 1; }
twins_pools

echo "== Generated dataset (NOT ImageNet: synthetic images, for a toolchain check)"
twins make-sample --out "$data" --classes 8 --per-class 4 --seed 0

conf=$(printf '{"dataset_path": "%s", "backend": "onnxruntime", "batch_sizes": [1, 4, 8], "perf_loops": 10, "reference_images": 16, "baseline": "recipe-gpu"}' "$data")
echo "== airflow dags test twins_svt_l_validation (seeded random weights: accuracy is chance level;"
echo "   agreement with the PyTorch reference is the meaningful number)"
log=$AIRFLOW_HOME/demo-run.log
if ! airflow dags test twins_svt_l_validation -c "$conf" >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "demo: the DAG run failed; full log: $log" >&2
    exit 1
fi
# The library's own lines without Airflow's log decoration ("<time> [info     ] <message>  [<logger>] loc=<file:line>").
grep -E "Reusing|Recorded run|Backend " "$log" |
    sed -E 's/^.*(Reusing|Recorded run|Backend )/\1/; s/ +\[[^] ]+\]( [a-z_]+=[^ ]*)*$//' || true
report=$(ls -t "$TWINS_WORK_DIR"/runs/*/report.md | head -n 1)
echo
cat "$report"
echo
echo "Report:           $report"
echo "Results database: sqlite:///$AIRFLOW_HOME/twins_results.db  (list runs: .venv/bin/twins results --url sqlite:///$AIRFLOW_HOME/twins_results.db)"
echo "Task logs:        $AIRFLOW_HOME/logs/dag_id=twins_svt_l_validation/"
