"""Alembic migrations of the results database (``twins_tasks.store``), shipped inside the package.

``ResultsStore`` applies them when it opens a database whose schema is older than the code (and stamps a new
database at the head revision); ``twins results --upgrade`` does the same as one explicit command. Revision
``0001`` is the schema as first released, created without Alembic: a database with those tables and no
``alembic_version`` table is stamped ``0001`` and upgraded from there.

Write a new revision by hand in ``versions/`` (``down_revision`` = the current head); keep every new
column nullable, or give it a server default, so rows recorded earlier stay valid.
"""

from __future__ import annotations

from pathlib import Path

SCRIPT_LOCATION = str(Path(__file__).resolve().parent)
BASE_REVISION = "0001"  # the tables as they were before Alembic managed them
