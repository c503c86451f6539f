"""Notices on stderr as text for a person, or as JSON lines for a log collector."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def runner(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *argv], capture_output=True, text=True, env=env
    )


def test_a_problem_is_a_json_line_with_its_level_and_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere.yaml")
    done = runner("--log-format", "json", "validate", missing)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    said = json.loads(line)
    assert said["level"] == "error"
    assert said["message"] == f"no such file or directory: {missing}"
    assert said["time"].endswith("+00:00")


def test_text_is_the_default_and_the_environment_can_choose_json(tmp_path: Path) -> None:
    flow = tmp_path / "broken.yaml"
    flow.write_text("version: 1\nname: x\nsteps: []\n", encoding="utf-8")
    text = runner("run", str(flow), "--input", "-")
    assert text.stderr == f"{flow}:3:8: steps: needs at least 1 item\n"
    as_json = runner(
        "run", str(flow), "--input", "-", env={**os.environ, "RUNNER_LOG_FORMAT": "json"}
    )
    said = json.loads(as_json.stderr)
    assert (said["level"], said["file"]) == ("error", str(flow))
    assert said["message"] == f"{flow}:3:8: steps: needs at least 1 item"
