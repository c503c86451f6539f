"""The review inbox's parts, without a browser: the edit form made from a schema and
read back, the diff, the findings marked in escaped text, the headers of every
response, passwords, sessions, the limit on failed sign-ins, who may see and decide,
`runner users`, and signing in through a proxy's header."""

from __future__ import annotations

import io
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.testclient import TestClient

from runner.cli.main import main
from runner.core.errors import UsageError
from runner.lang.load import load_flow
from runner.review.edits import diff
from runner.review.proposals import Proposal
from runner.runtime.engine import Engine
from runner.service.api import create_app
from runner.service.inbox import forms, views
from runner.service.inbox.accounts import decider, new_user, sees, verify
from runner.service.inbox.diagram import Diagrams, marked_dot, plain_svg
from runner.service.inbox.pages import CSP
from runner.service.inbox.sessions import (
    AuthSettings,
    LoginLimiter,
    SessionCookies,
    fingerprint,
    new_session,
)
from runner.service.library import FlowLibrary
from runner.store.records import RunRecord
from runner.store.sql import SqlStore

SCHEMA = {
    "type": "object",
    "required": ["amount", "message"],
    "properties": {
        "amount": {"type": "number", "minimum": 0, "maximum": 500},
        "count": {"type": "integer", "minimum": 1},
        "message": {"type": "string", "minLength": 5, "maxLength": 200},
        "code": {"type": "string", "pattern": "^[A-Z]{2}$", "description": "two letters"},
        "speed": {"enum": ["standard", "express"]},
        "urgent": {"type": "boolean"},
        "lines": {"type": "array"},
        "memo": {"type": "string"},
    },
}
PROPOSAL = {
    "amount": 120,
    "count": 2,
    "message": "Your refund is on its way.",
    "code": "EU",
    "speed": "standard",
    "urgent": False,
    "lines": [1, 2],
}
PASSWORD = "a long enough password"


# -- the edit form ------------------------------------------------------------------------
def test_the_edit_form_is_made_from_the_schema_with_its_checks() -> None:
    made = forms.fields(SCHEMA, PROPOSAL)
    assert [(f.name, f.kind, f.value, f.required, dict(f.attrs)) for f in made] == [
        ("amount", "number", "120", True, {"step": "any", "min": "0", "max": "500"}),
        ("count", "integer", "2", False, {"step": "1", "min": "1"}),
        ("message", "text", PROPOSAL["message"], True, {"minlength": "5", "maxlength": "200"}),
        ("code", "text", "EU", False, {"pattern": "[\\s\\S]*(?:^[A-Z]{2}$)[\\s\\S]*"}),
        ("speed", "select", "", False, {}),
        ("urgent", "checkbox", "true", False, {}),
        ("lines", "json", "[\n  1,\n  2\n]", False, {}),
        ("memo", "text", "", False, {}),
    ]
    speed = made[4]
    assert list(speed.options) == [
        ("", "(choose)", False),
        ('"standard"', "standard", True),
        ('"express"', "express", False),
    ]
    assert (made[3].description, made[3].input_name, made[3].input_id) == (
        "two letters",
        "f.code",
        "field-code",
    )


@pytest.mark.parametrize(
    ("schema", "value"),
    [({"type": "array"}, [1, 2]), (True, "free text"), ({"type": "object"}, {"a": 1})],
    ids=["array", "any", "object-without-properties"],
)
def test_a_value_without_properties_is_edited_as_json(schema: Any, value: Any) -> None:
    (whole,) = forms.fields(schema, value)
    assert (whole.name, whole.kind, whole.required) == (forms.WHOLE, "json", True)
    assert forms.edited([whole], value, {whole.input_name: whole.value}) == (value, [])


def _as_shown(made: list[forms.Field]) -> dict[str, str]:
    """What a browser sends for the form as shown."""
    sent = {}
    for f in made:
        if f.kind == "select":
            sent[f.input_name] = next(v for v, _, chosen in f.options if chosen)
        elif f.kind != "checkbox" or f.checked:
            sent[f.input_name] = f.value
    return sent


def test_a_form_sent_as_it_was_shown_gives_the_proposal_back() -> None:
    made = forms.fields(SCHEMA, PROPOSAL)
    assert forms.edited(made, PROPOSAL, _as_shown(made)) == (PROPOSAL, [])


def test_changes_make_the_edited_value_and_its_diff() -> None:
    made = forms.fields(SCHEMA, PROPOSAL)
    sent = {
        **_as_shown(made),
        "f.amount": "80.5",
        "f.count": "",
        "f.speed": '"express"',
        "f.urgent": "true",
        "f.lines": "[3]",
        "f.memo": "for finance",
    }
    value, problems = forms.edited(made, PROPOSAL, sent)
    assert problems == []
    assert value == {
        "amount": 80.5,  # count: emptied, and not required, so left out
        "message": PROPOSAL["message"],
        "code": "EU",
        "speed": "express",
        "urgent": True,
        "lines": [3],
        "memo": "for finance",
    }
    assert views.changes(diff(PROPOSAL, value)) == [
        views.Change("amount", "120", "80.5"),
        views.Change("count", "2", "(none)"),
        views.Change("speed", "standard", "express"),
        views.Change("urgent", "false", "true"),
        views.Change("lines", "[1, 2]", "[3]"),
        views.Change("memo", "(none)", "for finance"),
    ]


def test_what_cannot_be_read_is_said_and_the_schema_is_checked_again() -> None:
    made = forms.fields(SCHEMA, PROPOSAL)
    sent = {**_as_shown(made), "f.amount": "NaN", "f.count": "1.5", "f.lines": "[1,"}
    _, problems = forms.edited(made, PROPOSAL, sent)
    assert problems == [
        "amount: 'NaN' is not a number",
        "count: '1.5' is not a whole number",
        "lines: not JSON (Expecting value: line 1 column 4 (char 3))",
    ]
    value, problems = forms.edited(
        made,
        PROPOSAL,
        {**sent, "f.amount": "900", "f.count": "", "f.lines": "[]", "f.message": "Hi"},
    )
    assert problems == []
    assert forms.problems(SCHEMA, value) == [
        "amount: must be at most 500, found 900",
        "message: needs at least 5 characters",
    ]


# -- what pages show ----------------------------------------------------------------------
def test_findings_are_marked_in_the_text_after_it_is_escaped() -> None:
    text = "<b>we will refund</b> & <script>alert(1)</script>"
    marked = views.marked(text, [(3, 17), (10, 14), (40, 99), (5, 5)])
    assert isinstance(marked, Markup)
    assert str(marked) == (
        "&lt;b&gt;<mark>we will refund</mark>&lt;/b&gt; &amp; &lt;script&gt;alert(1)"
        "<mark>&lt;/script&gt;</mark>"
    )


def _record(flow: str = "refund") -> RunRecord:
    at = datetime(2026, 11, 30, tzinfo=UTC)
    return RunRecord(
        "r1",
        flow,
        "d",
        "escalated",
        "finance",
        "finance",
        None,
        None,
        {},
        1,
        0,
        0,
        0.0,
        None,
        at,
        at,
    )


def _proposal(reviewers: tuple[str, ...], flow: str = "refund") -> Proposal:
    return Proposal(
        _record(flow), "finance", "finance", {}, "h", True, None, None, None, reviewers=reviewers
    )


@pytest.mark.parametrize(
    ("name", "role", "flows", "groups", "reviewers", "flow", "decides"),
    [
        ("lena", "reviewer", (), ("finance",), ("finance",), "refund", "lena (finance)"),
        ("lena", "reviewer", (), ("support", "finance"), ("finance",), "refund", "lena (finance)"),
        ("lena", "reviewer", (), (), ("lena",), "refund", "lena"),
        ("lena", "reviewer", (), (), (), "refund", "lena"),
        ("sam", "reviewer", (), ("support",), ("finance",), "refund", None),
        ("lena", "reviewer", ("replies",), ("finance",), ("finance",), "refund", None),
        ("omar", "admin", (), (), ("finance",), "refund", "omar"),
    ],
    ids=["group", "one-of-groups", "by-name", "anyone", "other-group", "other-flow", "admin"],
)
def test_who_decides_and_as_whom(
    tmp_path: Path,
    name: str,
    role: str,
    flows: tuple[str, ...],
    groups: tuple[str, ...],
    reviewers: tuple[str, ...],
    flow: str,
    decides: str | None,
) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'runs.db'}")
    user = new_user(store, name, None, role, flows, groups)
    assert decider(user, _proposal(reviewers, flow)) == decides
    assert sees(user, flow) == (name != "lena" or flow in flows or not flows)
    store.close()


# -- people -------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> Any:
    opened = SqlStore(f"sqlite:///{tmp_path / 'runs.db'}")
    yield opened
    opened.close()


def test_passwords_are_kept_as_argon2id_hashes_and_checked(store: SqlStore) -> None:
    user = new_user(store, "lena", PASSWORD, "reviewer", ("refund",), ("finance",))
    assert user.password_hash is not None and user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    assert verify(store, "lena", PASSWORD) == user
    assert verify(store, "lena", PASSWORD + "!") is None
    assert verify(store, "nobody", PASSWORD) is None
    assert verify(store, "no body (finance)", PASSWORD) is None
    store.disable_user("lena")
    assert verify(store, "lena", PASSWORD) is None


@pytest.mark.parametrize(
    ("name", "password", "role", "flows", "message"),
    [
        ("lena", "short", "reviewer", (), "a password has at least 10 characters"),
        (
            "Lena (finance)",
            PASSWORD,
            "reviewer",
            (),
            "'Lena (finance)' cannot name an account: use 1 to 64 letters, digits and "
            ". _ @ -, starting with a letter or digit (no spaces or parentheses)",
        ),
        ("lena", PASSWORD, "owner", (), "a role is reviewer or admin, not 'owner'"),
        (
            "omar",
            PASSWORD,
            "admin",
            ("refund",),
            "an admin sees every flow: --flows is for reviewers",
        ),
    ],
    ids=["short-password", "name-with-a-group", "unknown-role", "admin-with-flows"],
)
def test_an_account_that_cannot_be_is_refused(
    store: SqlStore, name: str, password: str, role: str, flows: tuple[str, ...], message: str
) -> None:
    with pytest.raises(UsageError) as refused:
        new_user(store, name, password, role, flows)
    assert str(refused.value) == message
    assert store.list_users() == []


def _cli(*args: str, stdin: str = "") -> tuple[int, str]:
    out = io.StringIO()
    saved, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        return main(list(args), out=out), out.getvalue()
    finally:
        sys.stdin = saved


def test_runner_users_adds_lists_changes_and_disables_accounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    add = ["users", "add", "lena", "--role", "reviewer", "--flows", "refund,replies"]
    assert _cli(
        *add, "--groups", "finance", "--password-stdin", "--db", db, stdin=PASSWORD + "\n"
    ) == (
        0,
        "account lena (reviewer) added; it sees refund, replies\n",
    )
    answers = iter([PASSWORD, PASSWORD])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    assert _cli("users", "add", "omar", "--role", "admin", "--db", db) == (
        0,
        "account omar (admin) added; it sees every flow\n",
    )
    assert _cli("users", "add", "proxy", "--role", "reviewer", "--no-password", "--db", db)[0] == 0
    assert _cli("users", "list", "--db", db)[0] == 0
    listed = _cli("users", "list", "--db", db)[1]
    rows = [line.split()[:5] for line in listed.splitlines()]
    assert rows == [
        ["NAME", "ROLE", "FLOWS", "GROUPS", "SIGNS"],
        ["lena", "reviewer", "refund,replies", "finance", "password"],
        ["omar", "admin", "(all)", "-", "password"],
        ["proxy", "reviewer", "(all)", "-", "header"],
    ]
    store = SqlStore(db)
    before = store.user("lena")
    assert _cli(
        "users", "passwd", "lena", "--password-stdin", "--db", db, stdin="another password\n"
    ) == (
        0,
        "account lena: new password set; its sessions have ended\n",
    )
    after = store.user("lena")
    assert before and after and fingerprint(before) != fingerprint(after)
    assert verify(store, "lena", "another password") is not None
    assert _cli("users", "disable", "lena", "--db", db)[1] == (
        "account lena disabled: it is signed out at its next request\n"
    )
    assert _cli("users", "disable", "lena", "--db", db)[1] == "account lena was disabled already\n"
    assert PASSWORD.encode() not in (tmp_path / "runs.db").read_bytes()
    store.close()


def test_two_passwords_that_differ_change_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = iter([PASSWORD, PASSWORD + "?"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    assert _cli("users", "add", "lena", "--role", "reviewer", "--db", db) == (2, "")
    assert capsys.readouterr().err == "runner: the two passwords differ: nothing was changed\n"


# -- sessions and sign-ins ------------------------------------------------------------------
def _request_with(cookie: str) -> Request:
    return Request({"type": "http", "headers": [(b"cookie", cookie.encode())]})


def test_a_session_cookie_that_was_changed_or_is_too_old_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cookies = SessionCookies("the key", AuthSettings())
    session = new_session(name="lena")
    response = Response()
    cookies.write(response, session)
    header = response.headers["set-cookie"]
    assert "HttpOnly" in header and "SameSite=lax" in header and "Secure" not in header
    value = header.split(";")[0].split("=", 1)[1]
    assert cookies.read(_request_with(f"runner_inbox={value}")) == session
    assert cookies.read(_request_with(f"runner_inbox={value[:-2]}xx")) is None
    assert (
        SessionCookies("another key", AuthSettings()).read(_request_with(f"runner_inbox={value}"))
        is None
    )
    import itsdangerous.timed

    later = itsdangerous.timed.time.time() + 8 * 3600 + 5
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: later)
    assert cookies.read(_request_with(f"runner_inbox={value}")) is None


def test_cookies_are_secure_behind_https() -> None:
    cookies = SessionCookies("the key", AuthSettings(public_url="https://inbox.example.org"))
    response = Response()
    cookies.write(response, new_session(name="lena"))
    header = response.headers["set-cookie"]
    assert header.startswith("__Host-runner_inbox=") and "Secure" in header


def test_sign_ins_are_counted_per_key_within_the_window_and_right_ones_are_not() -> None:
    at = [1000.0]
    limiter = LoginLimiter(clock=lambda: at[0])
    lena = ["name:lena", "address:10.0.0.1"]
    assert limiter.attempt(lena) == 0
    limiter.succeeded(lena)  # a right password does not count
    for _ in range(5):
        assert limiter.attempt(lena) == 0
        at[0] += 60
    assert limiter.attempt(["name:lena"]) == pytest.approx(900 - 300)
    assert limiter.attempt(["name:mia", "address:10.0.0.2"]) == 0
    assert limiter.attempt(["name:mia", "address:10.0.0.1"]) == pytest.approx(600)
    at[0] += 601
    assert limiter.attempt(lena) == 0


# -- the app --------------------------------------------------------------------------------
FLOW = """\
version: 1
name: greet
input: {type: object, required: [name], properties: {name: {type: string}}}
steps:
  - id: sign_off
    approval:
      title: "Greet {{ input.name }}"
      edit: {type: object, properties: {greeting: {type: string, default: "Hi"}}}
on_error: dead_letter
"""


def _app(tmp_path: Path, auth: AuthSettings | None = None) -> tuple[TestClient, SqlStore]:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "greet.yaml").write_text(FLOW, encoding="utf-8")
    store = SqlStore(f"sqlite:///{tmp_path / 'runs.db'}")
    new_user(store, "lena", PASSWORD, "reviewer")
    app = create_app(store, FlowLibrary(tmp_path / "flows"), auth=auth)
    return TestClient(app, base_url="http://127.0.0.1", follow_redirects=False), store


def test_every_response_carries_a_strict_policy_and_no_inline_code(tmp_path: Path) -> None:
    client, store = _app(tmp_path)
    assert CSP == (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    for path in (
        "/login",
        "/",
        "/dlq",
        "/runs/nothing",
        "/static/inbox.css",
        "/healthz",
        "/nowhere",
    ):
        answer = client.get(path)
        assert answer.headers["content-security-policy"] == CSP, path
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.headers["referrer-policy"] == "same-origin", path
    page = client.get("/login").text
    assert "<script" not in page and " style=" not in page and "<style" not in page
    assert client.get("/").headers["location"] == "/login?next=/"
    store.close()


def test_behind_a_sign_on_proxy_its_header_names_the_person(tmp_path: Path) -> None:
    client, store = _app(tmp_path, AuthSettings(header="x-forwarded-user"))
    page = client.get("/", headers={"X-Forwarded-User": "lena"})
    assert page.status_code == 200 and "lena" in page.text and "Sign out" not in page.text
    assert "runner_inbox=" in page.headers["set-cookie"]
    missing = client.get("/")
    assert missing.status_code == 401
    assert "takes your name from the x-forwarded-user header" in missing.text
    stranger = client.get("/", headers={"X-Forwarded-User": "zed"})
    assert stranger.status_code == 403
    assert "runner users add zed --role reviewer --no-password" in stranger.text
    forged = client.post("/logout", headers={"X-Forwarded-User": "lena"}, data={"csrf": "x"})
    assert forged.status_code == 403 and "This form has expired" in forged.text
    store.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--auth", "header"],
            "--auth header: give `password`, or `header NAME` with the header a sign-on "
            "proxy sets (e.g. --auth header X-Forwarded-User)",
        ),
        (
            ["--auth", "header", "X User"],
            "--auth header X User: give `password`, or `header NAME` with the header a "
            "sign-on proxy sets (e.g. --auth header X-Forwarded-User)",
        ),
        (
            ["--public-url", "inbox.example.org"],
            "--public-url is an http(s) URL, not 'inbox.example.org'",
        ),
    ],
    ids=["header-without-name", "header-name-with-space", "url-without-scheme"],
)
def test_serve_refuses_an_auth_it_cannot_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    assert main(["serve", "--flows", str(tmp_path), *options]) == 2
    assert capsys.readouterr().err == f"runner: {message}\n"


# -- the flow's diagram ---------------------------------------------------------------------
def test_the_diagram_marks_the_stopped_step_and_only_plain_svg_is_served(tmp_path: Path) -> None:
    (tmp_path / "greet.yaml").write_text(FLOW, encoding="utf-8")
    compiled = load_flow(tmp_path / "greet.yaml")
    text = marked_dot(compiled, "sign_off")
    assert text.endswith(
        '    s0 [label="sign_off\\n(stopped here)", style="rounded,filled,bold", '
        'fillcolor="#ffe08a", color="#8a5a00", penwidth=3];\n}\n'
    )
    assert marked_dot(compiled, None) == marked_dot(compiled, "nowhere")
    drawn = Diagrams().svg("digest", compiled, "sign_off")
    if Diagrams().available:
        assert drawn is not None and plain_svg(drawn) and b"stopped here" in drawn
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><g><text>x</text></g></svg>'
    assert plain_svg(svg)
    for bad in (
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>',
        b'<svg xmlns="http://www.w3.org/2000/svg"><foreignObject/></svg>',
        b'<svg xmlns="http://www.w3.org/2000/svg" xmlns:x="http://www.w3.org/1999/xlink">'
        b'<a x:href="javascript:alert(1)"><text>x</text></a></svg>',
        b"<html><svg/></html>",
        b"not xml",
    ):
        assert not plain_svg(bad), bad
    assert Diagrams(look=False).svg("digest", compiled, "sign_off") is None


def _signed_in(client: TestClient, name: str = "lena") -> None:
    page = client.get("/login").text
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    sent = client.post("/login", data={"csrf": csrf, "name": name, "password": PASSWORD})
    assert sent.status_code == 303, sent.text


def test_without_graphviz_the_run_page_lists_the_steps_with_the_stopped_one_marked(
    tmp_path: Path,
) -> None:
    client, store = _app(tmp_path)
    client.app.state.inbox.diagrams = Diagrams(look=False)  # type: ignore[attr-defined]
    run = Engine(store, environ={}).start(
        load_flow(tmp_path / "flows" / "greet.yaml"), {"name": "Al"}
    )
    _signed_in(client)
    page = client.get(f"/runs/{run.run_id}").text
    assert "diagram.svg" not in page
    assert (
        '<li class="stopped" aria-current="step"><code>sign_off</code> '
        '<span class="sub">approval</span> <strong>stopped here</strong></li>'
    ) in page
    assert client.get(f"/runs/{run.run_id}/diagram.svg").status_code == 404
    store.close()
