"""A secret never reaches the database, the terminal or `show`, whatever form it takes on
its way out: a trailing newline, escaped in an error message, echoed
URL-encoded, JSON-escaped or base64-encoded, cut by the 200-character error body; a
secret that makes a request invalid fails the step (invalid_input), naming the header
or the URL and never the value; a secret too short to recognise refuses the run.

The end-to-end cases run `runner run`, `runner show` and `runner dlq show` in-process
against a real HTTP server on 127.0.0.1, then read the SQLite file's raw bytes.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import yaml
from scripted_server import Reply, ScriptedServer

from runner.cli.main import main
from runner.core.errors import InputError
from runner.lang.compiler import CompiledFlow
from runner.lang.load import load_flow
from runner.runtime.engine import Engine
from runner.runtime.redact import redactor
from runner.store.sql import SqlStore

TOKEN = "tok-9f3c2a7b51e4"
HEADER_PROBLEM = (
    "header `Authorization` holds a line break, another control character or a space "
    "at either end, which HTTP header values cannot carry (a value read from a file "
    "often ends in a newline)"
)
NON_ASCII_PROBLEM = (
    "header `Authorization` holds a non-ASCII character, which HTTP headers cannot carry"
)


def write_flow(
    tmp_path: Path,
    *,
    url: str = "{{ env.BASE }}/items",
    headers: Any = None,
    key: str | None = None,
) -> Path:
    """A flow whose one step POSTs {item} with the secret in a header (or the body)."""
    body = {"item": "{{ args.item }}"} if key is None else {"item": "{{ args.item }}", "key": key}
    tool: dict[str, Any] = {
        "http": {
            "method": "POST",
            "url": url,
            "headers": headers or {"Authorization": "Bearer {{ secret.TOKEN }}"},
            "json": body,
        },
        "timeout_seconds": 5,
        "retry": {"max_attempts": 2, "interval_seconds": 0, "jitter": False},
    }
    document = {
        "version": 1,
        "name": "secrets",
        "input": {"type": "object", "required": ["item"]},
        "tools": {"api": tool},
        "steps": [{"id": "call", "tool": "api", "args": {"item": "{{ input.item }}"}}],
        "on_error": "dead_letter",
    }
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def cli(*args: str) -> tuple[int, str]:
    """Exit code, and everything printed (the out stream; stderr is captured by the
    caller's capsys)."""
    out = io.StringIO()
    code = main(list(args), out=out)
    return code, out.getvalue()


def run_and_show(
    tmp_path: Path, flow: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """`runner run`, then `show` and `dlq show` of the run: (exit code of the run,
    everything printed, the database's raw bytes as text)."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    item = tmp_path / "input.json"
    item.write_text(json.dumps({"item": "42"}), encoding="utf-8")
    code, printed = cli("run", str(flow), "--input", str(item), "--db", url)
    found = re.search(r"^run (\S+)", printed, re.MULTILINE)
    assert found, printed + capsys.readouterr().err
    for command in (["show"], ["dlq", "show"]):
        for form in ("text", "json"):
            shown = cli(*command, found.group(1), "--db", url, "--format", form)[1]
            assert found.group(1) in shown
            printed += shown
    printed += capsys.readouterr().err
    raw = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("runs.db*")))
    return code, printed, raw.decode("latin-1")


def assert_absent(text: str, *pieces: str) -> None:
    """None of the pieces, nor their first six characters, are in the text."""
    for piece in pieces:
        assert piece[:6] not in text, f"{piece[:6]!r} of {piece!r} leaked"


# -- a secret that makes the request invalid ---------------------------------------------
@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        pytest.param(TOKEN + "\n", HEADER_PROBLEM, id="trailing-newline"),
        pytest.param(TOKEN + "\r", HEADER_PROBLEM, id="trailing-carriage-return"),
        pytest.param(TOKEN + "\r\n", HEADER_PROBLEM, id="trailing-crlf"),
        pytest.param("tök-9f3c2a7b51e4", NON_ASCII_PROBLEM, id="non-ascii"),
    ],
)
def test_secret_that_breaks_a_header_fails_the_step_and_is_never_shown(
    http_server: ScriptedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    secret: str,
    problem: str,
) -> None:
    monkeypatch.setenv("BASE", http_server.url)
    monkeypatch.setenv("TOKEN", secret)
    monkeypatch.chdir(tmp_path)

    code, printed, raw = run_and_show(tmp_path, write_flow(tmp_path), capsys)

    assert code == 1, printed  # a failed run, not an internal error
    assert f"step call failed: failed after 1 attempt: #1 invalid_input: {problem}" in printed
    assert "invalid_input" in printed
    assert_absent(printed + raw, secret.strip(), repr(secret)[1:-1])
    assert http_server.requests == []
    assert not (tmp_path / ".runner" / "crashes").exists()


@pytest.mark.parametrize(
    "hook",
    [
        pytest.param("https://hooks.test/T0KEN-abcdef\n", id="trailing-newline"),
        pytest.param("https://hooks.test:99x9/T0KEN-abcdef", id="bad-port"),
        pytest.param("https://[::1/T0KEN-abcdef", id="bad-host"),
    ],
)
def test_secret_url_that_is_invalid_fails_the_step_and_is_never_shown(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    hook: str,
) -> None:
    monkeypatch.setenv("HOOK", hook)
    monkeypatch.chdir(tmp_path)
    flow = write_flow(tmp_path, url="{{ secret.HOOK }}", headers={"X-Kind": "test"})

    code, printed, raw = run_and_show(tmp_path, flow, capsys)

    assert code == 1, printed
    assert "#1 invalid_input: url is not a valid URL: " in printed
    assert "invalid_input" in printed
    assert_absent(printed + raw, "T0KEN-abcdef", "hooks.test")
    assert not (tmp_path / ".runner" / "crashes").exists()


# -- a server that echoes the secret ------------------------------------------------------
def _cut_inside(secret: str) -> str:
    """An error body whose 200-character cut falls after the secret's ninth character."""
    return "x" * (200 - len("refused: ") - 9) + "refused: " + secret


def _basic(secret: str) -> str:
    return "Basic " + base64.b64encode(f"ann:{secret}".encode()).decode()


ECHOES: dict[str, tuple[str, Callable[[str], str], Callable[[str], str]]] = {
    # id: (secret, the error body the server sends, the part of it that must not show)
    "cut-at-200": (TOKEN, _cut_inside, lambda s: s[:9]),
    "raw": (TOKEN, lambda s: f"bad token {s}", lambda s: s),
    "stripped": (TOKEN + "\n", lambda s: f"bad token {s.strip()}!", lambda s: s.strip()),
    "url-encoded": (
        "tok 9f/3c+2a&7b=é",
        lambda s: f"GET /check?token={quote(s, safe='')}",
        lambda s: quote(s, safe=""),
    ),
    "form-encoded": ("tok 9f/3c+2a&7b=é", lambda s: f"token={quote_plus(s)}", quote_plus),
    "json-escaped": (
        'tok"9f\\3c\u00e9\t2a7b',
        lambda s: json.dumps({"token": s}),
        lambda s: json.dumps(s)[1:-1],
    ),
    "basic-auth": (TOKEN, _basic, lambda s: _basic(s)[len("Basic ") + 6 :]),
}


@pytest.mark.parametrize(("secret", "echo", "leak"), ECHOES.values(), ids=ECHOES.keys())
def test_secret_echoed_by_the_server_is_never_shown(
    http_server: ScriptedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    secret: str,
    echo: Callable[[str], str],
    leak: Callable[[str], str],
) -> None:
    monkeypatch.setenv("BASE", http_server.url)
    monkeypatch.setenv("TOKEN", secret)
    flow = write_flow(tmp_path, headers={"X-Kind": "test"}, key="{{ secret.TOKEN }}")
    http_server.script("/items", Reply(500, echo(secret)), Reply(500, echo(secret)))

    code, printed, raw = run_and_show(tmp_path, flow, capsys)

    assert code == 1, printed
    assert "failed after 2 attempts" in printed
    assert "[secret TOKEN]" in printed
    assert_absent(printed + raw, secret.strip(), leak(secret))
    assert [r.json()["key"] for r in http_server.requests_to("/items")] == [secret] * 2


# -- redaction, form by form ------------------------------------------------------------------
def _compiled(tmp_path: Path) -> CompiledFlow:
    return load_flow(write_flow(tmp_path))


def _b64_after(prefix: str, secret: str) -> str:
    return base64.b64encode(f"{prefix}{secret}".encode()).decode()


R = "[secret TOKEN]"
FORMS: dict[str, tuple[str, Callable[[str], str], str]] = {
    # id: (secret, how a text shows it, what redaction leaves of that)
    "raw": ("tok-9f3c2a7b51e4", lambda s: s, R),
    "stripped": ("  tok-9f3c2a7b51e4\n", lambda s: s.strip(), R),
    "repr": ("tok-9f3c2a7b51e4\n", repr, f"'{R}'"),
    "bytes-repr": ("tok-9f3c2a7b51e4\r", lambda s: repr(s.encode()), f"b'{R}'"),
    "json-ascii": ("tök-9f3c2a7b51e4\n", json.dumps, f'"{R}"'),
    "json-unicode": ('tök-9f3c"2a7b51e4', lambda s: json.dumps(s, ensure_ascii=False), f'"{R}"'),
    "ascii": ("tök-9f3c2a7b51e4\u2028", ascii, f"'{R}'"),
    "quote": ("tok 9f/3c+2a&7b=é", lambda s: quote(s, safe=""), R),
    "quote-slash": ("tok 9f/3c+2a&7b=é", quote, R),
    "quote-plus": ("tok 9f/3c+2a&7b=é", quote_plus, R),
    "quote-lower-hex": ("tok 9f/3c+2a&7b=é", lambda s: quote(s, safe="").lower(), R),
    "html": ("tok<9f>3c&2a7b", html.escape, R),
    # base64: what is left is the prefix's own characters, and at most 4 bits of the
    # secret's last byte (with the padding)
    "base64": ("tok-9f3c2a7b51e4", lambda s: _b64_after("", s), f"{R}A=="),
    "base64-after-2": ("tok-9f3c2a7b51e4", lambda s: _b64_after("a:", s), f"YTp{R}"),
    "base64-after-3": ("tok-9f3c2a7b51e4", lambda s: _b64_after("an:", s), f"YW46{R}A=="),
    "base64-after-4": ("tok-9f3c2a7b51e4", lambda s: _b64_after("ann:", s), f"YW5uOn{R}Q="),
    "base64-urlsafe": (
        "tok-9f3c>>?2a7b51e4",
        lambda s: base64.urlsafe_b64encode(s.encode()).decode(),
        f"{R}A==",
    ),
    "cut-at-end": ("tok-9f3c2a7b51e4", lambda s: s[:7], R),
    "cut-before-next-attempt": (
        "tok-9f3c2a7b51e4",
        lambda s: s[:9] + "; #2 http_5xx: HTTP 500",
        f"{R}; #2 http_5xx: HTTP 500",
    ),
}


@pytest.mark.parametrize(("secret", "encode", "left"), FORMS.values(), ids=FORMS.keys())
def test_every_form_of_a_secret_is_redacted(
    tmp_path: Path, secret: str, encode: Callable[[str], str], left: str
) -> None:
    redact = redactor(_compiled(tmp_path), {"TOKEN": secret})
    text = f"HTTP 500: refused {encode(secret)}"

    redacted = redact({"message": text, "attempts": [text], text: 1})

    expected = f"HTTP 500: refused {left}"
    assert redacted == {"message": expected, "attempts": [expected], expected: 1}


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("nothing secret here", "nothing secret here"),
        ("[secret TOKEN] already", "[secret TOKEN] already"),
        (f"twice {TOKEN}{TOKEN}.", "twice [secret TOKEN][secret TOKEN]."),
        ("cut at the end: tok-9f", "cut at the end: [secret TOKEN]"),
        ("cut: tok-9f3c; #2 http_5xx: ...", "cut: [secret TOKEN]; #2 http_5xx: ..."),
        ("a cut after 5 characters shows them: tok-9", None),
        ("a prefix inside a text stays: tok-9f3c2a, as it may be public", None),
    ],
)
def test_where_redaction_starts_and_stops(tmp_path: Path, text: str, redacted: str | None) -> None:
    redact = redactor(_compiled(tmp_path), {"TOKEN": TOKEN})

    assert redact(text) == (text if redacted is None else redacted)


def test_a_secret_with_a_public_beginning_leaves_other_texts_alone(tmp_path: Path) -> None:
    hook = "https://hooks.chat.test/services/T0KEN-abcdef"
    redact = redactor(_compiled(tmp_path), {"TOKEN": hook})

    assert redact(f"see https://hooks.chat.test/about, then {hook}") == (
        "see https://hooks.chat.test/about, then [secret TOKEN]"
    )


# -- secrets too short to recognise -----------------------------------------------------------
@pytest.mark.parametrize(
    ("secret", "length"),
    [("abc", 3), ("1234567", 7), ("  abcdef\n", 6), ("", 0)],
)
def test_run_with_a_short_secret_is_refused_before_step_one(
    http_server: ScriptedServer, tmp_path: Path, secret: str, length: int
) -> None:
    store = SqlStore("sqlite://")
    engine = Engine(store, environ={"BASE": http_server.url, "TOKEN": secret})

    with pytest.raises(InputError) as refused:
        engine.start(_compiled(tmp_path), {"item": "42"})

    assert str(refused.value) == (
        f"secret TOKEN is too short to be kept out of what runner stores ({length} "
        "characters; at least 8): use a longer secret"
    )
    assert store.list_runs() == []
    assert http_server.requests == []


def test_cli_run_with_a_short_secret_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BASE", "http://127.0.0.1:9")
    monkeypatch.setenv("TOKEN", "abc")
    item = tmp_path / "input.json"
    item.write_text('{"item": "42"}', encoding="utf-8")

    code, _ = cli("run", str(write_flow(tmp_path)), "--input", str(item), "--db", "sqlite://")

    assert code == 1
    assert capsys.readouterr().err == (
        "runner: secret TOKEN is too short to be kept out of what runner stores "
        "(3 characters; at least 8): use a longer secret\n"
    )


def test_headers_httpx_refuses_fail_the_step_without_quoting_them(
    http_server: ScriptedServer, tmp_path: Path
) -> None:
    store = SqlStore("sqlite://")
    engine = Engine(store, environ={"BASE": http_server.url, "TOKEN": TOKEN})
    flow = load_flow(write_flow(tmp_path, headers={"Content-Length": "{{ secret.TOKEN }}"}))

    result = engine.start(flow, {"item": "42"})

    assert result.status == "failed"
    assert (result.error["kind"], result.error["message"]) == (
        "invalid_input",
        "failed after 1 attempt: #1 invalid_input: the request cannot be sent as written: "
        "HTTP does not allow its headers (a Content-Length or Transfer-Encoding that does "
        "not fit the body?)",
    )
