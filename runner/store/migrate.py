"""Running the store's Alembic migrations from runner itself: no alembic.ini, the
scripts ship in the package (runner/store/migrations). Alembic is imported only here,
and only this module's callers import it: a store that is already at head never does.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(conn: sa.Connection | None = None) -> Config:
    """Alembic's configuration for the store's migrations, run on `conn` (see env.py)."""
    config = Config(attributes={"connection": conn} if conn is not None else None)
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    return config


def upgrade(conn: sa.Connection, target: str) -> None:
    """Apply the migrations from the database's recorded revision up to `target`, on
    `conn` and inside the transaction it has open: all of them commit, or none."""
    command.upgrade(alembic_config(conn), target)


def downgrade(conn: sa.Connection, target: str) -> None:
    """Undo the migrations above `target`, on `conn`, inside its open transaction."""
    command.downgrade(alembic_config(conn), target)


def revisions() -> list[str]:
    """Every revision the scripts define, oldest first."""
    scripts = ScriptDirectory.from_config(alembic_config())
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]
