"""Draw a compiled flow: Mermaid `stateDiagram-v2` (renders on GitHub) or Graphviz dot.

Both formats draw one picture (`picture()`), made from the compiled routes:

- Steps are never drawn under their own id, which may be a word the format reserves
  (`note`, `state`, `class`, `end`, ...): each gets a generated id (`s0`, `s1`, ... in
  flow order) and shows its id as its name (`state "note" as s0`).
- Endings are not steps. `done` is the end mark (`[*]`; a double circle in dot).
  `dead_letter` is one state, styled as a failure; any other ending is one state styled
  as an ending.
- `human_review` is a wait, not an end. Each step that can stop for a person gets its own
  review state (dashed), and the decision's routes leave it: `approved` to the step's
  success route (where approving continues the run), `rejected` to the step's
  `on_rejected` when it has one (without one, rejecting closes the run), and `expired`
  to its `on_expired` when the review can expire. An approval step's `awaiting approval`
  leads into its review; its `ok` (taken when its `when` is false) reads
  `no approval needed`, and is left out when it has no `when`. One review state per step,
  rather than one shared `human_review`, keeps each decision next to the step it is about:
  a shared state would send every continuation across the whole diagram.
- Flow-wide routes are written once, as a note on the state they lead to, not as an
  arrow from every step that takes them: the flow's `on_error`, taken by each step
  without its own (`error in classify, draft or send (the flow's on_error)`), the
  budget's `on_exceeded`, and the `review` policy's expiry of reviews without their own.
  A step's own `on_error` stays an arrow, even to the same place. A flow-wide route to
  where no single state stands (`done`, `human_review`) is drawn as arrows.
- Names and labels are the flow's text, whole up to MAX_CONDITION characters (a longer
  condition is cut, and ends in an ellipsis). Mermaid reads some characters of a
  transition label as syntax, HTML, markdown or an entity code: those are written as
  Mermaid's entity codes (`#58;` for `:`), which it shows as the characters they stand
  for (see MERMAID_CODES; also `_` outside a word and the space of `direction TB`). Every
  other character is left as written. Dot strings escape `\\`, `"` and `&`, and write a
  line break as `\\n`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from runner.core.vocabulary import Ending, Outcome
from runner.kinds.steps.approval import ApprovalStep
from runner.lang.compiler import CompiledFlow
from runner.lang.model import Step

MAX_CONDITION = 160  # characters of a condition shown; a longer one ends in ELLIPSIS
ELLIPSIS = "…"
DONE = "[*]"  # the place of `done`
# Characters a Mermaid transition label cannot hold as they are, and why:
MERMAID_CODES = {
    "#": "#35;",  # starts an entity code: `#59;` in the text would turn into `;`
    ";": "#59;",  # ends the statement: the rest of the label is lost
    ":": "#58;",  # `::` or a `:` at the end is a parse error
    "&": "#amp;",  # `&amp;` would show as `&`
    "<": "#lt;",  # `<b>` makes bold, `<x` is dropped as a tag
    ">": "#gt;",  # harmless alone; written as a code too, so a tag reads as text in the source
    "*": "#42;",  # markdown emphasis: `*x*`, `**x**`
    "\\": "#92;",  # markdown escapes: `\*` shows as `*`
    "$": "#36;",  # `$$x$$` is typeset as math
    "{": "#123;",  # `%%{...}%%` is read as a directive, wherever it stands
    "}": "#125;",
    "\n": "#10;",  # ends the statement
    "\r": "#13;",
}
# In a state's quoted name `"` ends the name and `[[fork]]` makes a fork.
MERMAID_NAME_CODES = {**MERMAID_CODES, '"': "#quot;", "[": "#91;", "]": "#93;"}
# `direction TB` anywhere on a line is read as a direction statement (the line is lost).
_DIRECTION = re.compile(r"(direction)(\s+)(?=tb|bt|rl|lr)", re.IGNORECASE)
# The states' styles, Mermaid then dot. Steps keep the default look; `done` is the end mark.
STYLES = {
    "wait": (
        "fill:#fff8e1,stroke:#b7791f,stroke-dasharray:5 3",
        'style="rounded,dashed,filled", fillcolor="#fff8e1", color="#b7791f"',
    ),
    "failure": (
        "fill:#fdecea,stroke:#c0392b,font-weight:bold",
        'shape=doubleoctagon, style=filled, fillcolor="#fdecea", color="#c0392b"',
    ),
    "ending": ("fill:#eeeeee,stroke:#555555,font-weight:bold", "shape=doubleoctagon"),
    "done": ("", "shape=doublecircle"),
}
# The note of each flow-wide route, naming the steps that take it.
NOTES = {
    Outcome.ERROR: "error in {steps} (the flow's on_error)",
    Outcome.BUDGET_EXCEEDED: "budget exceeded in {steps} (the flow's budget)",
    Outcome.EXPIRED: "review of {steps} not decided within {seconds} s (the flow's review)",
}


@dataclass(frozen=True)
class Place:
    """A state of the picture: its generated id, the name it shows, its style."""

    id: str
    name: str
    style: str = "step"


@dataclass(frozen=True)
class Arrow:
    """A transition between two places, with its words."""

    source: str
    dest: str
    words: str


@dataclass(frozen=True)
class Note:
    """Lines written beside a place."""

    place: str
    lines: tuple[str, ...]


@dataclass
class Picture:
    """What both formats draw."""

    first: str
    places: dict[str, Place] = field(default_factory=dict)
    arrows: list[Arrow] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)


def picture(compiled: CompiledFlow) -> Picture:
    """The places, arrows and notes that draw `compiled`."""
    return _Drawing(compiled).draw()


def words(step: Step, trigger: str) -> str | None:
    """The words on a step's route: its outcome, or a switch branch's condition
    (None: a route the step never takes)."""
    condition = step.condition_of(trigger)
    if condition is not None:
        shown = condition if len(condition) <= MAX_CONDITION else condition[:MAX_CONDITION]
        return "when " + shown + ("" if shown == condition else ELLIPSIS)
    if isinstance(step, ApprovalStep) and trigger == Outcome.OK:
        return "no approval needed" if step.when is not None else None
    if trigger == Outcome.DEFAULT:
        return "otherwise"
    return trigger.replace("_", " ")


class _Drawing:
    """Builds a Picture, step by step; flow-wide defaults are gathered for notes."""

    def __init__(self, compiled: CompiledFlow) -> None:
        self.compiled = compiled
        self.flow = compiled.flow
        self.ids = {step.id: f"s{n}" for n, step in enumerate(self.flow.steps)}
        self.result = Picture(first=self.ids[compiled.first])
        self.defaults: dict[str, dict[str, list[str]]] = {}  # dest -> trigger -> steps
        self.reviews: set[str] = set()  # the steps drawn with a review of their own
        for step in self.flow.steps:
            self.add(Place(self.ids[step.id], step.id))

    def draw(self) -> Picture:
        for step in self.flow.steps:
            for edge in self.compiled.edges:
                if edge.source == step.id:
                    self.route(step, edge.trigger, edge.dest)
            if step.id in self.reviews:
                self.decisions(step)
        self.notes()
        return self.result

    def add(self, place: Place) -> str:
        self.result.places.setdefault(place.id, place)
        return place.id

    def target(self, dest: str) -> str:
        """The place of a route to a step or an ending other than human_review."""
        if dest in self.ids:
            return self.ids[dest]
        if dest == Ending.DONE:
            return self.add(Place(DONE, dest, "done"))
        style = "failure" if dest == Ending.DEAD_LETTER else "ending"
        return self.add(Place(f"e_{dest}", dest, style))

    def place(self, dest: str, step: Step) -> str:
        """The place `step`'s route to `dest` leads to: its own review for human_review."""
        if dest == Ending.HUMAN_REVIEW:
            self.reviews.add(step.id)
            return self.add(Place(f"r{self.ids[step.id][1:]}", dest, "wait"))
        return self.target(dest)

    def arrow(self, source: str, dest: str, text: str) -> None:
        self.result.arrows.append(Arrow(source, dest, text))

    def noted(self, dest: str) -> bool:
        """Whether a default route to `dest` can be a note: it has a state of its own."""
        return dest in self.ids or dest not in (Ending.DONE, Ending.HUMAN_REVIEW)

    def route(self, step: Step, trigger: str, dest: str) -> None:
        if trigger in (Outcome.REJECTED, Outcome.EXPIRED):
            return  # decisions leave the step's review: see decisions()
        written = step.route_path(trigger) in self.flow.document.values
        flow_wide = trigger == Outcome.BUDGET_EXCEEDED or (trigger == Outcome.ERROR and not written)
        if flow_wide and self.noted(dest):
            self.default(dest, trigger, step)
            return
        text = words(step, trigger)
        if text is not None:
            self.arrow(self.ids[step.id], self.place(dest, step), text)

    def decisions(self, step: Step) -> None:
        """The routes a person's decision (or its expiry) takes from `step`'s review."""
        review, routes = self.place(Ending.HUMAN_REVIEW, step), step.routes()
        approved = routes.get(step.success)
        if approved is not None and approved != Ending.HUMAN_REVIEW:
            self.arrow(review, self.place(approved, step), "approved")
        if Outcome.REJECTED in routes:
            self.arrow(review, self.place(routes[Outcome.REJECTED], step), "rejected")
        seconds, expired = step.review_expiry(self.flow)
        if seconds is None:
            return
        if Outcome.EXPIRED not in routes and self.noted(expired):
            self.default(expired, Outcome.EXPIRED, step)
        else:
            self.arrow(review, self.place(expired, step), "expired")

    def default(self, dest: str, trigger: str, step: Step) -> None:
        """`step` takes the flow-wide route of `trigger` to `dest`: a note will say so."""
        self.defaults.setdefault(dest, {}).setdefault(trigger, []).append(step.id)

    def notes(self) -> None:
        review = self.flow.review
        seconds = (
            f"{review.expires_after_seconds:g}" if review and review.expires_after_seconds else ""
        )
        for dest, taken in self.defaults.items():
            lines = [
                NOTES[trigger].format(steps=_listed(taken[trigger]), seconds=seconds)
                for trigger in NOTES
                if trigger in taken
            ]
            self.result.notes.append(Note(self.target(dest), tuple(lines)))


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def mermaid_text(text: str, codes: dict[str, str] = MERMAID_CODES) -> str:
    """`text` as Mermaid shows it verbatim: the characters it would read otherwise are
    written as entity codes (`_` only where markdown could read it as emphasis)."""
    spaces = {n for m in _DIRECTION.finditer(text) for n in range(m.start(2), m.end(2))}
    out = []
    for n, char in enumerate(text):
        if n in spaces:
            out.append(f"#{ord(char)};")
        elif char == "_" and not _inside_word(text, n):
            out.append("#95;")
        else:
            out.append(codes.get(char, char))
    return "".join(out)


def _inside_word(text: str, n: int) -> bool:
    return 0 < n < len(text) - 1 and text[n - 1].isalnum() and text[n + 1].isalnum()


def mermaid(compiled: CompiledFlow) -> str:
    """The flow as a Mermaid state diagram."""
    drawn = picture(compiled)
    places = [p for p in drawn.places.values() if p.id != DONE]
    lines = ["stateDiagram-v2"]
    lines += [f'    state "{mermaid_text(p.name, MERMAID_NAME_CODES)}" as {p.id}' for p in places]
    lines.append(f"    [*] --> {drawn.first}")
    lines += [f"    {a.source} --> {a.dest} : {mermaid_text(a.words)}" for a in drawn.arrows]
    for note in drawn.notes:
        lines.append(f"    note right of {note.place}")
        lines += [f"        {mermaid_text(line)}" for line in note.lines]
        lines.append("    end note")
    for style, (css, _) in STYLES.items():
        ids = [p.id for p in places if p.style == style]
        if ids and css:
            lines += [f"    classDef {style} {css}", f"    class {','.join(ids)} {style}"]
    return "\n".join(lines) + "\n"


def dot_text(text: str) -> str:
    """`text` as a quoted dot string that shows it verbatim."""
    for char, code in (("\\", "\\\\"), ('"', '\\"'), ("&", "&amp;"), ("\r\n", "\n")):
        text = text.replace(char, code)
    return '"' + text.replace("\r", "\n").replace("\n", "\\n") + '"'


def dot(compiled: CompiledFlow) -> str:
    """The flow as a Graphviz digraph."""
    drawn = picture(compiled)
    ids = {place: "finish" if place == DONE else place for place in drawn.places}
    lines = [
        f"digraph {dot_text(compiled.flow.name)} {{",
        "    node [shape=box, style=rounded];",
        "    start [shape=point];",
    ]
    for place in drawn.places.values():
        extra = f", {STYLES[place.style][1]}" if place.style in STYLES else ""
        lines.append(f"    {ids[place.id]} [label={dot_text(place.name)}{extra}];")
    lines.append(f"    start -> {drawn.first};")
    lines += [
        f"    {ids[a.source]} -> {ids[a.dest]} [label={dot_text(a.words)}];" for a in drawn.arrows
    ]
    for n, note in enumerate(drawn.notes):
        lines.append(f"    n{n} [shape=note, label={dot_text(chr(10).join(note.lines))}];")
        lines.append(f"    n{n} -> {ids[note.place]} [style=dashed, arrowhead=none];")
    return "\n".join([*lines, "}"]) + "\n"


FORMATS = {"mermaid": mermaid, "dot": dot}
