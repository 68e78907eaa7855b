#!/usr/bin/env bash
# Environment for running this project's Airflow locally (sourced; AIRFLOW_HOME may be preset).
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export AIRFLOW_HOME=${AIRFLOW_HOME:-$repo/var/airflow}
export AIRFLOW__CORE__DAGS_FOLDER=$repo/dags
export AIRFLOW__CORE__PLUGINS_FOLDER=$repo/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__PARALLELISM=${AIRFLOW__CORE__PARALLELISM:-4}
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
export TWINS_WORK_DIR=${TWINS_WORK_DIR:-$AIRFLOW_HOME/twins}
mkdir -p "$AIRFLOW_HOME"
# A stable JWT secret per AIRFLOW_HOME (Airflow warns on every request without one).
if [ ! -s "$AIRFLOW_HOME/.jwt_secret" ]; then
    (umask 077; head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$AIRFLOW_HOME/.jwt_secret")
fi
AIRFLOW__API_AUTH__JWT_SECRET=$(cat "$AIRFLOW_HOME/.jwt_secret")
export AIRFLOW__API_AUTH__JWT_SECRET
export PATH=$repo/.venv/bin:$PATH
# The DAG's pools: device work (one slot per NPU chip of all NPU hosts together: each batch size leases its own
# chip) and atc compiles on the host CPUs (several GB of RAM each: as many at once as the hosts' RAM allows).
twins_pools() {
    airflow pools set "${TWINS_NPU_POOL:-ascend_npu}" "${TWINS_NPU_CHIPS:-1}" \
        "Device work: one slot per NPU chip (each batch size leases its own chip)" >/dev/null
    airflow pools set "${TWINS_COMPILE_POOL:-ascend_compile}" "${TWINS_COMPILE_SLOTS:-2}" \
        "atc compiles at once on the host CPUs (several GB of RAM each)" >/dev/null
}
