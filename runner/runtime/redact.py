"""Secrets never reach the database, the event log or the terminal: the value of every
secret a flow reads (`secret.NAME`) is replaced wherever it appears in what is stored."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from runner.core import templates
from runner.lang.compiler import CompiledFlow

REDACTED = "[secret {}]"


def redactor(compiled: CompiledFlow, environ: Mapping[str, str]) -> Callable[[Any], Any]:
    """Replaces the value of every secret the flow reads, wherever it appears."""
    secrets = {
        name: environ[name] for name in secret_names(compiled) if len(environ.get(name, "")) >= 4
    }
    if not secrets:
        return lambda value: value

    def redact(value: Any) -> Any:
        if isinstance(value, str):
            for name, secret in secrets.items():
                value = value.replace(secret, REDACTED.format(name))
            return value
        if isinstance(value, Mapping):
            return {k: redact(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [redact(v) for v in value]
        return value

    return redact


def secret_names(compiled: CompiledFlow) -> set[str]:
    """Names the flow reads as `secret.NAME`: their values are never persisted."""
    return read_names(compiled, "secret")


def read_names(compiled: CompiledFlow, root: str) -> set[str]:
    """The names a flow's templates read under `root` (`env` or `secret`)."""
    names: set[str] = set()
    for text in _flow_strings(compiled.flow.document.data):
        if root in text and templates.is_template(text):
            try:
                refs = templates.references(templates.parse(text))
            except templates.TemplateSyntaxError:
                continue
            names |= {str(r.chain[0]) for r in refs if r.root == root and r.chain}
    return names


def _flow_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _flow_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _flow_strings(v)]
    return []
