"""A real ``airflow api-server`` and Debian's chromium for browser tests (no pytest fixtures here: helpers).

The server runs against the test session's AIRFLOW_HOME (its SQLite metadata DB migrated by conftest's
``airflow_db``), with SimpleAuthManager user admin and this checkout's DAGs and plugins; ``airflow dags
reserialize`` puts the DAGs into the metadata DB, so their pages exist without a dag-processor. Without
chromium, playwright or a working api-server a test skips with the reason; in CI (CI=true, or
TWINS_REQUIRE_SERVICES=1) it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM = os.environ.get("TWINS_CHROMIUM", "/usr/bin/chromium")

sys.path.insert(0, str(ROOT / "scripts"))
import airflow_local  # noqa: E402  (scripts/ is not a package)


def unavailable(reason: str) -> None:
    """Skip locally; fail in CI (CI=true, or TWINS_REQUIRE_SERVICES=1 as scripts/test.sh sets it there)."""
    if os.environ.get("CI") == "true" or os.environ.get("TWINS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (CI requires it: scripts/browser.sh installs chromium)")
    pytest.skip(reason)


def require_chromium() -> None:
    """Checked before any server starts, so a machine without a browser skips at once."""
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} is not installed: run scripts/browser.sh (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        unavailable("playwright is not installed: pip install the project's test extra (playwright)")


@dataclass
class ApiServer:
    url: str
    token: str  # an admin JWT, as POST /auth/token gives it
    results_url: str = ""  # the twins_results Connection it was started with, if any


@contextlib.contextmanager
def api_server(work: Path, **settings: str) -> Iterator[ApiServer]:
    """``airflow api-server`` on a free port (one worker), its log in ``work``; stopped with its process group.

    ``settings`` are extra environment variables (``AIRFLOW_CONN_…``, ``AIRFLOW__…``).
    """
    password = uuid.uuid4().hex
    (work / "passwords.json").write_text(json.dumps({"admin": password}))
    env = {
        **os.environ,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(work / "passwords.json"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False",
        # This checkout's library and plugins first (the venv may hold another checkout's twins_tasks).
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")]),
        **settings,
    }
    # The DAG must be in the metadata DB for its page (and a DAG run) to exist.
    airflow_local.airflow_cli(env, "dags", "reserialize", timeout=180)

    port = airflow_local.free_port()
    (work / "logs").mkdir(exist_ok=True)
    log_path = work / "logs" / "api-server.log"  # where airflow_local.wait_healthy looks when it died
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [*airflow_local.AIRFLOW, "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its uvicorn worker dies with it (process-group kill below)
        )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            airflow_local.wait_healthy(url, {"api-server": server.pid}, work, timeout_s=90)
        except (RuntimeError, TimeoutError) as exc:
            unavailable(f"airflow api-server did not start: {exc}: {log_path.read_text(errors='replace')[-1500:]}")
        import httpx

        login = httpx.post(f"{url}/auth/token", json={"username": "admin", "password": password}, timeout=30)
        assert login.status_code in (200, 201), login.text
        yield ApiServer(url, login.json()["access_token"], settings.get("AIRFLOW_CONN_TWINS_RESULTS", ""))
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


@contextlib.contextmanager
def browser_context(server: ApiServer, **options: Any) -> Iterator[Any]:
    """A chromium context logged in to ``server`` the way the UI keeps its JWT (the ``_token`` cookie)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        try:
            chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        except Exception as exc:  # any launch failure means: no browser here
            unavailable(f"chromium at {CHROMIUM} does not start under playwright: {exc}")
        context = chromium.new_context(**{"viewport": {"width": 1440, "height": 1500}, **options})
        context.add_cookies([{"name": "_token", "value": server.token, "url": server.url}])
        try:
            yield context
        finally:
            context.close()
            chromium.close()


def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="session")
def shared_api_server(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """One api-server for every browser test module (a start costs a DAG reserialize and a uvicorn boot), with
    the twins_results Connection on a SQLite file of its own that the modules seed as they need."""
    work = tmp_path_factory.mktemp("api_server")
    with api_server(work, AIRFLOW_CONN_TWINS_RESULTS=f"sqlite:///{work / 'twins_results.db'}") as server:
        yield server


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A tab of the module's ``browser`` context; the test fails on any JavaScript error the page raised."""
    tab = browser.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    tab.close()
    assert not errors, f"JavaScript errors: {errors}"
