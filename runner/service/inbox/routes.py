"""The inbox's routes, added to `runner serve`'s app (runner.service.api)."""

from __future__ import annotations

from starlette.routing import Route

from runner.service.inbox import decisions, screens
from runner.service.inbox.app import form, page


def routes() -> list[Route]:
    """Every route of the inbox (runner.service.inbox.app lists them)."""
    return [
        Route("/", page(screens.queue), methods=["GET"]),
        Route("/dlq", page(screens.dead_letters), methods=["GET"]),
        Route("/runs/{id}", page(screens.run_page), methods=["GET"]),
        Route("/runs/{id}/diagram.svg", page(screens.diagram), methods=["GET"]),
        Route("/runs/{id}/approve", form(decisions.approve), methods=["POST"]),
        Route("/runs/{id}/edit", form(decisions.edit), methods=["POST"]),
        Route("/runs/{id}/reject", form(decisions.reject), methods=["POST"]),
        Route("/runs/{id}/retry", form(decisions.retry), methods=["POST"]),
        Route("/runs/{id}/drop", form(decisions.drop), methods=["POST"]),
        Route("/login", screens.login_page, methods=["GET"]),
        Route("/login", screens.login, methods=["POST"]),
        Route("/logout", form(screens.logout), methods=["POST"]),
        Route("/static/inbox.css", screens.style_sheet, methods=["GET"]),
    ]
