"""Jinja templates: always sandboxed, always strict about undefined names.

Only text the author wrote in the flow is ever a template. Values that come from the
run input, tools or models are data: they are inserted, never rendered themselves, so
`{{ 7*7 }}` inside a ticket body stays literal.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment

from runner.core.errors import StepError

# A template that is exactly one `{{ expression }}` renders to the expression's value
# (a number stays a number, a mapping stays a mapping), not to its text.
_SINGLE = re.compile(r"^\{\{(?P<expr>(?:(?!\}\}|\{\{|\{%|\{#).)*)\}\}$", re.DOTALL)
_JINJA_GLOBALS = {"range", "dict", "lipsum", "cycler", "joiner", "namespace", "loop"}


@dataclass(frozen=True)
class Reference:
    """A name a template reads, and the constant attribute chain after it."""

    root: str
    chain: tuple[str | int, ...]


class TemplateSyntaxError(Exception):
    """A template does not parse; `lineno` is the line inside the template."""

    def __init__(self, message: str, lineno: int) -> None:
        self.lineno = lineno
        super().__init__(message)


@functools.cache
def environment() -> SandboxedEnvironment:
    """The one jinja environment runner uses (configured once, never mutated after)."""
    return SandboxedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
    )


def is_template(text: str) -> bool:
    """True if the text holds any jinja syntax."""
    return "{{" in text or "{%" in text or "{#" in text


def parse(text: str) -> nodes.Template:
    """The syntax tree of a template; TemplateSyntaxError if it does not parse."""
    try:
        return environment().parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateSyntaxError(exc.message or "syntax error", exc.lineno) from exc
    except RecursionError as exc:
        raise TemplateSyntaxError("nested too deeply", 1) from exc


def parse_expression(text: str) -> nodes.Template:
    """The syntax tree of a bare jinja expression such as a switch condition; it must be
    one expression and nothing after it."""
    tree = parse("{{ " + text + " }}")  # jinja words its errors best in a template
    try:
        _expression(text)
    except jinja2.TemplateSyntaxError as exc:
        if isinstance(exc, jinja2.TemplateAssertionError) and any(unknown_filters(tree)):
            return tree  # an unknown filter or test: the flow checker names it and its fix
        message = (
            "one expression only, and nothing after it"
            if exc.message == "chunk after expression"
            else exc.message
        )
        raise TemplateSyntaxError(message or "syntax error", exc.lineno) from exc
    except RecursionError as exc:
        raise TemplateSyntaxError("nested too deeply", 1) from exc
    return tree


def references(tree: nodes.Node) -> list[Reference]:
    """Every outside name the template reads, with the constant attribute path after it."""
    local = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    return [r for r in _walk(tree) if r.root not in local and r.root not in _JINJA_GLOBALS]


def unknown_filters(tree: nodes.Node) -> Iterator[tuple[str, str, list[str]]]:
    """(`filter` or `test`, its name, the names runner's environment has) for each filter
    (`x | lower`) or test (`x is odd`) the template uses that the environment lacks:
    jinja finds out only when the template is rendered."""
    env = environment()
    for node in tree.find_all((nodes.Filter, nodes.Test)):
        filter_ = isinstance(node, nodes.Filter)
        known = env.filters if filter_ else env.tests
        if node.name not in known:
            yield "filter" if filter_ else "test", node.name, sorted(known)


def _walk(node: nodes.Node) -> Iterator[Reference]:
    if isinstance(node, nodes.Getattr | nodes.Getitem):
        chain: list[str | int] = []
        current: nodes.Node = node
        while isinstance(current, nodes.Getattr | nodes.Getitem):
            if isinstance(current, nodes.Getattr):
                chain.append(current.attr)
            elif isinstance(current.arg, nodes.Const) and isinstance(current.arg.value, str | int):
                chain.append(current.arg.value)
            else:
                yield from _walk(current.arg)
                chain = []
            current = current.node
        if isinstance(current, nodes.Name):
            yield Reference(current.name, tuple(reversed(chain)))
        else:
            yield from _walk(current)
        return
    if isinstance(node, nodes.Name) and node.ctx == "load":
        yield Reference(node.name, ())
        return
    for child in node.iter_child_nodes():
        yield from _walk(child)


@functools.lru_cache(maxsize=4096)
def _compiled(text: str) -> Callable[..., Any]:
    """A template compiled once: an expression for `{{ expr }}` alone, else a template.
    Compiling costs milliseconds; flows render the same few texts over and over."""
    single = _SINGLE.match(text.strip())
    if single:
        return environment().compile_expression(single["expr"], undefined_to_none=False)
    return environment().from_string(text).render


@functools.lru_cache(maxsize=4096)
def _expression(text: str) -> Callable[..., Any]:
    return environment().compile_expression(text, undefined_to_none=False)


def render(text: str, context: Mapping[str, Any]) -> Any:
    """Render one template string. `{{ expr }}` alone gives the expression's value."""
    try:
        value = _compiled(text)(**context)
        if isinstance(value, jinja2.Undefined):
            str(value)  # raises UndefinedError with jinja's own message
        return value
    except jinja2.TemplateError as exc:
        raise StepError(f"template {text!r} failed: {exc}", "template") from exc
    except Exception as exc:  # the data made the expression fail: None > 100, 1 / 0, ...
        raise StepError(
            f"template {text!r} failed: {type(exc).__name__}: {exc}", "template"
        ) from exc


def render_tree(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every string inside a JSON-like value written by the author."""
    if isinstance(value, str):
        return render(value, context) if is_template(value) else value
    if isinstance(value, Mapping):
        return {k: render_tree(v, context) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render_tree(v, context) for v in value]
    return value


def evaluate(expression: str, context: Mapping[str, Any]) -> Any:
    """Evaluate a bare jinja expression (a switch condition, a policy check)."""
    try:
        value = _expression(expression)(**context)
        if isinstance(value, jinja2.Undefined):
            str(value)
        return value
    except jinja2.TemplateError as exc:
        raise StepError(f"expression {expression!r} failed: {exc}", "template") from exc
    except Exception as exc:  # the data made the expression fail: None > 100, 1 / 0, ...
        raise StepError(
            f"expression {expression!r} failed: {type(exc).__name__}: {exc}", "template"
        ) from exc
