"""Find a pinned flow's file again, wherever the command runs.

A run keeps its flow's text, so the flow itself never goes missing; what must be found
is the folder it lives in, since its python tools import from there. In order: the
absolute path the run started with; the same path within the git repository the
command runs in (a clone elsewhere, a moved checkout); the path as given, from here
(runs of release 0.1 stored only that).
"""

from __future__ import annotations

from pathlib import Path

from runner.lang.compiler import CompiledFlow
from runner.lang.load import load_flow_text
from runner.runtime.versions import git_root
from runner.store.records import FlowVersion


def flow_file(version: FlowVersion, here: Path | None = None) -> Path:
    """Where the pinned flow's file is now (the stored path when it is nowhere)."""
    here = here or Path.cwd()
    candidates = [Path(version.abs_path)] if version.abs_path else []
    root = git_root(here.resolve())
    if root is not None and version.repo_path:
        candidates.append(root / version.repo_path)
    candidates.append(here / version.path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return Path(version.path)


def load_pinned(version: FlowVersion) -> CompiledFlow:
    """The pinned flow text, compiled as the file where it is found."""
    return load_flow_text(version.text, str(flow_file(version)))
