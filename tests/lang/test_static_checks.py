"""Mistakes `runner validate` finds before any run, located and worded for the author.

YAML layout mistakes are explained from the lines' indentation (not the parser's own
words); each missing required key is named once; unknown `local/` models, model files
that are not there, unknown template filters and tests, and fields read from a text
answer are errors; a field read from a tool output with no schema under a spelling close
to one read elsewhere is a warning, which does not stop the flow.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest

from runner.cli.main import main
from runner.core import local_models
from runner.core.errors import FlowError, Problem
from runner.lang.load import load_flow
from runner.lang.schema import instance_problems
from runner.lang.source import load_text

ROOT = Path(__file__).resolve().parents[2]
HEAD = "version: 1\nname: demo\nmodels:\n  default: openai/gpt-4o-mini\n"


def yaml_problem(text: str) -> Problem:
    """The one problem of YAML text that does not parse."""
    with pytest.raises(FlowError) as caught:
        load_text(textwrap.dedent(text).lstrip("\n"), "f.yaml")
    [problem] = caught.value.problems
    return problem


def flow_problems(tmp_path: Path, text: str) -> list[Problem]:
    """The problems of a flow written to tmp_path/flow.yaml (empty if it is valid)."""
    path = tmp_path / "flow.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    try:
        load_flow(path)
    except FlowError as exc:
        return exc.problems
    return []


def messages(problems: list[Problem]) -> list[str]:
    return [p.message for p in problems]


# -- YAML layout ------------------------------------------------------------------------
# (YAML text, line, column, fragments the message must hold)
LAYOUT = {
    "list item right of the others": (
        """
        steps:
          - id: a
            x: 1
            - id: b
        """,
        4,
        5,
        ["list item", "line 2 starts at column 3, this one at column 5", "align it"],
    ),
    "list item left of the others": (
        """
        steps:
            - id: a
              x: 1
          - id: b
        """,
        4,
        3,
        ["line 2 starts at column 5, this one at column 3"],
    ),
    "key left of its siblings": (
        """
        a:
            b: 1
          c: 2
        """,
        3,
        3,
        ["`c` starts at column 3", "`b` on line 2 starts at column 5", "`a` on line 1"],
    ),
    "key right of a sibling that has a value": (
        """
        a:
          model: x
            prompt: y
        """,
        3,
        5,
        ["`prompt` is indented more than `model` on line 2", "align it with `model`"],
    ),
    "key under the dash of a list item": (
        """
        steps:
          - id: a
          next: b
        """,
        3,
        3,
        ["column of the `-` on line 2", "indent it to column 5", "`id`"],
    ),
    "key between a dash and the item's keys": (
        """
        steps:
          - id: a
           llm: x
        """,
        3,
        4,
        ["`llm` starts at column 4", "`id` on line 2 starts at column 5"],
    ),
    "no space after a colon": (
        """
        a:
          b:1
          c: 2
        """,
        2,
        4,
        ["`b` needs a space after its `:`", "`b: 1`"],
    ),
    "no space after a colon, on the last line": (
        """
        a:
          b: 1
          c:2
        """,
        3,
        4,
        ["`c` needs a space", "`c: 2`"],
    ),
    "no space after a dash": (
        """
        steps:
          -id: a
          - id: b
        """,
        2,
        3,
        ["needs a space after its `-`", "write `- id`"],
    ),
    "colon inside a value": (
        """
        a:
          prompt: Answer: yes
        """,
        2,
        17,
        ["holds `: `", "put the whole value of `prompt` in quotes"],
    ),
    "a line that is text among keys": (
        """
        a:
          b: 1
          just text
          c: 2
        """,
        3,
        3,
        ["not `key: value`"],
    ),
    "a key after a line of text": (
        """
        a:
          some text
          b: 1
        """,
        3,
        3,
        ["goes on from the text on line 2", "put all of it in quotes"],
    ),
    "text after a closing quote": ("a: 'it's'\n", 1, 8, ["nothing after the closing quote", "''"]),
    "a flow mapping without a comma": ("a: {b: 1 c: 2}\n", 1, 11, ["needs a `,`"]),
    "a flow mapping never closed": ("a: {b: 1\nc: 2\n", 1, 4, ["`{` is never closed", "`}`"]),
    "a bracket closed by the other kind": (
        "a: [{b: {c: d}]\n",
        1,
        15,
        ["this `]` closes the mapping opened with `{` at line 1, column 5", "with `}` first"],
    ),
    "a value starting with @": ("a: @team\n", 1, 4, ["cannot start with `@`", "quotes"]),
    "a tab": ("a:\n\tb: 1\n", 2, 1, ["tab"]),
    "an unclosed quote": ('a:\n  b: "x\nc: 1\n', 2, 6, ["never ends"]),
}


@pytest.mark.parametrize("case", list(LAYOUT), ids=str)
def test_layout_mistakes_are_explained_where_they_are(case: str) -> None:
    text, line, col, fragments = LAYOUT[case]
    problem = yaml_problem(text)
    assert (problem.line, problem.col) == (line, col), problem
    assert problem.path == "(file)"
    assert "did not find expected" not in problem.message
    assert "not allowed in this context" not in problem.message
    for fragment in fragments:
        assert fragment in problem.message, problem


def test_layout_lines_are_counted_as_yaml_counts_them() -> None:
    problem = yaml_problem("a:\r\n    b: 1\r\n  c: 2\r\n")
    assert (problem.line, problem.col) == (3, 3), problem
    assert "`b` on line 2 starts at column 5" in problem.message


def test_a_mistake_the_explainer_cannot_read_keeps_the_parsers_words() -> None:
    problem = yaml_problem("a: !<x y\n")
    assert problem.message.startswith("invalid YAML: ")


def test_a_missing_space_where_a_mapping_belongs_is_explained_by_the_schema(
    tmp_path: Path,
) -> None:
    [problem] = flow_problems(
        tmp_path,
        HEAD + "steps:\n  - id: ask\n    llm:\n      prompt:Say hi\non_error: dead_letter\n",
    )
    assert problem.path == "steps[0].llm"
    assert "put a space after the `:`: `prompt: Say hi`" in problem.message


# -- required keys ----------------------------------------------------------------------
def test_each_missing_required_key_is_named_once(tmp_path: Path) -> None:
    problems = flow_problems(
        tmp_path,
        """
        tools:
          mail:
            smtp: {host: smtp.example.com}
        steps:
          - tool: mail
        on_error: dead_letter
        """,
    )
    assert sorted(messages(problems)) == [
        f"missing required key `{key}`"
        for key in ("body", "from", "id", "name", "subject", "to", "version")
    ]


def test_run_input_names_each_missing_field_once() -> None:
    schema = {"type": "object", "required": ["a", "b"]}
    assert instance_problems(schema, {}) == [
        "(the value): missing required key `a`",
        "(the value): missing required key `b`",
    ]


# -- local models -----------------------------------------------------------------------
def test_the_local_model_names_match_what_the_runtime_runs() -> None:
    from runner.runtime.embeddings import LOCAL
    from runner.runtime.local_models import KNOWN

    assert set(local_models.CHAT_MODELS) == set(KNOWN)
    assert {local_models.PREFIX + n for n in local_models.EMBEDDING_MODELS} == set(LOCAL)


def flow_with_model(model: str) -> str:
    return (
        f"version: 1\nname: demo\nmodels:\n  default: {model}\n"
        "steps:\n  - id: ask\n    llm: {prompt: Say hi}\non_error: dead_letter\n"
    )


@pytest.mark.parametrize("model", ["local/smollm2", "openai/gpt-4o-mini", "ollama/llama3:8b"])
def test_a_known_model_passes(tmp_path: Path, model: str) -> None:
    assert flow_problems(tmp_path, flow_with_model(model)) == []


def test_an_unknown_local_model_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    [problem] = flow_problems(tmp_path, flow_with_model("{model: local/smolm2}"))
    assert (problem.line, problem.col, problem.path) == (4, 20, "models.default.model")
    assert "unknown local model `local/smolm2`; did you mean `local/smollm2`?" in problem.message


def test_a_model_file_is_read_from_the_flows_folder(tmp_path: Path) -> None:
    [problem] = flow_problems(tmp_path, flow_with_model("local/models/tiny.gguf"))
    assert "no model file `models/tiny.gguf`" in problem.message
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.gguf").write_bytes(b"GGUF")
    assert flow_problems(tmp_path, flow_with_model("local/models/tiny.gguf")) == []
    absolute = tmp_path / "models" / "tiny.gguf"
    assert flow_problems(tmp_path / "models", flow_with_model(f"local/{absolute}")) == []


def test_an_embedding_model_cannot_answer_and_a_chat_model_cannot_embed(tmp_path: Path) -> None:
    (tmp_path / "examples.jsonl").write_text('{"text": "a", "output": {"category": "x"}}\n')
    problems = flow_problems(
        tmp_path,
        """
        version: 1
        name: demo
        models:
          default: openai/gpt-4o-mini
          vectors: local/minilm
        steps:
          - id: ask
            llm:
              model: vectors
              prompt: Say hi
              output: {type: object, properties: {category: {type: string}}}
            confidence:
              method: similarity
              examples: examples.jsonl
              text: "{{ input.text }}"
              model: local/smollm2
              min: 0.5
        on_error: dead_letter
        """,
    )
    assert [(p.path, p.message.split(" is ")[0]) for p in problems] == [
        ("steps[0].llm.model", "model `vectors` (`local/minilm`)"),
        ("steps[0].confidence.model", "`local/smollm2`"),
    ]


def test_a_model_key_without_its_space_is_explained(tmp_path: Path) -> None:
    [problem] = flow_problems(tmp_path, flow_with_model("\n    model:openai/gpt-4o"))
    assert "put a space after the `:` (`model: openai/gpt-4o`)" in problem.message


# -- template filters and tests ---------------------------------------------------------
def flow_with_prompt(prompt: str) -> str:
    return (
        HEAD + f"steps:\n  - id: ask\n    llm:\n      prompt: {prompt!r}\non_error: dead_letter\n"
    )


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("{{ input.x | lowr }}", "unknown filter `lowr`; did you mean `lower`?"),
        ("{% filter uper %}hi{% endfilter %}", "unknown filter `uper`; did you mean `upper`?"),
        ("{{ input.x is od }}", "unknown test `od`; did you mean `odd`?"),
        ("{{ input.x | zzz }}", "unknown filter `zzz`: jinja has no filter of that name"),
    ],
)
def test_an_unknown_filter_or_test_is_named(tmp_path: Path, prompt: str, message: str) -> None:
    [problem] = flow_problems(tmp_path, flow_with_prompt(prompt))
    assert (problem.line, problem.path, problem.message) == (8, "steps[0].llm.prompt", message)


def test_known_filters_and_tests_pass(tmp_path: Path) -> None:
    prompt = "{{ input.x | lower | truncate(9) }} {{ input.n is odd }} {{ input.y | default('') }}"
    assert flow_problems(tmp_path, flow_with_prompt(prompt)) == []


# -- fields of a text answer ------------------------------------------------------------
def gated_flow(output: str, score: str) -> str:
    return (
        HEAD
        + f"steps:\n  - id: ask\n    llm:\n      prompt: Classify.\n{output}"
        + f'    confidence: {{score: "{score}", min: 0.5}}\non_error: dead_letter\n'
    )


def test_a_gate_reading_a_field_of_a_text_answer_is_refused(tmp_path: Path) -> None:
    [problem] = flow_problems(tmp_path, gated_flow("", "{{ output.confidence }}"))
    assert (problem.line, problem.path) == (9, "steps[0].confidence.score")
    assert problem.message.startswith("`output.confidence` cannot exist: `llm` step `ask`")
    assert "give its `llm` an `output` schema with a `confidence` field" in problem.message


@pytest.mark.parametrize(
    ("output", "score"),
    [
        ("      output: {type: object}\n", "{{ output.confidence }}"),
        ("", "{{ output | length / 100 }}"),
        ("", "{{ output.count('yes') / 3 }}"),
        ("", "{{ 1 if output[0] == 'y' else 0 }}"),
    ],
)
def test_reading_a_text_answer_as_text_passes(tmp_path: Path, output: str, score: str) -> None:
    assert flow_problems(tmp_path, gated_flow(output, score)) == []


def test_a_field_of_a_value_typed_text_cannot_be_read(tmp_path: Path) -> None:
    text = HEAD.replace("models:", "input: {type: string}\nmodels:") + (
        "steps:\n  - id: ask\n    llm: {prompt: '{{ input.body }}'}\non_error: dead_letter\n"
    )
    [problem] = flow_problems(tmp_path, text)
    assert problem.message == "`input.body` cannot exist: `input` is text, which has no fields"


# -- warnings ---------------------------------------------------------------------------
def tool_flow(tmp_path: Path, reads: list[str], output: str = "") -> Path:
    (tmp_path / "tools").mkdir(exist_ok=True)
    (tmp_path / "tools" / "lk.py").write_text("def get(**kw):\n    return {}\n")
    prompts = "".join(
        f"  - id: s{i}\n    llm: {{prompt: '{{{{ steps.fetch.output.{read} }}}}'}}\n"
        for i, read in enumerate(reads)
    )
    text = (
        HEAD
        + f"tools:\n  lookup:\n    python: tools.lk:get\n{output}"
        + "steps:\n  - id: fetch\n    tool: lookup\n"
        + prompts
        + "on_error: dead_letter\n"
    )
    path = tmp_path / "flow.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_close_spelling_read_once_from_a_schemaless_tool_is_a_warning(tmp_path: Path) -> None:
    path = tool_flow(tmp_path, ["title", "title", "titel"])
    [warning] = load_flow(path).warnings
    assert (warning.severity, warning.line, warning.path) == ("warning", 16, "steps[3].llm.prompt")
    assert warning.message.startswith("`steps.fetch.output.titel` may be misspelled")
    assert "did you mean `title`?" in warning.message
    assert str(warning).startswith(f"{path}:16:19: warning: steps[3].llm.prompt: ")


@pytest.mark.parametrize(
    ("reads", "output"),
    [
        (["title", "titel"], ""),  # each read once: nothing tells which is right
        (["line1", "line1", "line2"], ""),  # a series, not a misspelling
        (["title", "title", "name"], ""),  # not close
        (["title", "title", "titel"], "    output: {type: object}\n"),  # a schema decides
    ],
)
def test_no_warning_without_a_sound_reason(tmp_path: Path, reads: list[str], output: str) -> None:
    assert load_flow(tool_flow(tmp_path, reads, output)).warnings == ()


def test_a_warning_does_not_fail_validate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool_flow(tmp_path, ["title", "title", "titel"])
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "flow.yaml"], out=io.StringIO()) == 0


def test_a_warning_beside_an_error_is_reported_with_it(tmp_path: Path) -> None:
    path = tool_flow(tmp_path, ["title", "title", "titel"])
    path.write_text(path.read_text().replace("on_error: dead_letter", "on_error: nowhere"))
    with pytest.raises(FlowError) as caught:
        load_flow(path)
    assert sorted(p.severity for p in caught.value.problems) == ["error", "warning"]


def test_an_error_prints_as_before() -> None:
    problem = Problem("f.yaml", 3, 5, "steps[0]", "missing required key `id`")
    assert str(problem) == "f.yaml:3:5: steps[0]: missing required key `id`"


@pytest.mark.parametrize(
    "flow",
    sorted(
        p
        for folder in ("flows", "examples")
        for p in (ROOT / folder).glob("*.yaml")
        if not p.name.endswith(".test.yaml")
    ),
    ids=lambda p: p.name,
)
def test_shipped_flows_have_no_warnings(flow: Path) -> None:
    assert load_flow(flow).warnings == ()
