#!/usr/bin/env bash
# `make down`: stop what `make up` started (its state stays under var/up/ for the next `make up`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec .venv/bin/python scripts/airflow_local.py down --state "${TWINS_UP_STATE:-$PWD/var/up}"
