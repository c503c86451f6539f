"""Read a YAML file into plain data, keeping the line and column of every key and value.

The reader builds its tree from the parser's events instead of PyYAML's composer so
that it can bound what a hostile file costs (size, depth, alias expansion) and resolve
scalars by YAML 1.2 rules: `yes`, `no`, `on`, `off` and dates stay text. Duplicate keys,
keys that are not text, tags and malformed YAML are located problems.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runner.core.errors import FlowError, Problem
from runner.lang.yaml_errors import explain

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_VALUES = 100_000

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_NULL = {"", "~", "null", "Null", "NULL"}
_TRUE = {"true", "True", "TRUE"}
_FALSE = {"false", "False", "FALSE"}
_INF = {".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"}
_NAN = {".nan", ".NaN", ".NAN"}
_STR_TAG = "tag:yaml.org,2002:str"

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Location:
    """A 1-based line and column in a source file."""

    line: int
    col: int


@dataclass(frozen=True)
class Document:
    """A parsed YAML file: its data and where each key and value stands in the text."""

    file: str
    text: str
    data: Any
    keys: dict[Path_, Location] = field(repr=False)
    values: dict[Path_, Location] = field(repr=False)

    def locate(self, path: Path_, *, key: bool = False) -> Location:
        """Where `path` is written; for a path that does not exist, its nearest parent."""
        while True:
            found = (self.keys if key else self.values).get(path) or self.values.get(path)
            if found or not path:
                return found or Location(1, 1)
            path = path[:-1]

    def problem(
        self, path: Path_, message: str, *, key: bool = False, severity: str = "error"
    ) -> Problem:
        """A problem located at `path`, with the path spelled as the author sees it."""
        where = self.locate(path, key=key)
        return Problem(self.file, where.line, where.col, spell_path(path), message, severity)


def spell_path(path: Path_) -> str:
    """`("steps", 2, "retry")` -> `steps[2].retry`; the empty path is the top level."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top level)"


def load_file(path: str | Path) -> Document:
    """Read and parse one YAML file; raises FlowError with every problem found."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise FlowError([Problem(name, 1, 1, "(file)", f"cannot read: {exc.strerror}")]) from exc
    return load_bytes(raw, name)


def load_bytes(raw: bytes, name: str) -> Document:
    """Parse YAML text given as bytes; `name` is the file name used in problems."""
    if len(raw) > MAX_BYTES:
        message = f"file is {len(raw):,} bytes; flow files are limited to {MAX_BYTES:,} bytes"
        raise FlowError([Problem(name, 1, 1, "(file)", message)])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        message = f"not UTF-8 text: byte 0x{raw[exc.start]:02x} cannot be decoded"
        raise FlowError([Problem(name, line, col, "(file)", message)]) from exc
    return load_text(text, name)


def load_text(text: str, name: str) -> Document:
    """Parse YAML text; `name` is the file name used in problems."""
    try:
        root = _Builder(name).build(text)
    except yaml.MarkedYAMLError as exc:
        raise FlowError([_yaml_problem(name, text, exc)]) from exc
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        message = f"character 0x{exc.character:02x} is not allowed in YAML text"
        raise FlowError([Problem(name, line, col, "(file)", message)]) from exc
    except yaml.YAMLError as exc:
        raise FlowError([Problem(name, 1, 1, "(file)", f"invalid YAML: {exc}")]) from exc
    if root is None:
        raise FlowError([Problem(name, 1, 1, "(top level)", "the file is empty")])
    converter = _Converter(name, text)
    data = converter.convert(root, (), 0)
    if converter.problems:
        raise FlowError(converter.problems)
    return Document(name, text, data, converter.keys, converter.values)


def _yaml_problem(name: str, text: str, exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    what = " ".join(part for part in (exc.context, exc.problem) if part)
    if exc.problem and "end of stream" in exc.problem and exc.context_mark:
        # "found unexpected end of stream" points past the file; where it began helps.
        mark = exc.context_mark
        what = (
            f"{(exc.context or 'this').removeprefix('while scanning ')} that starts "
            "here never ends (a missing closing quote or bracket?)"
        )
    elif mark is not None and text[mark.index : mark.index + 1] == "\t":
        what = "a tab character: YAML is indented with spaces"
    elif explained := explain(text, exc):
        return Problem(name, *explained[:2], "(file)", explained[2])
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    return Problem(name, line, col, "(file)", f"invalid YAML: {what}")


class _Node:
    """A node of the YAML tree before conversion: kind is scalar, seq or map."""

    __slots__ = ("kind", "mark", "style", "tag", "value")

    def __init__(
        self, kind: str, mark: Any, value: Any, style: str | None = None, tag: str | None = None
    ) -> None:
        self.kind, self.mark, self.value, self.style, self.tag = kind, mark, value, style, tag


class _Builder:
    """Builds a node tree from parser events with an explicit stack (no recursion)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.anchors: dict[str, _Node] = {}
        self.open_anchors: set[str] = set()

    def build(self, text: str) -> _Node | None:
        roots: list[_Node] = []
        stack: list[tuple[_Node, str | None]] = []
        count = 0
        for event in self._events(text):
            if isinstance(event, yaml.DocumentStartEvent) and roots:
                self._fail(event.start_mark, "a flow file holds one YAML document; found more")
            count += 1
            if count > MAX_VALUES * 2:  # events: about two per value
                self._fail(event.start_mark, f"the document has more than {MAX_VALUES:,} values")
            node = self._node_for(event, stack)
            if node is None:
                continue
            if stack:
                stack[-1][0].value.append(node)
            else:
                roots.append(node)
        if len(roots) > 1:
            self._fail(roots[1].mark, "a flow file holds one YAML document; found more")
        return roots[0] if roots else None

    def _events(self, text: str) -> Iterator[Any]:
        loader = _Loader(text)
        try:
            while loader.check_event():
                yield loader.get_event()
        finally:
            loader.dispose()

    def _node_for(self, event: Any, stack: list[tuple[_Node, str | None]]) -> _Node | None:
        if isinstance(event, yaml.AliasEvent):
            return self._alias(event)
        if isinstance(event, yaml.ScalarEvent):
            tag = None if event.implicit[0] or event.implicit[1] else event.tag
            node = _Node("scalar", event.start_mark, event.value, event.style, tag)
            self._anchor(event.anchor, node)
            return node
        if isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= MAX_DEPTH:
                self._fail(event.start_mark, f"nested deeper than {MAX_DEPTH} levels")
            kind = "seq" if isinstance(event, yaml.SequenceStartEvent) else "map"
            node = _Node(kind, event.start_mark, [], tag=None if event.implicit else event.tag)
            self._anchor(event.anchor, node)
            if event.anchor:
                self.open_anchors.add(event.anchor)
            stack.append((node, event.anchor))
            return None
        if isinstance(event, yaml.CollectionEndEvent):
            node, anchor = stack.pop()
            self.open_anchors.discard(anchor or "")
            return node
        return None

    def _anchor(self, anchor: str | None, node: _Node) -> None:
        if anchor:
            self.anchors[anchor] = node

    def _alias(self, event: Any) -> _Node:
        if event.anchor in self.open_anchors:
            self._fail(event.start_mark, f"alias *{event.anchor} refers to its own anchor")
        if event.anchor not in self.anchors:
            self._fail(event.start_mark, f"alias *{event.anchor} names no anchor defined before it")
        return self.anchors[event.anchor]

    def _fail(self, mark: Any, message: str) -> None:
        line, col = mark.line + 1, mark.column + 1
        raise FlowError([Problem(self.name, line, col, "(file)", message)])


def _describe(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number"}.get(type(value), "null")


class _Converter:
    """Turns the node tree into plain data, recording locations and collecting problems."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        self.keys: dict[Path_, Location] = {}
        self.values: dict[Path_, Location] = {}
        self.problems: list[Problem] = []
        self.count = 0

    def convert(self, node: _Node, path: Path_, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_VALUES or depth > MAX_DEPTH:
            limit = (
                f"more than {MAX_VALUES:,} values"
                if depth <= MAX_DEPTH
                else (f"deeper than {MAX_DEPTH} levels")
            )
            problem = Problem(
                self.name,
                node.mark.line + 1,
                node.mark.column + 1,
                "(file)",
                f"aliases expand the document to {limit}",
            )
            raise FlowError([problem])
        self.values.setdefault(path, Location(node.mark.line + 1, node.mark.column + 1))
        if node.tag not in (None, "!", _STR_TAG):
            shown = str(node.tag).replace("tag:yaml.org,2002:", "!!")
            self._problem(node, path, f"YAML tags are not supported here (found `{shown}`)")
        if node.kind == "scalar":
            return node.value if node.style or node.tag else resolve_plain(node.value)
        if node.kind == "seq":
            return [self.convert(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        return self._mapping(node, path, depth)

    def _mapping(self, node: _Node, path: Path_, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_seen: dict[str, int] = {}
        items = node.value
        for key_node, value_node in zip(items[::2], items[1::2], strict=True):
            key = self._key(key_node, path)
            if key is None:
                continue
            if key == "<<" and not key_node.style:
                self._merge(value_node, path, depth, result)
                continue
            if key in first_seen:
                self._problem(
                    key_node,
                    (*path, key),
                    f"duplicate key `{key}` (first at line {first_seen[key]})",
                )
                continue
            first_seen[key] = key_node.mark.line + 1
            self.keys[(*path, key)] = Location(key_node.mark.line + 1, key_node.mark.column + 1)
            result[key] = self.convert(value_node, (*path, key), depth + 1)
        return result

    def _key(self, node: _Node, path: Path_) -> str | None:
        if node.kind == "map" and self.text[node.mark.index - 1 : node.mark.index] == "{":
            self._problem(
                node, path, 'a `{{ ... }}` template must be quoted in YAML: write it as "{{ ... }}"'
            )
            return None
        if node.kind != "scalar":
            self._problem(node, path, "a key must be text, not a list or mapping")
            return None
        value = node.value if node.style else resolve_plain(node.value)
        if not isinstance(value, str):
            shown = node.value or "an empty key"
            self._problem(
                node, path, f"a key must be text; `{shown}` reads as {_describe(value)}: quote it"
            )
            return None
        return value

    def _merge(self, node: _Node, path: Path_, depth: int, into: dict[str, Any]) -> None:
        sources = node.value if node.kind == "seq" else [node]
        for source in sources:
            merged = self.convert(source, path, depth + 1) if source.kind == "map" else None
            if not isinstance(merged, dict):
                self._problem(node, path, "`<<` merges a mapping or a list of mappings")
                return
            for key, value in merged.items():
                into.setdefault(key, value)

    def _problem(self, node: _Node, path: Path_, message: str) -> None:
        line, col = node.mark.line + 1, node.mark.column + 1
        self.problems.append(Problem(self.name, line, col, spell_path(path), message))


def resolve_plain(text: str) -> Any:
    """Resolve an unquoted scalar by the YAML 1.2 core schema; anything else is text."""
    if text in _NULL:
        return None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    if _INT.fullmatch(text):
        try:
            return int(text, 0) if text[:2] in ("0o", "0x") else int(text)
        except ValueError:  # more digits than Python converts: leave it as text
            return text
    if _FLOAT.fullmatch(text):
        return float(text)
    if text in _INF or text in _NAN:
        return float(text.replace(".", "").lower().replace("+", ""))
    if text in ("-.inf", "-.Inf", "-.INF"):
        return float("-inf")
    return text


def strings_in(value: Any, path: Path_) -> Iterator[tuple[Path_, str]]:
    """Every string inside an author's JSON-like value, with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings_in(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from strings_in(item, (*path, i))
