"""Airflow operators and a hook for the Twins-SVT-L recipe steps (compile, infer, perf) on twins_tasks backends.

Import the classes from ``twins_airflow.operators`` and ``twins_airflow.hooks``; this package import stays
cheap (no Airflow import) so that plugin discovery and ``twins_tasks`` users do not pay for it.
"""
