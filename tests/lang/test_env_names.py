"""Templates read the environment one variable at a time, by literal name, and a secret
goes out as it is. `runner validate` refuses the rest with a
located problem; a run checks that every name it needs is set before step one."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.cli.main import main
from runner.core.errors import InputError
from runner.lang.load import load_flow
from runner.runtime import redact
from runner.runtime.engine import Engine
from runner.store.sql import SqlStore
from runner.testing import FakeClock

BY_NAME_ENV = "read environment variables by name: `env.NAME`"
BY_NAME_SECRET = "read secrets by name: `secret.NAME`"


def _altered(name: str, how: str) -> str:
    return (
        f"`secret.{name}` goes through {how} here: a secret may only be inserted as it is "
        "(alone, or joined with `~`), so that runner can recognise it and keep it out of "
        "what it stores"
    )


ECHO = "def echo(**kwargs):\n    return kwargs\n"


def write_flow(
    tmp_path: Path, args: dict[str, Any], *, when: str | None = None, tool: str = ECHO
) -> Path:
    """A flow with one python step whose args are `args` (and a switch on `when`)."""
    module = "echo" if tool == ECHO else "failing"
    (tmp_path / "tools").mkdir(exist_ok=True)
    (tmp_path / "tools" / f"{module}.py").write_text(tool)
    steps: list[dict[str, Any]] = [{"id": "call", "tool": "echo", "args": args}]
    if when is not None:
        steps.insert(0, {"id": "pick", "switch": [{"when": when, "next": "call"}]})
    document = {
        "version": 1,
        "name": "env_names",
        "tools": {"echo": {"python": f"tools.{module}:echo"}},
        "steps": steps,
        "on_error": "dead_letter",
    }
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False, width=200), encoding="utf-8")
    return path


def validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = main(["validate", str(path)], out=out)
    lines = (out.getvalue() + capsys.readouterr().err).splitlines()
    return code, [line.split(": ", 2)[-1] for line in lines[:-1]]


# -- validation -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("template", "messages"),
    [
        ("{{ env | tojson }}", [BY_NAME_ENV]),
        ("{{ env }}", [BY_NAME_ENV]),
        ("{{ secret }}", [BY_NAME_SECRET]),
        ("{{ secret['A' ~ 'B'] }}", [BY_NAME_SECRET]),
        ("{{ env[input.name] }}", [BY_NAME_ENV]),
        ("{{ env[0] }}", [BY_NAME_ENV]),
        ("{% for k in env %}{{ k }}{% endfor %}", [BY_NAME_ENV]),
        (
            "{{ env.items() | list }}",
            [
                "`env.items` cannot be read: `items` names a method of the environment, "
                "not a variable; rename the variable"
            ],
        ),
        ("{{ secret.TOKEN | upper }}", [_altered("TOKEN", "the filter `upper`")]),
        (
            "{{ secret.TOKEN | b64encode }}",  # no such filter: it is also reported
            [
                _altered("TOKEN", "the filter `b64encode`"),
                "unknown filter `b64encode`: jinja has no filter of that name",
            ],
        ),
        ("{{ secret.TOKEN[:4] }}", [_altered("TOKEN", "an index or a slice")]),
        ("{{ secret.TOKEN.upper() }}", [_altered("TOKEN", "`.upper`")]),
        ("{{ 'Bearer %s' % secret.TOKEN }}", [_altered("TOKEN", "the operator `%`")]),
        ("{{ 'Bearer ' + secret.TOKEN }}", [_altered("TOKEN", "the operator `+`")]),
        ("{{ ('a' ~ secret.TOKEN) | urlencode }}", [_altered("TOKEN", "the filter `urlencode`")]),
        ("{% set t = secret.TOKEN %}{{ t }}", [_altered("TOKEN", "`set`")]),
        (
            "{% filter upper %}{{ secret.TOKEN }}{% endfilter %}",
            [_altered("TOKEN", "the filter `upper`")],
        ),
        (
            "{% set t %}{{ secret.TOKEN }}{% endset %}{{ t | upper }}",
            [_altered("TOKEN", "`set`")],
        ),
        ("{% if secret.TOKEN == 'x' %}yes{% endif %}", [_altered("TOKEN", "a comparison")]),
    ],
)
def test_reads_of_the_environment_that_validation_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], template: str, messages: list[str]
) -> None:
    code, found = validate(write_flow(tmp_path, {"value": template}), capsys)

    assert code == 1
    assert found == messages


@pytest.mark.parametrize(
    "template",
    [
        "Bearer {{ secret.TOKEN }}",
        "{{ secret['TOKEN'] }}",
        "{{ 'Bearer ' ~ secret.TOKEN ~ '!' }}",
        "{{ secret.TOKEN if env.USE_TOKEN else 'none' }}",
        "{% if env.USE_TOKEN %}{{ secret.TOKEN }}{% endif %}",
        "{{ secret.TOKEN | default('none') }}",
        "{{ env.BASE | upper }}{{ env.BASE[:4] }}",
        "{{ env.DB | default('.runner/x.db') }}",
        "{% set env = {'a': 1} %}{{ env | tojson }}",  # a name the template binds itself
    ],
)
def test_reads_of_the_environment_that_validation_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], template: str
) -> None:
    assert validate(write_flow(tmp_path, {"value": template}), capsys) == (0, [])


def test_problem_is_located_at_the_template(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_flow(tmp_path, {"value": "{{ env | tojson }}"})
    out = io.StringIO()

    assert main(["validate", str(path)], out=out) == 1

    assert out.getvalue().splitlines()[0] == (
        f"{path}:10:12: steps[0].args.value: read environment variables by name: `env.NAME`"
    )


def test_names_a_flow_reads_and_needs(tmp_path: Path) -> None:
    compiled = load_flow(
        write_flow(
            tmp_path,
            {
                "url": "{{ env.BASE }}/x",
                "key": "Bearer {{ secret['TOKEN'] }}",
                "db": "{{ env.DB | default('x.db') }}",
            },
            when="env.MODE == 'fast'",
        )
    )

    assert redact.read_names(compiled, "env") == {"BASE", "DB", "MODE"}
    assert redact.read_names(compiled, "secret") == {"TOKEN"}
    assert redact.required_names(compiled) == {"BASE", "MODE", "TOKEN"}


# -- the run checks every name before step one -------------------------------------------------
ARGS = {"url": "{{ env.BASE }}/x", "key": "{{ secret.TOKEN }}", "db": "{{ env.DB | default('x') }}"}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"TOKEN": "tok-9f3c2a7b51e4"}, "environment variable BASE is not set"),
        ({}, "environment variables BASE, TOKEN are not set"),
        (
            {"TOKEN": "short"},
            "environment variable BASE is not set\nsecret TOKEN is too short to be kept out "
            "of what runner stores (5 characters; at least 8): use a longer secret",
        ),
    ],
)
def test_run_is_refused_before_step_one(
    tmp_path: Path, environ: dict[str, str], message: str
) -> None:
    store = SqlStore("sqlite://")
    engine = Engine(store, clock=FakeClock(), environ=environ)

    with pytest.raises(InputError) as refused:
        engine.start(load_flow(write_flow(tmp_path, ARGS)), {})

    assert str(refused.value) == message
    assert store.list_runs() == []


def test_run_with_every_name_set_reads_them(tmp_path: Path) -> None:
    store = SqlStore("sqlite://")
    engine = Engine(store, environ={"BASE": "https://a.test", "TOKEN": "tok-9f3c2a7b51e4"})

    result = engine.start(load_flow(write_flow(tmp_path, ARGS)), {})

    assert result.status == "completed"
    output = store.checkpoints(result.run_id)[0].output
    assert output == {"url": "https://a.test/x", "key": "[secret TOKEN]", "db": "x"}


def test_cli_run_names_the_missing_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BASE", raising=False)
    monkeypatch.setenv("TOKEN", "tok-9f3c2a7b51e4")
    item = tmp_path / "input.json"
    item.write_text("{}", encoding="utf-8")
    path = write_flow(tmp_path, ARGS)

    code = main(["run", str(path), "--input", str(item), "--db", "sqlite://"], out=io.StringIO())

    assert code == 1
    assert capsys.readouterr().err == "runner: environment variable BASE is not set\n"


def test_resume_is_refused_while_a_name_is_missing_and_the_run_stays_failed(
    tmp_path: Path,
) -> None:
    store = SqlStore("sqlite://")
    path = write_flow(tmp_path, ARGS, tool="def echo(**kwargs):\n    raise ValueError('no')\n")
    environ = {"BASE": "https://a.test", "TOKEN": "tok-9f3c2a7b51e4"}
    failed = Engine(store, environ=environ).start(load_flow(path), {})
    assert failed.status == "failed"

    with pytest.raises(InputError, match=r"^environment variable BASE is not set$"):
        Engine(store, environ={"TOKEN": environ["TOKEN"]}).resume(failed.run_id)

    record = store.run(failed.run_id)
    assert (record.status, record.lease_owner) == ("failed", None)
    assert json.dumps(record.error)  # still the step's own error
