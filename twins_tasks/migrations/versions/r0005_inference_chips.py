"""Inference chips (issue 19): the chips that ran a batch size's inference, beside the chip that ran its perf.

Since a batch size's inference can be split over several leased chips, ``batch_result.device`` (perf's one chip,
whose number is one chip's) no longer says where its outputs came from. ``infer_device`` records that, spelled
as the infer step's record spells it (``host:npu0,npu1``; an ONNX Runtime run: its device). Rows recorded before
this revision keep NULL: their inference ran where their perf ran, on one chip.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("batch_result") as batch:
        batch.add_column(sa.Column("infer_device", sa.String(1000), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batch_result") as batch:
        batch.drop_column("infer_device")
