"""`runner graph`: the Mermaid and dot drawings of a flow.

The unit tests read the text drawn. The `slow` tests render it with a real renderer,
mermaid-cli (`mmdc`) on Debian's Chromium: installed once per cache folder
(~/.cache/runner-test/mermaid) by npm, and skipped when Chromium, npm or the network is
missing, unless RUNNER_REQUIRE_MERMAID=1 (CI), which turns every skip into a failure.
"""

from __future__ import annotations

import contextlib
import fcntl
import html
import io
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.cli.main import main
from runner.lang.compiler import CompiledFlow
from runner.lang.diagram import ELLIPSIS, MAX_CONDITION, dot, dot_text, mermaid, mermaid_text
from runner.lang.load import load_flow, load_flow_text

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(
    path
    for folder in ("flows", "examples")
    for path in (ROOT / folder).glob("*.yaml")
    if not path.name.endswith(".test.yaml")
)
# Words Mermaid's state diagram reads as syntax (those a step id may spell: lowercase).
KEYWORDS = (
    "note", "state", "class", "classdef", "click", "default", "style", "scale", "accdescr",
    "acctitle", "direction", "end", "href", "as", "statediagram", "hide", "left", "right",
    "of", "fork", "join", "choice",
)  # fmt: skip
# Conditions holding every character and sequence Mermaid would read as something else.
CONDITIONS = (
    "input.x == 'a: b; c \"d\" #e {f} <g> <b>h</b>'",
    "input.x == 'x::y' or input.x == 'ends:' or input.x == '#59;#quot;&amp;&lt;'",
    "input.x in ['*em*', '**strong**', '_em_', '__strong__', '$$math$$', 'a\\\\*b']",
    "input.x == '%%{init: {\"theme\": \"dark\"}}%%' or input.x == 'direction TB'",
    "input.x == '<https://example.com>' or input.x == 'one'\n  or input.x == 'two'",
)
STEP_ID = re.compile(r"^(s|r)\d+$|^e_[a-z_]+$|^\[\*\]$")
ARROW = re.compile(r"^    (\S+) --> (\S+) : (.*)$")
STATE = re.compile(r'^    state "([^"]*)" as (\S+)$')
DOT_ARROW = re.compile(r'^    (\S+) -> (\S+) \[label=(".*")\];$')


def compiled(data: dict[str, Any]) -> CompiledFlow:
    return load_flow_text(yaml.safe_dump(data, sort_keys=False), "flow.yaml")


def flow(*steps: dict[str, Any], **top: Any) -> dict[str, Any]:
    data = {"version": 1, "name": "drawn", "input": {"type": "object"}, "steps": list(steps)}
    return {**data, "on_error": "dead_letter", **top}


def switch(step_id: str, *cases: tuple[str, str], **more: Any) -> dict[str, Any]:
    return {"id": step_id, "switch": [{"when": w, "next": n} for w, n in cases], **more}


def keyword_flow() -> dict[str, Any]:
    """Every keyword as a step id; the first step switches on every condition."""
    first = switch(KEYWORDS[0], *((c, KEYWORDS[1]) for c in CONDITIONS))
    rest = [switch(k, ("true", "human_review")) for k in KEYWORDS[1:]]
    return flow(first, *rest)


def unescape_mermaid(text: str) -> str:
    """What Mermaid shows for `text`: `#35;` -> `&#35;`, `#quot;` -> `&quot;`, decoded."""
    entities = re.sub(r"#(\w+);", lambda m: f"&#{m[1]};" if m[1].isdigit() else f"&{m[1]};", text)
    return html.unescape(entities)


def unescape_dot(quoted: str) -> str:
    assert quoted[0] == quoted[-1] == '"'
    text = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], quoted[1:-1])
    return text.replace("&amp;", "&")


def states(text: str) -> dict[str, str]:
    """Mermaid: state id -> the name it shows."""
    found = (STATE.match(line) for line in text.splitlines())
    return {m[2]: unescape_mermaid(m[1]) for m in found if m}


def arrows(text: str) -> list[tuple[str, str, str]]:
    """Mermaid: (source, dest, label shown), each name resolved, `[*]` kept."""
    names = states(text)
    found = (ARROW.match(line) for line in text.splitlines())
    return [
        (names.get(m[1], m[1]), names.get(m[2], m[2]), unescape_mermaid(m[3])) for m in found if m
    ]


# -- 1. step ids that are Mermaid keywords ------------------------------------------------


def test_keywords_are_names_never_ids() -> None:
    text = mermaid(compiled(keyword_flow()))
    assert set(KEYWORDS) <= set(states(text).values())
    ids = []
    for line in text.splitlines()[1:]:
        if match := STATE.match(line) or re.match(r"^    note right of (\S+)$", line):
            ids.append(match[len(match.groups())])
        elif match := ARROW.match(line) or re.match(r"^    (\S+) --> (\S+)$", line):
            ids += [match[1], match[2]]
        elif match := re.match(r"^    class (\S+) \w+$", line):
            ids += match[1].split(",")
        else:  # a note's lines, its end, a style
            assert re.match(r"^(        \S.*|    end note|    classDef \w+ \S+.*)$", line), line
    assert ids and all(STEP_ID.match(i) for i in ids), ids


def test_keywords_in_dot_are_labels() -> None:
    text = dot(compiled(keyword_flow()))
    for word in KEYWORDS:
        assert f"[label={json.dumps(word)}];" in text
    for line in text.splitlines():
        arrow = DOT_ARROW.match(line)
        if arrow:
            assert not {arrow[1], arrow[2]} & set(KEYWORDS), line


# -- 2. conditions shown as they run -------------------------------------------------------


@pytest.mark.parametrize("condition", CONDITIONS)
def test_mermaid_label_gives_back_the_condition(condition: str) -> None:
    drawn = arrows(mermaid(compiled(keyword_flow())))
    assert ("note", "state", "when " + condition) in drawn


@pytest.mark.parametrize("condition", CONDITIONS)
def test_mermaid_label_holds_nothing_mermaid_reads(condition: str) -> None:
    escaped = mermaid_text(condition)
    plain = re.sub(r"#\w+;", "", escaped)
    assert not set(plain) & set("#;:&<>*\\${}\n\r"), plain
    assert not re.search(r"direction\s+(tb|bt|rl|lr)", plain, re.IGNORECASE)
    assert not re.search(r"(^|\W)_|_(\W|$)", plain), plain


def test_ordinary_text_is_not_escaped() -> None:
    text = "steps.a_b.output.total == 70 and x != 'y' or (z[0] + 1) / 2 - 3 % 4 | abs ~ ^ @ !,"
    assert mermaid_text(text) == text
    assert mermaid_text('say "hi"') == 'say "hi"'  # a transition label may hold quotes
    assert mermaid_text('say "hi"', {'"': "#quot;"}) == "say #quot;hi#quot;"


@pytest.mark.parametrize("condition", CONDITIONS)
def test_dot_label_gives_back_the_condition(condition: str) -> None:
    labels = [DOT_ARROW.match(line) for line in dot(compiled(keyword_flow())).splitlines()]
    shown = [unescape_dot(m[3]) for m in labels if m]
    assert "when " + condition in shown


def test_dot_escapes_what_dot_reads() -> None:
    assert dot_text('a "b" \\N &amp;\nc') == '"a \\"b\\" \\\\N &amp;amp;\\nc"'


def test_a_long_condition_is_cut_visibly() -> None:
    condition = "input.x == '" + "ab:" * 100 + "'"
    drawn = arrows(mermaid(compiled(flow(switch("a", (condition, "done"))))))
    label = next(text for _, _, text in drawn if text.startswith("when "))
    assert label == "when " + condition[:MAX_CONDITION] + ELLIPSIS


# -- 3. endings, 4. the flow's on_error, 5. reviews that continue --------------------------


def support() -> str:
    out = io.StringIO()
    assert main(["graph", str(ROOT / "flows" / "support.yaml")], out=out) == 0
    return out.getvalue()


def test_endings_are_drawn_as_endings() -> None:
    text = support()
    names = states(text)
    assert "done" not in names.values()  # done is the end mark
    assert ("send", "[*]", "ok") in arrows(text)
    failure = next(i for i, name in names.items() if name == "dead_letter")
    reviews = sorted(i for i, name in names.items() if name == "human_review")
    assert f"    class {failure} failure" in text.splitlines()
    assert f"    class {','.join(reviews)} wait" in text.splitlines()
    assert "classDef failure " in text and "classDef wait " in text


def test_the_flow_on_error_is_one_note() -> None:
    text = support()
    drawn = arrows(text)
    assert [a for a in drawn if a[1] == "dead_letter"] == []
    assert text.count("note right of") == 1
    assert "error in classify, draft, check or send (the flow's on_error)" in text
    assert ("context", "human_review", "error") in drawn  # its own on_error stays an arrow


def test_an_own_on_error_to_the_flow_default_stays_an_arrow() -> None:
    data = flow(switch("a", ("true", "b"), on_error="dead_letter"), switch("b", ("true", "done")))
    text = mermaid(compiled(data))
    assert ("a", "dead_letter", "error") in arrows(text)
    assert "error in b (the flow's on_error)" in text


def test_a_human_review_on_error_is_drawn_as_arrows() -> None:
    text = mermaid(compiled(flow(switch("a", ("true", "done")), on_error="human_review")))
    assert ("a", "human_review", "error") in arrows(text)
    assert "note right of" not in text


def test_approving_a_stop_continues_the_run() -> None:
    drawn = arrows(support())
    assert ("classify", "human_review", "low confidence") in drawn
    assert ("human_review", "context", "approved") in drawn
    assert ("human_review", "[*]", "approved") in drawn  # send's in-doubt stop


def test_each_stop_has_its_own_review() -> None:
    text = support()
    reviews = [i for i, name in states(text).items() if name == "human_review"]
    assert len(reviews) == 4
    approved = [line for line in text.splitlines() if line.endswith(": approved")]
    assert sorted(line.split()[0] for line in approved) == sorted(reviews)


def test_the_review_policy_expiry_is_a_note() -> None:
    review = {"expires_after_seconds": 3600, "on_expired": "dead_letter"}
    data = flow(switch("a", ("true", "human_review")), switch("b", ("true", "done")))
    text = mermaid(compiled({**data, "review": review}))
    assert "review of a not decided within 3600 s (the flow's review)" in text
    assert not [a for a in arrows(text) if a[2] == "expired"]


def test_the_budget_route_is_a_note() -> None:
    ask = {"llm": {"prompt": "Hello"}}
    data = flow({"id": "a", **ask}, {"id": "b", **ask}, switch("c", ("true", "done")))
    data["models"] = {"default": {"model": "openai/gpt-4o-mini"}}
    data["budget"] = {"max_llm_calls": 3, "on_exceeded": "dead_letter"}
    text = mermaid(compiled(data))
    note = "budget exceeded in a or b (the flow's budget)"
    assert text.count("note right of") == 1 and f"        {note}" in text.splitlines()
    assert not [a for a in arrows(text) if a[1] == "dead_letter"]
    budget = {"max_llm_calls": 3}  # to human_review: each step's own review
    drawn = arrows(mermaid(compiled({**data, "budget": budget})))
    assert ("a", "human_review", "budget exceeded") in drawn


# -- 6. approval steps ------------------------------------------------------------------------


def approval(**more: Any) -> dict[str, Any]:
    return {"id": "sign", "approval": {"title": "Pay?", **more.pop("spec", {})}, **more}


def test_approval_routes_are_drawn() -> None:
    step = approval(spec={"expires_after_seconds": 60}, on_rejected="no", on_expired="late")
    data = flow(step, switch("yes", ("true", "done")), switch("no", ("true", "done")))
    data["steps"].append(switch("late", ("true", "dead_letter")))
    drawn = arrows(mermaid(compiled(data)))
    assert ("sign", "human_review", "awaiting approval") in drawn
    assert ("human_review", "yes", "approved") in drawn
    assert ("human_review", "no", "rejected") in drawn
    assert ("human_review", "late", "expired") in drawn
    assert not [a for a in drawn if a[0] == "sign" and a[1] == "yes"]  # no `when`: always asks


def test_an_approval_with_when_may_go_on_alone() -> None:
    step = approval(spec={"when": "input.amount > 150"})
    drawn = arrows(mermaid(compiled(flow(step))))
    assert ("sign", "[*]", "no approval needed") in drawn
    assert ("human_review", "[*]", "approved") in drawn
    assert not [a for a in drawn if a[2] in ("rejected", "expired")]  # closes; never expires


def test_dot_draws_the_same_picture() -> None:
    data = keyword_flow()
    lines = dot(compiled(data)).splitlines()
    assert sum(bool(DOT_ARROW.match(line)) for line in lines) == len(
        arrows(mermaid(compiled(data)))
    )
    assert any("shape=doublecircle" in line for line in lines)
    assert any("shape=note" in line for line in lines)


# -- a real renderer: mermaid-cli on Chromium ------------------------------------------------

MERMAID_CLI = "@mermaid-js/mermaid-cli@11.17.0"
REQUIRED = os.environ.get("RUNNER_REQUIRE_MERMAID") == "1"


def unavailable(reason: str) -> None:
    """Skip, or fail when CI requires the renderer."""
    if REQUIRED:
        pytest.fail(f"RUNNER_REQUIRE_MERMAID=1 but {reason}")
    pytest.skip(reason)


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "runner-test" / "mermaid"


def installed(folder: Path) -> Path | None:
    """The cached mmdc, if it is the pinned version."""
    package = folder / "node_modules" / "@mermaid-js" / "mermaid-cli" / "package.json"
    mmdc = folder / "node_modules" / ".bin" / "mmdc"
    if not (package.is_file() and mmdc.is_file()):
        return None
    version = json.loads(package.read_text(encoding="utf-8")).get("version")
    return mmdc if MERMAID_CLI.endswith("@" + str(version)) else None


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """One installer at a time (pytest-xdist workers share the cache folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def install(folder: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        unavailable("npm is not installed (needed to install mermaid-cli)")
    env = {**os.environ, "PUPPETEER_SKIP_DOWNLOAD": "1"}
    command = [str(npm), "install", "--prefix", str(folder), "--no-audit", "--no-fund"]
    done = subprocess.run(
        [*command, MERMAID_CLI], env=env, capture_output=True, text=True, timeout=900
    )
    mmdc = installed(folder)
    if done.returncode != 0 or mmdc is None:
        unavailable(f"npm could not install {MERMAID_CLI}: {done.stderr.strip()[-2000:]}")
    assert mmdc is not None
    return mmdc


@pytest.fixture(scope="session")
def render(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A function that renders Mermaid text to SVG with mmdc and returns the SVG."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        unavailable("Chromium is not installed (apt-get install -y chromium)")
    folder = cache_folder()
    with locked(folder):
        mmdc = installed(folder) or install(folder)
    work = tmp_path_factory.mktemp("mermaid")
    config = work / "puppeteer.json"
    config.write_text(json.dumps({"executablePath": chromium, "args": ["--no-sandbox"]}))

    def rendered(text: str, name: str) -> str:
        source, svg = work / f"{name}.mmd", work / f"{name}.svg"
        source.write_text(text, encoding="utf-8")
        command = [str(mmdc), "-p", str(config), "-i", str(source), "-o", str(svg), "-q"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"mmdc failed on\n{text}\n{done.stderr}"
        assert svg.is_file() and svg.stat().st_size > 0
        return svg.read_text(encoding="utf-8")

    return rendered


def svg_texts(svg: str) -> list[str]:
    """The text pieces of an SVG, entities decoded."""
    return [html.unescape(piece) for piece in re.split(r"<[^>]*>", svg) if piece.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_mermaid_cli_renders_shipped_flow(path: Path, render: Any) -> None:
    out = io.StringIO()
    assert main(["graph", str(path)], out=out) == 0
    svg = render(out.getvalue(), path.stem)
    assert "<svg" in svg


@pytest.mark.slow
def test_mermaid_cli_renders_keywords_and_conditions(render: Any, tmp_path: Path) -> None:
    source = tmp_path / "keywords.yaml"
    source.write_text(yaml.safe_dump(keyword_flow(), sort_keys=False), encoding="utf-8")
    out = io.StringIO()
    assert main(["graph", str(source)], out=out) == 0
    texts = svg_texts(render(out.getvalue(), "keywords"))
    for word in KEYWORDS:
        assert word in texts
    for condition in CONDITIONS:
        assert "when " + condition in texts, f"not shown as written: {condition!r}"


@pytest.mark.slow
def test_graphviz_renders_the_dot_drawing() -> None:
    """Graphviz renders the dot drawing (CI installs it; elsewhere skipped without `dot`)."""
    if shutil.which("dot") is None:
        unavailable("Graphviz is not installed (apt-get install -y graphviz)")
    drawings = [load_flow(path) for path in SHIPPED] + [compiled(keyword_flow())]
    for drawing in drawings:
        done = subprocess.run(["dot", "-Tsvg"], input=dot(drawing), capture_output=True, text=True)
        assert done.returncode == 0 and "<svg" in done.stdout, done.stderr
    texts = [piece.replace("\xa0", " ").strip() for piece in svg_texts(done.stdout)]
    for condition in CONDITIONS:  # a line break in a condition is a line break in dot
        for line in ("when " + condition).splitlines():
            assert line.strip() in texts, f"not shown as written: {line!r}"
