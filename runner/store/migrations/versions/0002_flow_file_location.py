"""Where a run's flow file was: flow_versions gains abs_path, git_root and repo_path.

All three are nullable Text: null for versions pinned before this revision.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None

_COLUMNS = ("abs_path", "git_root", "repo_path")


def upgrade() -> None:
    for name in _COLUMNS:
        op.add_column("flow_versions", sa.Column(name, sa.Text, nullable=True))
    op.execute("UPDATE runner_meta SET value = '0002' WHERE key = 'schema'")


def downgrade() -> None:
    for name in reversed(_COLUMNS):
        op.drop_column("flow_versions", name)
    op.execute("UPDATE runner_meta SET value = '1' WHERE key = 'schema'")
