"""`runner validate` and `runner --help` stay fast: they never import the heavy libraries.

litellm alone takes seconds to import; sqlalchemy and httpx are only for running flows.
Each check runs in a fresh interpreter, so that nothing imported by the test session
(or by another test) can hide an import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("litellm", "sqlalchemy", "httpx")

PROBE = """\
import sys
{before}
from runner.cli.main import main
code = main({argv!r})
print()
print(code)
print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))
"""


def imported_after(argv: list[str], before: str = "") -> tuple[int, list[str], str]:
    """Run `main(argv)` in a fresh interpreter: its exit code, the heavy modules loaded,
    and what it printed before them."""
    script = PROBE.format(before=before, argv=argv, heavy=HEAVY)
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    *printed, code, modules = result.stdout.rstrip("\n").split("\n")
    return int(code), ast.literal_eval(modules), "\n".join(printed)


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "flows/support.yaml"],
        ["--help"],
        ["graph", "flows/support.yaml"],
    ],
    ids=["validate", "help", "graph"],
)
def test_light_commands_import_no_heavy_library(argv: list[str]) -> None:
    code, modules, printed = imported_after(argv)
    assert code == 0, printed
    assert modules == []


def test_validate_really_ran() -> None:
    code, _, printed = imported_after(["validate", "flows/support.yaml"])
    assert code == 0
    assert "1 flow valid" in printed


def test_the_probe_sees_a_heavy_import() -> None:
    """Control: the same probe does report a heavy library once something imports it."""
    _, modules, _ = imported_after(["--help"], before="import httpx")
    assert "httpx" in modules
