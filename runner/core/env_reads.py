"""How a template reads the environment: `env.NAME` and `secret.NAME`.

A flow may read single environment variables by literal name, never the environment as
a whole (`{{ env | tojson }}`) nor a name it computes (`secret['A' ~ 'B']`): then
`runner validate` knows every name a flow reads, and a run checks each is set before
step one. A secret must go out as it is, alone or joined with `~`: any filter, slice,
method or operator applied to it makes its outgoing form unpredictable, and runner
could not recognise it to keep it out of what it stores.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from jinja2 import nodes

ROOTS = ("env", "secret")
# Names the environment mapping itself has (`env.items()` would list every variable).
MAPPING_NAMES = frozenset(dir(dict))
_DEFAULT_FILTERS = ("default", "d")
_WHAT = {
    nodes.Call: "a call",
    nodes.Compare: "a comparison",
    nodes.CondExpr: "a condition",
    nodes.If: "an `if`",
    nodes.For: "a `for` loop",
    nodes.Assign: "`set`",
    nodes.AssignBlock: "`set`",
    nodes.With: "`with`",
    nodes.Macro: "a macro",
    nodes.CallBlock: "a `call` block",
}


@dataclass(frozen=True)
class EnvRead:
    """One read of `env` or `secret` in a template."""

    root: str
    name: str | None  # None: not read by a literal name (`env`, `secret[a ~ b]`)
    optional: bool  # read through `| default(...)`: it may be unset
    altered_by: str | None  # what changes the value on its way out; None: as it is


def environment_reads(tree: nodes.Template) -> list[EnvRead]:
    """Every read of `env` and `secret` in a parsed template (names the template binds
    itself, `{% set env = ... %}`, are not the environment)."""
    local = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    roots = tuple(r for r in ROOTS if r not in local)
    return list(_walk(tree, None, optional=False, roots=roots)) if roots else []


def _walk(
    node: nodes.Node, altered: str | None, *, optional: bool, roots: tuple[str, ...]
) -> Iterator[EnvRead]:
    named = _named(node, roots)
    if named is not None:
        yield EnvRead(named[0], named[1], optional, altered)
        return
    if isinstance(node, nodes.Name) and node.ctx == "load" and node.name in roots:
        yield EnvRead(node.name, None, optional, altered)
        return
    for child in node.iter_child_nodes():
        keeps = _default_of(node, child)
        yield from _walk(child, _passed(node, child, altered), optional=keeps, roots=roots)


def _named(node: nodes.Node, roots: tuple[str, ...]) -> tuple[str, str] | None:
    """(root, name) if `node` reads `root.name` or `root['name']`."""
    if not isinstance(node, nodes.Getattr | nodes.Getitem):
        return None
    base = node.node
    if not (isinstance(base, nodes.Name) and base.name in roots):
        return None
    if isinstance(node, nodes.Getattr):
        return base.name, node.attr
    if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        return base.name, node.arg.value
    return None


def _default_of(parent: nodes.Node, child: nodes.Node) -> bool:
    return (
        isinstance(parent, nodes.Filter)
        and parent.name in _DEFAULT_FILTERS
        and child is parent.node
    )


def _passed(parent: nodes.Node, child: nodes.Node, altered: str | None) -> str | None:
    """What has changed a value by the time it reaches `child`'s place in the output:
    None while it goes out as it is. Output, `~`, the branches of `if`, the bodies of
    `if`, `for` and `with` pass a value on unchanged; anything else changes it (a
    `{% filter %}` block, `{% set %}`, a macro, ...)."""
    if isinstance(parent, nodes.Template | nodes.Output | nodes.Concat | nodes.Scope):
        return altered
    if _default_of(parent, child) or _in_body(parent, child):
        return altered
    return _what(parent)


def _in_body(parent: nodes.Node, child: nodes.Node) -> bool:
    if isinstance(parent, nodes.CondExpr | nodes.If):
        return child is not parent.test
    if isinstance(parent, nodes.For):
        return any(child is node for node in (*parent.body, *parent.else_))
    if isinstance(parent, nodes.With):
        return any(child is node for node in parent.body)
    return False


def _what(node: nodes.Node) -> str:
    if isinstance(node, nodes.Filter | nodes.FilterBlock):
        name = node.name if isinstance(node, nodes.Filter) else node.filter.name
        return f"the filter `{name}`"
    if isinstance(node, nodes.Test):
        return f"the test `{node.name}`"
    if isinstance(node, nodes.Getattr):
        return f"`.{node.attr}`"
    if isinstance(node, nodes.Getitem):
        return "an index or a slice"
    if isinstance(node, nodes.BinExpr | nodes.UnaryExpr):
        return f"the operator `{node.operator}`"
    return next((what for kind, what in _WHAT.items() if isinstance(node, kind)), "an expression")
