"""Alembic environment: runs on the connection ``twins_tasks.store`` hands over (``config.attributes``).

No ``alembic.ini`` and no URL here: the store owns the URL (with its driver mapping and password hiding),
so a migration runs exactly where the store would write.
"""

from __future__ import annotations

from alembic import context

from twins_tasks.store import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("twins_tasks migrations run through the results store: use `twins results --upgrade --url URL`")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table when a revision needs it.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
