"""`runner validate` on broken flows: every mistake is a located problem, never a crash.

Each shipped flow (flows/ and examples/) is mutated the way people break YAML by
hand: keys dropped or renamed, values of the wrong type, values swapped, steps copied,
the text cut short or sprinkled with stray characters. Whatever comes out, `runner
validate` must exit 0 (valid) or 1 (problems), and never show a traceback or an
"internal error". Structural mutations edit the parsed data and dump it again with
yaml's safe dumper; textual ones edit the text (comments and flow style included).
"""

from __future__ import annotations

import copy
import io
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from runner.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
SEEDS = sorted(
    path
    for folder in ("flows", "examples")
    for path in (ROOT / folder).rglob("*")
    if path.suffix in (".yaml", ".yml") and not path.name.endswith((".test.yaml", ".test.yml"))
)
SEED_IDS = [str(path.relative_to(ROOT)) for path in SEEDS]
# Cases across all seeds: thousands in all, yet the file stays under a minute on 2 cores.
TOTAL_EXAMPLES = 2000
PER_SEED = max(100, TOTAL_EXAMPLES // max(1, len(SEEDS)))

Path_ = tuple[str | int, ...]
Draw = Callable[..., Any]
YAML_PUNCTUATION = list(":-[]{}#&*!|>'\"%@`,?\t\n ")


# -- plain data ---------------------------------------------------------------------------
def paths(value: Any, prefix: Path_ = ()) -> list[Path_]:
    """Every path inside `value` (not the root itself), parents before children."""
    if isinstance(value, dict):
        items: list[tuple[str | int, Any]] = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return []
    found: list[Path_] = []
    for key, item in items:
        found.append((*prefix, key))
        found += paths(item, (*prefix, key))
    return found


def get(value: Any, path: Path_) -> Any:
    for part in path:
        value = value[part]
    return value


def put(value: Any, path: Path_, new: Any) -> None:
    get(value, path[:-1])[path[-1]] = new


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "list", dict: "mapping"}[type(value)]


def dump(data: Any) -> str:
    """`yaml.safe_dump`, through libyaml when it is there (several times faster)."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(data, Dumper=dumper, sort_keys=False, allow_unicode=True)


# -- mutations ----------------------------------------------------------------------------
class Mutator:
    """The mutations of one seed flow. Replacement keys and values are drawn partly from
    the flow's own keys and values, so that mutants stay plausible (a route naming
    another step, a key that belongs elsewhere) and get past the schema to the meaning
    checks more often than random text would."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.data = yaml.safe_load(text)
        everywhere = paths(self.data)
        self.keys = sorted({str(p[-1]) for p in everywhere if isinstance(p[-1], str)})
        scalars = {
            get(self.data, p) for p in everywhere if not isinstance(get(self.data, p), dict | list)
        }
        self.scalars = sorted(scalars, key=repr)
        texts = [v for v in self.scalars if isinstance(v, str)] + self.keys
        leaves = st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(),
            st.text(max_size=16),
            st.sampled_from(self.scalars),
        )
        nested = st.one_of(leaves, st.lists(leaves, max_size=2))
        self.values: dict[str, st.SearchStrategy[Any]] = {
            "null": st.none(),
            "boolean": st.booleans(),
            "number": st.one_of(st.integers(), st.floats()),
            "string": st.one_of(st.text(max_size=16), st.sampled_from(texts)),
            "list": st.lists(nested, max_size=3),
            "mapping": st.dictionaries(
                st.one_of(st.sampled_from(self.keys), st.text(max_size=8)), nested, max_size=3
            ),
        }
        self.structural: dict[str, Callable[[Any, Draw], Any]] = {
            "drop_key": self.drop_key,
            "rename_key": self.rename_key,
            "retype": self.retype,
            "swap_values": self.swap_values,
            "duplicate_step": self.duplicate_step,
        }
        self.textual: dict[str, Callable[[str, Draw], str]] = {
            "truncate": self.truncate,
            "insert_characters": self.insert_characters,
        }

    def mutant(self, draw: Draw) -> str:
        """One to three mutations: structural ones on the data, then textual ones."""
        names = draw(
            st.lists(st.sampled_from([*self.structural, *self.textual]), min_size=1, max_size=3),
            label="mutations",
        )
        text = self.text
        if any(name in self.structural for name in names):
            data = copy.deepcopy(self.data)
            for name in names:
                if name in self.structural:
                    data = self.structural[name](data, draw)
            text = dump(data)
        for name in names:
            if name in self.textual:
                text = self.textual[name](text, draw)
        return text

    @staticmethod
    def _mappings(data: Any) -> list[Path_]:
        return [p for p in [(), *paths(data)] if isinstance(get(data, p), dict) and get(data, p)]

    def drop_key(self, data: Any, draw: Draw) -> Any:
        mappings = self._mappings(data)
        if mappings:
            mapping = get(data, draw(st.sampled_from(mappings)))
            del mapping[draw(st.sampled_from(sorted(mapping)))]
        return data

    def rename_key(self, data: Any, draw: Draw) -> Any:
        mappings = self._mappings(data)
        if not mappings:
            return data
        path = draw(st.sampled_from(mappings))
        mapping = get(data, path)
        old = draw(st.sampled_from(sorted(mapping)))
        new = draw(
            st.one_of(
                st.sampled_from(self.keys),
                st.text(max_size=12),
                st.sampled_from([old.upper(), old[:-1], old + "s", f" {old}"]),
            )
        )
        renamed = {(new if key == old else key): value for key, value in mapping.items()}
        if not path:
            return renamed
        put(data, path, renamed)
        return data

    def retype(self, data: Any, draw: Draw) -> Any:
        """Replace a value with one of another kind: text, number, list, mapping or null."""
        everywhere = paths(data)
        path = draw(st.sampled_from(everywhere)) if everywhere else ()
        old = get(data, path)
        new = draw(self.values[draw(st.sampled_from([k for k in self.values if k != kind(old)]))])
        if not path:
            return new
        put(data, path, new)
        return data

    def swap_values(self, data: Any, draw: Draw) -> Any:
        everywhere = paths(data)
        if len(everywhere) < 2:
            return data
        first = draw(st.sampled_from(everywhere))
        # neither inside the other
        others = [p for p in everywhere if p[: len(first)] != first and first[: len(p)] != p]
        if others:
            second = draw(st.sampled_from(others))
            a, b = get(data, first), get(data, second)
            put(data, first, b)
            put(data, second, a)
        return data

    def duplicate_step(self, data: Any, draw: Draw) -> Any:
        """Copy a step to another place in `steps` (without steps, any list's item)."""
        lists = [p for p in [(), *paths(data)] if isinstance(get(data, p), list) and get(data, p)]
        if not lists:
            return data
        target = ("steps",) if ("steps",) in lists else draw(st.sampled_from(lists))
        items = get(data, target)
        item = items[draw(st.integers(0, len(items) - 1))]
        items.insert(draw(st.integers(0, len(items))), copy.deepcopy(item))
        return data

    @staticmethod
    def truncate(text: str, draw: Draw) -> str:
        return text[: draw(st.integers(0, len(text)))]

    @staticmethod
    def insert_characters(text: str, draw: Draw) -> str:
        # Anywhere, or where a value starts (after `key: ` or `- `), where it bites most.
        value_starts = [m.end() for m in re.finditer(r": |- ", text)] or [0]
        offset = draw(st.one_of(st.integers(0, len(text)), st.sampled_from(value_starts)))
        inserted = draw(
            st.one_of(
                st.text(st.sampled_from(YAML_PUNCTUATION), min_size=1, max_size=6),
                st.text(st.characters(codec="utf-8"), min_size=1, max_size=6),
                # a long run of one character: long numbers, long names, deep nesting
                st.builds(
                    lambda char, count: char * count,
                    st.sampled_from([*"0123456789a[{-", "  "]),
                    st.integers(1, 6000),
                ),
            )
        )
        return text[:offset] + inserted + text[offset:]


# -- the property -------------------------------------------------------------------------
def seed_folder(tmp: Path, seed: Path) -> Path:
    """A folder for the mutants of `seed`, with a copy of its python tools and its
    labelled examples beside them, so that mutants whose tools and files still resolve
    get as far as the meaning checks."""
    folder = tmp / seed.stem
    folder.mkdir()
    if (seed.parent / "tools").is_dir():
        shutil.copytree(seed.parent / "tools", folder / "tools")
    for examples in seed.parent.glob(f"{seed.stem}.examples.jsonl"):
        shutil.copy(examples, folder / examples.name)
    return folder


def validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit code and everything printed (stdout, the `out` stream and stderr)."""
    out = io.StringIO()
    code = main(["validate", str(path)], out=out)
    captured = capsys.readouterr()
    return code, out.getvalue() + captured.out + captured.err


def crash_report(output: str) -> str:
    """The traceback runner saved for an internal error, if the output names one."""
    found = re.search(r"traceback is in (\S+)", output)
    return Path(found.group(1)).read_text(encoding="utf-8") if found else ""


def test_seeds_are_found() -> None:
    assert ROOT / "flows" / "support.yaml" in SEEDS
    assert len(SEEDS) >= 5


@pytest.mark.parametrize("seed", SEEDS, ids=SEED_IDS)
def test_unmutated_dump_is_valid(
    seed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Structural mutants start from a valid flow, so what breaks them is the mutation."""
    target = seed_folder(tmp_path, seed) / seed.name
    target.write_text(dump(Mutator(seed.read_text(encoding="utf-8")).data), encoding="utf-8")
    code, output = validate(target, capsys)
    assert code == 0, output


# The fast loop (`-m "not slow"`) fuzzes the richest seed; the full suite fuzzes them all.
FAST_SEED = ROOT / "flows" / "support.yaml"
MUTANT_SEEDS = [
    pytest.param(seed, id=name, marks=() if seed == FAST_SEED else pytest.mark.slow)
    for seed, name in zip(SEEDS, SEED_IDS, strict=True)
]


@pytest.mark.parametrize("seed", MUTANT_SEEDS)
def test_mutants_are_reported_never_crash(
    seed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    mutator = Mutator(seed.read_text(encoding="utf-8"))
    target = seed_folder(tmp_path, seed) / seed.name
    # runner saves the traceback of an internal error to a temporary file: keep those
    # in this test's folder rather than in /tmp (a shrinking failure writes hundreds)
    crashes = tmp_path / "crash-reports"
    crashes.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(crashes))

    @settings(
        max_examples=PER_SEED,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.data())
    def mutant_is_reported(data: st.DataObject) -> None:
        text = mutator.mutant(data.draw)
        note(f"mutated flow:\n{text}")
        target.write_text(text, encoding="utf-8")
        code, output = validate(target, capsys)
        note(f"exit {code}, output:\n{output}{crash_report(output)}")
        assert code in (0, 1)
        assert "Traceback" not in output
        assert "internal error" not in output
        assert ("flow valid" if code == 0 else "problem") in output

    mutant_is_reported()
