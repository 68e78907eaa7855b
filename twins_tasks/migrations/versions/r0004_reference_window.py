"""The reference window (issue 18): people's marks on runs, and configuration keys that hold every setting.

* ``run_mark``: "accept as the new normal" (a reference window starts at that run) and "exclude" (out of every
  reference), each with who, when and why; one row per mark, the latest counts.
* The configuration key now holds the hardware class (SoC; ONNX Runtime's execution provider, CPU model and
  cores), perf rounds, ONNX Runtime threads and providers, and atc's op_select_implmode. The key of every run
  recorded before is recomputed from its ``config`` (and its ``device``/``soc_version`` columns and batch rows),
  filling what older code did not record with what it used then, and those values are written into ``config``,
  so that ``results.config_key(config)`` gives the stored key back. A key the earlier code did not derive from
  the row's ``config`` (set by hand, by a test or a tool) is left as it is.

The two derivations are frozen here, as they were at this revision: migrations must not follow later code.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from alembic import op

from twins_tasks.files import sha256_json

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

# results.config_key before this revision.
OLD_FIELDS = (
    "model_name",
    "weights_id",
    "dataset_fingerprint",
    "limit",
    "opset",
    "backend",
    "soc_version",
    "precision_mode",
    "loop",
)
# results.CONFIG_KEY_FIELDS at this revision.
NEW_FIELDS = (
    "model_name",
    "weights_id",
    "dataset_fingerprint",
    "limit",
    "opset",
    "backend",
    "hardware",
    "precision_mode",
    "op_select_implmode",
    "loop",
    "rounds",
    "threads",
    "providers",
)
CPU_PROVIDER = "CPUExecutionProvider"
_CORES = re.compile(r"\((\d+) cores\)$")


def key_of(config: dict[str, Any], fields: tuple[str, ...]) -> str:
    return sha256_json({k: config.get(k) for k in fields})[:16]


def filled(config: dict[str, Any], run: Any, rounds_recorded: list[int], has_status: bool) -> dict[str, Any]:
    """``config`` with the new key's fields that it lacks, as the code that recorded it used them."""
    config = dict(config)
    backend = config.get("backend") or run.backend
    device = run.device
    if "hardware" not in config:
        # What results.hardware_class gives: the SoC on Ascend, else the ONNX Runtime device string
        # ("<provider> <CPU model> (<n> cores)"), which the run's device column has held from the start.
        config["hardware"] = run.soc_version if backend == "ascend" else device
    if "rounds" not in config:
        # The perf rounds its batch rows recorded; none recorded: 3 (the default since rounds exist, revision
        # 0002 on, whose rows have a status) or 1 (before 0002 every perf was one measurement).
        config["rounds"] = max(rounds_recorded) if rounds_recorded else (3 if has_status else 1)
    config.setdefault("op_select_implmode", None)  # never set by a recorded run's defaults: atc's own
    if backend == "onnxruntime":
        # No --threads / --providers recorded: the defaults then, all usable cores (the device string's
        # "(<n> cores)") and the best available provider first, then the CPU.
        cores = _CORES.search(str(device or ""))
        config.setdefault("threads", int(cores.group(1)) if cores else None)
        first = str(device or "").split(" ", 1)[0]
        config.setdefault("providers", [CPU_PROVIDER] if first in ("", CPU_PROVIDER) else [first, CPU_PROVIDER])
    else:
        config.setdefault("threads", None)
        config.setdefault("providers", None)
    return config


def upgrade() -> None:
    op.create_table(
        "run_mark",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "run_id", sa.Integer, sa.ForeignKey("validation_run.id", ondelete="CASCADE"), nullable=False, index=True
        ),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("marked_by", sa.String(250), nullable=False),
        sa.Column("marked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("why", sa.Text, nullable=False),
    )
    runs = sa.table(
        "validation_run",
        sa.column("id", sa.Integer),
        sa.column("config_key", sa.String),
        sa.column("config", sa.JSON),
        sa.column("backend", sa.String),
        sa.column("device", sa.String),
        sa.column("soc_version", sa.String),
    )
    batches = sa.table(
        "batch_result",
        sa.column("run_id", sa.Integer),
        sa.column("perf_rounds", sa.Integer),
        sa.column("status", sa.String),
    )
    conn = op.get_bind()
    rounds: dict[int, list[int]] = {}
    with_status: set[int] = set()
    for run_id, perf_rounds, status in conn.execute(
        sa.select(batches.c.run_id, batches.c.perf_rounds, batches.c.status)
    ):
        if perf_rounds:
            rounds.setdefault(run_id, []).append(int(perf_rounds))
        if status is not None:
            with_status.add(run_id)
    for run in conn.execute(sa.select(runs)).all():
        config = dict(run.config or {})
        if run.config_key != key_of(config, OLD_FIELDS):
            continue  # not a key the earlier code derived from this config: leave it alone
        new = filled(config, run, rounds.get(run.id, []), run.id in with_status)
        conn.execute(runs.update().where(runs.c.id == run.id).values(config=new, config_key=key_of(new, NEW_FIELDS)))


def downgrade() -> None:
    # The old keys are derived from the config's old fields, which the upgrade left as they were.
    runs = sa.table("validation_run", sa.column("id", sa.Integer), sa.column("config_key", sa.String),
                    sa.column("config", sa.JSON))  # fmt: skip
    conn = op.get_bind()
    for run in conn.execute(sa.select(runs)).all():
        config = dict(run.config or {})
        if run.config_key == key_of(config, NEW_FIELDS):
            conn.execute(runs.update().where(runs.c.id == run.id).values(config_key=key_of(config, OLD_FIELDS)))
    op.drop_table("run_mark")
