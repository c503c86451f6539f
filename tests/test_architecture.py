"""The shape of `runner/`, read from its source with `ast` (nothing is imported).

- No import cycle between modules. Imports at module level and inside functions count
  (both run); imports under `if TYPE_CHECKING:` do not (they never run).
- Packages import in one direction: `LAYERS` says, per package, which runner packages it
  may import, or which it must not.
- Size (STYLE.md): no module over 400 lines, no function over 40.

Each check is a function from sources to the list of its problems. The controls plant a
violation in a few lines of synthetic source first, so a check that cannot fail fails.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 40


class Only:
    """The package may import these runner packages (and itself), no other."""

    def __init__(self, *packages: str) -> None:
        self.packages = packages

    def refusal(self, importer: str, imported: str) -> str | None:
        if imported in self.packages:
            return None
        if not self.packages:
            return f"{importer} imports no other runner package"
        return f"{importer} may import only {', '.join(self.packages)}"


class Never:
    """The package must not import these runner packages."""

    def __init__(self, *packages: str) -> None:
        self.packages = packages

    def refusal(self, importer: str, imported: str) -> str | None:
        return f"{importer} must not import {imported}" if imported in self.packages else None


# package -> the runner packages it may (Only) or must not (Never) import. A package not
# listed here is not restricted; every package may import its own modules.
LAYERS: dict[str, Only | Never] = {
    "runner.core": Only(),
    "runner.lang": Only("runner.core", "runner.kinds"),
    "runner.kinds": Never(
        "runner.runtime",
        "runner.store",
        "runner.cli",
        "runner.review",
        "runner.flowtest",
        "runner.eval",
    ),
    "runner.store": Only("runner.core"),
    "runner.runtime": Never("runner.cli", "runner.review", "runner.flowtest", "runner.eval"),
    "runner.eval": Never("runner.cli", "runner.review", "runner.flowtest"),
    "runner.service": Never("runner.cli", "runner.flowtest", "runner.eval"),
}


@dataclass(frozen=True)
class Module:
    name: str  # runner.lang.model
    path: str  # runner/lang/model.py, as the messages show it
    source: str

    @property
    def is_package(self) -> bool:
        return self.path.endswith("__init__.py")


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    path: str
    line: int


def tree_from(sources: Mapping[str, str]) -> dict[str, Module]:
    """Modules by dotted name, from source texts by path (`runner/lang/model.py`)."""
    modules = {}
    for path, source in sources.items():
        parts = path.removesuffix(".py").split("/")
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = Module(name, path, source)
    return modules


def runner_sources() -> dict[str, str]:
    files = sorted((ROOT / "runner").rglob("*.py"))
    return {file.relative_to(ROOT).as_posix(): file.read_text(encoding="utf-8") for file in files}


# --- imports ----------------------------------------------------------------------------


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _run_time_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every node below `node`, except the bodies of `if TYPE_CHECKING:` blocks."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for orelse in child.orelse:
                yield orelse
                yield from _run_time_nodes(orelse)
            continue
        yield child
        yield from _run_time_nodes(child)


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.name.split(".")
    if not module.is_package:
        package = package[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _nearest(name: str, known: Mapping[str, Module]) -> str | None:
    """`name` if it is a module of the tree, else its nearest enclosing one."""
    parts = name.split(".")
    while parts and ".".join(parts) not in known:
        parts.pop()
    return ".".join(parts) or None


def imports_of(module: Module, known: Mapping[str, Module]) -> Iterator[Import]:
    """The imports of `module` that reach a module of the tree, resolved to the most
    specific module (`from runner.lang import model` imports `runner.lang.model`)."""
    for node in _run_time_nodes(ast.parse(module.source, module.path)):
        if isinstance(node, ast.Import):
            names = [_nearest(alias.name, known) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            names = [_nearest(f"{base}.{alias.name}", known) for alias in node.names]
        else:
            continue
        for name in names:
            if name is not None:
                yield Import(module.name, name, module.path, node.lineno)


def import_graph(tree: Mapping[str, Module]) -> dict[str, dict[str, Import]]:
    """importer -> imported -> the first import statement of that edge."""
    graph: dict[str, dict[str, Import]] = {name: {} for name in tree}
    for module in tree.values():
        for edge in imports_of(module, tree):
            graph[module.name].setdefault(edge.imported, edge)
    return graph


# --- cycles -----------------------------------------------------------------------------


def _tangles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _shortest_cycle(
    graph: Mapping[str, Iterable[str]], start: str, within: set[str]
) -> list[str] | None:
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if nxt in within and nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    return None


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[tuple[list[str], list[str]]]:
    """One shortest cycle per tangle of mutually importing modules: (cycle, tangle)."""
    cycles = []
    for tangle in _tangles(graph):
        cycle = _shortest_cycle(graph, tangle[0], set(tangle))
        if cycle is not None:
            cycles.append((cycle, tangle))
    return cycles


def cycle_problems(tree: Mapping[str, Module]) -> list[str]:
    graph = import_graph(tree)
    problems = []
    for cycle, tangle in find_cycles(graph):
        where = ", ".join(f"{graph[a][b].path}:{graph[a][b].line}" for a, b in pairwise(cycle))
        problem = f"{' -> '.join(cycle)} ({where})"
        if len(tangle) > len(cycle) - 1:
            problem += f"; all {len(tangle)} modules of the tangle: {', '.join(tangle)}"
        problems.append(problem)
    return problems


# --- layers -----------------------------------------------------------------------------


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def layer_problems(tree: Mapping[str, Module]) -> list[str]:
    problems = []
    for edges in import_graph(tree).values():
        for edge in edges.values():
            importer, imported = package_of(edge.importer), package_of(edge.imported)
            rule = LAYERS.get(importer)
            refusal = rule.refusal(importer, imported) if rule and imported != importer else None
            if refusal:
                problems.append(
                    f"{edge.path}:{edge.line}: {edge.importer} imports {edge.imported}: {refusal}"
                )
    return sorted(problems, key=_by_place)


# --- size -------------------------------------------------------------------------------


def module_size_problems(tree: Mapping[str, Module]) -> list[str]:
    sizes = {module.path: len(module.source.splitlines()) for module in tree.values()}
    return [
        f"{path}: {lines} lines (max {MAX_MODULE_LINES})"
        for path, lines in sorted(sizes.items())
        if lines > MAX_MODULE_LINES
    ]


Function = ast.FunctionDef | ast.AsyncFunctionDef


def _functions(node: ast.AST, prefix: str = "") -> Iterator[tuple[str, Function]]:
    for child in ast.iter_child_nodes(node):
        name = getattr(child, "name", None)
        inner = f"{prefix}{name}." if isinstance(name, str) else prefix
        if isinstance(child, Function):
            yield f"{prefix}{child.name}", child
        yield from _functions(child, inner)


def function_size_problems(tree: Mapping[str, Module]) -> list[str]:
    problems = []
    for module in tree.values():
        for name, node in _functions(ast.parse(module.source, module.path)):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                problems.append(
                    f"{module.path}:{node.lineno}: {name}: {lines} lines (max {MAX_FUNCTION_LINES})"
                )
    return sorted(problems, key=_by_place)


def _by_place(problem: str) -> tuple[str, int]:
    path, line, _ = problem.split(":", 2)
    return path, int(line)


# --- the tree ---------------------------------------------------------------------------

Check = Callable[[Mapping[str, Module]], list[str]]

CHECKS: dict[str, Check] = {
    "no import cycle": cycle_problems,
    "packages import in one direction (LAYERS)": layer_problems,
    f"no module over {MAX_MODULE_LINES} lines": module_size_problems,
    f"no function over {MAX_FUNCTION_LINES} lines": function_size_problems,
}


@pytest.fixture(scope="module")
def runner_tree() -> dict[str, Module]:
    return tree_from(runner_sources())


@pytest.mark.parametrize("rule", CHECKS)
def test_runner_keeps_its_shape(rule: str, runner_tree: dict[str, Module]) -> None:
    problems = CHECKS[rule](runner_tree)
    if problems:
        pytest.fail(f"{rule}: {len(problems)} offenders\n" + "\n".join(problems), pytrace=False)


def test_the_tree_is_read_whole(runner_tree: dict[str, Module]) -> None:
    """The checks see every package (a wrong root would pass them all, vacuously)."""
    packages = {package_of(name) for name in runner_tree}
    assert set(LAYERS) <= packages
    edges = [edge for edges in import_graph(runner_tree).values() for edge in edges.values()]
    assert any(package_of(edge.importer) != package_of(edge.imported) for edge in edges)


# --- controls: each check catches a planted violation -----------------------------------


def lines_of(count: int, indent: str = "") -> str:
    return "".join(f"{indent}x{n} = {n}\n" for n in range(count))


PLANTED = [
    pytest.param(
        cycle_problems,
        {
            "runner/a.py": "import runner.b\n",
            "runner/b.py": "def late():\n    from runner import a\n",
        },
        ["runner.a -> runner.b -> runner.a (runner/a.py:1, runner/b.py:2)"],
        id="cycle-through-an-import-inside-a-function",
    ),
    pytest.param(
        cycle_problems,
        {
            "runner/p/__init__.py": "from .q import thing\n",
            "runner/p/q.py": "from ..p import other\n",
            "runner/p/r.py": "from . import q\n",
        },
        ["runner.p -> runner.p.q -> runner.p (runner/p/__init__.py:1, runner/p/q.py:1)"],
        id="relative-imports-resolved",
    ),
    pytest.param(
        cycle_problems,
        {
            "runner/a.py": "import runner.b\n",
            "runner/b.py": "import runner.c\n",
            "runner/c.py": "import runner.a\nimport runner.b\n",
        },
        [
            "runner.a -> runner.b -> runner.c -> runner.a "
            "(runner/a.py:1, runner/b.py:1, runner/c.py:1)"
        ],
        id="cycle-of-three",
    ),
    pytest.param(
        cycle_problems,
        {
            "runner/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    import runner.b\nelse:\n    import os\n",
            "runner/b.py": "import runner.a\n",
        },
        [],
        id="TYPE_CHECKING-imports-do-not-count",
    ),
    pytest.param(
        layer_problems,
        {
            "runner/core/a.py": "def f():\n    from runner.lang import b\n",
            "runner/lang/b.py": "from runner.core.a import f\nimport runner.kinds.c\n",
            "runner/kinds/c.py": "from runner.runtime.d import e\n",
            "runner/runtime/d.py": "import runner.lang.b\nimport runner.cli.e\n",
            "runner/cli/e.py": "import runner.store.f\n",
            "runner/store/f.py": "from runner.kinds import c\n",
        },
        [
            "runner/core/a.py:2: runner.core.a imports runner.lang.b: "
            "runner.core imports no other runner package",
            "runner/kinds/c.py:1: runner.kinds.c imports runner.runtime.d: "
            "runner.kinds must not import runner.runtime",
            "runner/runtime/d.py:2: runner.runtime.d imports runner.cli.e: "
            "runner.runtime must not import runner.cli",
            "runner/store/f.py:1: runner.store.f imports runner.kinds.c: "
            "runner.store may import only runner.core",
        ],
        id="layers",
    ),
    pytest.param(
        module_size_problems,
        {
            "runner/big.py": lines_of(MAX_MODULE_LINES + 1),
            "runner/fits.py": lines_of(MAX_MODULE_LINES),
        },
        [f"runner/big.py: {MAX_MODULE_LINES + 1} lines (max {MAX_MODULE_LINES})"],
        id="module-size",
    ),
    pytest.param(
        function_size_problems,
        {
            "runner/f.py": "@decorated\ndef fits():\n"
            + lines_of(MAX_FUNCTION_LINES - 1, "    ")
            + "class Engine:\n    async def run(self):\n"
            + lines_of(MAX_FUNCTION_LINES - 2, "        ")
            + "        def inner():\n            pass\n",
        },
        [
            f"runner/f.py:{MAX_FUNCTION_LINES + 3}: Engine.run: "
            f"{MAX_FUNCTION_LINES + 1} lines (max {MAX_FUNCTION_LINES})"
        ],
        id="function-size",
    ),
]


@pytest.mark.parametrize(("check", "sources", "expected"), PLANTED)
def test_check_catches_what_is_planted(
    check: Check, sources: dict[str, str], expected: list[str]
) -> None:
    assert check(tree_from(sources)) == expected


@pytest.mark.parametrize(
    ("graph", "cycles"),
    [
        ({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}, [["a", "b", "c", "a"]]),
        ({"a": ["a"]}, [["a", "a"]]),
        ({"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}, []),
        ({"a": ["b"], "b": ["a"], "c": ["d"], "d": ["c"]}, [["a", "b", "a"], ["c", "d", "c"]]),
    ],
    ids=["triangle", "self-import", "diamond-no-cycle", "two-cycles"],
)
def test_cycle_finder(graph: dict[str, list[str]], cycles: list[list[str]]) -> None:
    assert sorted(cycle for cycle, _ in find_cycles(graph)) == cycles
