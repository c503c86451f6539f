"""What a new user and their editor, CI and pre-commit get from the command line:
`runner init`, `runner schema`, `runner --version`, and `runner validate` telling flows,
flow tests and other YAML apart (with `[tool.runner] exclude`)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from runner.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def test_init_starts_a_folder_that_validates_and_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, said = run("init", str(tmp_path / "orders"))
    assert code == 0, said
    folder = tmp_path / "orders"
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))
    assert names == [
        ".pre-commit-config.yaml",
        "input.json",
        "orders.cases.jsonl",
        "orders.test.yaml",
        "orders.yaml",
        "schemas",
        "schemas/flow.v1.json",
        "schemas/flowtest.v1.json",
    ]
    flow = (folder / "orders.yaml").read_text(encoding="utf-8")
    assert flow.startswith("# yaml-language-server: $schema=schemas/flow.v1.json\n")
    assert "name: orders\n" in flow
    monkeypatch.chdir(folder)
    assert run("validate", ".") == (0, "1 flow and 1 test file valid\n")
    code, tested = run("test", ".")
    assert code == 0, tested
    assert "3 cases: 3 passed, 0 failed" in tested


def test_init_refuses_a_folder_in_use_and_a_name_that_cannot_be_a_flows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine", encoding="utf-8")
    assert run("init", str(tmp_path / "busy"))[0] == 2
    assert "is not an empty folder" in capsys.readouterr().err
    assert run("init", str(tmp_path / "x"), "--name", "Order Bot")[0] == 2
    assert "cannot name a flow" in capsys.readouterr().err
    assert (tmp_path / "busy" / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_schema_prints_the_flow_schema_and_writes_both(tmp_path: Path) -> None:
    code, printed = run("schema")
    assert code == 0
    assert json.loads(printed) == json.loads((ROOT / "schemas" / "flow.v1.json").read_text())
    code, said = run("schema", "--write", str(tmp_path / "s"))
    assert code == 0
    for name in ("flow.v1.json", "flowtest.v1.json"):
        written = json.loads((tmp_path / "s" / name).read_text(encoding="utf-8"))
        assert written == json.loads((ROOT / "schemas" / name).read_text(encoding="utf-8"))
    assert "$schema=" in said


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--version")[0] == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("runner ") and printed != "runner unknown"


def test_validate_checks_test_files_as_tests_and_leaves_other_yaml_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run("init", str(tmp_path / "demo"))
    folder = tmp_path / "demo"
    (folder / "compose.yaml").write_text("services:\n  db: {image: postgres}\n")
    (folder / "ci.yml").write_text("name: ci\non: push\njobs: {}\n")
    broken = (folder / "demo.test.yaml").read_text().replace("expect:", "expects:", 1)
    (folder / "demo.test.yaml").write_text(broken)
    monkeypatch.chdir(folder)

    code, said = run("validate", ".")
    assert code == 1
    assert said.splitlines()[-1] == (
        "2 problems in 1 of 1 flow and 1 test file; 2 other YAML files left alone"
    )
    assert "demo.test.yaml" in said and "expects" in said
    assert run("validate", "compose.yaml", "--force-exclude") == (
        0,
        "0 flows valid; 1 other YAML file left alone\n",
    )


def test_exclude_leaves_files_out_of_folders_and_with_force_exclude(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run("init", str(tmp_path / "demo"))
    bad = tmp_path / "demo" / "fixtures"
    bad.mkdir()
    (bad / "broken.yaml").write_text("version: 1\nname: x\nsteps: []\n")
    (tmp_path / "pyproject.toml").write_text('[tool.runner]\nexclude = ["demo/fixtures"]\n')
    monkeypatch.chdir(tmp_path)

    assert run("validate", "demo")[0] == 0
    assert run("validate", "demo/fixtures/broken.yaml")[0] == 1  # named: checked
    assert run("validate", "demo/fixtures/broken.yaml", "--force-exclude")[0] == 0


@pytest.mark.slow
def test_a_wheel_alone_can_start_validate_and_test_a_flow_folder(tmp_path: Path) -> None:
    """The built wheel, installed by itself into a fresh virtualenv (its dependencies
    read from this one's site-packages), carries the schemas and the starter files."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
    )
    (wheel,) = tmp_path.glob("runner_flows-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_dir = venv / "bin"
    site = subprocess.run(
        [bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    pip = [bin_dir / "python", "-m", "pip", "install", "-q", "--no-deps", str(wheel)]
    subprocess.run(pip, check=True)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    script = "runner init demo && cd demo && runner validate . && runner test ."
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 flow and 1 test file valid" in done.stdout
    located = subprocess.run(
        [bin_dir / "python", "-c", "import runner; print(runner.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert located.startswith(site), located  # runner came from the wheel
