"""Partial runs, perf spread, skipped images, regression details (issue 10); index on recorded_at.

Every new column is nullable: rows recorded before this revision stay valid and read as "not measured".

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def _batch_columns() -> list[sa.Column]:
    """Fresh Column objects per call: a Column belongs to one table once added."""
    return [
        sa.Column("status", sa.String(20), nullable=True),  # "ok" | "failed"
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("device", sa.String(250), nullable=True),  # the chip that ran this batch size
        sa.Column("perf_rounds", sa.Integer, nullable=True),
        sa.Column("throughput_min", sa.Float, nullable=True),
        sa.Column("throughput_max", sa.Float, nullable=True),
        sa.Column("throughput_cv", sa.Float, nullable=True),
        sa.Column("throughput_rounds", sa.JSON, nullable=True),
    ]


def _run_columns() -> list[sa.Column]:
    return [
        sa.Column("num_skipped", sa.Integer, nullable=True),
        sa.Column("skipped_images", sa.JSON, nullable=True),
        sa.Column("failed_batch_sizes", sa.JSON, nullable=True),
        sa.Column("regression_details", sa.JSON, nullable=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table("batch_result") as batch:
        for column in _batch_columns():
            batch.add_column(column)
    with op.batch_alter_table("validation_run") as batch:
        for column in _run_columns():
            batch.add_column(column)
    op.create_index("ix_validation_run_recorded_at", "validation_run", ["recorded_at"])


def downgrade() -> None:
    op.drop_index("ix_validation_run_recorded_at", table_name="validation_run")
    with op.batch_alter_table("validation_run") as batch:
        for column in _run_columns():
            batch.drop_column(column.name)
    with op.batch_alter_table("batch_result") as batch:
        for column in _batch_columns():
            batch.drop_column(column.name)
