"""A small knowledge base for the support flow: articles matched by shared words."""

from __future__ import annotations

ARTICLES = [
    {"title": "Reset your password", "url": "https://help.example.com/password",
     "words": {"password", "reset", "login", "locked", "sign"}},
    {"title": "Update billing details", "url": "https://help.example.com/billing",
     "words": {"billing", "card", "invoice", "payment", "charge", "charged"}},
    {"title": "Export your data", "url": "https://help.example.com/export",
     "words": {"export", "csv", "download", "data"}},
]


def search(query: str) -> list[dict[str, str]]:
    """Articles that share a word with the query, best match first."""
    words = {w.strip(".,!?").lower() for w in query.split()}
    scored = [(len(words & a["words"]), a) for a in ARTICLES]
    return [{"title": a["title"], "url": a["url"]}
            for score, a in sorted(scored, key=lambda pair: -pair[0]) if score > 0]
