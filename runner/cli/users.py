"""`runner users ...`: the accounts of the review inbox that `runner serve` serves.

    runner users add NAME --role reviewer|admin [--flows a,b] [--groups g,h]
    runner users list | disable NAME | passwd NAME

A password is asked twice (without echo), or read as one line from stdin with
`--password-stdin` (scripts, tests); `--no-password` makes an account that signs in only
through `runner serve --auth header NAME`. The store keeps an argon2 hash, never the
password (runner.service.inbox.accounts).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any, TextIO

from runner.cli.output import add_store_options, open_store, table, when
from runner.core.errors import StoreError, UsageError
from runner.core.vocabulary import ExitCode

ROLES = ("reviewer", "admin")  # runner.service.inbox.accounts.ROLES, without importing it


def add_users_commands(commands: Any) -> None:
    """Add `users` to the `runner` parser."""
    users = commands.add_parser("users", help="accounts of the review inbox (`runner serve`)")
    actions = users.add_subparsers(title="actions", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="make an account")
    add.add_argument("name", metavar="NAME", help="the name it signs in with (decisions name it)")
    add.add_argument("--role", required=True, choices=ROLES, help="admin may decide anything")
    add.add_argument("--flows", metavar="A,B", help="the flows it sees (default: every flow)")
    add.add_argument(
        "--groups", metavar="G,H", help="the reviewer groups it decides for (a step's reviewers)"
    )
    _password_options(add, no_password=True)
    add.set_defaults(command=cmd_users_add)
    listed = actions.add_parser("list", help="the accounts (never their passwords)")
    listed.set_defaults(command=cmd_users_list)
    disable = actions.add_parser("disable", help="refuse an account from its next request on")
    disable.add_argument("name", metavar="NAME")
    disable.set_defaults(command=cmd_users_disable)
    passwd = actions.add_parser("passwd", help="set a new password (ends its sessions)")
    passwd.add_argument("name", metavar="NAME")
    _password_options(passwd)
    passwd.set_defaults(command=cmd_users_passwd)
    for parser in (add, listed, disable, passwd):
        add_store_options(parser)


def _password_options(parser: argparse.ArgumentParser, *, no_password: bool = False) -> None:
    how = parser.add_mutually_exclusive_group()
    how.add_argument(
        "--password-stdin", action="store_true", help="read the password as one line of stdin"
    )
    if no_password:
        how.add_argument(
            "--no-password",
            action="store_true",
            help="no password: the account signs in through `serve --auth header` only",
        )


def _accounts() -> Any:
    try:
        from runner.service.inbox import accounts
    except ImportError as exc:
        raise UsageError(
            f"runner users needs the `serve` extra ({exc.name} is missing): "
            "pip install 'runner-flows[serve]'"
        ) from exc
    return accounts


def read_password(from_stdin: bool) -> str:
    """The new password: one line of stdin, or asked twice at the terminal."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise UsageError("the two passwords differ: nothing was changed")
    return first


def cmd_users_add(args: argparse.Namespace, out: TextIO) -> int:
    accounts = _accounts()
    name = accounts.check_name(args.name)
    flows = accounts.listed(args.flows, "flow")
    groups = accounts.listed(args.groups, "group")
    password = None if args.no_password else read_password(args.password_stdin)
    store = open_store(args, expire=False, create=True)
    record = accounts.new_user(store, name, password, args.role, flows, groups)
    sees = ", ".join(record.flows) if record.flows else "every flow"
    print(f"account {record.name} ({record.role}) added; it sees {sees}", file=out)
    return ExitCode.OK


def cmd_users_list(args: argparse.Namespace, out: TextIO) -> int:
    records = open_store(args, expire=False).list_users()
    if args.format == "json":
        json.dump([_user_json(r) for r in records], out, indent=2)
        out.write("\n")
        return ExitCode.OK
    if not records:
        print("no accounts (make one with `runner users add NAME --role reviewer`)", file=out)
        return ExitCode.OK
    rows = [("NAME", "ROLE", "FLOWS", "GROUPS", "SIGNS IN", "CREATED", "DISABLED")]
    rows += [
        (
            r.name,
            r.role,
            ",".join(r.flows) or "(all)",
            ",".join(r.groups) or "-",
            "password" if r.password_hash else "header only",
            when(r.created_at),
            when(r.disabled_at) if r.disabled_at else "-",
        )
        for r in records
    ]
    table(rows, out)
    return ExitCode.OK


def _user_json(record: Any) -> dict[str, Any]:
    return {
        "name": record.name,
        "role": record.role,
        "flows": list(record.flows),
        "groups": list(record.groups),
        "password": record.password_hash is not None,
        "created_at": record.created_at.isoformat(),
        "disabled_at": record.disabled_at.isoformat() if record.disabled_at else None,
    }


def cmd_users_disable(args: argparse.Namespace, out: TextIO) -> int:
    store = open_store(args, expire=False)
    if store.user(args.name) is None:
        raise StoreError(f"no account {args.name} (`runner users list` shows them)")
    if not store.disable_user(args.name):
        print(f"account {args.name} was disabled already", file=out)
        return ExitCode.OK
    print(f"account {args.name} disabled: it is signed out at its next request", file=out)
    return ExitCode.OK


def cmd_users_passwd(args: argparse.Namespace, out: TextIO) -> int:
    accounts = _accounts()
    store = open_store(args, expire=False)
    if store.user(args.name) is None:
        raise StoreError(f"no account {args.name} (`runner users list` shows them)")
    hashed = accounts.hash_password(read_password(args.password_stdin))
    store.set_password(args.name, hashed)
    print(f"account {args.name}: new password set; its sessions have ended", file=out)
    return ExitCode.OK
