"""Run identity (issue 17): a token that every attempt of one run shares, so a name taken by another run is refused.

``run_uid`` is made once per run (at ``plan`` in the DAG, once per ``twins run``) and recorded with the run; a
record whose key is already held by a row with a different ``run_uid`` is refused. Rows recorded before this
revision have ``run_uid`` NULL (see ``twins_tasks.store`` for how they are treated).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("validation_run") as batch:
        batch.add_column(sa.Column("run_uid", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("validation_run") as batch:
        batch.drop_column("run_uid")
