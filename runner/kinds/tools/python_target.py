"""Find a python tool's `module:function` beside its flow, without importing it.

`runner validate` must never execute an author's code, and must stay fast: the module's
file is found on disk and parsed, and the function looked up among its top-level names.
"""

from __future__ import annotations

import ast
import difflib
from pathlib import Path


def search_roots(flow_file: Path) -> list[Path]:
    """Where python tool modules are looked for: the flow's folder, then each parent up
    to the root of its git repository (or only the flow's folder outside a repository)."""
    folder = flow_file.resolve().parent
    roots = [folder, *folder.parents]
    for i, root in enumerate(roots):
        if (root / ".git").exists():
            return roots[: i + 1]
    return [folder]


def module_root(flow_file: Path, module: str) -> Path | None:
    """The folder that `module` (dotted) is found under, searching as validate does."""
    relative = Path(*module.split("."))
    for root in search_roots(flow_file):
        if (root / relative.with_suffix(".py")).is_file() or (
            root / relative / "__init__.py"
        ).is_file():
            return root
    return None


def locate_python_target(flow_file: Path, target: str) -> tuple[Path | None, str | None]:
    """Find `module:function` without importing it: (file, None) or (None, problem)."""
    module, _, name = target.partition(":")
    relative = Path(*module.split("."))
    for root in search_roots(flow_file):
        for candidate in (root / relative.with_suffix(".py"), root / relative / "__init__.py"):
            if candidate.is_file():
                return candidate, _defines(candidate, name, module)
    return None, (
        f"cannot find module `{module}`: no {relative}.py beside the flow or "
        "in a folder above it, up to the repository root"
    )


def _defines(file: Path, name: str, module: str) -> str | None:
    try:
        tree = ast.parse(file.read_bytes(), str(file))
    except (SyntaxError, ValueError) as exc:
        return f"module `{module}` does not parse: {exc}"
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    if name in names:
        return None
    close = difflib.get_close_matches(name, sorted(names), n=1)
    hint = f"; did you mean `{close[0]}`?" if close else ""
    return f"module `{module}` ({file.name}) defines no `{name}`{hint}"
