"""`runner schema` and `runner init`: what an editor and a new flow folder need after
`pip install`, with no clone of runner's repository.

`runner schema` prints a JSON Schema of runner's files (flows, flow tests) or writes both
into a folder, for the `# yaml-language-server: $schema=...` line that gives editors
completion, hover and diagnostics. `runner init DIR` starts a flow folder: a commented
starter flow that points at its schema, its offline tests, a labelled example set for
`runner eval`, an example input and a pre-commit config; each file from its template
in `runner/starter/`, with the flow's name filled in.
"""

from __future__ import annotations

import argparse
import re
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from runner.core.errors import UsageError
from runner.core.vocabulary import ExitCode
from runner.lang.schema import schema_text

SCHEMAS = {"flow": "flow.v1.json", "test": "flowtest.v1.json"}
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")  # as the flow schema's `name`


def add_project_commands(commands: Any) -> None:
    schema = commands.add_parser("schema", help="print or write the JSON Schemas of runner files")
    schema.add_argument("which", nargs="?", choices=tuple(SCHEMAS), default="flow")
    schema.add_argument(
        "--write", metavar="DIR", help="write every schema into DIR instead of printing one"
    )
    schema.set_defaults(command=cmd_schema)

    init = commands.add_parser("init", help="start a new flow folder")
    init.add_argument("folder", metavar="DIR")
    init.add_argument("--name", help="the flow's name (default: the folder's name)")
    init.set_defaults(command=cmd_init)


def cmd_schema(args: argparse.Namespace, out: TextIO) -> int:
    if args.write is None:
        out.write(schema_text(SCHEMAS[args.which]))
        return ExitCode.OK
    folder = Path(args.write)
    written = _write_schemas(folder)
    for path in written:
        print(f"wrote {path}", file=out)
    print(
        f"point a flow at it with a first line like: "
        f"# yaml-language-server: $schema={written[0].as_posix()}",
        file=out,
    )
    return ExitCode.OK


def _write_schemas(folder: Path) -> list[Path]:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for name in SCHEMAS.values():
            (folder / name).write_text(schema_text(name), encoding="utf-8")
            written.append(folder / name)
    except OSError as exc:
        raise UsageError(f"cannot write the schemas into {folder}: {exc.strerror}") from exc
    return written


def cmd_init(args: argparse.Namespace, out: TextIO) -> int:
    folder = Path(args.folder)
    name = args.name or folder.resolve().name.lower().replace(" ", "_")
    if not NAME.match(name):
        raise UsageError(
            f"`{name}` cannot name a flow: use lowercase letters, digits, `_` and `-`, "
            "starting with a letter; give one with --name"
        )
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"{folder} exists and is not an empty folder")
    files = {  # what is written -> its template in runner/starter
        f"{name}.yaml": "flow.yaml.tmpl",
        f"{name}.test.yaml": "flow.test.yaml.tmpl",
        f"{name}.cases.jsonl": "cases.jsonl.tmpl",
        "input.json": "input.json.tmpl",
        ".pre-commit-config.yaml": "pre-commit-config.yaml.tmpl",
    }
    _write_schemas(folder / "schemas")
    starter = resources.files("runner").joinpath("starter")
    for target, source in files.items():
        text = starter.joinpath(source).read_text(encoding="utf-8").replace("NAME", name)
        (folder / target).write_text(text, encoding="utf-8")
    print(f"started flow `{name}` in {folder}:", file=out)
    for target in [*files, "schemas/"]:
        print(f"  {target}", file=out)
    print(f"next: cd {folder} && runner validate . && runner test .", file=out)
    print(f"then measure it: runner eval {name}.yaml --data {name}.cases.jsonl", file=out)
    return ExitCode.OK
