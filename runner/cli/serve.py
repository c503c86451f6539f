"""`runner serve` (the HTTP intake and the review inbox, runner.service.api) and
`runner tokens ...` (who may call the API; `runner users ...`, runner.cli.users, says who
may use the inbox).

`runner serve` binds its socket itself, then says where it listens (the real port, also
with `--port 0`), then hands the socket to uvicorn: a client that reads that line and
connects at once waits in the socket's backlog instead of being refused. Ctrl-C or
SIGTERM stop it after the requests under way are answered (uvicorn's shutdown); then it
exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import re
import signal
import socket
from collections.abc import Iterator
from typing import Any, TextIO

from runner.cli.output import add_store_options, open_store, table, when
from runner.cli.users import add_users_commands
from runner.core.errors import StoreError, UsageError
from runner.core.notices import notice
from runner.core.vocabulary import ExitCode

SCOPES = ("submit", "review", "admin")  # runner.service.tokens.SCOPES, without importing it


def add_serve_commands(commands: Any) -> None:
    """Add `serve` and `tokens` to the `runner` parser."""
    serve = commands.add_parser("serve", help="serve the HTTP API (queue runs, review them)")
    serve.add_argument("--flows", required=True, metavar="DIR", help="folder of flow files")
    serve.add_argument(
        "--db", metavar="URL", help="database URL (default RUNNER_DB, else .runner/runner.db)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=_port, default=8080, help="port (0: any free one)")
    serve.add_argument(
        "--max-body-bytes",
        type=_positive,
        default=1024 * 1024,
        metavar="N",
        help="largest request body accepted (default 1 MiB)",
    )
    serve.add_argument(
        "--auth",
        nargs="+",
        default=["password"],
        metavar="MODE",
        help="how the review inbox knows people: `password` (accounts of `runner users`, "
        "the default) or `header NAME`: the name in a header a sign-on proxy sets "
        "(e.g. X-Forwarded-User; the account must still exist, for its role and flows)",
    )
    serve.add_argument(
        "--public-url",
        metavar="URL",
        default=os.environ.get("RUNNER_PUBLIC_URL") or None,
        help="the inbox's public address (default RUNNER_PUBLIC_URL); https makes its "
        "cookies Secure. Set RUNNER_PUBLIC_URL for `runner worker` too: its alerts then "
        "link to each run's page (run.url in notify's args)",
    )
    serve.set_defaults(command=cmd_serve)
    _add_tokens(commands)
    add_users_commands(commands)


def _add_tokens(commands: Any) -> None:
    tokens = commands.add_parser("tokens", help="API tokens of `runner serve`")
    actions = tokens.add_subparsers(title="actions", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="make a token (shown once, never stored)")
    add.add_argument("name", metavar="NAME", help="who or what uses it (decisions name it)")
    add.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        required=True,
        choices=SCOPES,
        help="what it may do (repeatable); admin may do everything",
    )
    add.set_defaults(command=cmd_tokens_add)
    listed = actions.add_parser("list", help="the tokens (never their secrets)")
    listed.set_defaults(command=cmd_tokens_list)
    revoke = actions.add_parser("revoke", help="refuse a token from now on")
    revoke.add_argument("token_id", metavar="ID")
    revoke.set_defaults(command=cmd_tokens_revoke)
    for parser in (add, listed, revoke):
        add_store_options(parser)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {text!r}")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a positive whole number, not {text!r}")
    return int(text)


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    try:
        import uvicorn

        from runner.service.api import create_app
    except ImportError as exc:
        raise UsageError(
            f"runner serve needs the `serve` extra ({exc.name} is missing): "
            "pip install 'runner-flows[serve]'"
        ) from exc
    from runner.service.library import FlowLibrary

    auth = _auth(args.auth, args.public_url)
    library = FlowLibrary(args.flows)
    for path, problems in library.problems().items():
        found = _count(len(problems), "problem")
        notice(f"left out {path} ({found}; the first: {problems[0]})", level="warning")
    store = open_store(args, expire=False, create=True)
    try:
        app = create_app(store, library, max_body_bytes=args.max_body_bytes, auth=auth)
        listener = _listen(args.host, args.port)
        config = uvicorn.Config(
            app, log_level="info", log_config=_log_config(), server_header=False
        )
        _say_where(out, _address(listener), args.flows, len(library.names()), store.url, auth)
        with _sigterm_as_interrupt(), contextlib.suppress(KeyboardInterrupt):
            uvicorn.Server(config).run(sockets=[listener])
    finally:
        store.close()
    print("runner serve: stopped", file=out, flush=True)
    return ExitCode.OK


def _say_where(out: TextIO, address: str, folder: str, flows: int, url: str, auth: Any) -> None:
    """Where the server listens (the first line, which scripts wait for), then where
    people find the review inbox and how it knows them."""
    from runner.store.engines import safe_url

    print(
        f"runner serve: listening on {address} "
        f"({_count(flows, 'flow')} from {folder}, store {safe_url(url)})",
        file=out,
        flush=True,
    )
    how = f"the {auth.header} header" if auth.header else "`runner users` accounts"
    print(
        f"runner serve: the review inbox is at {auth.public_url or address}/ ({how})",
        file=out,
        flush=True,
    )


def _auth(words: list[str], public_url: str | None) -> Any:
    """The inbox's AuthSettings from `--auth password` or `--auth header NAME`."""
    from runner.service.inbox.sessions import AuthSettings

    if public_url is not None and not public_url.lower().startswith(("http://", "https://")):
        raise UsageError(f"--public-url is an http(s) URL, not {public_url!r}")
    url = public_url.rstrip("/") if public_url else None
    if words == ["password"]:
        return AuthSettings(public_url=url)
    if len(words) == 2 and words[0] == "header" and re.fullmatch(r"[A-Za-z0-9-]{1,100}", words[1]):
        return AuthSettings(header=words[1].lower(), public_url=url)
    raise UsageError(
        f"--auth {' '.join(words)}: give `password`, or `header NAME` with the header a "
        "sign-on proxy sets (e.g. --auth header X-Forwarded-User)"
    )


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, with the app's own log (runner.serve: store failures, bugs)
    written the same way."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["runner.serve"] = {"handlers": ["default"], "level": "INFO"}
    return config


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) and listening; UsageError if it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(2048)
    except OSError as exc:
        listener.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return listener


def _address(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    return (
        f"http://[{host}]:{port}" if listener.family == socket.AF_INET6 else f"http://{host}:{port}"
    )


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the server as Ctrl-C does. uvicorn catches both while it serves and
    sends them again once it has shut down; this makes the second SIGTERM end the
    command normally instead of killing the process."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_tokens_add(args: argparse.Namespace, out: TextIO) -> int:
    from runner.service.tokens import new_token

    token, record = new_token(open_store(args, expire=False, create=True), args.name, args.scopes)
    if args.format == "json":
        shown = {"id": record.id, "name": record.name, "scopes": list(record.scopes)}
        json.dump({**shown, "token": token}, out, indent=2)
        out.write("\n")
    else:
        print(token, file=out)
    notice(
        f"token {record.id} ({record.name}, {', '.join(record.scopes)}): this is the only "
        "time it is shown; keep it now",
        prefix=False,
    )
    return ExitCode.OK


def cmd_tokens_list(args: argparse.Namespace, out: TextIO) -> int:
    records = open_store(args, expire=False).list_tokens()
    if args.format == "json":
        json.dump([_token_json(r) for r in records], out, indent=2)
        out.write("\n")
        return ExitCode.OK
    if not records:
        print("no tokens (make one with `runner tokens add NAME --scope submit`)", file=out)
        return ExitCode.OK
    rows = [("ID", "NAME", "SCOPES", "CREATED", "REVOKED")]
    rows += [
        (
            r.id,
            r.name,
            ",".join(r.scopes),
            when(r.created_at),
            when(r.revoked_at) if r.revoked_at else "-",
        )
        for r in records
    ]
    table(rows, out)
    return ExitCode.OK


def _token_json(record: Any) -> dict[str, Any]:
    revoked = record.revoked_at.isoformat() if record.revoked_at else None
    return {
        "id": record.id,
        "name": record.name,
        "scopes": list(record.scopes),
        "created_at": record.created_at.isoformat(),
        "revoked_at": revoked,
    }


def cmd_tokens_revoke(args: argparse.Namespace, out: TextIO) -> int:
    store = open_store(args, expire=False)
    record = store.token(args.token_id)
    if record is None:
        raise StoreError(f"no API token {args.token_id} (`runner tokens list` shows them)")
    if not store.revoke_token(record.id):
        print(f"token {record.id} ({record.name}) was revoked already", file=out)
        return ExitCode.OK
    print(f"token {record.id} ({record.name}) revoked", file=out)
    return ExitCode.OK


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
