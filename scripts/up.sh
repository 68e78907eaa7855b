#!/usr/bin/env bash
# `make up`: a local Airflow deployment on the embedded default, as plain processes (no Docker): SQLite metadata
# DB, LocalExecutor, ONNX Runtime on the CPU, a generated dataset as the DAG's Dataset default. The UI is at
# http://localhost:${TWINS_UI_PORT:-8080}; `make down` stops it. State, logs and results live under var/up/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
state=${TWINS_UP_STATE:-$PWD/var/up}  # TWINS_UP_STATE: another folder (tests)
export AIRFLOW_HOME=${AIRFLOW_HOME:-$state/airflow}
source scripts/airflow-env.sh
port=${TWINS_UI_PORT:-8080}
data=$state/data/val

export AIRFLOW__CORE__EXECUTOR=LocalExecutor
export AIRFLOW__API__WORKERS=1
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$port/execution/
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin
# Read by the dag-processor and by the workers when they parse the DAG (Param defaults, queue): one host, one
# queue, and the generated dataset as the Dataset default so that the first trigger with the defaults works.
export TWINS_NPU_QUEUE=default
export TWINS_DATASET_PATH=$data
# A local stack runs what you trigger, nothing at 02:00 (a default nightly is ~30 min on 2 cores and would hold up
# manual runs behind max_active_runs=1). TWINS_NIGHTLY="0 2 * * *" make up turns the nightly on.
export TWINS_NIGHTLY=${TWINS_NIGHTLY:-off}
export TWINS_DEADLINE_HOURS=${TWINS_DEADLINE_HOURS:-6}  # a run not finished 6 h after it was queued is mailed about

echo "== Airflow metadata DB ($AIRFLOW_HOME)"
airflow db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1 || { cat "$AIRFLOW_HOME/db-migrate.log"; exit 1; }
twins_pools
if [ ! -f "$data/.twins-sample.json" ]; then
    echo "== Generated dataset (NOT ImageNet: synthetic images, for a toolchain check): $data"
    twins make-sample --out "$data" --classes 8 --per-class 4 --seed 0
fi

echo "== Starting api-server, scheduler, dag-processor, triggerer (logs: $state/logs/)"
python scripts/airflow_local.py up --state "$state" --port "$port"
cat <<MSG

Airflow is up: http://localhost:$port   (user admin, password $(python -c "import json,sys; print(json.load(open(sys.argv[1]))['admin'])" "$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"))
DAG twins_svt_l_validation: trigger it with the defaults (the generated dataset, seeded random weights, ONNX
Runtime on this CPU, batch sizes 1-64, 3 perf rounds of 20 loops: about half an hour on 2 cores) or, for a quick
look, pick batch sizes [1, 4] and 2 perf loops in the form. Nightly runs: $( [ "$TWINS_NIGHTLY" = off ] && echo "off (TWINS_NIGHTLY=\"0 2 * * *\" make up turns them on)" || echo "cron $TWINS_NIGHTLY UTC").
Results database: sqlite:///$AIRFLOW_HOME/twins_results.db   Stop everything with: make down
MSG
