"""Crash reports: the traceback of an internal error, kept where the run store is.

A report goes to `crashes/` beside the SQLite file of the store the command uses
(`.runner/crashes/` for the default store), or, for a store that is no file (a
database server, SQLite in memory), to the user's cache (`~/.cache/runner/crashes/`).
Only the newest `KEPT` reports stay. No secret is written into one: the values of the
secrets the flow reads (when the command names a flow file) and of every environment
variable whose name looks secret (TOKEN, KEY, SECRET, PASSWORD, ...), and the passwords
in URLs the environment holds, are replaced in every form runner.core.secrets knows.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from runner.core.secrets import SecretForms

KEPT = 20
DEFAULT_STORE = ".runner/runner.db"
_SQLITE_FILE = re.compile(r"^sqlite(?:\+\w+)?:///(?P<path>[^?]+)")
_LOOKS_SECRET = re.compile(r"TOKEN|SECRET|PASSW|KEY|CREDENTIAL|PRIVATE|AUTH", re.IGNORECASE)
_SECRET_READ = re.compile(r"""\bsecret\s*(?:\.\s*(\w+)|\[\s*['"]([^'"]+)['"]\s*\])""")


def write(
    text: str,
    db_url: str | None = None,
    flow_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """Write a crash report of `text` (a traceback) for the store at `db_url` (else
    RUNNER_DB, else the default store) with secrets taken out; return its path."""
    environ = os.environ if environ is None else environ
    text = SecretForms.of(secrets_of(environ, flow_file)).redact(text)
    for folder in (folder_for(db_url or environ.get("RUNNER_DB"), environ), _cache(environ)):
        with contextlib.suppress(OSError):
            return _write_in(folder, text)
    return _write_in(Path(tempfile.gettempdir()) / "runner-crashes", text)


def folder_for(db_url: str | None, environ: Mapping[str, str]) -> Path:
    """Where the crash reports of the store at `db_url` go."""
    found = _SQLITE_FILE.match(db_url or f"sqlite:///{DEFAULT_STORE}")
    if found is None or found["path"] == ":memory:":
        return _cache(environ)
    return Path(found["path"]).parent / "crashes"


def secrets_of(environ: Mapping[str, str], flow_file: str | None) -> dict[str, str]:
    """Name -> value of everything a crash report must not hold."""
    names = {n for n in environ if _LOOKS_SECRET.search(n)} | _flow_secrets(flow_file)
    secrets = {n: environ[n] for n in names if n in environ}
    for name, value in environ.items():
        password = _password(value)
        if password:
            secrets.setdefault(f"{name} password", password)
    return secrets


def _flow_secrets(flow_file: str | None) -> set[str]:
    """The names a flow file reads as secrets, found in its text (the flow may be the
    very thing that broke, so it is not parsed)."""
    if not flow_file:
        return set()
    try:
        text = Path(flow_file).read_text(encoding="utf-8", errors="replace")
    except (OSError, ValueError):
        return set()
    return {a or b for a, b in _SECRET_READ.findall(text)}


def _password(value: str) -> str | None:
    if "://" not in value or "@" not in value:
        return None
    try:
        return urlsplit(value.strip()).password
    except ValueError:
        return None


def _cache(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "runner" / "crashes"


def _write_in(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    with tempfile.NamedTemporaryFile(  # readable by its owner only
        "w", dir=folder, prefix=f"crash-{stamp}-", suffix=".txt", delete=False
    ) as report:
        report.write(text)
    _prune(folder, keep=Path(report.name))
    return Path(report.name)


def _prune(folder: Path, keep: Path) -> None:
    """Remove all but the newest KEPT reports (never the one just written)."""
    reports: Iterable[Path] = folder.glob("crash-*.txt")
    dated = []
    for path in reports:
        with contextlib.suppress(OSError):  # another process may prune at the same time
            dated.append((path.stat().st_mtime_ns, path.name, path))
    dated.sort(reverse=True)
    for _, _, path in dated[KEPT:]:
        if path != keep:
            with contextlib.suppress(OSError):
                path.unlink()
