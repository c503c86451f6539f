"""The exact flow version a run pins: the text's digest, the text, its path, and the
git commit when the file is committed and unchanged there."""

from __future__ import annotations

import subprocess
from pathlib import Path

from runner.lang.compiler import CompiledFlow
from runner.store.records import FlowVersion


def flow_version(compiled: CompiledFlow) -> FlowVersion:
    """The version a new run pins: digest, text, path, and the git commit if clean."""
    document = compiled.flow.document
    return FlowVersion(compiled.flow.digest, compiled.flow.name, document.file,
                       document.text, _git_commit(Path(document.file)))


def _git_commit(path: Path) -> str | None:
    """HEAD's commit when the flow file is tracked and unchanged there, else None."""
    try:
        folder = str(path.resolve().parent)
        dirty = subprocess.run(["git", "-C", folder, "status", "--porcelain", "--",
                                path.name], capture_output=True, text=True, timeout=5)
        if dirty.returncode != 0 or dirty.stdout.strip():
            return None
        head = subprocess.run(["git", "-C", folder, "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=5)
        return head.stdout.strip() or None if head.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
