"""The "Twins results" FastAPI app: HTML pages and a JSON API over the results database.

Mounted by the Airflow api-server (``plugins/twins_results_plugin.py``) under ``/twins-results``. Airflow does
not protect plugin apps, so both routers here (pages with static files, and the JSON API) depend on
:func:`require_user`, which runs the api-server's own ``get_user`` (``Authorization: Bearer <JWT>`` first, else
the UI's ``_token`` cookie). The results store is a dependency too (:func:`results_store`). Errors are rendered in
one place (:func:`http_error`): JSON for the API, an error page otherwise. Pages are Jinja2 templates with
autoescaping; data reaches the page's scripts as JSON in a ``<script type="application/json">`` element
(``tojson`` escapes ``<``, ``>``, ``&`` and quotes), and a Content-Security-Policy allows scripts from this app
only. A run the results database does not have (a DAG run that failed before ``record``) is looked up in Airflow
itself (:mod:`twins_airflow.ui.airflow_runs`): its failed tasks, their errors and links to their logs.

The one write, ``POST api/mark`` (accept a run as the new normal, or exclude it from references), is allowed to the
users Airflow's auth manager lets change the DAG's runs (:func:`may_change_runs`, the api-server's own check) and
needs more than the login cookie (:func:`not_forged`).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, Field, StringConstraints

from twins_airflow.dag_names import BATCH_TASK_IDS, DAG_ID, RECORD_TASK_ID
from twins_airflow.ui import airflow_runs
from twins_tasks import results_views as views
from twins_tasks.errors import InputError
from twins_tasks.history import mark_run, mark_text
from twins_tasks.store import ResultsStore

log = logging.getLogger(__name__)

URL_PREFIX = "/twins-results"
API_PREFIX = "/api"
HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
# Only these files are served (no directory listing, no path tricks).
STATIC_FILES = {
    "chart.umd.min.js": "text/javascript",
    "twins.js": "text/javascript",
    "twins.css": "text/css",
    "chart.js-LICENSE.md": "text/plain",
}
CSP = (
    "default-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'"
)
STORE_TTL_S = 30.0
# Sent by this app's script with every change; a page of another site cannot add it to a request (that would need a
# CORS preflight, which the api-server does not grant), unlike the login cookie, which the browser adds to any post.
WRITE_HEADER = "X-Requested-By"
MAX_WHY_CHARS = 2000
# The history table lists this many newest runs; the charts show every point asked for (a 1,000-row table is
# slow to render and to read).
HISTORY_TABLE_ROWS = 100
MAX_BASELINE_CHARS = 250


# --- templates -------------------------------------------------------------------------------------------------


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


def _mark_line(mark: Mapping[str, Any]) -> str:
    """A mark as one line (``accepted as the new normal by ana at 2026-12-02 09:14 UTC: why``): the CLI's words."""
    at = mark.get("at")
    return mark_text({**mark, "at": dt.datetime.fromisoformat(at) if isinstance(at, str) else at})


def _path_part(value: Any) -> str:
    """One URL path segment: unlike Jinja's urlencode, "/" is escaped too (run ids may contain anything)."""
    return quote(str(value), safe="")


TEMPLATES = Environment(
    loader=FileSystemLoader(str(HERE / "templates")),
    autoescape=select_autoescape(enabled_extensions=("html",), default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
TEMPLATES.filters.update(num=_num, when=_when, pathpart=_path_part, markline=_mark_line)
# The DAG names the pages mention (dag_names.py, shared with the DAG file).
TEMPLATES.globals.update(validation_dag_id=DAG_ID, record_task_id=RECORD_TASK_ID)


# --- shared dependencies -------------------------------------------------------------------------------------


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


def may_change_runs(user: Any, dag_id: str) -> bool:
    """Whether Airflow's auth manager lets ``user`` change runs of ``dag_id``: the check the api-server makes
    before its own DAG-run changes (``requires_access_dag("PUT", DagAccessEntity.RUN)``, the DAG's team looked up
    as it does when multi-team is on). A user the auth manager did not make (the stand-in user of benchmarks and
    unit tests) may not."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.configuration import conf

    if not isinstance(user, BaseUser):
        return False
    team = None
    if conf.getboolean("core", "multi_team", fallback=False):
        from airflow.models.dag import DagModel

        team = DagModel.get_team_name(dag_id)
    return get_auth_manager().is_authorized_dag(
        method="PUT", access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id, team_name=team), user=user
    )


def not_forged(request: Request) -> None:
    """A change must not be one another site's page made the browser send (CSRF): the login cookie goes with any
    request to this host, so a change needs an ``Authorization: Bearer`` header (API clients) or the
    :data:`WRITE_HEADER` this app's script adds, and a browser that says the request came from another site is
    refused. (Airflow 3.3's UI keeps its JWT in an httponly ``SameSite=Lax`` cookie that scripts cannot read.)"""
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        raise HTTPException(403, detail="a change to the results must come from the results pages themselves")
    if request.headers.get("authorization", "").lower().startswith("bearer ") or request.headers.get(WRITE_HEADER):
        return
    detail = f"a change needs an 'Authorization: Bearer <JWT>' header or the {WRITE_HEADER} header the pages send"
    raise HTTPException(403, detail=detail)


def run_dag_id(run: Mapping[str, Any]) -> str:
    """The DAG whose permissions govern a run's marks: the run's own DAG, else (a CLI run) the validation DAG,
    whose references the mark changes."""
    return views.dag_id_of(run.get("source")) or DAG_ID


def results_store(request: Request) -> ResultsStore:
    """This app's results database (its :class:`StoreCache`, kept in ``app.state``); 503 when its URL is unusable."""
    stores: StoreCache = request.app.state.stores
    try:
        return stores.get()
    except InputError as exc:
        raise HTTPException(status_code=503, detail=f"results database unavailable: {exc}") from exc


StoreDep = Annotated[ResultsStore, Depends(results_store)]


def not_found(*run_keys: str) -> HTTPException:
    """The one "no such run" answer; :func:`http_error` renders it as JSON or as the error page."""
    return HTTPException(404, detail=f"no run {', '.join(map(repr, run_keys))} in the results database")


def run_or_none(results: ResultsStore, run_key: str, baseline: str | None) -> dict[str, Any] | None:
    """One run with the recipe's table against ``baseline`` (preset, numbers or run id); None when absent.
    A baseline that is neither is the caller's mistake: 400."""
    if baseline is not None and len(baseline) > MAX_BASELINE_CHARS:
        raise HTTPException(400, detail="baseline: too long (a preset, 'bs:img_per_s,…' numbers, or a run id)")
    try:
        return views.run_detail(results, run_key, baseline=baseline)
    except InputError as exc:
        raise HTTPException(400, detail=str(exc)) from exc


def compared_runs(results: ResultsStore, a: str, b: str) -> dict[str, Any]:
    """Runs ``a`` (before) and ``b`` (after) side by side; 404 naming whichever is absent."""
    data = views.compare_runs(results, a, b)
    if data is None or data["missing"]:
        raise not_found(*(data["missing"] if data else [a, b]))
    return data


# --- JSON API --------------------------------------------------------------------------------------------------

api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(require_user)])


@api.get("/runs")
def api_runs(
    results: StoreDep,
    config_key: str | None = None,
    limit: Annotated[int, Query(ge=1, le=views.MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=views.MAX_OFFSET)] = 0,
) -> dict[str, Any]:
    """Runs, newest first, one page; ``config_key`` filters by configuration."""
    return views.list_runs(results, config_key=config_key or None, limit=limit, offset=offset)


@api.get("/run")
def api_run(results: StoreDep, run_key: str, baseline: str | None = None) -> dict[str, Any]:
    """One run: fields, batch rows, the recipe's table against ``baseline`` (preset, numbers or run id)."""
    run = run_or_none(results, run_key, baseline)
    if run is None:
        raise not_found(run_key)
    return run


@api.get("/history")
def api_history(
    results: StoreDep, config_key: str, limit: Annotated[int, Query(ge=1, le=views.MAX_HISTORY)] = 200
) -> dict[str, Any]:
    """The last ``limit`` runs of one configuration, oldest first."""
    return views.history(results, config_key, limit=limit)


@api.get("/compare")
def api_compare(results: StoreDep, a: str, b: str) -> dict[str, Any]:
    """Runs ``a`` (before) and ``b`` (after) side by side with the differences."""
    return compared_runs(results, a, b)


class MarkRequest(BaseModel):
    """A person's mark on a run (see :mod:`twins_tasks.history`)."""

    run_key: Annotated[str, StringConstraints(min_length=1, max_length=250)]
    action: Literal["accept", "exclude"] = Field(
        description="accept: the new normal, a reference window starts at the run; exclude: out of every reference"
    )
    why: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_WHY_CHARS)] = Field(
        description="why (required): the next person reading the history needs it"
    )


@api.post("/mark", dependencies=[Depends(not_forged)])
def api_mark(body: MarkRequest, results: StoreDep, user: UserDep) -> dict[str, Any]:
    """Accept a run as the new normal or exclude it from references, as the user; 403 unless Airflow lets them
    change the DAG's runs, 404 for an unknown run, 422 without a reason, 400 for a mark the run cannot take."""
    run = results.get_run(body.run_key)
    if run is None:
        raise not_found(body.run_key)
    dag_id = run_dag_id(run)
    if not may_change_runs(user, dag_id):
        raise HTTPException(403, detail=f"Airflow does not let you change runs of DAG {dag_id!r}: ask its admin")
    try:
        mark_run(results, body.run_key, body.action, body.why, by=user.get_name())
    except InputError as exc:
        raise HTTPException(400, detail=str(exc)) from exc
    return {"run_key": body.run_key, **views.marks_of(results, body.run_key)}


@api.get("/openapi.json", include_in_schema=False)
def api_openapi(request: Request) -> dict[str, Any]:
    """This API's OpenAPI schema, behind the same login as the API (FastAPI's own route would serve it to anyone)."""
    return request.app.openapi()


# --- pages -----------------------------------------------------------------------------------------------------

pages = APIRouter(dependencies=[Depends(require_user)])


@pages.get("/", response_class=HTMLResponse)
def runs_page(
    request: Request,
    results: StoreDep,
    config_key: str | None = None,
    limit: Annotated[int, Query(ge=1, le=views.MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=views.MAX_OFFSET)] = 0,
) -> HTMLResponse:
    data = views.list_runs(results, config_key=config_key or None, limit=limit, offset=offset)
    return render(request, "runs.html", data=data, nav="runs")


@pages.get("/run", response_class=HTMLResponse)
async def run_page(
    request: Request,
    results: StoreDep,
    user: UserDep,
    run_key: str,
    baseline: str | None = None,
    dag_id: str | None = None,
) -> HTMLResponse:
    # The results database is synchronous: off the event loop, as FastAPI runs a plain `def` route.
    data = await run_in_threadpool(run_or_none, results, run_key, baseline)
    if data is None:
        return await no_results_page(request, run_key, dag_id)
    # The actions are shown to those the API lets mark (the API checks again: the page is no permission).
    curate = await run_in_threadpool(may_change_runs, user, run_dag_id(data["run"]))
    chart = {
        "kind": "run",
        "rows": data["perf"]["rows"],
        "label": data["perf"]["label"],
        "baseline_label": data["perf"]["baseline_label"],
        "dag_id": data["summary"]["dag_id"],
        "run_key": run_key,
        "batch_tasks": list(BATCH_TASK_IDS),
    }
    return render(
        request,
        "run.html",
        data=data,
        chart=chart,
        nav="run",
        batch_tasks=BATCH_TASK_IDS,
        may_curate=curate,
        write_header=WRITE_HEADER,
        max_why=MAX_WHY_CHARS,
    )


async def no_results_page(request: Request, run_key: str, dag_id: str | None) -> HTMLResponse:
    """A run the results database does not have: what Airflow knows of it (a run that failed before `record`:
    which task failed, its error and a link to its log), 200; 404 when Airflow has no such DAG run either."""
    lookup = airflow_runs.Lookup(None, problem="Airflow's API is not reachable from this app")
    app = request.app.state.airflow_app()
    if app is not None:
        headers = airflow_runs.forwarded_credentials(request.headers, request.cookies)
        lookup = await airflow_runs.lookup_run(app, headers, dag_id or DAG_ID, run_key)
    return render(
        request,
        "no_run.html",
        status_code=404 if lookup.run is None else 200,
        run_key=run_key,
        dag_id=dag_id or DAG_ID,
        airflow_run=lookup.run,
        problem=lookup.problem,
        nav="run",
    )


@pages.get("/history", response_class=HTMLResponse)
def history_page(
    request: Request,
    results: StoreDep,
    config_key: str,
    limit: Annotated[int, Query(ge=1, le=views.MAX_HISTORY)] = 200,
) -> HTMLResponse:
    data = views.history(results, config_key, limit=limit)
    chart = {"kind": "history", **data}
    return render(request, "history.html", data=data, chart=chart, nav="history", table_rows=HISTORY_TABLE_ROWS)


@pages.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, results: StoreDep, a: str = "", b: str = "") -> HTMLResponse:
    # Without both runs the page is the picker (recent runs) alone.
    data = compared_runs(results, a, b) if a and b else None
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
    return render(request, "compare.html", data=data, a=a, b=b, recent=recent, chart=chart, nav="compare")


@pages.get("/static/{name}")
def static(name: str) -> FileResponse:
    media = STATIC_FILES.get(name)
    if media is None:
        raise HTTPException(404, detail=f"no static file {name!r}")
    return FileResponse(STATIC_DIR / name, media_type=media)


# --- the app -----------------------------------------------------------------------------------------------------


def create_app(
    results_url: str | Callable[[], str] | None = None,
    *,
    user_dependency: Callable[..., Any] | None = None,
    airflow_app: airflow_runs.AirflowAppResolver = airflow_runs.running_airflow_app,
) -> FastAPI:
    """The app. ``results_url``: a SQLAlchemy URL or a function returning one (default: the Airflow
    Connection, see :func:`twins_airflow.hooks.results_url`). ``user_dependency`` replaces the Airflow login
    check (benchmarks and unit tests only). ``airflow_app`` returns the ASGI app whose ``/api/v2`` is asked
    about DAG runs without results (default: the api-server this app is mounted in; None: not asked)."""
    resolve: Callable[[], str]
    if results_url is None:
        from twins_airflow import hooks  # Airflow's Connection lookup: imported only when the app uses it

        resolve = hooks.results_url
    elif isinstance(results_url, str):
        fixed = results_url
        resolve = lambda: fixed  # noqa: E731
    else:
        resolve = results_url

    app = FastAPI(
        title="Twins results",
        description="Twins-SVT-L validation results (runs, run, history, compare) for the Airflow UI.",
        # FastAPI's schema and docs routes bypass the routers' login check: the schema is served by `api_openapi`.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.stores = StoreCache(resolve)
    app.state.airflow_app = airflow_app
    if user_dependency is not None:
        app.dependency_overrides[require_user] = user_dependency
    app.middleware("http")(timing_and_headers)
    app.exception_handler(HTTPException)(http_error)
    app.exception_handler(RequestValidationError)(invalid_parameter)
    app.exception_handler(InputError)(database_error)
    app.include_router(api)
    app.include_router(pages)
    return app


async def timing_and_headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
    started = time.perf_counter()
    response: Response = await call_next(request)
    # Server time, for the benchmark and for anyone looking at the network panel.
    response.headers["Server-Timing"] = f"app;dur={1000 * (time.perf_counter() - started):.1f}"
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


async def http_error(request: Request, exc: HTTPException) -> Response:
    """Every HTTP error (401/403 from the login check, 400, 404, 503): JSON for the API, else the error page."""
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
    html = TEMPLATES.get_template("error.html").render(
        title=f"{exc.status_code}", message=message, login_url=f"{root}/auth/login", status=exc.status_code
    )
    return HTMLResponse(html, status_code=exc.status_code, headers=exc.headers)


async def database_error(request: Request, exc: Exception) -> Response:
    """The results database failing after it opened (damaged pages, a server gone mid-query: the store says
    which and what to do): 503 with its words, like a database that cannot be opened, never a bare 500."""
    return await http_error(request, HTTPException(503, detail=f"results database unavailable: {exc}"))


async def invalid_parameter(request: Request, exc: RequestValidationError) -> Response:
    """A query parameter out of its range or of the wrong type (``offset=-1``, ``limit=abc``): FastAPI's 422 JSON
    for the API (``detail`` names each parameter, ``loc``, and what it should be, ``msg``), else the error page
    with the same words."""
    if _wants_json(request):
        return await request_validation_exception_handler(request, exc)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in error['loc'][1:]) or 'request'}: {error['msg']}" for error in exc.errors()
    )
    html = TEMPLATES.get_template("error.html").render(
        title="422",
        message=f"Invalid parameter: {problems}.",
        login_url=f"{_airflow_root(request)}/auth/login",
        status=422,
    )
    return HTMLResponse(html, status_code=422)


def render(request: Request, template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page: the template with this app's base path and the Airflow UI's (for links back into it)."""
    base = str(request.scope.get("root_path") or "")
    html = TEMPLATES.get_template(template).render(
        base=base,
        airflow_root=_airflow_root(request),
        qs=urlencode,
        **context,
    )
    return HTMLResponse(html, status_code=status_code)


def _airflow_root(request: Request) -> str:
    """The Airflow UI's base path as seen by the browser: our mount point minus our prefix."""
    root = str(request.scope.get("root_path") or "")
    return root[: -len(URL_PREFIX)] if root.endswith(URL_PREFIX) else root


def _wants_json(request: Request) -> bool:
    root = str(request.scope.get("root_path") or "")
    path = request.url.path[len(root) :] if request.url.path.startswith(root) else request.url.path
    return path.startswith(f"{API_PREFIX}/") or "application/json" in request.headers.get("accept", "")


def _metric(batch: dict[str, Any], metric: str, side: str) -> Any:
    return next((m[side] for m in batch["metrics"] if m["metric"] == metric), None)
