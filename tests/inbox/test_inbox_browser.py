"""The review inbox in a real browser (Debian's Chromium, driven by Playwright) against
`runner serve` as a real process, with a worker that runs what is approved and a real
HTTP server that receives the payments: sign in, approve with an edit after seeing the
diff, reject (a reason required by the page and by the server), two reviewers deciding
at once, markup from a tool shown as text, flows an account may not see, approval by
keyboard alone, CSRF, and the limit on failed sign-ins. The tests save screenshots of
the queue, a run and an edit's diff in docs/screenshots/."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

if not os.environ.get("RUNNER_REQUIRE_BROWSER"):  # in CI a missing Playwright fails
    pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")

from inbox_support import MARKUP, PASSWORD, Served, eventually, serve
from playwright.sync_api import Browser, BrowserContext, Page, expect
from scripted_server import Reply, ScriptedServer

from runner.review.desk import Desk
from runner.runtime.engine import Engine
from runner.service.inbox.runpage import state_tag

pytestmark = pytest.mark.slow


@pytest.fixture
def people(browser: Browser, inbox: Served) -> Iterator[Callable[..., Page]]:
    """Signs people in, each in a browser context of their own (closed afterwards);
    a page that opened a dialog (alert) records it in `page.dialogs`."""
    contexts: list[BrowserContext] = []

    def sign_in(name: str, base: str = inbox.url) -> Page:
        context = browser.new_context(base_url=base, viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = opened(context)
        page.goto("/login")
        page.get_by_label("Name").fill(name)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
        return page

    yield sign_in
    for context in contexts:
        context.close()


def opened(context: BrowserContext) -> Page:
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.dialogs = dialogs  # type: ignore[attr-defined]
    return page


def form_of(page: Page, action: str) -> dict[str, str]:
    """The hidden fields (csrf, hash, seen) of the page's form that posts to `action`."""
    hidden = page.locator(f"form[action$='/{action}'] input[type=hidden]")
    return {h.get_attribute("name") or "": h.get_attribute("value") or "" for h in hidden.all()}


def drawn(image: Any, seconds: float = 10.0) -> bool:
    """Whether the image loads: its box grows past the size of a broken image's icon or
    alt text. (Read from the layout, with no script: the page's policy allows none, and
    Playwright's own waits that evaluate a script are refused there.)"""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        box = image.bounding_box()
        if box is not None and box["height"] > 100:
            return True
        time.sleep(0.05)
    return False


def payments_of(payments: ScriptedServer, customer: str) -> list[Any]:
    return [r.json() for r in payments.requests_to("/pay") if r.json()["customer"] == customer]


def test_an_edited_approval_shows_its_diff_and_pays_the_edited_amount_once(
    inbox: Served, payments: ScriptedServer, people: Callable[..., Page], screenshots: Path
) -> None:
    run_id = inbox.start("refund", {"customer": "Ada Lovelace", "amount": 120})
    inbox.start("replies", {"ticket": "T-1042"})  # the queue has a policy finding too
    page = people("lena")
    row = page.get_by_role("link", name="Refund 120 EUR to Ada Lovelace")
    expect(row).to_be_visible()
    page.screenshot(path=screenshots / "inbox-queue.png", full_page=True)
    row.click()
    expect(page.get_by_role("heading", name="Why it stopped")).to_be_visible()
    if shutil.which("dot"):  # the diagram is drawn (Graphviz), and shown before the shot
        assert drawn(page.locator("img.diagram")), "the flow's diagram did not load"
    page.screenshot(path=screenshots / "inbox-run.png", full_page=True)
    page.get_by_label("amount").fill("80")
    page.get_by_label("message").fill("We refund 80 EUR: the rest was a fee.")
    page.get_by_label("speed").select_option(label="express")
    page.get_by_role("button", name="Review changes").click()
    expect(page.get_by_role("heading", name="Approve these changes?")).to_be_visible()
    rows = page.locator("table.diff tbody tr").all_inner_texts()
    assert [r.split("\t") for r in rows] == [
        ["amount", "120", "80"],
        [
            "message",
            "Your refund of 120 EUR is on its way.",
            "We refund 80 EUR: the rest was a fee.",
        ],
        ["speed", "standard", "express"],
    ]
    page.screenshot(path=screenshots / "inbox-diff.png", full_page=True)
    page.get_by_role("button", name="Approve these changes").click()
    went_on = re.compile(
        r"Approved\. The run is now ((queued for|being run by) a worker|completed)\."
    )
    expect(page.get_by_role("status")).to_have_text(went_on)  # as fast as the worker is
    eventually(lambda: inbox.store.run(run_id).status == "completed")
    assert payments_of(payments, "Ada Lovelace") == [
        {
            "customer": "Ada Lovelace",
            "amount": 80,
            "message": "We refund 80 EUR: the rest was a fee.",
            "speed": "express",
        }
    ]
    page.reload()
    expect(page.locator(".meta .state")).to_have_text("completed")
    (decision,) = inbox.store.decisions(run_id)
    assert (decision.decided_by, decision.decision) == ("lena (finance)", "approved")
    assert {c["path"] for c in decision.diff} == {"amount", "message", "speed"}


def test_a_rejection_needs_a_reason_in_the_page_and_on_the_server(
    inbox: Served, people: Callable[..., Page]
) -> None:
    run_id = inbox.start("refund", {"customer": "Bob", "amount": 30})
    page = people("lena")
    page.goto(f"/runs/{run_id}")
    reason = page.get_by_label("Reason")
    page.get_by_role("button", name="Reject").click()
    assert reason.evaluate("e => e.validity.valueMissing") is True
    assert page.url.endswith(f"/runs/{run_id}")
    refused = page.request.post(
        f"/runs/{run_id}/reject", form={**form_of(page, "reject"), "reason": " "}
    )
    assert refused.status == 422
    assert "a rejection needs a reason: say why, for the record" in refused.text()
    assert inbox.store.run(run_id).status == "escalated"
    reason.fill("Paid twice already.")
    page.get_by_role("button", name="Reject").click()
    expect(page.get_by_role("status")).to_have_text("Rejected. The run is now rejected: closed.")
    (decision,) = inbox.store.decisions(run_id)
    assert (decision.decision, decision.decided_by, decision.note) == (
        "rejected",
        "lena (finance)",
        "Paid twice already.",
    )


def test_the_schema_checks_hold_on_the_server_too(
    inbox: Served, people: Callable[..., Page]
) -> None:
    run_id = inbox.start("refund", {"customer": "Fay", "amount": 40})
    page = people("lena")
    page.goto(f"/runs/{run_id}")
    expect(page.get_by_label("amount")).to_have_attribute("max", "500")
    expect(page.get_by_label("message")).to_have_attribute("minlength", "5")
    state = form_of(page, "edit")
    edit = {**state, "f.amount": "900", "f.message": "Hi", "f.speed": '"standard"'}
    refused = page.request.post(f"/runs/{run_id}/edit", form=edit)
    assert refused.status == 422
    assert "amount: must be at most 500, found 900" in refused.text()
    assert "message: needs at least 5 characters" in refused.text()
    value = json.dumps({"amount": 900, "message": "Hello there", "speed": "standard"})
    refused = page.request.post(f"/runs/{run_id}/approve", form={**state, "value": value})
    assert refused.status == 422
    assert "does not match the output schema of step finance" in refused.text()
    assert (inbox.store.run(run_id).status, inbox.store.decisions(run_id)) == ("escalated", [])


def test_an_edit_that_still_breaks_a_policy_goes_only_with_a_reason(
    inbox: Served, people: Callable[..., Page]
) -> None:
    run_id = inbox.start("replies", {"ticket": "T-7"})
    page = people("lena")
    page.goto(f"/runs/{run_id}")
    page.get_by_label("reply").fill("Sorry for the wait: we will refund the fee.")
    page.get_by_role("button", name="Review changes").click()
    page.get_by_role("button", name="Approve these changes").click()
    expect(page.get_by_role("alert")).to_contain_text(
        "the edited output breaks the flow's policies"
    )
    page.get_by_label("why may it go anyway?").fill("billing agreed by phone")
    page.get_by_role("button", name="Approve these changes").click()
    expect(page.get_by_role("status")).to_contain_text("Approved.")
    (decision,) = inbox.store.decisions(run_id)
    assert (decision.decided_by, decision.override) == ("lena", "billing agreed by phone")
    assert decision.content == {"reply": "Sorry for the wait: we will refund the fee."}


def test_of_two_reviewers_approving_at_once_one_wins_and_the_other_sees_the_conflict(
    inbox: Served, people: Callable[..., Page]
) -> None:
    run_id = inbox.start("refund", {"customer": "Cy", "amount": 10})
    lena, mia = people("lena"), people("mia")
    for page in (lena, mia):
        page.goto(f"/runs/{run_id}")
    with lena.expect_navigation() as first, mia.expect_navigation() as second:
        lena.get_by_role("button", name="Approve", exact=True).click(no_wait_after=True)
        mia.get_by_role("button", name="Approve", exact=True).click(no_wait_after=True)
    answers = {first.value.status: lena, second.value.status: mia}
    assert sorted(answers) == [200, 409]
    winner, loser = answers[200], answers[409]
    expect(winner.get_by_role("status")).to_contain_text("Approved.")
    conflict = loser.get_by_role("alert")
    expect(conflict).to_contain_text("This run changed while you were looking at it")
    who = "lena (finance)" if winner is lena else "mia (finance)"
    expect(conflict).to_contain_text(f"The latest decision: {who} approved it")
    expect(loser.get_by_role("button", name="Approve", exact=True)).to_have_count(0)
    assert [d.decided_by for d in inbox.store.decisions(run_id)] == [who]


def test_markup_in_a_tool_answer_is_shown_as_text(
    inbox: Served, people: Callable[..., Page]
) -> None:
    run_id = inbox.start("replies", {"ticket": "<img src=x onerror=alert(2)>"})
    page = people("lena")
    page.goto(f"/runs/{run_id}")
    checked = page.locator(".checked")
    expect(checked).to_have_text(MARKUP)
    assert checked.locator("mark").all_inner_texts() == ["we will refund"]
    expect(page.get_by_text("<script>alert(1)</script>").first).to_be_visible()
    expect(page.get_by_text("<img src=x onerror=alert(2)>").first).to_be_visible()
    assert page.locator("script").count() == 0
    assert page.locator("img[src='x']").count() == 0
    page.goto("/?reason=policy")
    expect(page.get_by_role("link", name=run_id)).to_be_visible()
    expect(page.locator("table.queue .tag-approval")).to_have_count(0)
    assert page.dialogs == []  # type: ignore[attr-defined]


def test_a_flow_an_account_may_not_see_is_not_there_for_it(
    inbox: Served, people: Callable[..., Page]
) -> None:
    payroll = inbox.start("payroll", {"month": "2026-11"})
    refund = inbox.start("refund", {"customer": "Dee", "amount": 5})
    desk = Desk(Engine(inbox.store, environ={}))
    record = inbox.store.run(payroll)
    crafted = {"hash": desk.proposal(payroll).content_hash, "seen": state_tag(record)}
    lena = people("lena")
    assert "Payroll of 2026-11" not in lena.content()
    assert lena.goto(f"/runs/{payroll}").status == 404
    expect(lena.get_by_role("alert")).to_have_text(f"There is no run {payroll} here.")
    assert lena.request.get(f"/runs/{payroll}/diagram.svg").status == 404
    lena.goto(f"/runs/{refund}")
    csrf = form_of(lena, "approve")["csrf"]
    for action in ("approve", "reject", "retry"):
        sent = {**crafted, "csrf": csrf, "reason": "crafted"}
        assert lena.request.post(f"/runs/{payroll}/{action}", form=sent).status == 404
    sam = people("sam")  # sees refund, but is not in its reviewers' group
    sam.goto(f"/runs/{refund}")
    expect(sam.locator(".decide")).to_contain_text("Only finance may decide at finance")
    sent = {
        "csrf": sam.locator("form[action='/logout'] input[name=csrf]").get_attribute("value") or "",
        "hash": desk.proposal(refund).content_hash,
        "seen": state_tag(inbox.store.run(refund)),
    }
    assert sam.request.post(f"/runs/{refund}/approve", form=sent).status == 403
    assert (inbox.store.run(payroll).status, inbox.store.run(refund).status) == ("escalated",) * 2
    assert inbox.store.decisions(payroll) == inbox.store.decisions(refund) == []
    omar = people("omar")  # an admin sees every flow
    assert omar.goto(f"/runs/{payroll}").status == 200


def _focus(page: Page) -> dict[str, Any]:
    return page.evaluate(
        """() => { const e = document.activeElement; return {
            tag: e.tagName, text: e.textContent.trim(), href: e.getAttribute('href'),
            form: e.form ? e.form.getAttribute('action') : null,
            outline: getComputedStyle(e).outlineStyle }; }"""
    )


def tab_to(
    page: Page, wanted: Callable[[dict[str, Any]], bool], presses: int = 60
) -> dict[str, Any]:
    """Press Tab until the focused element is `wanted`; it must show its focus."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        focused = _focus(page)
        if wanted(focused):
            assert focused["outline"] != "none", f"no visible focus on {focused}"
            return focused
    raise AssertionError(f"Tab never reached the element; last focused {_focus(page)}")


def test_a_run_is_approved_with_the_keyboard_alone(browser: Browser, inbox: Served) -> None:
    run_id = inbox.start("refund", {"customer": "Kim", "amount": 15})
    context = browser.new_context(base_url=inbox.url)
    try:
        page = opened(context)
        page.goto("/login")
        assert _focus(page)["tag"] == "INPUT"  # the name field has the focus
        page.keyboard.type("lena")
        page.keyboard.press("Tab")
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
        tab_to(page, lambda f: (f["href"] or "").endswith(f"/runs/{run_id}"))
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Refund 15 EUR to Kim")).to_be_visible()
        tab_to(page, lambda f: f["tag"] == "BUTTON" and f["text"] == "Approve")
        page.keyboard.press("Enter")
        expect(page.get_by_role("status")).to_contain_text("Approved.")
    finally:
        context.close()
    assert [d.decided_by for d in inbox.store.decisions(run_id)] == ["lena (finance)"]


def test_a_post_without_its_csrf_token_is_refused(
    inbox: Served, people: Callable[..., Page]
) -> None:
    run_id = inbox.start("refund", {"customer": "Eve", "amount": 7})
    lena, mia = people("lena"), people("mia")
    lena.goto(f"/runs/{run_id}")
    form = form_of(lena, "approve")
    someone_elses = form_of(mia, "logout")["csrf"]
    for csrf in (None, "made-up", someone_elses):
        sent = {k: v for k, v in form.items() if k != "csrf"}
        if csrf is not None:
            sent["csrf"] = csrf
        refused = lena.request.post(f"/runs/{run_id}/approve", form=sent)
        assert refused.status == 403
        assert "This form has expired" in refused.text()
    assert inbox.store.run(run_id).status == "escalated"
    assert inbox.store.decisions(run_id) == []


def test_failed_sign_ins_are_limited(
    tmp_path: Path, browser: Browser, payments: ScriptedServer
) -> None:
    served = serve(tmp_path, payments.url)
    context = browser.new_context(base_url=served.url)
    try:
        page = opened(context)
        said = []
        for name, password in [("nobody", "wrong password"), *[("lena", "wrong password")] * 4]:
            said.append(_sign_in(page, name, password))
        assert said == [(401, "That name and password do not match an account.")] * 5
        status, problem = _sign_in(page, "lena", PASSWORD)  # right, but too late
        assert status == 429
        assert problem.startswith("Too many failed sign-ins for this name or from this address.")
    finally:
        context.close()
        served.stop()


def _sign_in(page: Page, name: str, password: str) -> tuple[int, str]:
    page.goto("/login")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(password)
    with page.expect_navigation() as sent:
        page.get_by_role("button", name="Sign in").click()
    return sent.value.status, page.get_by_role("alert").inner_text()


def test_a_dead_letter_is_retried_then_dropped(
    inbox: Served, payments: ScriptedServer, people: Callable[..., Page]
) -> None:
    payments.script("/notice", *[Reply(500, "down")] * 4)
    run_id = inbox.start("notices", {"to": "partner@example.org"})
    assert inbox.store.run(run_id).status == "failed"
    page = people("lena")
    page.get_by_role("link", name="Dead letters").click()
    row = page.locator("tr", has=page.get_by_role("link", name=run_id))
    expect(row).to_contain_text("at send:")
    expect(row.locator("td").nth(3)).to_have_text("2")  # attempts
    row.get_by_role("button", name=f"Retry run {run_id}").click()
    expect(page.get_by_role("status")).to_contain_text("Sent back to run again.")
    eventually(lambda: inbox.store.run(run_id).status == "failed")  # the server is still down
    assert len(payments.requests_to("/notice")) == 4
    page.goto(f"/runs/{run_id}")
    expect(page.get_by_role("heading", name="Dead letter")).to_be_visible()
    page.goto("/dlq")
    page.locator("tr", has=page.get_by_role("link", name=run_id)).get_by_role(
        "button", name=f"Drop run {run_id}"
    ).click()
    expect(page.get_by_role("status")).to_contain_text("Dropped")
    expect(page.get_by_role("heading", name="Dead letter")).to_have_count(0)
    assert inbox.store.run(run_id).status == "archived"
    decided = [(d.decision, d.decided_by) for d in inbox.store.decisions(run_id)]
    assert decided == [("retried", "lena"), ("dropped", "lena")]


def test_screenshots_are_png(screenshots: Path) -> None:
    for name in ("inbox-queue", "inbox-run", "inbox-diff"):
        shot = screenshots / f"{name}.png"
        if shot.exists():
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
