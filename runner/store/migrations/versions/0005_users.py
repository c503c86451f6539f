"""The review inbox's people: `users` holds the accounts of `runner serve`'s inbox (a
password hash, never a password; a role; the flows and reviewer groups of each), and
`service_keys` the secrets every `runner serve` on the store shares (the key that signs
the inbox's session cookies), each made once by the first server that needs it.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("password_hash", sa.Text),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("flows", sa.Text, nullable=False),
        sa.Column("groups", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "service_keys",
        sa.Column("name", sa.String(50), primary_key=True),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute("UPDATE runner_meta SET value = '0005' WHERE key = 'schema'")


def downgrade() -> None:
    op.drop_table("service_keys")
    op.drop_table("users")
    op.execute("UPDATE runner_meta SET value = '0004' WHERE key = 'schema'")
