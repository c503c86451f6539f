"""Secret values, in every form they can take on their way out, and their removal from
text.

A secret leaves runner in more shapes than its raw value: an error message shows it
escaped (`'tok\\n'`, `b'tok\\r'`, `"tok\\u00e9"`), a URL carries it percent-encoded, a
Basic auth header base64-encoded, a server may echo any of these, and an error body is
cut at a fixed length, perhaps in the middle of one. `SecretForms` knows them all:

- the raw value, and the value stripped of surrounding whitespace (a secret read from a
  file often ends in a newline);
- escaped as `json.dumps` writes it (ASCII only, and not), as `repr` and `ascii`
  write a string, as `repr` writes its UTF-8 bytes (httpx's errors), and HTML-escaped;
- percent-encoded: `quote` with no safe characters, with `/`, with the characters httpx
  leaves alone in a path and in a query, `quote_plus`; each with lower-case hex too;
- base64 (standard and URL-safe) at each of the three alignments the secret can have
  inside a longer encoded text (`user:secret`): the characters that only the secret's
  own bits decide;
- a prefix of any of these, at least `PARTIAL_LENGTH` characters long, where a text
  was cut: at the end of a text, or just before the `; #` that joins the messages of a
  step's attempts ("failed after 2 attempts: #1 ... HTTP 500: ...tok-9f3; #2 ...").
  Elsewhere a prefix is left: a secret with a public beginning (`https://hooks.`,
  `sk-proj-`) would blank that beginning in every text. A cut within the first five
  characters of a secret shows those, usually a public prefix (`sk-`, `ghp_`) too.

A secret shorter than `MIN_SECRET_LENGTH` characters cannot be removed without mangling
other text (every "ab" in every output), and redacting it would show where it occurs:
runs are refused instead (see runner.runtime.redact).
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

# NIST SP 800-63B's floor for memorized secrets; API keys and tokens are far longer.
MIN_SECRET_LENGTH = 8
PARTIAL_LENGTH = 6
REDACTED = "[secret {}]"
CUT_BEFORE = "; #"  # how RetriesExhaustedError joins its attempts' messages

# What httpx leaves as it is when it normalises a URL's path and query (besides letters,
# digits and `_.-~`, which `quote` never encodes).
_PATH_SAFE = "!$%&'()*+,/:;=@[\\]^|"
_QUERY_SAFE = _PATH_SAFE + "?`{}"
_URLSAFE = str.maketrans("+/", "-_")
_HEX = re.compile(r"%[0-9A-F]{2}")


def forms(value: str) -> list[str]:
    """Every form of `value` worth looking for, longest first."""
    found: set[str] = set()
    for text in {value, value.strip()}:
        found |= _escaped(text) | _percent_encoded(text) | _base64(text)
    return sorted((f for f in found if len(f) >= PARTIAL_LENGTH), key=lambda f: (-len(f), f))


def _escaped(text: str) -> set[str]:
    return {
        text,
        json.dumps(text)[1:-1],
        json.dumps(text, ensure_ascii=False)[1:-1],
        repr(text)[1:-1],
        ascii(text)[1:-1],
        repr(text.encode("utf-8"))[2:-1],
        html.escape(text),
    }


def _percent_encoded(text: str) -> set[str]:
    encoded = {quote(text, safe=safe) for safe in ("", "/", _PATH_SAFE, _QUERY_SAFE)}
    encoded |= {quote_plus(text, safe=""), quote_plus(text)}
    return encoded | {_HEX.sub(lambda m: m.group().lower(), e) for e in encoded}


def _base64(text: str) -> set[str]:
    """The part of a base64 text that only `text`'s bits decide, at each alignment."""
    data = text.encode("utf-8")
    found: set[str] = set()
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + data).decode("ascii")
        start, end = -(-8 * shift // 6), 8 * (shift + len(data)) // 6
        middle = encoded[start:end]
        found |= {middle, middle.translate(_URLSAFE)}
    return found


@dataclass(frozen=True)
class SecretForms:
    """The forms of each secret, by name; removes them from text."""

    by_name: Mapping[str, tuple[str, ...]]
    partial: bool = True  # also remove prefixes where a text was cut (see above)

    @classmethod
    def of(cls, secrets: Mapping[str, str], *, partial: bool = True) -> SecretForms:
        """The forms of every secret long enough to be recognised."""
        return cls(
            {
                name: tuple(forms(value))
                for name, value in secrets.items()
                if len(value.strip()) >= MIN_SECRET_LENGTH
            },
            partial,
        )

    def __bool__(self) -> bool:
        return bool(self.by_name)

    def redact(self, text: str) -> str:
        """`text` with every form of every secret replaced by `[secret NAME]`."""
        spans = sorted(
            (start, -end, name)
            for name, found in self.by_name.items()
            for form in found
            for start, end in _matches(text, form, self.partial)
        )
        if not spans:
            return text
        parts: list[str] = []
        done = 0
        for start, neg_end, name in spans:
            end = -neg_end
            if end <= done:
                continue  # inside a span already replaced
            if start >= done:
                parts += [text[done:start], REDACTED.format(name)]
            done = end
        return "".join(parts) + text[done:]


def _matches(text: str, form: str, partial: bool) -> Iterable[tuple[int, int]]:
    """(start, end) of each occurrence of `form` in `text`, and with `partial`, of its
    longest prefix of at least PARTIAL_LENGTH characters where the text was cut."""
    head = form[:PARTIAL_LENGTH] if partial else form
    start = text.find(head)
    while start != -1:
        end = start + len(head)
        while end - start < len(form) and end < len(text) and text[end] == form[end - start]:
            end += 1
        if end - start == len(form) or end == len(text) or text.startswith(CUT_BEFORE, end):
            yield start, end
        start = text.find(head, start + 1)
