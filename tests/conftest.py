"""Shared fixtures. Airflow is configured here, before any test imports it (it reads config at import)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOUBLES = ROOT / "tests" / "doubles"

# One throw-away AIRFLOW_HOME per test session: never the user's ~/airflow.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="twins-test-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ["AIRFLOW__API_AUTH__JWT_SECRET"] = uuid.uuid4().hex * 2
os.environ["TWINS_TASK_RETRIES"] = "0"  # a failing task in dag.test() must not wait for its retry delay
os.environ["TWINS_WORK_DIR"] = str(_AIRFLOW_HOME / "twins")
os.environ.pop("AIRFLOW_CONN_TWINS_RESULTS", None)
os.environ.pop("TWINS_RESULTS_URL", None)

REQUIRE_SERVICES = os.environ.get("TWINS_REQUIRE_SERVICES") == "1"

# The browser tests' shared fixtures (a tab that fails its test on a JavaScript error), and a real SMTP server
# for the notification tests.
pytest_plugins = ["_airflow_ui", "_smtp"]


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


def _unavailable(reason: str):
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (CI requires it: scripts/test.sh starts it when installed)")
    pytest.skip(reason)


@contextlib.contextmanager
def fresh_postgres_database(prefix: str) -> Iterator[str]:
    """A new database on the local PostgreSQL server (127.0.0.1:5432, trust auth), dropped afterwards: its name.

    Where the server is not reachable, the test skips saying how to start it (and fails in CI).
    """
    import psycopg2

    try:
        admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3)
    except psycopg2.OperationalError as exc:
        _unavailable(
            f"PostgreSQL is not reachable at 127.0.0.1:5432 ({exc}); start it with "
            f"`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        )
    admin.autocommit = True
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def fresh_postgres_url():
    """A database of the test's own (the session's one holds other tests' rows), dropped afterwards."""
    with fresh_postgres_database("twins_fresh") as name:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh database on the local PostgreSQL server for the session's tests, dropped afterwards."""
    with fresh_postgres_database("twins_test") as name:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated Airflow metadata DB (SQLite in the session's AIRFLOW_HOME), needed by dag.test()."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return _AIRFLOW_HOME


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(size, name)``: a tmpfs of that size (e.g. "2m", "64k") under tmp_path, for full-disk tests; a
    skip saying why where none can be mounted (needs root). Every mount is lazily unmounted afterwards."""
    import subprocess

    mounts: list[Path] = []

    def mount(size: str, name: str = "small") -> Path:
        path = tmp_path / name
        path.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a {size} tmpfs here ({proc.stderr.strip()}): needs root")
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], check=False)  # lazy: never leave a mount behind


@pytest.fixture(autouse=True)
def _restore_sigterm():
    """dag.test() installs Airflow's SIGTERM handler in the test process; don't let it leak into other tests."""
    import signal

    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)
