"""The results schema as first released (created by ``Base.metadata.create_all``, before Alembic).

A database made by that code has these tables and no ``alembic_version``: the store stamps it at this revision
and upgrades it. Running this revision itself creates the same tables in an empty database.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create validation_run and batch_result exactly as the first release did."""
    op.create_table(
        "validation_run",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_key", sa.String(250), nullable=False, unique=True),
        sa.Column("source", sa.String(50), nullable=False),
        sa.Column("config_key", sa.String(64), nullable=False, index=True),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("model_name", sa.String(100), nullable=False),
        sa.Column("weights", sa.String(500), nullable=False),
        sa.Column("random_init", sa.Boolean, nullable=False),
        sa.Column("checkpoint_sha256", sa.String(64), nullable=True),
        sa.Column("onnx_sha256", sa.String(64), nullable=True),
        sa.Column("opset", sa.Integer, nullable=True),
        sa.Column("export_parity", sa.JSON, nullable=True),
        sa.Column("backend", sa.String(50), nullable=False),
        sa.Column("device", sa.String(250), nullable=True),
        sa.Column("soc_version", sa.String(50), nullable=True),
        sa.Column("dataset_path", sa.String(1000), nullable=True),
        sa.Column("dataset_fingerprint", sa.String(64), nullable=True),
        sa.Column("num_images", sa.Integer, nullable=True),
        sa.Column("versions", sa.JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("regression_status", sa.String(20), nullable=True),
        sa.Column("report_path", sa.String(1000), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "batch_result",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "run_id", sa.Integer, sa.ForeignKey("validation_run.id", ondelete="CASCADE"), nullable=False, index=True
        ),
        sa.Column("batch_size", sa.Integer, nullable=False),
        sa.Column("artifact", sa.String(1000), nullable=True),
        sa.Column("compile_seconds", sa.Float, nullable=True),
        sa.Column("compile_cached", sa.Boolean, nullable=True),
        sa.Column("infer_seconds", sa.Float, nullable=True),
        sa.Column("infer_throughput", sa.Float, nullable=True),
        sa.Column("perf_loop", sa.Integer, nullable=True),
        sa.Column("latency_min_ms", sa.Float, nullable=True),
        sa.Column("latency_max_ms", sa.Float, nullable=True),
        sa.Column("latency_mean_ms", sa.Float, nullable=True),
        sa.Column("latency_median_ms", sa.Float, nullable=True),
        sa.Column("latency_p99_ms", sa.Float, nullable=True),
        sa.Column("throughput", sa.Float, nullable=True),
        sa.Column("top1", sa.Float, nullable=True),
        sa.Column("top5", sa.Float, nullable=True),
        sa.Column("num_images", sa.Integer, nullable=True),
        sa.Column("num_missing", sa.Integer, nullable=True),
        sa.Column("agreement_top1", sa.Float, nullable=True),
        sa.Column("agreement_max_abs_diff", sa.Float, nullable=True),
        sa.Column("agreement_images", sa.Integer, nullable=True),
        sa.UniqueConstraint("run_id", "batch_size", name="uq_batch_result_run_batch"),
    )


def downgrade() -> None:
    op.drop_table("batch_result")
    op.drop_table("validation_run")
