"""Detectors of data that must not leave in a text: emails, phone numbers, card
numbers, IBANs and API keys.

Each aims to catch real data and let lookalikes pass: a card number must pass the Luhn
check, an IBAN its mod-97 check; dates and IP addresses are not phone numbers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_PHONE = re.compile(r"(?<![\w+(])(?:\+|\()?\d[\d ().-]{6,}\d(?!\w)")
_NOT_PHONE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,3}(?:\.\d{1,3}){3}")  # dates, IP addresses
_DIGIT_GROUPS = re.compile(r"\d+(?:[ -]\d+)*")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,8}")
_SECRET = re.compile(
    r"\b(?:sk-[A-Za-z0-9_-]{20,}|(?:ghp|gho|ghs|ghu)_[A-Za-z0-9]{30,}|AKIA[0-9A-Z]{16}"
    r"|xox[abpr]-[A-Za-z0-9-]{10,}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]+)"
)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum that every payment card number passes."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char) * (2 if i % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """The ISO 13616 mod-97 check of an IBAN."""
    compact = text.replace(" ", "")
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def _spans(
    pattern: re.Pattern[str], text: str, accept: Callable[[str], bool] = lambda _: True
) -> Iterator[tuple[int, int]]:
    for match in pattern.finditer(text):
        if accept(match.group()):
            yield match.span()


def _phone_ok(found: str) -> bool:
    return 8 <= len(re.sub(r"\D", "", found)) <= 15 and not _NOT_PHONE.fullmatch(found)


def _group_windows(
    pattern: re.Pattern[str], text: str, valid: Callable[[str], bool], split: str
) -> Iterator[tuple[int, int]]:
    """Spans made of whole groups of a match (groups split by `split`), longest first,
    that pass `valid`: a card number is found with a date after it or digits before it."""
    for match in pattern.finditer(text):
        bounds = [
            (m.start() + match.start(), m.end() + match.start())
            for m in re.finditer(split, match.group())
        ]
        found = None
        for size in range(len(bounds), 0, -1):
            for first in range(len(bounds) - size + 1):
                start, end = bounds[first][0], bounds[first + size - 1][1]
                if valid(text[start:end]):
                    found = (start, end)
                    break
            if found:
                break
        if found:
            yield found


def _card_ok(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _iban_ok(candidate: str) -> bool:
    compact = candidate.replace(" ", "")
    return 15 <= len(compact) <= 34 and compact[:2].isalpha() and iban_valid(compact)


def _cards(text: str) -> Iterator[tuple[int, int]]:
    return _group_windows(_DIGIT_GROUPS, text, _card_ok, r"\d+")


def _ibans(text: str) -> Iterator[tuple[int, int]]:
    return _group_windows(_IBAN, text, _iban_ok, r"[A-Z0-9]+")


def _phones(text: str) -> Iterator[tuple[int, int]]:
    """Phone numbers, except the digits of an IBAN or a card number."""
    taken = [*_ibans(text), *_cards(text)]
    for start, end in _spans(_PHONE, text, _phone_ok):
        if not any(start < t_end and t_start < end for t_start, t_end in taken):
            yield start, end


DETECTORS: dict[str, Callable[[str], Iterator[tuple[int, int]]]] = {
    "email": lambda text: _spans(_EMAIL, text),
    "phone": _phones,
    "credit_card": _cards,
    "iban": _ibans,
    "secret": lambda text: _spans(_SECRET, text),
}
