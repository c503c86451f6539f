"""Which YAML files `runner validate` checks, and as what.

A repository holds flows, their test files (`*.test.yaml`) and YAML that is not
runner's (CI workflows, compose files, the pre-commit config). Test files are checked
as test files; a file is a flow when it says so (the flow schema line, or a top-level
`steps`, or `version` beside a key only flows have); any other YAML is left alone and
counted as skipped. A file that is not valid YAML at all is checked as a flow, so that
its problem is reported.

`[tool.runner] exclude = ["glob", ...]` in the nearest pyproject.toml (from the working
directory up) leaves files out of directories. A file named on the command line is
checked as a test file or a flow, by its name; with `--force-exclude` (what the
pre-commit hook passes) named files are treated like found ones: excluded when they
match, and left alone when they are not runner's.
"""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

from runner.core.errors import UsageError
from runner.lang.filekinds import FLOW, OTHER, TEST, TEST_SUFFIXES, kind_of
from runner.lang.load import FLOW_SUFFIXES

__all__ = ["FLOW", "OTHER", "TEST", "TEST_SUFFIXES", "exclusions", "expand", "kind_of"]


def expand(paths: list[str], *, force_exclude: bool = False) -> list[tuple[Path, bool]]:
    """(file, found) pairs: files as given, and directories expanded to the YAML files
    under them (not in hidden folders), sorted; excluded files left out. `found` is
    False for a file named on the command line, which is checked as what its name says
    (a test file or a flow) even when it looks like neither; `force_exclude` treats
    named files like found ones (the pre-commit hook names every YAML file it sees)."""
    excluded = exclusions()
    found: list[tuple[Path, bool]] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found += [
                (p, True)
                for p in sorted(path.rglob("*"))
                if p.suffix in FLOW_SUFFIXES
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and not excluded(p)
            ]
        elif not path.exists():
            raise UsageError(f"no such file or directory: {given}")
        elif not (force_exclude and excluded(path)):
            found.append((path, force_exclude))
    return found


def exclusions() -> Excluder:
    """The exclude patterns of the nearest pyproject.toml's [tool.runner], if any."""
    for folder in [Path.cwd(), *Path.cwd().parents]:
        config = folder / "pyproject.toml"
        if config.is_file():
            try:
                data = tomllib.loads(config.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                raise UsageError(f"cannot read {config}: {exc}") from exc
            patterns = data.get("tool", {}).get("runner", {}).get("exclude", [])
            if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
                raise UsageError(f"{config}: [tool.runner] exclude must be a list of globs")
            return Excluder(folder, patterns)
    return Excluder(Path.cwd(), [])


class Excluder:
    """Globs relative to the folder of the pyproject.toml that gives them."""

    def __init__(self, root: Path, patterns: list[str]) -> None:
        self.root = root.resolve()
        self.patterns = patterns

    def __call__(self, path: Path) -> bool:
        try:
            relative = path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return False
        return any(
            fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(relative, p.rstrip("/") + "/*")
            for p in self.patterns
        )
