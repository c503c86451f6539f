"""`runner db ...`: the run store's schema: which revision it is at, and upgrading it.

SQLite stores upgrade themselves when opened; a PostgreSQL store shared by many
processes is upgraded on purpose, with `runner db upgrade`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

from runner.core.errors import StoreError
from runner.core.vocabulary import ExitCode

if TYPE_CHECKING:
    import sqlalchemy as sa


def add_db_commands(commands: Any) -> None:
    """Add `db upgrade` and `db current` to the `runner` parser."""
    db = commands.add_parser("db", help="the run store's schema: its revision, upgrades")
    actions = db.add_subparsers(title="actions", metavar="ACTION", required=True)
    upgrade = actions.add_parser("upgrade", help="apply the schema migrations it lacks")
    _db_option(upgrade)
    upgrade.set_defaults(command=cmd_db_upgrade)
    current = actions.add_parser(
        "current", help="its schema revision, and whether it is the newest this runner knows"
    )
    _db_option(current)
    current.add_argument("--format", choices=("text", "json"), default="text")
    current.set_defaults(command=cmd_db_current)


def _db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        metavar="URL",
        help="database URL (default RUNNER_DB, else sqlite .runner/runner.db)",
    )


def cmd_db_upgrade(args: argparse.Namespace, out: TextIO) -> int:
    from runner.store.engines import opening, safe_url
    from runner.store.revisions import ensure_schema
    from runner.store.sql import store_url

    url = store_url(args.db)
    with _engine(url) as engine, opening(url):
        before, head = ensure_schema(engine, url, upgrade=True)
    shown = safe_url(url)
    if before.current is None:
        print(f"created the run store at {shown} at schema revision {head}", file=out)
    elif before.at_head:
        print(f"{shown} is up to date ({head})", file=out)
    else:
        print(f"upgraded {shown} from {before} to {head}", file=out)
    return ExitCode.OK


def cmd_db_current(args: argparse.Namespace, out: TextIO) -> int:
    from runner.store.engines import opening, safe_url
    from runner.store.revisions import HEAD, read_revision
    from runner.store.sql import store_url

    url = store_url(args.db)
    with _engine(url) as engine, opening(url), engine.connect() as conn:
        revision = read_revision(conn, url)
    if args.format == "json":
        json.dump(
            {
                "url": safe_url(url),
                "revision": revision.current,
                "head": HEAD,
                "at_head": revision.at_head,
                "known": revision.known,
                "stamped": revision.stamped,
            },
            out,
            indent=2,
        )
        out.write("\n")
    else:
        print(f"{safe_url(url)}: {_describe(revision, url)}", file=out)
    return ExitCode.OK


def _describe(revision: Any, url: str) -> str:
    from runner.store.revisions import HEAD, upgrade_hint

    if revision.current is None:
        return f"empty, no run store yet (a store is created at {HEAD} when first opened)"
    if revision.at_head:
        return f"{revision} (head)"
    if not revision.known:
        return f"{revision}, newer than this runner knows (its head is {HEAD})"
    return f"{revision}, behind head {HEAD}: {upgrade_hint(url)}"


@contextmanager
def _engine(url: str) -> Iterator[sa.Engine]:
    """An engine for an existing store: a SQLite file that is not there is not made."""
    from runner.store.engines import create_engine, safe_url, sqlite_file

    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise StoreError(f"no run store at {safe_url(url)}: {path} does not exist")
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()
