"""The flows a service runs: the flow files of one folder (a git checkout), by name.

`runner serve` and `runner worker` load flows from `--flows DIR`. A flow is found by its
`name` (or its file's stem). Files are read again when they change on disk (checked by
size and mtime at each lookup, at most once a second), so pulling a new commit into the
folder takes effect without a restart; a run already submitted keeps the version it
pinned. A file that does not compile is left out and its problems kept for the health
check and the logs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from runner.core.errors import FlowError, UsageError
from runner.lang.compiler import CompiledFlow
from runner.lang.filekinds import FLOW, kind_of
from runner.lang.load import FLOW_SUFFIXES, load_flow
from runner.runtime.versions import flow_version
from runner.store.records import FlowVersion

RESCAN_SECONDS = 1.0


@dataclass(frozen=True)
class Entry:
    """A flow file as last read: its stamp (size, mtime), and the flow or its problems."""

    stamp: tuple[int, int]
    compiled: CompiledFlow | None
    version: FlowVersion | None
    problems: tuple[str, ...] = ()


class FlowLibrary:
    """The flows of one folder, compiled once per change of their file. Thread-safe."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UsageError(f"--flows {folder}: no such folder")
        self._entries: dict[Path, Entry] = {}
        self._lock = threading.Lock()
        self._scanned = 0.0
        self.refresh(force=True)

    def refresh(self, *, force: bool = False) -> None:
        """Read new and changed flow files (at most once per RESCAN_SECONDS)."""
        with self._lock:
            if not force and time.monotonic() - self._scanned < RESCAN_SECONDS:
                return
            self._scanned = time.monotonic()
            seen = {}
            for path in self._files():
                stat = path.stat()
                stamp = (stat.st_size, stat.st_mtime_ns)
                old = self._entries.get(path)
                seen[path] = old if old and old.stamp == stamp else _read(path, stamp)
            self._entries = seen

    def _files(self) -> list[Path]:
        found = []
        for path in sorted(self.folder.rglob("*")):
            hidden = any(p.startswith(".") for p in path.relative_to(self.folder).parts)
            flowlike = path.suffix in FLOW_SUFFIXES and path.is_file() and not hidden
            if flowlike and kind_of(path) == FLOW:
                found.append(path)
        return found

    def names(self) -> list[str]:
        """The names of the flows that compile."""
        self.refresh()
        return sorted(e.compiled.flow.name for e in self._entries.values() if e.compiled)

    def problems(self) -> dict[str, tuple[str, ...]]:
        """Each flow file that does not compile, with its problems."""
        self.refresh()
        return {str(p): e.problems for p, e in self._entries.items() if e.problems}

    def find(self, name: str) -> tuple[CompiledFlow, FlowVersion] | None:
        """The flow called `name` (or in a file of that stem), with the version a run
        of it pins now; None if the folder has none."""
        self.refresh()
        ready = [(p, e.compiled, e.version) for p, e in self._entries.items() if e.compiled]
        for by_stem in (False, True):
            for path, compiled, version in ready:
                if (path.stem if by_stem else compiled.flow.name) == name and version:
                    return compiled, version
        return None


def _read(path: Path, stamp: tuple[int, int]) -> Entry:
    try:
        compiled = load_flow(path)
    except FlowError as exc:
        return Entry(stamp, None, None, tuple(str(p) for p in exc.problems))
    return Entry(stamp, compiled, flow_version(compiled))
