"""``python -m twins_tasks.cli``: the ``twins`` command (what the Airflow hook runs, with the worker's Python)."""

import sys

from . import main

sys.exit(main())
