"""Output a person can read (issue 16, item 6): the report as aligned plain text for logs and terminals, the run's
own baseline on its results page, the regression details as a table, CPU timings not called NPU timings, a bad
input's message first and whole, and `make demo`'s lines without logger internals."""

from __future__ import annotations

import json
import logging
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

# Imported here, not in a test: importing Airflow configures logging, which would drop caplog's handler mid-test.
from twins_airflow.exceptions import TwinsInputError, task_failures
from twins_tasks import results_views as views
from twins_tasks.baseline import BASELINE_PRESETS
from twins_tasks.perf import parse_summary
from twins_tasks.recipe import RecipeConfig
from twins_tasks.report import TERMINAL_WIDTH, TEXT_WIDTH, plain_table, render, render_text, write_report
from twins_tasks.results import build_run, record_results
from twins_tasks.store import ResultsStore
from twins_tasks.types import PerfResult

ROOT = Path(__file__).resolve().parents[1]
GPU = BASELINE_PRESETS["recipe-gpu"]


def _run(**extra: Any) -> dict[str, Any]:
    return {
        "run_key": "manual__2026-11-26T10:22:33.123456+00:00",
        "backend": "onnxruntime",
        "device": "cpu",
        "weights": "random-init seed=0",
        "random_init": True,
        "config": {"synthetic_data": True},
        "model_name": "twins_svt_large",
        "dataset_path": "/data/sample/val",
        "num_images": 32,
        **extra,
    }


def _batches() -> list[dict[str, Any]]:
    return [
        {
            "batch_size": bs,
            "status": "ok",
            "throughput": t,
            "perf_rounds": 3,
            "throughput_min": t * 0.9,
            "throughput_max": t * 1.1,
            "throughput_cv": 0.04,
            "top1": 12.5,
            "top5": 50.0,
            "num_images": 32,
            "num_missing": 0,
            "agreement_top1": 100.0,
            "agreement_max_abs_diff": 3.5e-6,
        }
        for bs, t in {1: 3.04, 4: 3.51, 8: 3.62, 16: 3.6, 32: 3.58, 64: 3.55}.items()
    ] + [{"batch_size": 128, "status": "failed", "error": "ToolError: x"}]


# --- b. the report as aligned plain text -------------------------------------------------------------------------


def test_plain_table_aligns_columns():
    table = plain_table(["bs", "img/s", "baseline"], [["1", "3.0", "62.0"], ["64", "12.5", "-"]])
    assert table.splitlines() == [
        "bs  img/s  baseline",
        "--  -----  --------",
        " 1    3.0      62.0",
        "64   12.5         -",
    ]


def test_report_text_is_short_aligned_lines_with_every_number():
    run, batches = _run(), _batches()
    text = render_text(run, batches, baseline=GPU, baseline_label="recipe-gpu")
    lines = text.splitlines()
    assert "|" not in text and "**" not in text and "#" not in text  # no markdown left
    # Short lines (the graph view's log pane shows ~35 characters); only a run id or path may be longer.
    long = [line for line in lines if len(line) > TEXT_WIDTH]
    assert long == [run["run_key"]], text
    perf = lines[lines.index(" bs  img/s  baseline  ratio") :]
    assert perf[1] == "---  -----  --------  -----"
    # One row per batch size (six sizes as narrow as one), right-aligned under the header.
    assert perf[2:9] == [
        "  1    3.0      62.0   0.05",
        "  4    3.5      77.0   0.05",
        "  8    3.6      79.5   0.05",
        " 16    3.6      83.6   0.04",
        " 32    3.6      83.8   0.04",
        " 64    3.5      89.8   0.04",
        "128      -         -      -",
    ]
    assert "Throughput (img/s) of onnxruntime\n(cpu), against recipe-gpu:\n bs  img/s" in text
    assert "Best batch size: 8 (3.6 img/s)" in lines
    assert "- NOTE: random weights (no trained\n  checkpoint): accuracy is chance\n" in text  # wrapped prose
    assert "bs  n  median  min  max  CV %" in lines and " 1  3     3.0  2.7  3.3   4.0" in lines  # perf rounds
    accuracy = lines[lines.index(" bs   top-1  top-5  images  missing") :]
    assert accuracy[2] == "  1    12.5   50.0      32        0" and accuracy[8] == "128  FAILED"
    agreement = lines[lines.index(" bs  top-1 %  max diff") :]
    assert agreement[2] == "  1    100.0  3.50e-06" and agreement[8] == "128   FAILED"
    # The same facts as the markdown report.
    markdown = render(run, batches, baseline=GPU, baseline_label="recipe-gpu")
    for fact in ("generated images, not ImageNet", "/data/sample/val (32 images)", run["run_key"]):
        assert fact in markdown and fact in " ".join(text.split())


def test_report_text_for_a_terminal_wraps_prose_wider_with_the_same_tables():
    run, batches = _run(), _batches()
    narrow = render_text(run, batches, baseline=GPU, baseline_label="recipe-gpu")
    wide = render_text(run, batches, baseline=GPU, baseline_label="recipe-gpu", width=TERMINAL_WIDTH)
    assert max(len(line) for line in wide.splitlines()) <= TERMINAL_WIDTH
    assert "- NOTE: generated images, not ImageNet." in wide.splitlines()
    assert "Throughput (img/s) of onnxruntime (cpu), against recipe-gpu:" in wide.splitlines()
    for table_line in (
        " bs  img/s  baseline  ratio",
        "  1    3.0      62.0   0.05",
        "128  FAILED",
        "  1    100.0  3.50e-06",
    ):
        assert table_line in narrow.splitlines() and table_line in wide.splitlines()


def test_report_text_without_baseline_has_no_baseline_column():
    text = render_text(_run(), _batches()[:2])
    assert "Throughput (img/s) of onnxruntime\n(cpu):\n" in text and "baseline" not in text
    assert "bs  img/s\n--  -----\n 1    3.0\n 4    3.5" in text


def test_write_report_keeps_report_md_markdown_and_returns_the_text(tmp_path: Path):
    store = ResultsStore(f"sqlite:///{tmp_path / 'r.db'}")
    store.record_run({**_run(), "config_key": "c"}, _batches())
    report = write_report(store, _run()["run_key"], "recipe-gpu", tmp_path)
    assert report.path == tmp_path / "report.md" and report.path.read_text() == report.markdown
    assert (
        report.markdown.startswith("# Twins-SVT-L validation: ") and "| recipe-gpu | 62.0 | 77.0 |" in report.markdown
    )
    assert report.text.startswith("Twins-SVT-L validation:\n") and " bs  img/s  baseline  ratio" in report.text


# --- d. the run page's default baseline is the run's own -----------------------------------------------------


def _inputs() -> dict[str, Any]:
    return {"dataset_fingerprint": "f", "root_path": "/data/val", "num_images": 3, "label_scheme": "imagenet"}


def _model() -> dict[str, Any]:
    return {"model_name": "twins_svt_large", "weights": "random-init seed=0", "random_init": True, "seed": 0}


def test_the_runs_baseline_is_kept_in_its_config_not_its_config_key():
    kw: dict[str, Any] = {
        "run_key": "r",
        "source": "cli",
        "inputs": _inputs(),
        "model": _model(),
        "backend": {"backend": "onnxruntime"},
        "options": {},
    }
    with_gpu, without = build_run(**kw, baseline="recipe-gpu"), build_run(**kw)
    assert with_gpu["config"]["baseline"] == "recipe-gpu" and without["config"]["baseline"] is None
    assert with_gpu["config_key"] == without["config_key"]  # still comparable with each other


@pytest.mark.parametrize(
    ("baseline", "page_default", "label"),
    [
        (None, "none", "none"),
        ("recipe-310p", "recipe-310p", "recipe-310p"),
        ({"1": 50.0, "4": 60.0}, "1:50,4:60", "baseline"),
    ],
)
def test_run_page_defaults_to_the_baseline_of_the_runs_report(
    tmp_path: Path, baseline: Any, page_default: str, label: str
):
    store = ResultsStore(f"sqlite:///{tmp_path / 'r.db'}")
    config = RecipeConfig(dataset_path="/data/val", random_init=True, batch_sizes=(1, 4), baseline=baseline)
    rows = [{"batch_size": bs, "status": "ok", "throughput": 3.0} for bs in (1, 4)]
    kw: dict[str, Any] = {"inputs": _inputs(), "model": _model(), "backend_description": {"backend": "onnxruntime"}}
    record_results(store, config, run_key="r", source="cli", rows=rows, run_uid="u", **kw)
    report = write_report(store, "r", config.baseline, tmp_path)

    detail = views.run_detail(store, "r")
    assert detail is not None
    perf = detail["perf"]
    assert (perf["baseline"], perf["report_baseline"], perf["baseline_label"]) == (page_default, page_default, label)
    # One report: the page's table is the one in report.md (no recipe-gpu row the report does not have).
    assert perf["markdown"] in report.markdown
    # The picker still compares with another baseline; the run's own stays named.
    other = views.run_detail(store, "r", baseline="recipe-gpu")
    assert other is not None and other["perf"]["baseline_label"] == "recipe-gpu"
    assert other["perf"]["report_baseline"] == page_default and other["perf"]["rows"][0]["baseline"] == GPU[1]


def test_a_run_recorded_before_the_baseline_was_kept_gets_its_devices_preset(tmp_path: Path):
    store = ResultsStore(f"sqlite:///{tmp_path / 'r.db'}")
    store.record_run({**_run(run_key="old"), "config_key": "c", "config": {}}, _batches()[:1])
    store.record_run({**_run(run_key="gone"), "config_key": "c", "config": {"baseline": "no-such-run"}}, [])
    assert views.run_detail(store, "old")["perf"]["baseline_label"] == "recipe-gpu"  # type: ignore[index]
    # Its baseline was a run that is no longer in the database: the table without a baseline, not an error.
    assert views.run_detail(store, "gone")["perf"]["baseline_label"] == "none"  # type: ignore[index]


# --- a. regression details as a table --------------------------------------------------------------------------


def _details() -> dict[str, Any]:
    """Details as the check recorded them before issue 18's table: lines, parsed for the page."""
    regressions = [
        "bs1 top-1: 83.70% -> 82.00% (drop +1.70 pp, allowed 1.00 pp)",
        "bs1 throughput: 100.00 -> 80.00 img/s (drop +20.0%, allowed 10.0%; rounds 99.00-101.00 -> 80.00-80.00 "
        "img/s); confirmed by a re-measurement: bs1 throughput: 100.00 -> 79.00 img/s (drop +21.0%, allowed 10.0%; "
        "rounds 99.00-101.00 -> 79.00-79.00 img/s)",
    ]
    notes = [
        "bs2 top-1: 83.70% -> 83.70% (drop +0.00 pp, allowed 1.00 pp)",
        "bs2 throughput: 120.00 -> 100.00 img/s (drop +16.7%, allowed 10.0%; rounds 110.00-130.00 -> 95.00-112.00 "
        "img/s, ranges overlap: within noise)",
        "bs4 top-1: 83.70% -> 83.70% (drop +0.00 pp, allowed 1.00 pp)",
        "bs4 throughput: 120.00 -> 130.00 img/s (drop -8.3%, allowed 10.0%; rounds 120.00-120.00 -> 130.00-130.00 "
        "img/s, faster beyond noise)",
        "bs8: no previous result to compare with",
    ]
    return {
        "status": "failed",
        "compared_with": "manual__prev",
        "regressions": regressions,
        "notes": notes,
        "incomplete": {"16": "ToolError: <atc> 1"},
    }


def test_regression_details_become_one_row_per_batch_size_and_metric():
    view = views.regression_view(_details())
    assert view is not None and view["status"] == "failed" and view["compared_with"] == "manual__prev"
    rows = [(r["batch_size"], r["metric"], r["old"], r["new"], r["verdict"]) for r in view["rows"]]
    assert rows == [
        (1, "top-1", "83.70%", "82.00%", "regression"),
        (1, "throughput", "100.00 img/s", "80.00 img/s", "regression (confirmed)"),
        (2, "top-1", "83.70%", "83.70%", "ok"),
        (2, "throughput", "120.00 img/s", "100.00 img/s", "ok: within noise"),
        (4, "top-1", "83.70%", "83.70%", "ok"),
        (4, "throughput", "120.00 img/s", "130.00 img/s", "ok: faster"),
        (8, None, None, None, "not compared"),
        (16, "result", None, None, "no result"),
    ]
    bs1 = view["rows"][1]
    assert bs1["change"] == "drop +20.0%, allowed 10.0%" and bs1["rounds"] == "99.00-101.00 -> 80.00-80.00 img/s"
    assert bs1["then"].startswith("confirmed by a re-measurement: 100.00 -> 79.00 img/s (drop +21.0%")
    assert view["rows"][-1]["change"] == "ToolError: <atc> 1"
    # Older records: a list of lines (no verdict), or a text.
    (old,) = views.regression_view(["bs4 throughput: 10.60 -> 6.50 img/s (drop +38.7%, allowed 10.0%)"])["rows"]  # type: ignore[index]
    assert (old["batch_size"], old["old"], old["new"], old["verdict"]) == (4, "10.60 img/s", "6.50 img/s", "")
    assert views.regression_view("free text")["text"] == "free text"  # type: ignore[index]
    assert views.regression_view(None) is None and views.regression_view({}) is None


def test_run_page_shows_regression_details_as_an_escaped_table(tmp_path: Path):
    from fastapi.testclient import TestClient

    from twins_airflow.ui.app import create_app

    store = ResultsStore(f"sqlite:///{tmp_path / 'r.db'}")
    store.record_run({**_run(run_key="r"), "config_key": "c"}, _batches()[:2])
    store.update_run("r", regression_status="failed", regression_details=_details())
    client = TestClient(create_app(store.url, user_dependency=lambda: {"username": "test"}))
    page = client.get("/run", params={"run_key": "r"})
    assert page.status_code == 200, page.text[:500]
    html = page.text
    assert "\\u003e" not in html and '"regressions"' not in html  # no JSON dump
    table = html.split('<table id="regression-table">', 1)[1].split("</table>", 1)[0]
    row = re.search(r'<tr data-batch-size="1" data-metric="throughput">(.*?)</tr>', table, re.S)
    assert row is not None
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)]
    assert cells[:4] == ["1", "throughput", "100.00 img/s", "80.00 img/s"]
    assert cells[4].startswith("drop +20.0%, allowed 10.0%confirmed by a re-measurement: 100.00 -&gt; 79.00 img/s")
    assert cells[5:] == ["99.00-101.00 -&gt; 80.00-80.00 img/s", "regression (confirmed)"]
    assert "ToolError: &lt;atc&gt; 1" in table  # autoescaped
    assert 'id="regression-compared-with"' in html and "manual__prev</a>" in html


# --- e. CPU timings are not NPU timings ------------------------------------------------------------------------


def _perf(backend: str) -> PerfResult:
    return PerfResult.from_latencies([10.0, 11.0, 12.0], batch_size=4, backend=backend, device="cpu")


def test_cpu_perf_summary_says_compute_time_and_parses_back():
    lines = _perf("onnxruntime").summary_lines()
    assert not any("NPU" in line for line in lines)
    assert lines[1].startswith("[INFO] compute_time (ms): min = 10.0, max = 12.0, mean = 11.0, median = 11.0")
    assert lines[2].startswith("[INFO] throughput 1000*batchsize(4)/compute_time.mean(11.0): 363.63")
    parsed = parse_summary("\n".join(lines), loop=3, backend="onnxruntime", device="cpu")
    assert parsed == _perf("onnxruntime")


def test_ascend_perf_summary_keeps_ais_bench_text():
    lines = _perf("ascend").summary_lines()
    assert lines[1].startswith("[INFO] NPU_compute_time (ms): min = 10.0, max = 12.0")
    assert "/NPU_compute_time.mean(11.0): " in lines[2]


# --- f. a bad input's message first and whole ------------------------------------------------------------------


def test_bad_input_is_logged_first_then_raised_without_a_chained_traceback(caplog: pytest.LogCaptureFixture):
    from twins_tasks.errors import InputError

    message = "dataset folder /nowhere does not exist on this host: fix the dataset path"
    with caplog.at_level(logging.ERROR), pytest.raises(TwinsInputError) as raised:
        with task_failures():
            raise InputError(message)
    ((level, logged),) = [(r.levelname, r.getMessage()) for r in caplog.records]
    # Whole, in lines the graph view's log pane shows: a short first line after the log line's time and level (the
    # pane cuts it), then the message (the exception's own line comes after the traceback, in one long line).
    first, *rest = logged.splitlines()
    assert level == "ERROR" and first == "bad input (not retried):" and " ".join(rest) == message
    assert max(len(line) for line in rest) <= TEXT_WIDTH
    assert str(raised.value) == f"bad input (not retried): {message}"
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # `from None`: one traceback


# --- g. `make demo`'s lines ---------------------------------------------------------------------------------------


def test_demo_prints_the_librarys_lines_without_logger_internals():
    script = (ROOT / "scripts" / "demo.sh").read_text()
    grep = re.search(r'grep -E "([^"]+)" "\$log"', script)
    sed = re.search(r"sed -E '([^']+)'", script)
    assert grep is not None and sed is not None
    # Lines as `airflow dags test` prints them (structlog's console renderer).
    log = (
        "2026-11-29T03:50:01.1Z [info     ] Backend onnxruntime (asked: onnxruntime), batch sizes [1, 4], run folder "
        "/w/runs/r [unusual_prefix_0f3a_twins_svt_l_validation] loc=twins_svt_l_validation.py:293\n"
        "2026-11-29T03:50:02.1Z [info     ] Reusing ONNX model /w/cache/m.onnx (opset 17) [twins_tasks.export] "
        "loc=export.py:548\n"
        "2026-11-29T03:50:03.1Z [info     ] Recorded run r (2 batch sizes, status success) in sqlite:///x.db; the "
        "database now holds 1 run, 2 batch results [twins_tasks.results] loc=results.py:262\n"
        "2026-11-29T03:50:03.1Z [info     ] Something else         [airflow.task] loc=x.py:1\n"
    )
    out = subprocess.run(
        f"grep -E {json.dumps(grep.group(1))} | sed -E '{sed.group(1)}'",
        shell=True,
        input=log,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines() == [
        "Backend onnxruntime (asked: onnxruntime), batch sizes [1, 4], run folder /w/runs/r",
        "Reusing ONNX model /w/cache/m.onnx (opset 17)",
        "Recorded run r (2 batch sizes, status success) in sqlite:///x.db; the database now holds 1 run, 2 batch "
        "results",
    ]


def test_recorded_run_counts_say_run_not_runs(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    store = ResultsStore(f"sqlite:///{tmp_path / 'r.db'}")
    config = RecipeConfig(dataset_path="/data/val", random_init=True, batch_sizes=(1,))
    rows = [{"batch_size": 1, "status": "ok", "throughput": 3.0}]
    kw: dict[str, Any] = {"inputs": _inputs(), "model": _model(), "backend_description": {"backend": "onnxruntime"}}
    with caplog.at_level(logging.INFO, logger="twins_tasks.results"):
        record_results(store, config, run_key="r", source="cli", rows=rows, run_uid="u", **kw)
    assert "(1 batch size, status success)" in caplog.text
    assert "the database now holds 1 run, 1 batch result" in caplog.text and "1 runs" not in caplog.text
