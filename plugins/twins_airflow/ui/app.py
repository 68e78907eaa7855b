"""The "Twins results" FastAPI app: HTML pages and a JSON API over the results database.

Mounted by the Airflow api-server (``plugins/twins_results_plugin.py``) under ``/twins-results``. Airflow does
not protect plugin apps, so every route here (pages, JSON and static files) depends on :func:`require_user`,
which runs the api-server's own ``get_user`` (``Authorization: Bearer <JWT>`` first, else the UI's ``_token``
cookie). Pages are Jinja2 templates with autoescaping; data reaches the page's scripts as JSON in a
``<script type="application/json">`` element (``tojson`` escapes ``<``, ``>``, ``&`` and quotes), and a
Content-Security-Policy allows scripts from this app only.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from twins_tasks import results_views as views
from twins_tasks.errors import InputError
from twins_tasks.store import DEFAULT_SQLITE_NAME, ResultsStore

log = logging.getLogger(__name__)

URL_PREFIX = "/twins-results"
RESULTS_CONN_ID = "twins_results"
HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
# Only these files are served (no directory listing, no path tricks).
STATIC_FILES = {
    "chart.umd.min.js": "text/javascript",
    "twins.js": "text/javascript",
    "twins.css": "text/css",
    "chart.js-LICENSE.md": "text/plain",
}
# The DAG's per-batch-size tasks (dags/twins_svt_l_validation.py), for links to their logs.
BATCH_TASKS = ("per_batch_size.compile", "per_batch_size.infer", "per_batch_size.perf")
CSP = (
    "default-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'"
)
STORE_TTL_S = 30.0
# The history table lists this many newest runs; the charts show every point asked for (a 1,000-row table is
# slow to render and to read).
HISTORY_TABLE_ROWS = 100


def results_url_from_airflow() -> str:
    """The ``twins_results`` Connection's URI (env ``AIRFLOW_CONN_TWINS_RESULTS``, a secrets backend or the
    metadata DB: the api-server may read Connections), else ``$AIRFLOW_HOME/twins_results.db`` like the DAG."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    try:
        return Connection.get_connection_from_secrets(RESULTS_CONN_ID).get_uri()
    except AirflowNotFoundException:
        home = os.environ.get("AIRFLOW_HOME") or str(Path.home() / "airflow")
        return f"sqlite:///{os.path.join(home, DEFAULT_SQLITE_NAME)}"


class StoreCache:
    """One ResultsStore (engine, pool) per URL; the URL is looked up again every ``ttl`` seconds so that a
    changed Connection takes effect without restarting the api-server."""

    def __init__(self, resolve_url: Callable[[], str], ttl: float = STORE_TTL_S) -> None:
        self._resolve = resolve_url
        self._ttl = ttl
        self._lock = threading.Lock()
        self._stores: dict[str, ResultsStore] = {}
        self._url: str | None = None
        self._checked = 0.0

    def get(self) -> ResultsStore:
        with self._lock:
            now = time.monotonic()
            if self._url is None or now - self._checked > self._ttl:
                self._url = self._resolve()
                self._checked = now
            store = self._stores.get(self._url)
            if store is None:
                store = self._stores[self._url] = ResultsStore(self._url)
            return store


async def require_user(request: Request) -> Any:
    """The authenticated Airflow user, exactly as the api-server's own routes resolve it; 401/403 otherwise."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    credentials = await bearer_scheme(request)
    return await get_user(request, None, credentials)


UserDep = Annotated[Any, Depends(require_user)]


def _airflow_root(request: Request) -> str:
    """The Airflow UI's base path as seen by the browser: our mount point minus our prefix."""
    root = str(request.scope.get("root_path") or "")
    return root[: -len(URL_PREFIX)] if root.endswith(URL_PREFIX) else root


def create_app(
    results_url: str | Callable[[], str] | None = None, *, user_dependency: Callable[..., Any] | None = None
) -> FastAPI:
    """The app. ``results_url``: a SQLAlchemy URL or a function returning one (default: the Airflow
    Connection, see :func:`results_url_from_airflow`). ``user_dependency`` replaces the Airflow login check
    (benchmarks and unit tests only)."""
    if results_url is None:
        resolve: Callable[[], str] = results_url_from_airflow
    elif isinstance(results_url, str):
        fixed = results_url
        resolve = lambda: fixed  # noqa: E731
    else:
        resolve = results_url
    stores = StoreCache(resolve)
    env = Environment(
        loader=FileSystemLoader(str(HERE / "templates")),
        autoescape=select_autoescape(enabled_extensions=("html",), default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    env.filters["when"] = _when
    # One URL path segment: unlike Jinja's urlencode, "/" is escaped too (run ids may contain anything).
    env.filters["pathpart"] = lambda value: quote(str(value), safe="")

    app = FastAPI(
        title="Twins results",
        description="Twins-SVT-L validation results (runs, run, history, compare) for the Airflow UI.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    if user_dependency is not None:
        app.dependency_overrides[require_user] = user_dependency

    @app.middleware("http")
    async def timing_and_headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        started = time.perf_counter()
        response: Response = await call_next(request)
        # Server time, for the benchmark and for anyone looking at the network panel.
        response.headers["Server-Timing"] = f"app;dur={1000 * (time.perf_counter() - started):.1f}"
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        root = _airflow_root(request)
        if exc.status_code in (401, 403):
            message = (
                "You are not logged in to Airflow (or your session expired), so the results are not shown. "
                "Log in to Airflow and open this page again."
            )
        else:
            message = str(exc.detail)
        html = env.get_template("error.html").render(
            title=f"{exc.status_code}", message=message, login_url=f"{root}/auth/login", status=exc.status_code
        )
        return HTMLResponse(html, status_code=exc.status_code, headers=exc.headers)

    def page(request: Request, template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
        base = str(request.scope.get("root_path") or "")
        html = env.get_template(template).render(
            base=base, airflow_root=_airflow_root(request), qs=urlencode, **context
        )
        return HTMLResponse(html, status_code=status_code)

    def store() -> ResultsStore:
        try:
            return stores.get()
        except InputError as exc:
            raise HTTPException(status_code=503, detail=f"results database unavailable: {exc}") from exc

    # --- JSON API ------------------------------------------------------------------------------------------

    @app.get("/api/runs")
    def api_runs(
        _user: UserDep,
        config_key: str | None = None,
        limit: Annotated[int, Query(ge=1, le=views.MAX_PAGE)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """Runs, newest first, one page; ``config_key`` filters by configuration."""
        return views.list_runs(store(), config_key=config_key or None, limit=limit, offset=offset)

    @app.get("/api/run")
    def api_run(_user: UserDep, run_key: str, baseline: str | None = None) -> dict[str, Any]:
        """One run: fields, batch rows, the recipe's table against ``baseline`` (preset, numbers or run id)."""
        return _run_or_404(store(), run_key, baseline)

    @app.get("/api/history")
    def api_history(
        _user: UserDep, config_key: str, limit: Annotated[int, Query(ge=1, le=views.MAX_HISTORY)] = 200
    ) -> dict[str, Any]:
        """The last ``limit`` runs of one configuration, oldest first."""
        return views.history(store(), config_key, limit=limit)

    @app.get("/api/compare")
    def api_compare(_user: UserDep, a: str, b: str) -> dict[str, Any]:
        """Runs ``a`` (before) and ``b`` (after) side by side with the differences."""
        return _compare_or_404(store(), a, b)

    # --- pages -----------------------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def runs_page(
        request: Request,
        _user: UserDep,
        config_key: str | None = None,
        limit: Annotated[int, Query(ge=1, le=views.MAX_PAGE)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> HTMLResponse:
        data = views.list_runs(store(), config_key=config_key or None, limit=limit, offset=offset)
        return page(request, "runs.html", data=data, nav="runs")

    @app.get("/run", response_class=HTMLResponse)
    def run_page(
        request: Request, _user: UserDep, run_key: str, baseline: str | None = None, dag_id: str | None = None
    ) -> HTMLResponse:
        try:
            data = views.run_detail(store(), run_key, baseline=_checked_baseline(baseline))
        except InputError as exc:
            raise HTTPException(400, detail=str(exc)) from exc
        if data is None:
            # Opened from a DAG run that recorded nothing (another DAG, or the run failed before `record`).
            return page(request, "no_run.html", status_code=404, run_key=run_key, dag_id=dag_id, nav="run")
        chart = {
            "kind": "run",
            "rows": data["perf"]["rows"],
            "label": data["perf"]["label"],
            "baseline_label": data["perf"]["baseline_label"],
            "dag_id": data["summary"]["dag_id"],
            "run_key": run_key,
            "batch_tasks": list(BATCH_TASKS),
        }
        return page(request, "run.html", data=data, chart=chart, nav="run", batch_tasks=BATCH_TASKS)

    @app.get("/history", response_class=HTMLResponse)
    def history_page(
        request: Request,
        _user: UserDep,
        config_key: str,
        limit: Annotated[int, Query(ge=1, le=views.MAX_HISTORY)] = 200,
    ) -> HTMLResponse:
        data = views.history(store(), config_key, limit=limit)
        chart = {"kind": "history", **data}
        return page(request, "history.html", data=data, chart=chart, nav="history", table_rows=HISTORY_TABLE_ROWS)

    @app.get("/compare", response_class=HTMLResponse)
    def compare_page(request: Request, _user: UserDep, a: str = "", b: str = "") -> HTMLResponse:
        results = store()
        data = views.compare_runs(results, a, b) if a and b else None
        if data is not None and data["missing"]:
            raise HTTPException(404, detail=f"no run {', '.join(map(repr, data['missing']))} in the results database")
        recent = views.list_runs(results, limit=50)["runs"]
        chart = None
        if data is not None:
            chart = {
                "kind": "compare",
                "a": a,
                "b": b,
                "batch_sizes": [x["batch_size"] for x in data["batches"]],
                "throughput_a": [_metric(x, "throughput", "a") for x in data["batches"]],
                "throughput_b": [_metric(x, "throughput", "b") for x in data["batches"]],
            }
        return page(request, "compare.html", data=data, a=a, b=b, recent=recent, chart=chart, nav="compare")

    @app.get("/static/{name}")
    def static(_user: UserDep, name: str) -> FileResponse:
        media = STATIC_FILES.get(name)
        if media is None:
            raise HTTPException(404, detail=f"no static file {name!r}")
        return FileResponse(STATIC_DIR / name, media_type=media)

    return app


def _wants_json(request: Request) -> bool:
    root = str(request.scope.get("root_path") or "")
    path = request.url.path[len(root) :] if request.url.path.startswith(root) else request.url.path
    return path.startswith("/api/") or "application/json" in request.headers.get("accept", "")


def _checked_baseline(baseline: str | None) -> str | None:
    if baseline is not None and len(baseline) > 250:
        raise HTTPException(400, detail="baseline: too long (a preset, 'bs:img_per_s,…' numbers, or a run id)")
    return baseline


def _run_or_404(results: ResultsStore, run_key: str, baseline: str | None) -> dict[str, Any]:
    try:
        data = views.run_detail(results, run_key, baseline=_checked_baseline(baseline))
    except InputError as exc:
        raise HTTPException(400, detail=str(exc)) from exc
    if data is None:
        raise HTTPException(404, detail=f"no run {run_key!r} in the results database")
    return data


def _compare_or_404(results: ResultsStore, a: str, b: str) -> dict[str, Any]:
    data = views.compare_runs(results, a, b)
    if data is None or data["missing"]:
        missing = data["missing"] if data else [a, b]
        raise HTTPException(404, detail=f"no run {', '.join(map(repr, missing))} in the results database")
    return data


def _metric(batch: dict[str, Any], metric: str, side: str) -> Any:
    return next((m[side] for m in batch["metrics"] if m["metric"] == metric), None)


def _num(value: Any, spec: str = ".1f") -> str:
    """Numbers for tables: ``-`` when absent, like the report."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return format(value, spec)
    return str(value)


def _when(value: str | None) -> str:
    """``2026-11-26T02:00:00+00:00`` -> ``2026-11-26 02:00 UTC``."""
    if not value:
        return "-"
    return value[:16].replace("T", " ") + " UTC"
