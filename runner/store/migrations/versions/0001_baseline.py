"""The baseline: the tables exactly as release 0.1 created them.

Every database release 0.1 wrote is at this revision; such a database has no
alembic_version table and is stamped 0001 before it is upgraded. The tables are written
out here, not taken from runner/store/tables.py, which follows the latest revision.

Revision ID: 0001
Revises: none
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runner_meta",
        sa.Column("key", sa.String(50), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.execute("INSERT INTO runner_meta (key, value) VALUES ('schema', '1')")
    op.create_table(
        "flow_versions",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("git_commit", sa.String(64)),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
    )
    _runs()
    _steps()
    _people_and_trail()


def _runs() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("flow_name", sa.String(200), nullable=False),
        sa.Column(
            "flow_digest", sa.String(64), sa.ForeignKey("flow_versions.digest"), nullable=False
        ),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("position", sa.String(100), nullable=False),
        sa.Column("failed_step", sa.String(100)),
        sa.Column("reason", sa.Text),
        sa.Column("error", sa.JSON),
        sa.Column("input", sa.JSON, nullable=False),
        sa.Column("steps_run", sa.Integer, nullable=False),
        sa.Column("llm_calls", sa.Integer, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("lease_owner", sa.String(200)),
        sa.Column("lease_expires", _TIME),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
    )
    op.create_index("ix_runs_flow_name", "runs", ["flow_name"])
    op.create_index("ix_runs_status", "runs", ["status"])


def _steps() -> None:
    op.create_table(
        "checkpoints",
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("step_id", sa.String(100), nullable=False),
        sa.Column("outcome", sa.String(40), nullable=False),
        sa.Column("route", sa.String(100), nullable=False),
        sa.Column("output", sa.JSON),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("started_at", _TIME, nullable=False),
        sa.Column("finished_at", _TIME, nullable=False),
    )
    op.create_table(
        "effects",
        sa.Column("key", sa.String(500), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("step_id", sa.String(100), nullable=False),
        sa.Column("tool", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("result", sa.JSON),
        sa.Column("started_at", _TIME, nullable=False),
        sa.Column("finished_at", _TIME),
    )
    op.create_index("ix_effects_run_id", "effects", ["run_id"])


def _people_and_trail() -> None:
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("step_id", sa.String(100)),
        sa.Column("decision", sa.String(20), nullable=False),
        sa.Column("decided_by", sa.String(200), nullable=False),
        sa.Column("decided_at", _TIME, nullable=False),
        sa.Column("content_hash", sa.String(64)),
        sa.Column("note", sa.Text),
        sa.Column("content", sa.JSON),
    )
    op.create_index("ix_decisions_run_id", "decisions", ["run_id"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("step_id", sa.String(100)),
        sa.Column("data", sa.JSON),
    )
    op.create_index("ix_events_run_id", "events", ["run_id"])


def downgrade() -> None:
    for table in (
        "events",
        "decisions",
        "effects",
        "checkpoints",
        "runs",
        "flow_versions",
        "runner_meta",
    ):
        op.drop_table(table)
