"""Airflow plugin "twins_results": the Twins-SVT-L results pages inside the Airflow UI.

- ``fastapi_apps``: the app of :mod:`twins_airflow.ui.app` mounted by the api-server at ``/twins-results``
  (pages and a JSON API; every route requires an Airflow login, see ``require_user``);
- ``external_views``: "Twins results" in the navigation, and "Twins results" on each DAG run (this run's
  results; ``{RUN_ID}``/``{DAG_ID}`` are filled in by the UI). Both are shown in an iframe inside the UI.

Hrefs have no leading slash: the UI resolves them against its base URL, so a deployment under a sub-path
(``[api] base_url``) works too.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from twins_airflow.ui.app import URL_PREFIX, create_app

APP_PATH = URL_PREFIX.lstrip("/")


class TwinsResultsPlugin(AirflowPlugin):
    name = "twins_results"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Twins results"}]
    external_views = [
        {
            "name": "Twins results",
            "href": f"{APP_PATH}/",
            "destination": "nav",
            "url_route": "twins-results",
        },
        {
            "name": "Twins results",
            "href": f"{APP_PATH}/run?run_key={{RUN_ID}}&dag_id={{DAG_ID}}",
            "destination": "dag_run",
            "url_route": "twins-run-results",
        },
    ]
