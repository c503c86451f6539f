"""The exact flow version a run pins: the text's digest, the text, where the file is
(as given, absolute, and within its git repository), and the git commit when the file
is committed and unchanged there."""

from __future__ import annotations

import subprocess
from pathlib import Path

from runner.lang.compiler import CompiledFlow
from runner.store.records import FlowVersion


def flow_version(compiled: CompiledFlow) -> FlowVersion:
    """The version a new run pins: digest, text, location, and the git commit if clean."""
    document = compiled.flow.document
    path = Path(document.file).resolve()
    root = git_root(path.parent)
    return FlowVersion(
        compiled.flow.digest,
        compiled.flow.name,
        document.file,
        document.text,
        _git_commit(path),
        abs_path=str(path),
        git_root=str(root) if root else None,
        repo_path=path.relative_to(root).as_posix() if root else None,
    )


def git_root(folder: Path) -> Path | None:
    """The root of the git repository holding `folder`, if any (no git needed)."""
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def _git_commit(path: Path) -> str | None:
    """HEAD's commit when the flow file is tracked and unchanged there, else None."""
    try:
        folder = str(path.parent)
        dirty = subprocess.run(
            ["git", "-C", folder, "status", "--porcelain", "--", path.name],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if dirty.returncode != 0 or dirty.stdout.strip():
            return None
        head = subprocess.run(
            ["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return head.stdout.strip() or None if head.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
