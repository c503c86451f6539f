"""examples/refund.yaml against real HTTP servers: a refund over the limit waits for
finance, and what finance approves is exactly what is paid; a rejection pays nothing;
an expiry takes `on_expired`; a switch escalation has nothing to edit."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from scripted_server import Reply, ScriptedServer

from runner.cli.main import main
from runner.lang.load import load_flow
from runner.runtime.engine import Engine
from runner.store.records import now
from runner.store.sql import SqlStore
from runner.store.tables import runs
from runner.testing import FakeLLM

ROOT = Path(__file__).resolve().parents[2]
ORDER = {
    "id": "O-7",
    "status": "delivered",
    "total": 500.0,
    "refunded": 0.0,
    "currency": "EUR",
    "items": [],
}


def request(amount: float) -> dict[str, Any]:
    return {
        "request": {
            "id": "R-7",
            "order_id": "O-7",
            "customer_email": "ana@example.com",
            "amount": amount,
            "currency": "EUR",
            "reason": "It broke.",
        }
    }


def assessment(amount: float) -> dict[str, Any]:
    return {
        "decision": "refund",
        "category": "damaged",
        "amount": amount,
        "rationale": "Damaged items are refunded in full.",
        "confidence": 0.95,
    }


class Refunds:
    """The refund example on a store, with the shop, payments and helpdesk APIs on one
    real HTTP server; runs start in-process with a scripted model, and people decide
    through the command line."""

    def __init__(
        self, tmp_path: Path, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self.server = server
        self.db = f"sqlite:///{tmp_path / 'runs.db'}"
        self.env = {
            "SHOP_API_URL": server.url,
            "PAYMENTS_API_URL": server.url,
            "HELPDESK_URL": server.url,
            "SHOP_API_TOKEN": "shop-secret-1",
            "PAYMENTS_API_KEY": "pay-secret-1",
            "HELPDESK_TOKEN": "desk-secret-1",
        }
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)
        server.script("/orders/O-7", *[Reply(200, ORDER)] * 3)
        server.script("/v1/refunds", Reply(200, {"refund_id": "re_7", "status": "succeeded"}))
        server.script("/requests/R-7/replies", Reply(200, {"ok": True}))

    def start(self, asked: float, assessed: float) -> str:
        store = SqlStore(self.db)
        engine = Engine(store, llm=FakeLLM({"assess": [assessment(assessed)]}), environ=self.env)
        result = engine.start(load_flow(ROOT / "examples" / "refund.yaml"), request(asked))
        store.close()
        assert result.status == "escalated", result
        return result.run_id

    def cli(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
        code = main([*argv, "--db", self.db])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    def record(self, run_id: str) -> Any:
        store = SqlStore(self.db)
        try:
            return store.run(run_id), store.decisions(run_id)
        finally:
            store.close()

    def paid(self) -> list[Any]:
        return [r.json() for r in self.server.requests_to("/v1/refunds")]


@pytest.fixture
def refunds(
    tmp_path: Path, http_server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> Refunds:
    return Refunds(tmp_path, http_server, monkeypatch)


def test_finance_lowers_the_amount_and_exactly_that_is_paid(
    refunds: Refunds, capsys: pytest.CaptureFixture[str]
) -> None:
    run = refunds.start(asked=480.0, assessed=480.0)
    record, _ = refunds.record(run)
    assert (record.failed_step, record.reason) == ("sign_off", "Refund 480.0 EUR on order O-7")
    assert refunds.paid() == []
    code, out, err = refunds.cli(
        capsys,
        "review",
        "approve",
        run,
        "--set",
        "amount=300",
        "--as",
        "Lena (finance)",
        "--format",
        "json",
    )
    assert (code, json.loads(out)["status"]) == (0, "completed"), err
    [paid] = refunds.paid()
    assert (paid["amount"], paid["order_id"]) == (300, "O-7")
    [reply] = refunds.server.requests_to("/requests/R-7/replies")
    assert "we have refunded 300 EUR" in reply.json()["body"]
    _, [decision] = refunds.record(run)
    assert (decision.decision, decision.decided_by, decision.diff) == (
        "approved",
        "Lena (finance)",
        [{"path": "amount", "before": 480.0, "after": 300}],
    )


def test_a_rejected_refund_pays_nothing(
    refunds: Refunds, capsys: pytest.CaptureFixture[str]
) -> None:
    run = refunds.start(asked=480.0, assessed=480.0)
    code, out, _ = refunds.cli(
        capsys, "review", "reject", run, "--reason", "fraud pattern", "--as", "Lena (finance)"
    )
    assert (code, out) == (0, f"run {run} rejected by Lena (finance): fraud pattern\n")
    record, _ = refunds.record(run)
    assert record.status == "rejected"
    assert refunds.paid() == []


def test_an_unreviewed_refund_expires_to_the_dead_letter_queue(
    refunds: Refunds, capsys: pytest.CaptureFixture[str]
) -> None:
    run = refunds.start(asked=480.0, assessed=480.0)
    record, _ = refunds.record(run)
    assert record.due_at is not None
    assert (
        timedelta(hours=47, minutes=59) < record.due_at - record.updated_at <= timedelta(hours=48)
    )
    store = SqlStore(refunds.db)
    with store.engine.begin() as conn:  # two days later
        conn.execute(
            runs.update().where(runs.c.id == run).values(due_at=now() - timedelta(seconds=1))
        )
    store.close()
    code, _, err = refunds.cli(capsys, "runs")
    assert (code, err) == (0, f"runner: review of run {run} expired -> dead_letter\n")
    record, [decision] = refunds.record(run)
    assert (record.status, record.position) == ("failed", "dead_letter")
    assert (decision.decision, decision.note) == ("expired", "unreviewed for 172800 s")
    assert refunds.paid() == []


def test_only_finance_decides(refunds: Refunds, capsys: pytest.CaptureFixture[str]) -> None:
    run = refunds.start(asked=480.0, assessed=480.0)
    code, _, err = refunds.cli(capsys, "review", "approve", run, "--as", "Bob (support)")
    assert code == 1
    assert err == (
        "runner: only finance may decide at `sign_off`; 'Bob (support)' is not one "
        'of them (name your group in parentheses: --as "Your Name (finance)")\n'
    )
    assert refunds.paid() == []


def test_a_small_refund_needs_no_one(refunds: Refunds) -> None:
    store = SqlStore(refunds.db)
    engine = Engine(store, llm=FakeLLM({"assess": [assessment(40.0)]}), environ=refunds.env)
    result = engine.start(load_flow(ROOT / "examples" / "refund.yaml"), request(40.0))
    store.close()
    assert result.status == "completed"
    assert [p["amount"] for p in refunds.paid()] == [40.0]


def test_a_switch_escalation_names_its_case_and_has_nothing_to_edit(
    refunds: Refunds, capsys: pytest.CaptureFixture[str]
) -> None:
    run = refunds.start(asked=100.0, assessed=120.0)  # more than the customer asked for
    record, _ = refunds.record(run)
    assert (record.failed_step, record.reason) == (
        "route",
        "route: case 4, steps.assess.output.amount = 120.0 > input.request.amount = 100.0",
    )
    code, _, err = refunds.cli(
        capsys, "review", "approve", run, "--set", "amount=100", "--as", "Lena (finance)"
    )
    assert code == 1
    assert err == (
        f"runner: run {run} stopped at `route`, a route with nothing to edit: "
        "approve or reject it as it is; to let a person change values, add an "
        "`approval` step to the flow\n"
    )
    assert refunds.paid() == []
