"""The DAG's trigger form: batch sizes are a multi-select of the recipe's sizes, and no bad entry starts a run.

The Param's schema is checked directly; then Debian's chromium opens the trigger modal of a real api-server
(tests/_airflow_ui.py), picks sizes, and triggers for real: Airflow validates the conf and creates the run,
which stays queued (no scheduler here, and the DAG is left paused). Screenshots go to var/screenshots/.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _airflow_ui import ApiServer, browser_context, require_chromium, screenshot

from twins_tasks.constants import DEFAULT_BATCH_SIZES, MAX_BATCH_SIZE
from twins_tasks.recipe import RecipeConfig

ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "twins_svt_l_validation"
RECIPE_SIZES = [str(bs) for bs in DEFAULT_BATCH_SIZES]  # what the form offers, as it sends them: text


# --- the Param ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dag_param(airflow_db: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors
    return bag.get_dag(DAG_ID).params.get_param("batch_sizes")


@pytest.fixture
def batch_sizes_param(dag_param: Any) -> Any:
    """A copy: Param.resolve(value) keeps the value it validated."""
    return copy.deepcopy(dag_param)


def test_param_is_a_multi_select_of_the_recipe_sizes(batch_sizes_param: Any) -> None:
    schema = batch_sizes_param.schema
    # Airflow's form renders an array with `examples` as a multi-select of exactly these options.
    assert schema["type"] == "array" and schema["examples"] == RECIPE_SIZES
    assert batch_sizes_param.resolve() == RECIPE_SIZES
    assert RecipeConfig.from_params({"dataset_path": "/d", "batch_sizes": RECIPE_SIZES}).batch_sizes == (
        DEFAULT_BATCH_SIZES
    )


@pytest.mark.parametrize("value", [[1, 4], [2], [MAX_BATCH_SIZE], ["1", "4"], [4, "1"]])
def test_param_accepts_rest_integers_and_the_forms_text(batch_sizes_param: Any, value: list[Any]) -> None:
    assert batch_sizes_param.resolve(value) == value
    assert RecipeConfig.from_params({"dataset_path": "/d", "batch_sizes": value}).batch_sizes == tuple(
        int(v) for v in value
    )


@pytest.mark.parametrize("value", [[], None, [0], [MAX_BATCH_SIZE + 1], ["2"], ["x"], [4, 4], ["4", "4"], "1,4"])
def test_param_rejects_anything_else(batch_sizes_param: Any, value: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        batch_sizes_param.resolve(value)


# --- in the browser -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> ApiServer:
    require_chromium()  # before the server starts: a machine without a browser skips at once
    return request.getfixturevalue("shared_api_server")


@pytest.fixture(scope="module")
def browser(server: ApiServer) -> Iterator[Any]:
    with browser_context(server) as context:
        yield context


def _runs(server: ApiServer) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{server.url}/api/v2/dags/{DAG_ID}/dagRuns",
        params={"limit": 100},
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["dag_runs"]


def _trigger_posts(page: Any) -> list[Any]:
    """Every POST the page sends to create a DAG run, as it is sent."""
    sent: list[Any] = []
    page.on("request", lambda r: sent.append(r) if r.method == "POST" and r.url.endswith("/dagRuns") else None)
    return sent


def _open_trigger_form(page: Any, server: ApiServer) -> Any:
    """The DAG page's Trigger modal (there is no /trigger page), with "unpause on trigger" unticked."""
    page.goto(f"{server.url}/dags/{DAG_ID}")
    page.get_by_role("button", name="Trigger").first.click()
    submit = page.get_by_test_id("trigger-dag-submit")
    submit.wait_for(timeout=30_000)
    unpause = page.get_by_role("checkbox", name=re.compile(r"^Unpause .* on trigger$"))
    if unpause.count():  # shown while the DAG is paused: keep it paused, so nothing would ever run
        page.get_by_text(re.compile(r"^Unpause .* on trigger$")).click()  # the label: its box hides the input
        assert not unpause.is_checked()
    return submit


def _batch_sizes_field(page: Any) -> Any:
    page.get_by_role("button", name="Run", exact=True).click()  # the Params' "Run" section
    field = page.locator("#element_batch_sizes")
    field.get_by_role("combobox").wait_for()
    return field


def _chips(field: Any) -> list[str]:
    """The chosen values, read in one go (the field re-renders as the form updates)."""
    removers = field.locator("[aria-label^='Remove ']")
    return removers.evaluate_all("els => els.map(e => e.getAttribute('aria-label').slice('Remove '.length))")


def _set_configuration_json(page: Any, text: str) -> None:
    """Type into Advanced Options -> Configuration JSON (a code editor), then leave it, as a user does."""
    page.locator("[id$=':trigger:advancedOptions']").click()
    editor = page.locator(".monaco-editor").last
    editor.click(position={"x": 300, "y": 40})  # a point on its first lines (its centre may be off-screen)
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(text)  # as pasted: no auto-closed brackets
    page.get_by_text("Configuration JSON", exact=True).click()


def test_pick_batch_sizes_and_trigger(page: Any, server: ApiServer) -> None:
    submit = _open_trigger_form(page, server)
    field = _batch_sizes_field(page)
    assert _chips(field) == RECIPE_SIZES  # the defaults, all six chosen
    field.locator("[aria-label='Clear selected options']").click()
    field.get_by_role("combobox").click()
    assert page.get_by_role("option").all_inner_texts() == RECIPE_SIZES
    page.get_by_role("option", name="1", exact=True).click()
    field.get_by_role("combobox").click()
    page.get_by_role("option", name="4", exact=True).click()
    # Nothing else can be entered: typing filters the options, and a typo matches none.
    field.get_by_role("combobox").fill("4]")
    assert page.get_by_role("option").count() == 0 and page.get_by_text("No options").is_visible()
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")  # leave the field (Escape would close the modal)
    assert _chips(field) == ["1", "4"]
    screenshot(page, "trigger_form_batch_sizes")

    before = {r["dag_run_id"] for r in _runs(server)}
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/dagRuns")) as answer:
        submit.click()
    assert answer.value.status == 200, answer.value.text()
    sent = json.loads(answer.value.request.post_data)["conf"]
    assert sent["batch_sizes"] == ["1", "4"]
    run = answer.value.json()
    assert run["dag_run_id"] not in before and run["conf"]["batch_sizes"] == ["1", "4"]
    # What the DAG's plan task makes of the stored conf: batch sizes 1 and 4, nothing else.
    assert RecipeConfig.from_params(run["conf"]).batch_sizes == (1, 4)


def test_empty_choice_cannot_be_triggered(page: Any, server: ApiServer) -> None:
    submit = _open_trigger_form(page, server)
    posts = _trigger_posts(page)
    field = _batch_sizes_field(page)
    field.locator("[aria-label='Clear selected options']").click()
    assert _chips(field) == []
    assert submit.is_disabled()  # a required Param without a value: no run, and no fallback to the defaults
    screenshot(page, "trigger_form_empty")
    submit.click(force=True)
    page.wait_for_timeout(500)  # time for a POST to leave, were one sent
    assert posts == []


def test_broken_configuration_json_cannot_be_triggered(page: Any, server: ApiServer) -> None:
    """The issue's typo, in the one free-text place left (Advanced Options): the form says so, and no POST."""
    submit = _open_trigger_form(page, server)
    posts = _trigger_posts(page)
    _set_configuration_json(page, '{"batch_sizes": [1, 4]]}')
    page.get_by_text(re.compile("^Invalid JSON format")).wait_for(timeout=10_000)
    assert submit.is_disabled()
    screenshot(page, "trigger_form_broken_json")
    submit.click(force=True)
    page.wait_for_timeout(500)  # time for a POST to leave, were one sent
    assert posts == []


def test_out_of_range_size_is_refused_with_the_reason(page: Any, server: ApiServer) -> None:
    submit = _open_trigger_form(page, server)
    _set_configuration_json(page, '{"batch_sizes": [1, 512]}')
    before = len(_runs(server))
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/dagRuns")) as answer:
        submit.click()
    assert answer.value.status == 400
    reason = page.get_by_text("Invalid input for param batch_sizes: 512 is greater than the maximum of 256")
    reason.wait_for(timeout=10_000)
    screenshot(page, "trigger_form_out_of_range")
    assert len(_runs(server)) == before


def test_other_sizes_through_configuration_json(page: Any, server: ApiServer) -> None:
    """Sizes outside the recipe's six (here 2) stay possible: as integers in the conf, as REST triggers send."""
    submit = _open_trigger_form(page, server)
    _set_configuration_json(page, '{"batch_sizes": [2, 4]}')
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/dagRuns")) as answer:
        submit.click()
    assert answer.value.status == 200, answer.value.text()
    run = answer.value.json()
    assert run["conf"]["batch_sizes"] == [2, 4]
    assert RecipeConfig.from_params({"dataset_path": "/d", **run["conf"]}).batch_sizes == (2, 4)
