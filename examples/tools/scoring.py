"""Score a sales lead from its enrichment data: a small, explainable points table.

Used by examples/leads.yaml. Deterministic on purpose: the same lead always gets the
same score, so a re-run or a flow test never changes a routing decision.
"""

from __future__ import annotations

from typing import Any

TARGET_INDUSTRIES = {"software", "financial services", "logistics", "healthcare"}
SENIOR_WORDS = ("chief", "head", "vp", "vice president", "director", "founder", "owner")
FREE_MAIL = {"gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "icloud.com", "gmx.de"}


def score(email: str, company: dict[str, Any], person: dict[str, Any],
          source: str = "unknown") -> dict[str, Any]:
    """A score from 0 to 100 and the reasons that made it, largest first."""
    points: list[tuple[int, str]] = []
    employees = company.get("employees") or 0
    if employees >= 1000:
        points.append((30, "enterprise: 1000+ employees"))
    elif employees >= 100:
        points.append((20, "mid-market: 100-999 employees"))
    elif employees >= 10:
        points.append((10, "small business: 10-99 employees"))
    if str(company.get("industry", "")).lower() in TARGET_INDUSTRIES:
        points.append((20, f"target industry: {company['industry']}"))
    if str(company.get("country", "")).upper() in {"DE", "AT", "CH", "NL", "FR", "GB", "US"}:
        points.append((10, f"served market: {company['country']}"))
    title = str(person.get("title") or "").lower()
    if any(word in title for word in SENIOR_WORDS):
        points.append((25, f"decision maker: {person['title']}"))
    elif title:
        points.append((5, f"known role: {person['title']}"))
    if source in ("demo_request", "pricing_page"):
        points.append((15, f"high-intent source: {source}"))
    domain = email.rpartition("@")[2].lower()
    if domain in FREE_MAIL:
        points.append((-20, f"free e-mail address: {domain}"))
    total = max(0, min(100, sum(p for p, _ in points)))
    reasons = [reason for _, reason in sorted(points, key=lambda p: -abs(p[0]))]
    return {"score": total, "reasons": reasons}
