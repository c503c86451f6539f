"""Secrets never reach the database, the event log or the terminal: every form of the
value of every secret a flow reads (`secret.NAME`; see runner.core.secrets for the
forms) is replaced wherever it appears in what a step commits.

A run reads the environment only by literal name (runner validate refuses anything
else), so before step one it can check that every variable the flow needs is set, and
that every secret is long enough to be recognised (`MIN_SECRET_LENGTH`): a shorter one
would be refused mid-run or, worse, missed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from runner.core import templates
from runner.core.env_reads import EnvRead, environment_reads
from runner.core.errors import InputError
from runner.core.secrets import MIN_SECRET_LENGTH, SecretForms
from runner.lang.compiler import CompiledFlow

_EXPRESSION_KEYS = ("when", "check")

__all__ = [
    "MIN_SECRET_LENGTH",
    "check_environment",
    "read_names",
    "redactor",
    "required_names",
    "secret_names",
]


def redactor(compiled: CompiledFlow, environ: Mapping[str, str]) -> Callable[[Any], Any]:
    """Replaces every form of every secret the flow reads, wherever it appears (in
    mapping keys too)."""
    secrets = SecretForms.of({n: environ[n] for n in secret_names(compiled) if n in environ})
    if not secrets:
        return lambda value: value

    def redact(value: Any) -> Any:
        if isinstance(value, str):
            return secrets.redact(value)
        if isinstance(value, Mapping):
            return {redact(k): redact(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [redact(v) for v in value]
        return value

    return redact


def check_environment(compiled: CompiledFlow, environ: Mapping[str, str]) -> None:
    """Refuse a run (InputError) whose flow reads an environment variable that is not
    set, or a secret too short to be recognised in what the run stores."""
    problems = []
    missing = sorted(required_names(compiled) - set(environ))
    if missing:
        many = len(missing) > 1
        problems.append(
            f"environment variable{'s' * many} {', '.join(missing)} "
            f"{'are' if many else 'is'} not set"
        )
    for name in sorted(secret_names(compiled) & set(environ)):
        length = len(environ[name].strip())
        if length < MIN_SECRET_LENGTH:
            problems.append(
                f"secret {name} is too short to be kept out of what runner stores "
                f"({length} characters; at least {MIN_SECRET_LENGTH}): use a longer secret"
            )
    if problems:
        raise InputError("\n".join(problems))


def secret_names(compiled: CompiledFlow) -> set[str]:
    """Names the flow reads as `secret.NAME`: their values are never persisted."""
    return read_names(compiled, "secret")


def read_names(compiled: CompiledFlow, root: str) -> set[str]:
    """The names a flow's templates read under `root` (`env` or `secret`)."""
    return {r.name for r in _reads(compiled) if r.root == root and r.name is not None}


def required_names(compiled: CompiledFlow) -> set[str]:
    """The environment variables a run needs: every name the flow reads, except those
    read only with a default (`{{ env.DB | default('x.db') }}`)."""
    return {r.name for r in _reads(compiled) if r.name is not None and not r.optional}


def _reads(compiled: CompiledFlow) -> tuple[EnvRead, ...]:
    return _reads_of(tuple(_flow_texts(compiled.flow.document.data)))


@functools.lru_cache(maxsize=64)
def _reads_of(texts: tuple[tuple[str, bool], ...]) -> tuple[EnvRead, ...]:
    """Every read of `env` and `secret` in these (text, is a bare expression) pairs
    (parsing costs a fraction of a millisecond a template; a batch starts the same
    flow over and over)."""
    reads: list[EnvRead] = []
    for text, expression in texts:
        try:
            tree = templates.parse_expression(text) if expression else templates.parse(text)
        except templates.TemplateSyntaxError:
            continue  # runner validate reports it
        reads += environment_reads(tree)
    return tuple(reads)


def _flow_texts(value: Any, key: Any = None) -> list[tuple[str, bool]]:
    """The flow's templates that may read the environment, and whether each is a bare
    expression (a switch's or an approval's `when`, a policy's `check`)."""
    if isinstance(value, str):
        if "env" not in value and "secret" not in value:
            return []
        if templates.is_template(value):
            return [(value, False)]
        return [(value, True)] if key in _EXPRESSION_KEYS else []
    if isinstance(value, Mapping):
        return [t for k, v in value.items() for t in _flow_texts(v, k)]
    if isinstance(value, list):
        return [t for v in value for t in _flow_texts(v, key)]
    return []
