#!/usr/bin/env bash
# Create .venv and install the project with Airflow and test extras (idempotent; reinstalls when
# pyproject.toml changes). Sourced by demo.sh and test.sh; also runnable on its own.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup: $PYTHON is $("$PYTHON" --version 2>&1); Python >= 3.11 is required (set PYTHON=python3.11)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.twins-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing the project and its pinned dependencies into .venv (torch, Airflow: a few minutes)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[airflow,test]'
    touch "$stamp"
fi
