"""Review deadlines and decision diffs: runs gain due_at (when a waiting run's review
expires), decisions gain diff (what a person changed, before -> after) and override
(why a person approved past a policy).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("due_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_runs_due_at", "runs", ["due_at"])
    op.add_column("decisions", sa.Column("diff", sa.JSON, nullable=True))
    op.add_column("decisions", sa.Column("override", sa.Text, nullable=True))
    op.execute("UPDATE runner_meta SET value = '0003' WHERE key = 'schema'")


def downgrade() -> None:
    op.drop_column("decisions", "override")
    op.drop_column("decisions", "diff")
    op.drop_index("ix_runs_due_at", "runs")
    op.drop_column("runs", "due_at")
    op.execute("UPDATE runner_meta SET value = '0002' WHERE key = 'schema'")
