"""Airflow plugin "twins_results": the Twins-SVT-L results pages inside the Airflow UI.

- ``fastapi_apps``: the app of :mod:`twins_airflow.ui.app` mounted by the api-server at ``/twins-results``
  (pages and a JSON API; every route requires an Airflow login, see ``require_user``);
- ``external_views``: "Twins" in the navigation, and a "Twins results" tab on each DAG run (this run's
  results; ``{RUN_ID}``/``{DAG_ID}`` are filled in by the UI). Both are shown in an iframe inside the UI.
  The navigation shows a name in about 56 px at 10 px type and cuts the rest ("Twins results" read
  "Twins res…"): "Twins" fits with room to spare; the DAG run's tabs have room for the longer name.

Hrefs have no leading slash: the UI resolves them against its base URL, so a deployment under a sub-path
(``[api] base_url``) works too.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from twins_airflow.dag_names import RUN_RESULTS_ROUTE
from twins_airflow.ui.app import URL_PREFIX, create_app

APP_PATH = URL_PREFIX.lstrip("/")
NAV_NAME = "Twins"
RUN_TAB_NAME = "Twins results"


class TwinsResultsPlugin(AirflowPlugin):
    name = "twins_results"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Twins results"}]
    external_views = [
        {
            "name": NAV_NAME,
            "href": f"{APP_PATH}/",
            "destination": "nav",
            "url_route": "twins-results",
        },
        {
            "name": RUN_TAB_NAME,
            "href": f"{APP_PATH}/run?run_key={{RUN_ID}}&dag_id={{DAG_ID}}",
            "destination": "dag_run",
            "url_route": RUN_RESULTS_ROUTE,  # notifications link to this tab
        },
    ]
