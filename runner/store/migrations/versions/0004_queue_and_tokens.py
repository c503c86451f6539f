"""The service's queue and API tokens: runs gain a queue index (status, due_at) and an
index on created_at (newest-first listing pages), and api_tokens holds `runner serve`'s
tokens, each stored as a hash only.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_queue", "runs", ["status", "due_at"])
    op.create_index("ix_runs_created_at", "runs", ["created_at"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.execute("UPDATE runner_meta SET value = '0004' WHERE key = 'schema'")


def downgrade() -> None:
    op.drop_table("api_tokens")
    op.drop_index("ix_runs_created_at", "runs")
    op.drop_index("ix_runs_queue", "runs")
    op.execute("UPDATE runner_meta SET value = '0003' WHERE key = 'schema'")
