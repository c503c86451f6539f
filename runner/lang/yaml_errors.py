"""Explain a YAML parse error in words an author can act on, and where to act.

The parser says which rule broke ("did not find expected key") at the token where it
broke. An author needs the cause: a line indented unlike the lines it belongs with, a
`:` with no space after it, a value that needs quotes, a bracket never closed. This
module reads the parser's two marks (where the construct began, where it broke) and the
indentation of the lines above them, and returns the place and the words; None when it
has nothing better to say than the parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

# A line's layout: list dashes, then a key and its `:` (followed by a space or the end).
_LINE = re.compile(
    r"(?P<indent> *)(?P<dashes>(?:-(?: +|$))*)"
    r"(?:(?P<key>\"[^\"]*\"|'[^']*'|[^\s#:][^:]*?):(?: +(?P<value>.*)|$))?"
)
# A `key:value` written without the space YAML needs after the `:`.
_NO_SPACE = re.compile(r" *(?:- +)?(?P<key>[A-Za-z_][\w.-]*):(?P<value>[^\s/:].*)")

# The line breaks YAML counts lines by.
_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")

Explained = tuple[int, int, str]  # 1-based line and column, and the message


@dataclass
class Line:
    """One line of the file, as its layout: 1-based number, column, list item, key."""

    number: int
    text: str

    @cached_property
    def parts(self) -> re.Match[str]:
        found = _LINE.match(self.text)
        assert found is not None  # every part of the pattern may be empty
        return found

    @property
    def col(self) -> int:
        """The column the line's first character is in."""
        return len(self.parts["indent"]) + 1

    @property
    def item(self) -> bool:
        return bool(self.parts["dashes"])

    @property
    def content_col(self) -> int:
        """The column of what follows the list dashes (the line's column if none)."""
        return self.col + len(self.parts["dashes"])

    @property
    def key(self) -> str | None:
        return self.parts["key"]

    def label(self) -> str:
        """How a message names the line: its key, else its first word."""
        words = self.text[self.content_col - 1 :].split()
        return f"`{self.key}`" if self.key else f"`{words[0] if words else '-'}`"


@dataclass(frozen=True)
class Level:
    """A column that a line above opens: a key's, or a list item's dash."""

    col: int
    line: Line
    dash: bool

    def label(self) -> str:
        return "the `-`" if self.dash else self.line.label()


def explain(text: str, exc: Any) -> Explained | None:
    """The place and words for a parse error, or None to keep the parser's own."""
    lines = [Line(i + 1, t) for i, t in enumerate([*_BREAK.split(text), ""])]
    problem, context = exc.problem or "", exc.context or ""
    pm, cm = exc.problem_mark, exc.context_mark
    if pm is None or pm.line >= len(lines) or (cm is not None and cm.line >= len(lines)):
        return None
    where = (lines, pm.line, pm.column)
    if problem.startswith("did not find expected ','") and cm is not None:
        return _flow_collection(lines, cm, pm, problem[-2])
    if context in ("while scanning an alias", "while scanning an anchor") and cm is not None:
        return _bad_start(lines, cm)
    if problem == "found character that cannot start any token":
        return _bad_start(lines, pm)
    if problem == "could not find expected ':'" and cm is not None:
        return _no_colon(lines[cm.line])
    if problem == "mapping values are not allowed in this context":
        return _mapping_value(*where)
    if problem in (
        "did not find expected key",
        "did not find expected '-' indicator",
        "did not find expected <document start>",
    ):
        return _after_quote(*where) or _misplaced(lines, cm, pm)
    return None


def _flow_collection(lines: list[Line], cm: Any, pm: Any, closer: str) -> Explained:
    opener = "{" if closer == "}" else "["
    what = "mapping" if closer == "}" else "list"
    found = lines[pm.line].text[pm.column : pm.column + 1]
    if found in "]}" and found and found != closer:
        message = (
            f"this `{found}` closes the {what} opened with `{opener}` at line {cm.line + 1}, "
            f"column {cm.column + 1}: close that {what} with `{closer}` first (brackets "
            "close in the reverse order they open)"
        )
        return pm.line + 1, pm.column + 1, message
    if pm.line > cm.line:
        message = (
            f"this `{opener}` is never closed: end the {what} with `{closer}` "
            f"(if it goes on over several lines, put `,` between its items)"
        )
        return cm.line + 1, cm.column + 1, message
    message = (
        f"the {what} opened with `{opener}` at column {cm.column + 1} needs a `,` between "
        "its items here; if a value holds `:`, `,`, `[` or `{`, put that value in quotes"
    )
    return pm.line + 1, pm.column + 1, message


def _bad_start(lines: list[Line], pm: Any) -> Explained | None:
    char = lines[pm.line].text[pm.column : pm.column + 1]
    meanings = {"*": "refers to an anchor", "&": "names an anchor"}
    if char not in ("@", "`", "%", *meanings):
        return None
    meaning = meanings.get(char, "is reserved")
    message = (
        f"YAML text cannot start with `{char}` (it {meaning}): put the text in quotes, "
        f"or take the `{char}` out"
    )
    return pm.line + 1, pm.column + 1, message


def _no_colon(line: Line) -> Explained | None:
    """A line inside a mapping that is not `key: value`."""
    missing = _missing_space(line)
    if missing or line.key is not None:
        return missing
    message = (
        "this line is not `key: value`, but the lines around it are; if it goes on from "
        "the value above, indent it more than that value's key, or put that whole value "
        "in quotes"
    )
    return line.number, line.col, message


def _missing_space(line: Line) -> Explained | None:
    """`key:value` where `key: value` was meant: YAML reads it as one piece of text."""
    found = _NO_SPACE.fullmatch(line.text.rstrip())
    if found is None or line.key is not None:
        return None
    key, value = found["key"], found["value"]
    value = value if len(value) <= 20 else value[:16] + " ..."
    message = (
        f"the key `{key}` needs a space after its `:` (`{key}: {value}`); without it "
        "YAML reads the line as text, not as a key and its value"
    )
    return line.number, found.end("key") + 1, message


def _mapping_value(lines: list[Line], row: int, column: int) -> Explained | None:
    """A `:` where YAML expects no key: in a value, or on a line indented too far."""
    line = lines[row]
    if missing := _missing_space(line):
        return missing
    if line.key is not None and column > line.parts.end("key"):
        message = (
            "this value holds `: `, which YAML reads as the start of another key: "
            f"put the whole value of `{line.key}` in quotes"
        )
        return row + 1, column + 1, message
    above = _previous(lines, row)
    if above is not None and (missing := _missing_space(above)):
        return missing
    if above is not None and above.key is None and not above.item and line.key is not None:
        message = (
            f"{line.label()} goes on from the text on line {above.number}, which is not "
            "`key: value`: YAML reads the lines as one value, and a `: ` cannot be in it "
            f"unquoted; if line {above.number} is meant as a key, write it `key: value`; "
            "if the value runs over several lines, put all of it in quotes"
        )
        return line.number, line.col, message
    return _misplaced_line(line, levels(lines, row))


def _after_quote(lines: list[Line], row: int, column: int) -> Explained | None:
    """Text after the closing quote of a quoted value."""
    line = lines[row]
    before = line.text[:column].rstrip()
    value = line.parts["value"] if line.key else line.text[line.content_col - 1 :]
    if not value or value[0] not in "'\"" or not before.endswith(value[0]):
        return None
    inner = "write a `'` inside it as `''`" if value[0] == "'" else 'write a `"` inside it as `\\"`'
    message = (
        "the quoted value ends before the line does, and YAML allows nothing after the "
        f"closing quote: put the whole value in quotes ({inner})"
    )
    return row + 1, column + 1, message


def _misplaced(lines: list[Line], cm: Any, pm: Any) -> Explained | None:
    line = lines[pm.line]
    if missing := _missing_space(line):
        return missing
    if line.text.lstrip().startswith(":"):
        message = "this line starts with `:`, so its value has no key: write the key before it"
        return line.number, line.col, message
    started = lines[cm.line] if cm is not None else None
    if started is not None and re.match(r" *-[^\s-]", started.text):
        word = started.text.split(":")[0].strip()
        message = (
            f"a list item needs a space after its `-`: `{word}` reads as a key, "
            f"not as a list item; write `- {word[1:]}`"
        )
        return started.number, started.col, message
    return _misplaced_line(line, levels(lines, pm.line))


def levels(lines: list[Line], row: int) -> list[Level]:
    """The columns the lines above `row` open, innermost first: each is the column of a
    key or list dash on the nearest line above that starts left of the previous one."""
    found: list[Level] = []
    limit = 10**9
    for line in reversed(lines[:row]):
        if line.key is None and not line.item:
            continue  # blank, a comment, or text that goes on from a value
        if line.key is not None and line.content_col < limit:
            found.append(Level(line.content_col, line, dash=False))
            limit = line.content_col
        if line.item and line.col < limit:
            found.append(Level(line.col, line, dash=True))
            limit = line.col
        if limit == 1:
            break
    return found


def _misplaced_line(line: Line, found: list[Level]) -> Explained | None:
    """Why `line` does not fit under the lines above it, by its indentation."""
    col = line.col
    if line.item:
        dashes = [lv for lv in found if lv.dash and lv.col != col]
        if dashes and not any(lv.dash and lv.col == col for lv in found):
            nearest = min(dashes, key=lambda lv: abs(lv.col - col))
            message = (
                f"this list item is indented differently from the list items above it "
                f"(line {nearest.line.number} starts at column {nearest.col}, this one at "
                f"column {col}); align it with them"
            )
            return line.number, col, message
    same = next((lv for lv in found if lv.col == col), None)
    if same is not None:
        return _beside(line, same)
    return _between(line, found)


def _beside(line: Line, level: Level) -> Explained | None:
    """`line` starts in the column of a line above, yet does not fit there."""
    other = level.line
    if level.dash and not line.item:
        message = (
            f"{line.label()} starts in the column of the `-` on line {other.number}, so it "
            f"is neither inside that list item nor a new one: indent it to column "
            f"{other.content_col} to line up with {other.label()}, or start it with `- ` "
            "to make a new item"
        )
        return line.number, line.col, message
    if line.item and not level.dash:
        message = (
            f"this list item is in line with {other.label()} (line {other.number}), a key "
            "of a mapping: a list goes under a key of its own (`key:`, then the items "
            "indented below it)"
        )
        return line.number, line.col, message
    return None


def _between(line: Line, found: list[Level]) -> Explained | None:
    """`line` starts in a column no line above opens."""
    col = line.col
    inner = next((lv for lv in reversed(found) if lv.col > col), None)
    outer = next((lv for lv in found if lv.col < col), None)
    what = "this list item" if line.item else line.label()
    if outer is not None and inner is None:
        key = outer.label()
        valued = (
            f", but {key} already has a value; align it with {key}, or, if it goes on "
            f"from the value of {key}, put that whole value in quotes"
            if outer.line.parts["value"]
            else f"; align it with {key}"
        )
        message = (
            f"{what} is indented more than {key} on line {outer.line.number} (column {col} "
            f"against column {outer.col}){valued}"
        )
        return line.number, col, message
    if inner is None:
        return None
    shown = f"{inner.label()} on line {inner.line.number} starts at column {inner.col}"
    if outer is not None:
        shown += f", {outer.label()} on line {outer.line.number} at column {outer.col}"
    message = (
        f"{what} starts at column {col}, which lines up with no line above it ({shown}); "
        "the keys of one mapping, and the items of one list, start in the same column: "
        "align it with the ones it belongs with"
    )
    return line.number, col, message


def _previous(lines: list[Line], row: int) -> Line | None:
    """The nearest line above `row` that holds something other than a comment."""
    for line in reversed(lines[:row]):
        if line.text.strip() and not line.text.lstrip().startswith("#"):
            return line
    return None
