"""The "Twins results" pages and JSON API for the Airflow UI (a FastAPI app, see :mod:`twins_airflow.ui.app`).

Registered by ``plugins/twins_results_plugin.py``; the queries live in :mod:`twins_tasks.results_views`.
"""
