"""The "Twins results" Airflow UI plugin: queries, the app in-process, then a real api-server in a real browser.

The browser tests start ``airflow api-server`` (SQLite metadata DB migrated in the session's AIRFLOW_HOME,
SimpleAuthManager user admin, the repo's plugins folder) on a free port with a seeded results database,
log in with ``POST /auth/token`` and hand the token to Debian's chromium the way the UI keeps it (the
``_token`` cookie). Screenshots of each page land in ``var/screenshots/``. Without chromium (run
``scripts/browser.sh``), playwright or a working api-server they skip with the reason; in CI they fail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from _airflow_ui import ApiServer, browser_context, require_chromium

from twins_tasks import results_views as views
from twins_tasks.baseline import BASELINE_PRESETS
from twins_tasks.report import perf_table
from twins_tasks.store import ResultsStore

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "var" / "screenshots"
DAG_ID = "twins_svt_l_validation"
SOURCE = f"airflow:{DAG_ID}"
# A CLI run name may be any text: it must show up as text, never run as script.
XSS_KEY = "<script>window.__xss = 1</script><img src=x onerror=window.__xss=2>cli"
NIGHTLY = [f"scheduled__2026-11-0{d}T02:00:00+00:00" for d in range(1, 6)]
ORT_CONFIG = "cfg0ort0cpu00001"
ASCEND_CONFIG = "cfg0ascend310p01"


# --- seeded results ----------------------------------------------------------------------------------------


def _run(run_key: str, config_key: str, **extra: Any) -> dict[str, Any]:
    run = {
        "run_key": run_key,
        "source": SOURCE,
        "config_key": config_key,
        "config": {"synthetic_data": True, "batch_sizes": [1, 4, 8], "backend": "onnxruntime"},
        "model_name": "twins_svt_large",
        "weights": "random-init seed=0",
        "random_init": True,
        "onnx_sha256": "ab" * 32,
        "opset": 17,
        "backend": "onnxruntime",
        "device": "cpu",
        "dataset_path": "/data/sample/val",
        "dataset_fingerprint": "f" * 64,
        "num_images": 32,
        "versions": {"onnxruntime": "1.31.1", "torch": "2.14.1"},
        "status": "success",
        "started_at": "2026-11-01T02:00:00+00:00",
        "finished_at": "2026-11-01T02:05:00+00:00",
    }
    run.update(extra)
    return run


def _batches(throughputs: dict[int, float], top1: float = 12.5) -> list[dict[str, Any]]:
    return [
        {
            "batch_size": bs,
            "throughput": t,
            "latency_min_ms": 1000.0 * bs / t * 0.9,
            "latency_median_ms": 1000.0 * bs / t,
            "latency_p99_ms": 1000.0 * bs / t * 1.2,
            "top1": top1,
            "top5": 50.0,
            "num_images": 32,
            "num_missing": 0,
            "agreement_top1": 100.0,
            "agreement_max_abs_diff": 3.5e-6,
            "compile_seconds": 4.25,
        }
        for bs, t in throughputs.items()
    ]


def seed(store: ResultsStore) -> None:
    """Five nightly ONNX Runtime runs (the third regressed), one Ascend CLI run whose name is markup."""
    regression = ["first", "passed", "failed", "passed", "passed"]
    for i, key in enumerate(NIGHTLY):
        drop = 0.6 if i == 2 else 1.0  # the third night lost 40% throughput
        store.record_run(
            _run(key, ORT_CONFIG, started_at=f"2026-11-0{i + 1}T02:00:00+00:00"),
            _batches({1: 9.5 * drop + i * 0.1, 4: 10.5 * drop + i * 0.1, 8: 10.6 * drop + i * 0.1}, top1=12.5 + i),
        )
        store.update_run(key, regression_status=regression[i])
    store.record_run(
        _run(
            XSS_KEY,
            ASCEND_CONFIG,
            source="cli",
            backend="ascend",
            device="npu:0",
            soc_version="Ascend310P3",
            random_init=False,
            weights="checkpoint /ckpt/alt_gvt_large.pth sha256=" + "c" * 64,
            checkpoint_sha256="c" * 64,
            dataset_path="/data/imagenet/<b>val</b>",
            config={"synthetic_data": False, "batch_sizes": [1, 4]},
            versions={"cann": "8.0.RC1", "torch": "2.14.1"},
        ),
        _batches({1: 131.0, 4: 140.2}, top1=81.2),
    )


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    results = ResultsStore(f"sqlite:///{tmp_path / 'results.db'}")
    seed(results)
    return results


# --- queries (twins_tasks.results_views) -------------------------------------------------------------------


def test_runs_newest_first_with_labels_and_config_filter(store: ResultsStore) -> None:
    data = views.list_runs(store)
    assert [r["run_key"] for r in data["runs"]] == [XSS_KEY, *reversed(NIGHTLY)]
    assert data["total"] == 6
    cli, latest = data["runs"][0], data["runs"][1]
    assert (cli["source"], cli["dag_id"], cli["weights"], cli["synthetic_data"]) == (
        "cli",
        None,
        "checkpoint cccccccccccc",
        False,
    )
    assert (latest["dag_id"], latest["weights"], latest["synthetic_data"], latest["dataset"]) == (
        DAG_ID,
        "random weights",
        True,
        "val",
    )
    assert latest["best_batch_size"] == 8 and latest["best_throughput"] == pytest.approx(11.0)
    assert {c["config_key"]: c["runs"] for c in data["configs"]} == {ORT_CONFIG: 5, ASCEND_CONFIG: 1}

    only = views.list_runs(store, config_key=ASCEND_CONFIG)
    assert [r["run_key"] for r in only["runs"]] == [XSS_KEY] and only["total"] == 1
    page = views.list_runs(store, limit=2, offset=2)
    assert [r["run_key"] for r in page["runs"]] == [NIGHTLY[3], NIGHTLY[2]]


def test_run_detail_is_the_reports_table(store: ResultsStore) -> None:
    data = views.run_detail(store, NIGHTLY[4])
    assert data is not None
    perf = data["perf"]
    gpu = BASELINE_PRESETS["recipe-gpu"]  # the default baseline off Ascend
    assert perf["baseline_label"] == "recipe-gpu"
    assert [(r["batch_size"], r["baseline"]) for r in perf["rows"]] == [(1, gpu[1]), (4, gpu[4]), (8, gpu[8])]
    for row, batch in zip(perf["rows"], store.get_run(NIGHTLY[4])["batches"], strict=True):
        assert row["throughput"] == batch["throughput"]
        assert row["ratio"] == pytest.approx(batch["throughput"] / gpu[row["batch_size"]])
    throughput = {r["batch_size"]: r["throughput"] for r in perf["rows"]}
    assert perf["markdown"] == perf_table(
        throughput, label="onnxruntime (cpu)", baseline=gpu, baseline_label="recipe-gpu"
    )
    assert perf["best_batch_size"] == 8

    ascend = views.run_detail(store, XSS_KEY)
    assert ascend is not None and ascend["perf"]["baseline_label"] == "recipe-310p"
    against_run = views.run_detail(store, XSS_KEY, baseline=NIGHTLY[0])
    assert against_run is not None and against_run["perf"]["rows"][0]["baseline"] == pytest.approx(9.5)
    assert views.run_detail(store, XSS_KEY, baseline="none")["perf"]["rows"][0]["ratio"] is None  # type: ignore[index]
    assert views.run_detail(store, "no such run") is None


def test_unknown_baseline_says_what_to_use(store: ResultsStore) -> None:
    from twins_tasks.errors import InputError

    with pytest.raises(InputError, match="neither a preset .*recipe-gpu.*nor a run id"):
        views.run_detail(store, NIGHTLY[0], baseline="last-tuesday")


def test_history_oldest_first_marks_regression_and_reference(store: ResultsStore) -> None:
    from twins_tasks.history import batch_history, mark_run, select_reference

    data = views.history(store, ORT_CONFIG)
    assert [p["run_key"] for p in data["points"]] == NIGHTLY
    assert data["batch_sizes"] == [1, 4, 8]
    assert [p["regressed"] for p in data["points"]] == [False, False, True, False, False]
    # The reference is what the next run would be compared with, as the regression check picks it: each batch
    # size's window of accepted runs (the failed third night is not in it).
    window = [h.run_key for h in select_reference(batch_history(store, ORT_CONFIG, 4)).window]
    assert window == [NIGHTLY[0], NIGHTLY[1], NIGHTLY[3], NIGHTLY[4]] and data["references"]["4"]["runs"] == window
    assert data["reference_run_key"] == NIGHTLY[4]
    assert [p["reference"] for p in data["points"]] == [True, True, False, True, True]
    assert data["change_points"] == data["excluded"] == [] and data["points"][0]["mark"] is None
    # A person's marks: the second night is the new normal (the window starts there), the fourth is excluded.
    mark_run(store, NIGHTLY[1], "accept", "CANN 8.0.RC2 is the new normal", by="ana")
    mark_run(store, NIGHTLY[3], "exclude", "noisy neighbour", by="bo")
    marked = views.history(store, ORT_CONFIG)
    assert [p["reference"] for p in marked["points"]] == [False, True, False, False, True]
    assert marked["references"]["1"] == {"runs": [NIGHTLY[1], NIGHTLY[4]], "change_point": NIGHTLY[1]}
    assert (marked["change_points"], marked["excluded"]) == ([NIGHTLY[1]], [NIGHTLY[3]])
    assert [(p["accepted"], p["excluded"]) for p in marked["points"][1:4]] == [
        (True, False),
        (False, False),
        (False, True),
    ]
    assert marked["points"][3]["mark"]["by"] == "bo" and marked["points"][3]["mark"]["why"] == "noisy neighbour"
    assert data["points"][2]["throughput"]["4"] == pytest.approx(10.5 * 0.6 + 0.2)
    assert [p["top1"] for p in data["points"]] == [12.5, 13.5, 14.5, 15.5, 16.5]
    assert [p["run_key"] for p in views.history(store, ORT_CONFIG, limit=2)["points"]] == NIGHTLY[3:]


def test_compare_shows_differences(store: ResultsStore) -> None:
    data = views.compare_runs(store, NIGHTLY[1], NIGHTLY[2])
    assert data is not None and not data["missing"] and data["same_config"]
    bs4 = next(b for b in data["batches"] if b["batch_size"] == 4)
    throughput = next(m for m in bs4["metrics"] if m["metric"] == "throughput")
    assert throughput["diff"] == pytest.approx((10.5 * 0.6 + 0.2) - (10.5 + 0.1))
    assert throughput["pct"] == pytest.approx(100 * throughput["diff"] / (10.5 + 0.1))
    assert throughput["improved"] is False
    latency = next(m for m in bs4["metrics"] if m["metric"] == "latency_median_ms")
    assert latency["improved"] is False  # higher latency is worse

    other = views.compare_runs(store, NIGHTLY[0], XSS_KEY)
    assert other is not None and not other["same_config"]
    fields = {f["name"]: f for f in other["fields"]}
    assert fields["backend"]["differs"] and fields["backend"]["b"] == "ascend"
    assert {v["name"] for v in other["versions"] if v["differs"]} == {"cann", "onnxruntime"}
    only_a = next(b for b in other["batches"] if b["batch_size"] == 8)
    assert (only_a["in_a"], only_a["in_b"]) == (True, False)
    assert views.compare_runs(store, NIGHTLY[0], "gone")["missing"] == ["gone"]  # type: ignore[index]


# --- the app in-process (auth replaced) ----------------------------------------------------------------------


@pytest.fixture
def client(store: ResultsStore):
    from fastapi.testclient import TestClient

    from twins_airflow.ui.app import create_app

    return TestClient(create_app(store.url, user_dependency=lambda: {"username": "test"}))


def test_json_endpoints(client, store: ResultsStore) -> None:
    runs = client.get("/api/runs", params={"config_key": ORT_CONFIG, "limit": 2}).json()
    assert [r["run_key"] for r in runs["runs"]] == [NIGHTLY[4], NIGHTLY[3]] and runs["total"] == 5
    run = client.get("/api/run", params={"run_key": XSS_KEY, "baseline": "1:100,4:100"}).json()
    assert run["run"]["run_key"] == XSS_KEY
    assert [r["ratio"] for r in run["perf"]["rows"]] == pytest.approx([1.31, 1.402])
    history = client.get("/api/history", params={"config_key": ORT_CONFIG}).json()
    assert len(history["points"]) == 5
    compare = client.get("/api/compare", params={"a": NIGHTLY[0], "b": NIGHTLY[1]}).json()
    assert compare["a"]["run_key"] == NIGHTLY[0]
    missing = client.get("/api/run", params={"run_key": "nope"})
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    bad = client.get("/api/run", params={"run_key": XSS_KEY, "baseline": "yesterday"})
    assert bad.status_code == 400 and "preset" in bad.json()["detail"]
    assert client.get("/api/runs", params={"limit": 0}).status_code == 422


def test_a_database_damaged_while_the_ui_runs_is_a_503_naming_it(client, store: ResultsStore) -> None:
    from test_store_migrations import _damage_pages

    assert client.get("/api/runs").status_code == 200  # the store is open and cached
    path = store.url.removeprefix("sqlite:///")
    _damage_pages(Path(path), ("validation_run", "batch_result"))
    client.app.state.stores.get().engine.dispose()  # new connections (an open one trusts its page cache)
    for route, wants in (("/api/runs", "json"), ("/", "html")):
        response = client.get(route, headers={"Accept": "text/html"} if wants == "html" else {})
        assert response.status_code == 503, (route, response.text[:300])
        text = response.json()["detail"] if wants == "json" else response.text
        assert "results database unavailable" in text and f"{path} is damaged" in text, text[:500]


def test_pages_escape_user_text_and_forbid_inline_script(client) -> None:
    for path, params in [
        ("/", {}),
        ("/run", {"run_key": XSS_KEY}),
        ("/history", {"config_key": ASCEND_CONFIG}),
        ("/compare", {"a": NIGHTLY[0], "b": XSS_KEY}),
        ("/run", {"run_key": "<b>absent</b>", "dag_id": "<i>x</i>"}),
    ]:
        response = client.get(path, params=params)
        assert response.status_code in (200, 404), (path, response.text[:500])
        assert "<script>window.__xss" not in response.text and "<img src=x" not in response.text
        assert "<b>absent" not in response.text and "<b>val" not in response.text
        assert "script-src 'self'" in response.headers["content-security-policy"]
    page = client.get("/run", params={"run_key": XSS_KEY}).text
    assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in page
    # Chart data is JSON inside a non-executed script element, with markup characters escaped.
    embedded = page.split('<script type="application/json" id="chart-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in embedded and json.loads(embedded)["run_key"] == XSS_KEY


def test_fields_other_versions_of_the_store_add_are_shown(client, monkeypatch: pytest.MonkeyPatch) -> None:
    """A partial run with failed batch sizes, repeated perf rounds and skipped images (columns a newer store
    adds) renders, with the extra numbers on the page."""
    original = ResultsStore.get_run

    def newer_store(self: ResultsStore, run_key: str) -> dict[str, Any] | None:
        run = original(self, run_key)
        if run is None:
            return None
        run.update(
            status="partial",
            num_skipped=2,
            skipped_images=["val/n01/broken <1>.JPEG", "val/n02/empty.JPEG"],
            regression_details=["bs4 throughput: 10.60 -> 6.50 img/s (drop +38.7%, allowed 10.0%)"],
        )
        run["batches"][0].update(
            status="failed", error="atc exited 1: E10001 <bad input>", throughput=None, device="npu:1"
        )
        run["batches"][1].update(perf_rounds=5, throughput_min=10.1, throughput_max=10.9, throughput_cv=0.031)
        return run

    monkeypatch.setattr(ResultsStore, "get_run", newer_store)
    page = client.get("/run", params={"run_key": NIGHTLY[2]})
    assert page.status_code == 200, page.text[:500]
    text = page.text
    assert 'class="status s-partial" id="run-status">partial<' in text
    assert "2 skipped" in text and "val/n01/broken &lt;1&gt;.JPEG" in text
    assert "drop +38.7%, allowed 10.0%" in text
    assert "atc exited 1: E10001 &lt;bad input&gt;" in text and "npu:1" in text
    assert "10.1–10.9 (3.1%, 5 rounds)" in text
    detail = client.get("/api/run", params={"run_key": NIGHTLY[2]}).json()
    assert detail["run"]["status"] == "partial" and detail["batches"][0]["error"].startswith("atc exited 1")
    assert detail["perf"]["rows"][0]["ratio"] is None and detail["perf"]["best_batch_size"] == 8


def test_static_files_are_a_fixed_list(client) -> None:
    assert client.get("/static/chart.umd.min.js").text.startswith("/*!\n * Chart.js v4")
    assert "MIT License" in client.get("/static/chart.js-LICENSE.md").text
    assert client.get("/static/app.py").status_code == 404
    assert client.get("/static/..%2Fapp.py").status_code == 404


def test_every_route_needs_a_login(store: ResultsStore) -> None:
    from fastapi.testclient import TestClient

    from twins_airflow.ui.app import create_app

    anonymous = TestClient(create_app(store.url))
    for path in ["/", "/run?run_key=x", "/history?config_key=x", "/compare", "/static/twins.js"]:
        response = anonymous.get(path)
        assert response.status_code == 401 and "Log in to Airflow" in response.text, path
    for path in ["/api/runs", "/api/run?run_key=x", "/api/history?config_key=x", "/api/compare?a=x&b=y"]:
        response = anonymous.get(path)
        assert response.status_code == 401 and response.json() == {"detail": "Not authenticated"}, path


def test_results_database_is_the_connection_else_sqlite_in_airflow_home(
    airflow_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twins_airflow.hooks import results_url
    from twins_airflow.ui.app import StoreCache

    monkeypatch.delenv("AIRFLOW_CONN_TWINS_RESULTS", raising=False)
    assert results_url() == f"sqlite:///{airflow_db / 'twins_results.db'}"
    monkeypatch.setenv("AIRFLOW_CONN_TWINS_RESULTS", "postgresql://user:secret@db.example:5432/results")
    # Airflow renders it as postgres://, which ResultsStore maps to an installed driver.
    assert results_url() == "postgres://user:secret@db.example:5432/results"

    urls = iter(["sqlite:///:memory:", "sqlite:///:memory:", "sqlite://"])
    cache = StoreCache(lambda: next(urls), ttl=0.0)  # looked up on every call
    first = cache.get()
    assert cache.get() is first  # same URL: same store (engine and pool kept)
    assert cache.get() is not first  # the Connection changed


# --- a real api-server ---------------------------------------------------------------------------------------


class AirflowUI:
    """A running api-server with the plugin: its URL, an admin token and a DAG run of the validation DAG."""

    def __init__(self, url: str, token: str, store: ResultsStore, dag_run_id: str) -> None:
        self.url = url
        self.token = token
        self.store = store
        self.dag_run_id = dag_run_id

    def get(self, path: str, *, auth: bool = True, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        import httpx

        sent = {"Authorization": f"Bearer {self.token}"} if auth else {}
        return httpx.get(self.url + path, headers={**sent, **(headers or {})}, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def airflow_ui(shared_api_server: ApiServer) -> Iterator[AirflowUI]:
    import httpx

    server = shared_api_server
    results = ResultsStore(server.results_url)
    seed(results)
    dag_run_id = f"manual__twins_ui_{uuid.uuid4().hex[:8]}"
    trigger = httpx.post(
        f"{server.url}/api/v2/dags/{DAG_ID}/dagRuns",
        json={"dag_run_id": dag_run_id, "logical_date": None, "conf": {}},
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=30,
    )
    assert trigger.status_code == 200, trigger.text
    # What the DAG's record task writes for this run (no scheduler runs here: the run stays queued).
    results.record_run(
        _run(dag_run_id, ORT_CONFIG, started_at="2026-11-06T02:00:00+00:00"),
        _batches({1: 9.9, 4: 11.1, 8: 11.3}, top1=17.0),
    )
    yield AirflowUI(server.url, server.token, results, dag_run_id)


def test_plugin_is_listed_with_nav_and_dag_run_views(airflow_ui: AirflowUI) -> None:
    plugins = airflow_ui.get("/api/v2/plugins").json()["plugins"]
    ours = next(p for p in plugins if p["name"] == "twins_results")
    assert [a["url_prefix"] for a in ours["fastapi_apps"]] == ["/twins-results"]
    views_by_destination = {v["destination"]: v for v in ours["external_views"]}
    assert views_by_destination["nav"]["name"] == "Twins"  # short enough to show whole in the nav
    assert "{RUN_ID}" in views_by_destination["dag_run"]["href"]


def test_unauthenticated_and_forged_requests_are_refused(airflow_ui: AirflowUI) -> None:
    for path in [
        "/twins-results/",
        "/twins-results/api/runs",
        "/twins-results/api/run?run_key=x",
        "/twins-results/static/twins.js",
    ]:
        assert airflow_ui.get(path, auth=False).status_code == 401, path
        forged = airflow_ui.get(path, auth=False, headers={"Authorization": "Bearer not.a.jwt"})
        assert forged.status_code == 403, path
        assert airflow_ui.get(path, auth=False, cookies={"_token": "not.a.jwt"}).status_code in (401, 403), path


def test_json_through_the_api_server_is_the_database(airflow_ui: AirflowUI) -> None:
    response = airflow_ui.get("/twins-results/api/run", params={"run_key": airflow_ui.dag_run_id})
    assert response.status_code == 200, response.text
    stored = airflow_ui.store.get_run(airflow_ui.dag_run_id)
    assert stored is not None
    assert [b["throughput"] for b in response.json()["batches"]] == [b["throughput"] for b in stored["batches"]]
    assert "app;dur=" in response.headers["server-timing"]


# --- in a real browser ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium_ready() -> None:
    require_chromium()  # before the api-server starts, so a machine without a browser skips at once


@pytest.fixture(scope="module")
def browser(chromium_ready: None, airflow_ui: AirflowUI) -> Iterator[Any]:
    # The UI keeps its JWT in the _token cookie; pages in its iframes send it like any same-origin request.
    with browser_context(ApiServer(airflow_ui.url, airflow_ui.token)) as context:
        yield context


def _in_ui(page: Any, airflow_ui: AirflowUI, ui_path: str, wait_for: str) -> Any:
    """Open an Airflow UI page and return the plugin's iframe once ``wait_for`` is in it."""
    page.goto(airflow_ui.url + ui_path)
    frame = page.frame_locator("iframe")
    frame.locator(wait_for).first.wait_for(timeout=30_000)
    return frame


def _painted_pixels(frame: Any, canvas_id: str) -> int:
    return frame.locator(f"#{canvas_id}").evaluate(
        """c => {
            if (c.getAttribute('data-drawn') !== 'true') return 0;
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;
        }"""
    )


def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _cell(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def test_runs_page_in_the_airflow_nav(page: Any, airflow_ui: AirflowUI) -> None:
    frame = _in_ui(page, airflow_ui, "/plugin/twins-results", "table#runs tbody tr")
    rows = frame.locator("table#runs tbody tr")
    expected = views.list_runs(airflow_ui.store)["runs"]
    assert rows.count() == len(expected) == 7
    for i, run in enumerate(expected):
        row = rows.nth(i)
        assert row.get_attribute("data-run-key") == run["run_key"]
        cells = row.locator("td").all_inner_texts()
        assert cells[2] == run["run_key"] and cells[4] == run["backend"]
        assert cells[13] == _cell(run["best_throughput"]) and cells[14] == _cell(run["top1"])
    # The markup run name is shown as text and did not run.
    assert frame.locator("a.run-link", has_text="<script>window.__xss = 1</script>").count() == 1
    assert page.frames[1].evaluate("window.__xss") is None
    newest = rows.nth(0).inner_text()  # the DAG run recorded by the fixture
    assert "random weights" in newest and "generated" in newest and f"DAG run {DAG_ID}" in newest
    _shot(page, "runs")


def test_run_page_numbers_chart_and_links(page: Any, airflow_ui: AirflowUI) -> None:
    path = "/plugin/twins-results/twins-results/run?" + urlencode({"run_key": NIGHTLY[2]})
    frame = _in_ui(page, airflow_ui, path, "#perf-table")
    stored = airflow_ui.store.get_run(NIGHTLY[2])
    assert stored is not None
    gpu = BASELINE_PRESETS["recipe-gpu"]
    run_row = frame.locator("#perf-row-run td").all_inner_texts()
    assert run_row == [_cell(b["throughput"]) for b in stored["batches"]]
    assert frame.locator("#perf-row-baseline td").all_inner_texts() == [
        _cell(gpu[b["batch_size"]]) for b in stored["batches"]
    ]
    ratios = [_cell(b["throughput"] / gpu[b["batch_size"]], ".2f") for b in stored["batches"]]
    assert frame.locator("#perf-row-ratio td").all_inner_texts() == ratios
    assert "Best batch size: 8" in frame.locator("#best-batch-size").inner_text()
    bs4 = frame.locator('#batch-table tr[data-batch-size="4"]')
    b4 = stored["batches"][1]
    assert bs4.locator('[data-field="latency_p99_ms"]').inner_text() == _cell(b4["latency_p99_ms"], ".2f")
    assert bs4.locator('[data-field="top1"]').inner_text() == _cell(b4["top1"], ".2f")
    assert frame.locator("#regression-status").inner_text() == "failed"
    assert _painted_pixels(frame, "chart") > 1000
    href = frame.locator("#airflow-run-link").get_attribute("href")
    assert href == f"/dags/{DAG_ID}/runs/{quote(NIGHTLY[2], safe='')}"
    logs = frame.locator('a.task-log[data-task-id="per_batch_size.perf"][data-batch-size="4"]').get_attribute("href")
    assert logs.startswith(f"/dags/{DAG_ID}/runs/") and "/tasks/per_batch_size.perf/mapped" in logs
    _shot(page, "run")


def test_history_page_chart_with_regression_and_reference(page: Any, airflow_ui: AirflowUI) -> None:
    path = "/plugin/twins-results/twins-results/history?" + urlencode({"config_key": ORT_CONFIG})
    frame = _in_ui(page, airflow_ui, path, "#history-table")
    data = views.history(airflow_ui.store, ORT_CONFIG)
    assert frame.locator("#history-table tbody tr").count() == len(data["points"]) == 6
    regressed = frame.locator("#history-table tbody tr.regressed")
    assert regressed.count() == 1 and regressed.get_attribute("data-run-key") == NIGHTLY[2]
    # The reference window's runs (the fixture's DAG run was never checked: it is in no reference).
    reference = frame.locator("#history-table tbody tr.reference")
    shown = [reference.nth(i).get_attribute("data-run-key") for i in range(reference.count())]
    assert shown == [p["run_key"] for p in reversed(data["points"]) if p["reference"]] and len(shown) == 4
    assert frame.locator("#reference-link").inner_text() == data["reference_run_key"] == NIGHTLY[4]
    assert _painted_pixels(frame, "chart") > 1000 and _painted_pixels(frame, "chart-top1") > 500
    points = frame.locator("#chart").evaluate("c => c.chart.data.datasets.map(d => d.data.length)")
    assert points == [6, 6, 6]
    _shot(page, "history")


def test_compare_page(page: Any, airflow_ui: AirflowUI) -> None:
    path = "/plugin/twins-results/twins-results/compare?" + urlencode({"a": NIGHTLY[1], "b": NIGHTLY[2]})
    frame = _in_ui(page, airflow_ui, path, "#compare-batches")
    row = frame.locator('#compare-batches tr[data-batch-size="4"][data-metric="throughput"]')
    a = airflow_ui.store.get_run(NIGHTLY[1])["batches"][1]["throughput"]  # type: ignore[index]
    b = airflow_ui.store.get_run(NIGHTLY[2])["batches"][1]["throughput"]  # type: ignore[index]
    cells = row.locator("td").all_inner_texts()
    assert cells[2:] == [format(a, ".4g"), format(b, ".4g"), format(b - a, "+.4g"), f"{100 * (b - a) / a:+.1f}%"]
    assert "worse" in (row.get_attribute("class") or "")
    assert _painted_pixels(frame, "chart") > 1000
    _shot(page, "compare")


def test_dag_run_view_opens_this_runs_results(page: Any, airflow_ui: AirflowUI) -> None:
    run_id = airflow_ui.dag_run_id
    ui_path = f"/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/plugin/twins-run-results"
    frame = _in_ui(page, airflow_ui, ui_path, "#perf-table")
    assert frame.locator("#run-key").inner_text() == run_id
    stored = airflow_ui.store.get_run(run_id)
    assert frame.locator("#perf-row-run td").all_inner_texts() == [_cell(b["throughput"]) for b in stored["batches"]]  # type: ignore[index]
    assert _painted_pixels(frame, "chart") > 1000
    _shot(page, "dag_run")


def test_task_log_links_find_each_batch_sizes_mapped_instance(page: Any, airflow_ui: AirflowUI) -> None:
    """The map index of a batch size is not in the results database: the page asks Airflow's REST API which
    instance rendered which batch_size. Nothing has run here (no scheduler), so Airflow's answer for the perf
    task is stood in for, in the shape of GET .../taskInstances/{task_id}/listMapped; compile and infer get
    the real server's answer (no expanded instances) and keep pointing at the mapped list."""
    run_id = airflow_ui.dag_run_id
    answered: list[str] = []

    def perf_instances(route: Any) -> None:
        answered.append(route.request.url)
        instances = [{"map_index": i, "rendered_fields": {"batch_size": bs}} for i, bs in enumerate([8, 1, 4])]
        route.fulfill(json={"task_instances": instances, "total_entries": 3})

    page.route("**/taskInstances/per_batch_size.perf/listMapped*", perf_instances)
    path = "/plugin/twins-results/twins-results/run?" + urlencode({"run_key": run_id})
    frame = _in_ui(page, airflow_ui, path, "#batch-table")
    perf_bs4 = frame.locator('a.task-log[data-task-id="per_batch_size.perf"][data-batch-size="4"]')
    perf_bs4.and_(frame.locator("[data-map-index]")).wait_for(timeout=10_000)
    assert answered and f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/" in answered[0]
    assert perf_bs4.get_attribute("href") == f"/dags/{DAG_ID}/runs/{run_id}/tasks/per_batch_size.perf/mapped/2"
    bs8 = frame.locator('a.task-log[data-task-id="per_batch_size.perf"][data-batch-size="8"]')
    assert bs8.get_attribute("href").endswith("/mapped/0")
    compile_bs4 = frame.locator('a.task-log[data-task-id="per_batch_size.compile"][data-batch-size="4"]')
    assert compile_bs4.get_attribute("href").endswith("/tasks/per_batch_size.compile/mapped")


# --- a DAG run that failed before recording results ------------------------------------------------------------

BAD_DATASET = "/nonexistent/<b>twins</b>/val"  # markup in the error: it must show as text


def _fake_airflow(runs: dict[str, dict[str, Any]], seen: list[dict[str, str]]) -> Any:
    """Airflow's REST API as the results app asks it about a DAG run (the three GETs), answering from ``runs``:
    run id -> {"state", "failed": [task instance fields + "log": log content]}. Records the headers it got."""
    from fastapi import FastAPI, HTTPException

    fake = FastAPI()

    @fake.middleware("http")
    async def record_headers(request: Any, call_next: Any) -> Any:
        seen.append(dict(request.headers))
        return await call_next(request)

    def run_of(dag_id: str, run_id: str) -> dict[str, Any]:
        if dag_id != DAG_ID or run_id not in runs:
            raise HTTPException(404, "no such DAG run")
        return runs[run_id]

    @fake.get("/api/v2/dags/{dag_id}/dagRuns/{run_id}")
    def dag_run(dag_id: str, run_id: str) -> dict[str, Any]:
        run = run_of(dag_id, run_id)
        return {"dag_run_id": run_id, "state": run["state"], "end_date": "2026-11-07T02:03:04Z"}

    @fake.get("/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
    def failed(dag_id: str, run_id: str, state: str) -> dict[str, Any]:
        assert state == "failed"
        tis = [{k: v for k, v in ti.items() if k != "log"} for ti in run_of(dag_id, run_id)["failed"]]
        return {"task_instances": tis, "total_entries": len(tis)}

    @fake.get("/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}")
    def logs(dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> dict[str, Any]:
        ti = next(
            ti
            for ti in run_of(dag_id, run_id)["failed"]
            if (ti["task_id"], ti["map_index"], ti["try_number"]) == (task_id, map_index, try_number)
        )
        return {"content": ti["log"], "continuation_token": None}

    return fake


def _failed_log(exc_type: str, message: str) -> list[dict[str, Any]]:
    """A failed task's log as GET .../logs/{try} returns it: the raised exception first in error_detail."""
    return [
        {"event": "::group::Log message source details", "sources": ["/logs/x.log"]},
        {"event": "Running task", "level": "info"},
        {
            "event": "Task failed with exception",
            "level": "error",
            "error_detail": [
                {"exc_type": exc_type, "exc_value": message, "frames": [], "is_cause": False},
                {"exc_type": "FileNotFoundError", "exc_value": "ENOENT-cause", "is_cause": True},
            ],
        },
        {"event": "::endgroup::", "level": "info"},
    ]


def test_failed_run_without_results_names_its_failed_tasks(store: ResultsStore) -> None:
    """In-process, with Airflow's answers stood in for: the failed tasks (mapped ones with their index), their
    errors as text, links to their logs; 200 for a DAG run Airflow knows, 404 for one neither knows."""
    from fastapi.testclient import TestClient

    from twins_airflow.ui.app import create_app

    seen: list[dict[str, str]] = []
    runs = {
        "manual__failed": {
            "state": "failed",
            "failed": [
                {"task_id": "per_batch_size.infer", "map_index": 2, "try_number": 3, "end_date": "2026-11-07T02:02Z",
                 "log": _failed_log("TwinsTaskError", "ais_bench exited 1: <device busy>")},
                {"task_id": "plan", "map_index": -1, "try_number": 1, "end_date": "2026-11-07T02:01Z",
                 "log": _failed_log("TwinsInputError", f"bad input (not retried): dataset folder {BAD_DATASET}")},
                {"task_id": "export", "map_index": -1, "try_number": 1, "end_date": "2026-11-07T02:03Z",
                 "log": [{"event": "killed: out of memory", "level": "error"}]},
            ],
        },
        "manual__running": {"state": "running", "failed": []},
    }  # fmt: skip
    fake = _fake_airflow(runs, seen)
    client = TestClient(create_app(store.url, user_dependency=lambda: {"username": "t"}, airflow_app=lambda: fake))

    client.cookies.set("_token", "jwt-1")
    page = client.get("/run", params={"run_key": "manual__failed", "dag_id": DAG_ID})
    assert page.status_code == 200, page.text[:500]
    text = page.text
    assert "This run failed before it recorded results" in text and 'id="dag-run-state">failed<' in text
    # The user's own login went to Airflow's API: Airflow decides what they may see.
    assert seen and all("_token=jwt-1" in h.get("cookie", "") for h in seen)
    rows = text.split("<tbody>", 1)[1].split("</tbody>", 1)[0].split("<tr ")[1:]
    assert [r.split('data-task-id="', 1)[1].split('"', 1)[0] for r in rows] == [
        "plan",
        "per_batch_size.infer",
        "export",
    ]  # first failure first
    assert (
        "TwinsInputError: bad input (not retried): dataset folder /nonexistent/&lt;b&gt;twins&lt;/b&gt;/val" in rows[0]
    )
    assert "<b>twins" not in text
    assert "TwinsTaskError: ais_bench exited 1: &lt;device busy&gt;" in rows[1] and "ENOENT-cause" not in text
    assert "killed: out of memory" in rows[2]
    assert f'href="/dags/{DAG_ID}/runs/manual__failed/tasks/plan?try_number=1"' in rows[0]
    assert f'href="/dags/{DAG_ID}/runs/manual__failed/tasks/per_batch_size.infer/mapped/2?try_number=3"' in rows[1]
    assert "script-src 'self'" in page.headers["content-security-policy"] and "<script>" not in text

    running = client.get("/run", params={"run_key": "manual__running"}, headers={"Authorization": "Bearer jwt-2"})
    assert running.status_code == 200 and "No results yet: this run is running" in running.text
    assert seen[-1]["authorization"] == "Bearer jwt-2"

    unknown = client.get("/run", params={"run_key": "<i>nope</i>", "dag_id": DAG_ID})
    assert unknown.status_code == 404 and "Airflow\nhas no run of that id" in unknown.text
    assert "&lt;i&gt;nope&lt;/i&gt;" in unknown.text and "<i>nope" not in unknown.text

    def broken() -> Any:
        raise RuntimeError("boom")

    down = TestClient(create_app(store.url, user_dependency=lambda: {"username": "t"}, airflow_app=lambda: broken))
    answer = down.get("/run", params={"run_key": "manual__failed"})
    assert answer.status_code == 404 and "cannot be shown" in answer.text


@pytest.fixture(scope="module")
def failed_dag_run(airflow_ui: AirflowUI) -> str:
    """A real failed DAG run with its task logs: `airflow dags test --use-executor` with a wrong dataset path,
    its tasks run by a LocalExecutor against the fixture's api-server (as a deployment's workers do). Its id."""
    env = {
        **os.environ,
        "AIRFLOW_CONN_TWINS_RESULTS": airflow_ui.store.url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{airflow_ui.url}/execution/",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")]),
    }
    conf = json.dumps({"dataset_path": BAD_DATASET, "backend": "onnxruntime"})
    argv = [sys.executable, "-m", "airflow", "dags", "test", "--use-executor", DAG_ID, "-c", conf]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"airflow dags test did not finish in 400 s: {out.decode()[-3000:]}")
    runs = airflow_ui.get(f"/api/v2/dags/{DAG_ID}/dagRuns", params={"state": "failed"}).json()["dag_runs"]
    ours = [r["dag_run_id"] for r in runs if r["conf"].get("dataset_path") == BAD_DATASET]
    assert len(ours) == 1, (runs, out.decode()[-3000:])
    return ours[0]


def test_failed_run_results_tab_says_why_with_a_log_link(page: Any, airflow_ui: AirflowUI, failed_dag_run: str) -> None:
    run_id = failed_dag_run
    documents: list[tuple[str, int]] = []
    page.on("response", lambda r: documents.append((r.url, r.status)) if "/twins-results/run?" in r.url else None)
    ui_path = f"/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/plugin/twins-run-results"
    frame = _in_ui(page, airflow_ui, ui_path, "#failed-tasks")
    assert documents and all(status == 200 for _, status in documents), documents  # no 404 in the console
    assert frame.locator("#no-results-title").inner_text() == "This run failed before it recorded results"
    assert frame.locator("#run-key").inner_text() == run_id
    rows = frame.locator("#failed-tasks tbody tr")
    assert rows.count() == 1 and rows.get_attribute("data-task-id") == "plan"  # one red task: accuracy skipped
    error = rows.locator(".failed-error").inner_text()
    assert error.startswith(f"TwinsInputError: bad input (not retried): dataset folder {BAD_DATASET} does not exist")
    assert page.frames[1].evaluate("document.querySelector('#failed-tasks b')") is None  # shown as text
    href = rows.locator("a.failed-task-log").get_attribute("href")
    assert href == f"/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/plan?try_number=1"
    _shot(page, "failed_run")
    # The link is the task's log in the Airflow UI, and the log there shows the same error.
    page.goto(airflow_ui.url + href)
    page.get_by_text("does not exist on this host", exact=False).first.wait_for(timeout=30_000)
    _shot(page, "failed_run_log")


def test_failed_run_through_the_api_server_is_200_unknown_is_404(airflow_ui: AirflowUI, failed_dag_run: str) -> None:
    known = airflow_ui.get("/twins-results/run", params={"run_key": failed_dag_run, "dag_id": DAG_ID})
    assert known.status_code == 200 and 'data-task-id="plan"' in known.text and "accuracy" not in known.text
    unknown = airflow_ui.get("/twins-results/run", params={"run_key": "manual__never", "dag_id": DAG_ID})
    assert unknown.status_code == 404 and "has no run of that id" in unknown.text


# --- links from inside the Airflow UI ------------------------------------------------------------------------
# The UI frames the pages in an iframe sandboxed without allow-top-navigation: a target="_top" link is refused
# there ("Unsafe attempt to initiate navigation"); twins.js moves the UI's router instead. These tests click
# in the Airflow UI itself, not on the plugin's own URL.

PERF_TASK = "per_batch_size.perf"
PERF_MAP_ORDER = [8, 1, 4]  # map index -> batch size: the DAG expands over the run's list, unsorted
NAV_NAME = "Twins"
RUN_TAB_NAME = "Twins results"


@pytest.fixture(scope="module")
def perf_ran(airflow_ui: AirflowUI) -> dict[int, str]:
    """The fixture's DAG run as its workers would leave it after the perf tasks (no scheduler runs here):
    per_batch_size.perf expanded to one successful instance per batch size, with its rendered batch_size, in
    the metadata DB the api-server reads, and a log file each where it reads task logs. Compile and infer stay
    unexpanded (test_task_log_links_find_each_batch_sizes_mapped_instance relies on that). Batch size -> the
    path of its task instance in the Airflow UI."""
    from datetime import UTC, datetime

    from airflow.configuration import conf
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    run_id = airflow_ui.dag_run_id
    logs = Path(conf.get("logging", "base_log_folder"), f"dag_id={DAG_ID}", f"run_id={run_id}", f"task_id={PERF_TASK}")
    now = datetime.now(UTC)
    with create_session() as session:
        unexpanded = session.scalar(
            select(TaskInstance).where(
                TaskInstance.dag_id == DAG_ID,
                TaskInstance.run_id == run_id,
                TaskInstance.task_id == PERF_TASK,
                TaskInstance.map_index == -1,
            )
        )
        assert unexpanded is not None
        serialized = SerializedDagModel.get_dag(DAG_ID, session=session)
        assert serialized is not None
        task = serialized.get_task(PERF_TASK)
        version = unexpanded.dag_version_id
        session.delete(unexpanded)
        session.flush()
        for map_index, batch_size in enumerate(PERF_MAP_ORDER):
            ti = TaskInstance(task, dag_version_id=version, run_id=run_id, map_index=map_index)
            ti.state, ti.try_number, ti.start_date, ti.end_date = TaskInstanceState.SUCCESS, 1, now, now
            session.add(ti)
            session.flush()
            rendered = {"batch_size": batch_size}
            session.add(RenderedTaskInstanceFields(ti, render_templates=False, rendered_fields=rendered))
            log = logs / f"map_index={map_index}" / "attempt=1.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            event = f"perf of batch size {batch_size}: 11.1 img/s"
            line = {"timestamp": now.isoformat(), "level": "info", "event": event}
            log.write_text(json.dumps(line) + "\n")
    run_path = f"/dags/{DAG_ID}/runs/{quote(run_id, safe='')}"
    return {bs: f"{run_path}/tasks/{PERF_TASK}/mapped/{i}" for i, bs in enumerate(PERF_MAP_ORDER)}


def _refused(console: list[str]) -> list[str]:
    return [m for m in console if "Unsafe attempt to initiate navigation" in m]


def _shows_whole(locator: Any) -> bool:
    """The element's text is not cut (the UI's labels end in an ellipsis where they overflow)."""
    return locator.evaluate("e => e.scrollWidth <= e.clientWidth && e.scrollWidth > 0")


def test_task_log_link_in_the_dag_run_tab_opens_that_tasks_log(
    page: Any, airflow_ui: AirflowUI, perf_ran: dict[int, str]
) -> None:
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    run_path = f"/dags/{DAG_ID}/runs/{quote(airflow_ui.dag_run_id, safe='')}"
    page.goto(airflow_ui.url + run_path)
    tab = page.get_by_role("link", name=RUN_TAB_NAME, exact=True)  # the DAG run's "Twins results" tab
    assert _shows_whole(tab.locator("div"))
    tab.click()
    frame = page.frame_locator("iframe")
    # The perf link of batch size 4 once the page has asked Airflow which instance ran it (map index 2).
    link = frame.locator(f'a.task-log[data-task-id="{PERF_TASK}"][data-batch-size="4"][data-map-index]')
    link.wait_for(timeout=30_000)
    assert link.get_attribute("href") == perf_ran[4]
    _shot(page, "links_dag_run_tab")

    link.click()
    page.wait_for_url(airflow_ui.url + perf_ran[4], timeout=15_000)
    page.get_by_text("perf of batch size 4: 11.1 img/s").first.wait_for(timeout=30_000)  # its log, not another's
    assert page.get_by_role("link", name="Logs", exact=True).get_attribute("aria-current") == "page"
    assert page.locator("iframe").count() == 0  # the Airflow UI's own page, not a page in the frame
    _shot(page, "links_task_log")
    assert not _refused(console), console

    page.go_back()  # the pushed history entry: Back returns to the results tab
    frame.locator("#perf-table").wait_for(timeout=30_000)
    assert page.url == airflow_ui.url + run_path + "/plugin/twins-run-results"


def test_dag_run_links_from_the_nav_entry_open_the_dag_run(page: Any, airflow_ui: AirflowUI) -> None:
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    run_id = airflow_ui.dag_run_id
    run_path = f"/dags/{DAG_ID}/runs/{quote(run_id, safe='')}"
    page.goto(airflow_ui.url + "/")
    nav = page.get_by_role("link", name=NAV_NAME, exact=True)
    nav.click()
    frame = page.frame_locator("iframe")
    row = frame.locator(f'table#runs tbody tr[data-run-key="{run_id}"]')
    row.wait_for(timeout=30_000)
    frame.locator("body[data-links]").wait_for()  # twins.js runs (a faster click than a person's would not wait)
    _shot(page, "links_nav_entry")

    # The runs list's "DAG run" link.
    row.locator(f'a[href="{run_path}"]').click()
    page.wait_for_url(airflow_ui.url + run_path, timeout=15_000)
    page.get_by_role("heading", name=run_id, exact=True).wait_for(timeout=30_000)
    assert page.get_by_role("link", name="Task Instances", exact=True).get_attribute("aria-current") == "page"

    # The run page's "DAG run" link, reached inside the frame.
    page.get_by_role("link", name=NAV_NAME, exact=True).click()
    frame.locator(f'table#runs tbody tr[data-run-key="{run_id}"] a.run-link').click()
    frame.locator("#airflow-run-link").wait_for(timeout=30_000)  # the run page...
    frame.locator("body[data-links]").wait_for()  # ... and its script
    frame.locator("#airflow-run-link").click()
    page.wait_for_url(airflow_ui.url + run_path, timeout=15_000)
    page.get_by_role("heading", name=run_id, exact=True).wait_for(timeout=30_000)
    assert page.locator("iframe").count() == 0
    _shot(page, "links_dag_run")
    assert not _refused(console), console


def test_nav_entry_and_run_tab_names_show_whole(page: Any, airflow_ui: AirflowUI) -> None:
    page.goto(airflow_ui.url + f"/dags/{DAG_ID}/runs/{quote(airflow_ui.dag_run_id, safe='')}")
    nav_label = page.get_by_role("link", name=NAV_NAME, exact=True).locator("div")
    nav_label.wait_for(timeout=30_000)
    assert nav_label.inner_text() == NAV_NAME and _shows_whole(nav_label)
    tab_label = page.get_by_role("link", name=RUN_TAB_NAME, exact=True).locator("div")
    assert tab_label.inner_text() == RUN_TAB_NAME and _shows_whole(tab_label)


def test_links_navigate_as_usual_outside_the_airflow_ui(
    page: Any, airflow_ui: AirflowUI, perf_ran: dict[int, str]
) -> None:
    """The plugin's page opened on its own (no frame): the links are plain links, the script stays out."""
    path = "/twins-results/run?" + urlencode({"run_key": airflow_ui.dag_run_id, "dag_id": DAG_ID})
    page.goto(airflow_ui.url + path)
    link = page.locator(f'a.task-log[data-task-id="{PERF_TASK}"][data-batch-size="8"][data-map-index]')
    link.wait_for(timeout=30_000)
    link.click()
    page.wait_for_url(airflow_ui.url + perf_ran[8], timeout=15_000)
    page.get_by_text("perf of batch size 8: 11.1 img/s").first.wait_for(timeout=30_000)


def test_log_in_link_of_an_expired_session_opens_the_login_in_the_frame(browser: Any, airflow_ui: AirflowUI) -> None:
    """Inside the UI the error page has no script (its files need a login too): its link opens Airflow's
    login form in the frame, where a target="_top" link was refused."""
    context = browser.browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        context.add_cookies([{"name": "_token", "value": airflow_ui.token, "url": airflow_ui.url}])
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        frame = _in_ui(page, airflow_ui, "/plugin/twins-results", "table#runs")
        context.clear_cookies()  # the session ends while the page is open
        frame.locator("nav a", has_text="Compare").click()
        frame.locator("#error-message").wait_for(timeout=15_000)
        frame.get_by_role("link", name="Log in to Airflow").click()
        frame.locator("input[type=password]").wait_for(timeout=30_000)
        _shot(page, "links_log_in")
        assert not _refused(console), console
    finally:
        context.close()


# --- output a person can read: the run's own baseline, a chart that shows a CPU run beside the GPU's -------------


def test_run_page_defaults_to_the_baseline_its_report_used(client, store: ResultsStore) -> None:
    """A run recorded without a baseline shows no baseline row (like its report.md); another can be picked."""
    store.record_run(_run("no-baseline", ORT_CONFIG, config={"baseline": None}), _batches({1: 3.0, 4: 3.5}))
    page = client.get("/run", params={"run_key": "no-baseline"}).text
    assert 'id="perf-row-baseline"' not in page and 'id="baseline-input"' in page
    assert 'value="none"' in page and "this run's report.md: none" in page
    picked = client.get("/run", params={"run_key": "no-baseline", "baseline": "recipe-gpu"}).text
    assert 'id="perf-row-baseline"' in picked and 'value="recipe-gpu"' in picked
    assert "this run's report.md: none (" in picked  # and a link back to it


def test_run_chart_shows_a_cpu_run_beside_the_gpu_baseline(page: Any, airflow_ui: AirflowUI) -> None:
    """3 img/s beside the recipe's GPU 62-80 img/s: on a linear axis the CPU bars are a few pixels high; the chart
    switches to a logarithmic axis where every bar has a readable height."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from twins_tasks.store import ValidationRun

    key = f"cpu-vs-gpu-{uuid.uuid4().hex[:6]}"
    config = {"synthetic_data": True, "batch_sizes": [1, 4, 8], "baseline": "recipe-gpu"}
    airflow_ui.store.record_run(_run(key, "cfg0cpu0slow0001", config=config), _batches({1: 3.04, 4: 3.51, 8: 3.62}))
    try:
        path = "/plugin/twins-results/twins-results/run?" + urlencode({"run_key": key})
        frame = _in_ui(page, airflow_ui, path, "#perf-table")
        frame.locator('#chart[data-drawn="true"]').wait_for(timeout=10_000)
        chart = frame.locator("#chart").evaluate(
            """c => ({
                type: c.chart.scales.y.type,
                title: c.chart.options.scales.y.title.text,
                labels: c.chart.data.datasets.map(d => d.label),
                plot: c.chart.chartArea.bottom - c.chart.chartArea.top,
                heights: c.chart.data.datasets.map((d, i) => c.chart.getDatasetMeta(i).data.map(b => b.height)),
            })"""
        )
        assert chart["type"] == "logarithmic" and "log scale" in chart["title"]
        assert chart["labels"] == ["onnxruntime (cpu)", "recipe-gpu"]  # the run's own baseline, by default
        cpu, gpu = chart["heights"]
        assert min(cpu) > 0.2 * chart["plot"], chart  # linear: 3.04 / 79.5 of the plot, under 4%
        assert max(gpu) < chart["plot"] and min(gpu) > max(cpu)
        _shot(page, "run_cpu_vs_gpu")
    finally:
        with Session(airflow_ui.store.engine) as session:
            session.delete(session.scalars(select(ValidationRun).where(ValidationRun.run_key == key)).one())
            session.commit()


# --- issue 17: no schema without a login, page parameters in range, the configuration filter bounded ----------


def test_openapi_schema_needs_a_login_like_every_route(client, store: ResultsStore) -> None:
    from fastapi.testclient import TestClient

    from twins_airflow.ui.app import create_app

    anonymous = TestClient(create_app(store.url))
    response = anonymous.get("/api/openapi.json")
    assert response.status_code == 401 and response.json() == {"detail": "Not authenticated"}
    for path in ["/openapi.json", "/docs", "/redoc", "/api/docs"]:
        assert anonymous.get(path).status_code in (401, 404), path
    schema = client.get("/api/openapi.json").json()
    assert {"/api/runs", "/api/run", "/api/history", "/api/compare"} <= set(schema["paths"])
    assert "/api/openapi.json" not in schema["paths"]


def test_out_of_range_page_parameters_are_named_not_a_500(client, store: ResultsStore) -> None:
    huge = "99999999999999999999"
    for path, params, name, words in [
        ("/api/runs", {"offset": huge}, "offset", f"less than or equal to {views.MAX_OFFSET}"),
        ("/api/runs", {"offset": -1}, "offset", "greater than or equal to 0"),
        ("/api/runs", {"limit": huge}, "limit", f"less than or equal to {views.MAX_PAGE}"),
        ("/api/history", {"config_key": ORT_CONFIG, "limit": huge}, "limit", f"or equal to {views.MAX_HISTORY}"),
    ]:
        response = client.get(path, params=params)
        assert response.status_code == 422, (path, params, response.text[:300])
        [problem] = response.json()["detail"]
        assert problem["loc"] == ["query", name] and words in problem["msg"], problem
    for path, params, words in [
        ("/", {"offset": huge}, f"offset: Input should be less than or equal to {views.MAX_OFFSET}"),
        ("/", {"limit": "many"}, "limit: Input should be a valid integer"),
        (
            "/history",
            {"config_key": ORT_CONFIG, "limit": huge},
            f"limit: Input should be less than or equal to {views.MAX_HISTORY}",
        ),
    ]:
        page = client.get(path, params=params)
        assert page.status_code == 422 and words in page.text and "text/html" in page.headers["content-type"], path
    assert views.list_runs(store, offset=int(huge))["runs"] == []


def test_configuration_filter_lists_the_newest_configurations_and_the_selected_one(client, store: ResultsStore) -> None:
    many = [f"cfg-many-{i:03d}" for i in range(200)]
    for key in many:
        store.record_run(_run(f"run-{key}", key), _batches({1: 1.0}))
    response = client.get("/api/runs", params={"limit": 1})
    data = response.json()
    assert data["configs_total"] == 202 and data["all_runs"] == 206 and data["total"] == 206
    assert [c["config_key"] for c in data["configs"]] == many[::-1][: views.MAX_CONFIGS]
    assert len(response.content) < 20_000, len(response.content)  # every configuration: over 30 kB
    # An older configuration, when selected, is listed too (last), with its runs.
    data = client.get("/api/runs", params={"config_key": ORT_CONFIG, "limit": 1}).json()
    assert len(data["configs"]) == views.MAX_CONFIGS + 1 and data["total"] == 5
    assert data["configs"][-1]["config_key"] == ORT_CONFIG and data["configs"][-1]["runs"] == 5
    page = client.get("/", params={"config_key": ORT_CONFIG}).text
    assert f'<option value="{ORT_CONFIG}" selected>' in page and "all configurations (206 runs)" in page
    assert page.count("<option ") == 1 + views.MAX_CONFIGS + 1 + 1
    assert "151 more (older) configurations" in page
    # The history page's label is the configuration's, whatever its age.
    assert "onnxruntime · random weights" in client.get("/history", params={"config_key": ORT_CONFIG}).text


# --- issue 18: people curate the history (accept as the new normal, exclude from references) -------------------

WRITE = {"X-Requested-By": "twins-results"}  # what the run page's script sends with a change


@pytest.fixture(scope="module")
def auth_manager() -> Any:
    """Airflow's configured auth manager (SimpleAuthManager), as the api-server holds it: the app asks it."""
    from airflow.api_fastapi.app import create_auth_manager

    return create_auth_manager()


def _as(store: ResultsStore, username: str, role: str) -> Any:
    """The app in-process, logged in as a SimpleAuthManager user of ``role`` (admin, op, user or viewer)."""
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    from twins_airflow.ui.app import create_app

    user = SimpleAuthManagerUser(username=username, role=role)
    return TestClient(create_app(store.url, user_dependency=lambda: user))


def test_a_user_airflow_lets_change_runs_accepts_and_excludes(store: ResultsStore, auth_manager: Any) -> None:
    ana = _as(store, "ana", "user")  # SimpleAuthManager: "user" and up may change DAG runs
    page = ana.get("/run", params={"run_key": NIGHTLY[2]}).text
    assert 'id="mark-form"' in page and 'id="mark-not-allowed"' not in page and 'id="run-marks-none"' in page
    answer = ana.post(
        "/api/mark", json={"run_key": NIGHTLY[2], "action": "exclude", "why": " noisy <b>neighbour</b> "}, headers=WRITE
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["mark"] == {
        "action": "exclude",
        "by": "ana",
        "at": answer.json()["mark"]["at"],
        "why": "noisy <b>neighbour</b>",
    }
    accepted = ana.post(
        "/api/mark", json={"run_key": NIGHTLY[3], "action": "accept", "why": "CANN 8.0.RC2"}, headers=WRITE
    )
    assert accepted.status_code == 200 and accepted.json()["mark"]["action"] == "accept"
    # Who, when and why: on the run page, in the runs list and in the history (its reference follows the marks).
    page = ana.get("/run", params={"run_key": NIGHTLY[2]}).text
    assert 'id="run-mark">excluded from references<' in page
    assert "excluded from references by ana at 20" in page and "UTC: noisy &lt;b&gt;neighbour&lt;/b&gt;" in page
    runs = ana.get("/api/runs", params={"config_key": ORT_CONFIG}).json()["runs"]
    assert {r["run_key"]: (r["mark"] or {}).get("action") for r in runs} == {
        NIGHTLY[0]: None, NIGHTLY[1]: None, NIGHTLY[2]: "exclude", NIGHTLY[3]: "accept", NIGHTLY[4]: None
    }  # fmt: skip
    assert "accepted as the new normal by ana at " in ana.get("/", params={"config_key": ORT_CONFIG}).text
    history = ana.get("/api/history", params={"config_key": ORT_CONFIG}).json()
    assert history["change_points"] == [NIGHTLY[3]] and history["excluded"] == [NIGHTLY[2]]
    assert [p["reference"] for p in history["points"]] == [False, False, False, True, True]
    # An API client with its JWT in the Authorization header needs no page header.
    bearer = ana.post(
        "/api/mark",
        json={"run_key": NIGHTLY[4], "action": "exclude", "why": "x"},
        headers={"Authorization": "Bearer t"},
    )
    assert bearer.status_code == 200


def test_marking_is_refused_without_permission_reason_run_or_the_pages_header(
    store: ResultsStore, auth_manager: Any
) -> None:
    from twins_tasks.history import run_marks

    viewer = _as(store, "vic", "viewer")
    page = viewer.get("/run", params={"run_key": NIGHTLY[1]}).text
    assert 'id="mark-form"' not in page and 'id="mark-not-allowed"' in page
    body = {"run_key": NIGHTLY[1], "action": "accept", "why": "looks fine"}
    forbidden = viewer.post("/api/mark", json=body, headers=WRITE)
    assert forbidden.status_code == 403 and "does not let you change runs" in forbidden.json()["detail"]
    admin = _as(store, "adm", "admin")
    no_why = {"run_key": NIGHTLY[1], "action": "accept"}
    for sent in (no_why, {**no_why, "why": None}, {**no_why, "why": ""}, {**no_why, "why": "   "}):
        missing = admin.post("/api/mark", json=sent, headers=WRITE)
        assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "why"], missing.text
    assert admin.post("/api/mark", json={**body, "action": "bless"}, headers=WRITE).status_code == 422
    unknown = admin.post("/api/mark", json={**body, "run_key": "no-such-run"}, headers=WRITE)
    assert unknown.status_code == 404 and "no-such-run" in unknown.json()["detail"]
    # CSRF: the login cookie alone (what another site's form would send along) is not enough, nor a browser
    # saying the request came from another site.
    assert admin.post("/api/mark", json=body).status_code == 403
    assert admin.post("/api/mark", json=body, headers={**WRITE, "Sec-Fetch-Site": "cross-site"}).status_code == 403
    # A run that measured nothing cannot be the new normal: 400 with the library's words.
    store.record_run(_run("nothing-measured", ORT_CONFIG), [{"batch_size": 1, "throughput": None}])
    empty = admin.post("/api/mark", json={**body, "run_key": "nothing-measured"}, headers=WRITE)
    assert empty.status_code == 400 and "cannot be the new normal" in empty.json()["detail"]
    from fastapi.testclient import TestClient

    from twins_airflow.ui.app import create_app

    anonymous = TestClient(create_app(store.url)).post("/api/mark", json=body, headers=WRITE)
    assert anonymous.status_code == 401 and anonymous.json() == {"detail": "Not authenticated"}
    assert run_marks(store, [NIGHTLY[1], "nothing-measured"]) == {}


def test_marking_through_the_api_server_asks_airflows_auth_manager(airflow_ui: AirflowUI, auth_manager: Any) -> None:
    """The real api-server: a viewer's JWT (the token SimpleAuthManager issues to a "viewer" user) is refused, and
    so is the admin's login cookie without the pages' header; nothing is recorded."""
    import httpx
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    url = airflow_ui.url + "/twins-results/api/mark"
    body = {"run_key": airflow_ui.dag_run_id, "action": "exclude", "why": "not allowed"}
    viewer = auth_manager.generate_jwt(SimpleAuthManagerUser(username="vic", role="viewer"))
    refused = httpx.post(url, json=body, headers={"Authorization": f"Bearer {viewer}"}, timeout=30)
    assert refused.status_code == 403 and "does not let you change runs" in refused.text, refused.text
    cookie_only = httpx.post(url, json=body, cookies={"_token": airflow_ui.token}, timeout=30)
    assert cookie_only.status_code == 403 and "X-Requested-By" in cookie_only.text, cookie_only.text
    from twins_tasks.history import run_marks

    assert run_marks(airflow_ui.store, [airflow_ui.dag_run_id]) == {}


def test_accept_a_run_in_the_airflow_ui_and_see_the_change_point(page: Any, airflow_ui: AirflowUI) -> None:
    from sqlalchemy import delete, select
    from sqlalchemy.orm import Session

    from twins_tasks.store import RunMark, ValidationRun

    run_id = airflow_ui.dag_run_id
    ui_path = f"/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/plugin/twins-run-results"
    try:
        frame = _in_ui(page, airflow_ui, ui_path, "#mark-form")
        frame.locator("body[data-links]").wait_for()  # twins.js runs
        frame.locator("#mark-why").fill("ONNX Runtime 1.31 is the new normal")
        frame.locator("#mark-accept").click()
        counts = frame.locator("#run-marks li.counts")
        counts.wait_for(timeout=15_000)  # the page shown again, with the mark
        assert counts.get_attribute("data-action") == "accept" and counts.get_attribute("data-by") == "admin"
        assert counts.inner_text().startswith("accepted as the new normal by admin at ")
        assert counts.inner_text().endswith("UTC: ONNX Runtime 1.31 is the new normal")
        assert frame.locator("#run-mark").inner_text() == "accepted as the new normal"
        _shot(page, "run_accepted")

        frame.locator("#history-link").click()
        chart = frame.locator('#chart[data-drawn="true"][data-change-points]')  # the history's chart
        chart.wait_for(timeout=15_000)
        assert json.loads(chart.get_attribute("data-change-points")) == [run_id]
        row = frame.locator(f'#history-table tbody tr[data-run-key="{run_id}"]')
        assert "accepted" in (row.get_attribute("class") or "") and "reference" in (row.get_attribute("class") or "")
        assert "by admin at" in row.locator("td.run-mark").inner_text()
        # Its point on the chart (oldest first, like the history's points) is the change point's triangle.
        index = [p["run_key"] for p in views.history(airflow_ui.store, ORT_CONFIG)["points"]].index(run_id)
        styles = chart.evaluate("(c, i) => c.chart.data.datasets.map(d => d.pointStyle[i])", index)
        assert styles == ["triangle"] * 3
        _shot(page, "history_change_point")
    finally:
        with Session(airflow_ui.store.engine) as session, session.begin():
            run = session.scalars(select(ValidationRun.id).where(ValidationRun.run_key == run_id)).one()
            session.execute(delete(RunMark).where(RunMark.run_id == run))
