"""Twins-SVT-L inference validation: the Ascend ModelZoo recipe as a plain-Python library.

Imports go one way (README "Code map"): ``constants``/``errors``/``types`` at the bottom, then shared helpers,
then one module per recipe step, then the orchestration (``recipe``, ``steps``, ``results``, ``run``), and the
``twins`` CLI (``cli/``) on top. No Airflow import anywhere in this package.
"""

__version__ = "0.1.0"
