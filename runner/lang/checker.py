"""Meaning checks on a flow: what its JSON Schema cannot say.

References (with "did you mean"), routes, reachability, loops with no way out, failure
paths, templates and the values they read, python tool targets. Every problem is
collected, then reported at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.core import templates
from runner.core.env_reads import MAPPING_NAMES, EnvRead, environment_reads
from runner.core.errors import Problem
from runner.core.vocabulary import ENDINGS, Ending, Outcome
from runner.kinds.registry import POLICY_KINDS, STEP_KINDS, TOOL_KINDS
from runner.lang import model_names
from runner.lang.fields import schema_field, suggest, text_answer
from runner.lang.model import ConfidenceGate, Flow, Step
from runner.lang.routes import availability, can_exit, edges, loop_of, reachable
from runner.lang.schema import schema_problems
from runner.lang.source import Path_, strings_in
from runner.lang.tool_reads import Read, misspelled

RUN_FIELDS = ("id", "flow")
ALERT_RUN_FIELDS = ("id", "flow", "status", "step", "reason", "url")
NOTIFY_ROOTS = ("run", "input", "env", "secret")
STEP_FIELDS = ("output",)


class Checker:
    """Collects the meaning problems of one flow."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.doc = flow.document
        self.problems: list[Problem] = []
        self.ids = [s.id for s in flow.steps]
        self.available: dict[str, frozenset[str]] = {}
        self.valid: dict[int, bool] = {}  # id of an author's schema -> whether it is valid
        self.reads: list[Read] = []  # `steps.X.output...` read by templates, for warnings
        self.folder = Path(self.doc.file).parent

    def add(self, path: Path_, message: str, *, key: bool = False) -> None:
        self.problems.append(self.doc.problem(path, message, key=key))

    def warn(self, path: Path_, message: str) -> None:
        """Report something that looks wrong but does not stop the flow from running."""
        self.problems.append(self.doc.problem(path, message, severity="warning"))

    def run(self) -> list[Problem]:
        self.step_ids()
        sound_ids = not self.problems
        if self.routes() and sound_ids:  # the graph needs unique ids and resolved routes
            self.graph()
        self.available = availability(self.flow)
        self.schemas()
        self.tools()
        self.models()
        self.notify()
        for policy in self.flow.policies.values():
            POLICY_KINDS[policy.kind].check(self, policy)
        for step in self.flow.steps:
            STEP_KINDS[step.kind].check(self, step)
            self.embedding_models(step)
        for path, message in misspelled(self.flow, self.reads):
            self.warn(path, message)
        return sorted(set(self.problems))

    def known(self, path: Path_, what: str, name: str, names: Mapping[str, Any]) -> bool:
        """Report `unknown <what> `name`` (with "did you mean") unless it is in `names`."""
        if name in names:
            return True
        self.add(path, f"unknown {what} `{name}`{suggest(name, names)}")
        return False

    # -- ids and routes ---------------------------------------------------------------
    def step_ids(self) -> None:
        seen: dict[str, int] = {}
        for step in self.flow.steps:
            if step.id in ENDINGS:
                self.add(
                    (*step.path, "id"), f"`{step.id}` is a built-in ending; choose another step id"
                )
            elif step.id in seen:
                self.add(
                    (*step.path, "id"),
                    f"step id `{step.id}` is already used by steps[{seen[step.id]}]",
                )
            seen.setdefault(step.id, step.index)

    def routes(self) -> bool:
        """Check every route; True if each one names a step or an ending."""
        targets = [*self.ids, *ENDINGS]
        if self.flow.on_error:
            self.route(("on_error",), self.flow.on_error, targets, error=True)
        if self.flow.budget:
            self.route(("budget", "on_exceeded"), self.flow.budget.on_exceeded, targets, error=True)
        if self.flow.review:
            self.route(("review", "on_expired"), self.flow.review.on_expired, targets, error=False)
        for step in self.flow.steps:
            if step.on_error is None:
                self.add(
                    step.path,
                    f"step `{step.id}` has no failure path: add `on_error` "
                    "to it, or a flow-wide `on_error`",
                )
            for trigger, dest in step.routes().items():
                self.route(step.route_path(trigger), dest, targets, error=trigger == Outcome.ERROR)
        dests = [d for s in self.flow.steps for d in s.routes().values()]
        budget = self.flow.budget.on_exceeded if self.flow.budget else "human_review"
        expired = self.flow.review.on_expired if self.flow.review else "dead_letter"
        return all(
            d in targets for d in [*dests, self.flow.on_error or "dead_letter", budget, expired]
        )

    def route(self, path: Path_, dest: str, targets: list[str], *, error: bool) -> None:
        if path not in self.doc.values:  # an implicit route (default next, flow on_error)
            return
        if dest not in targets:
            self.add(
                path,
                f"unknown route `{dest}`: not a step id nor an ending{suggest(dest, targets)}",
            )
        elif error and dest == Ending.DONE:
            self.add(
                path,
                "a failure must not complete the run: route it to human_review, "
                "dead_letter or a step that handles it",
            )

    def graph(self) -> None:
        steps = {s.id: s for s in self.flow.steps}
        successors: dict[str, list[str]] = {}
        for edge in edges(self.flow):
            successors.setdefault(edge.source, []).append(edge.dest)
        review = self.flow.review
        if review and review.on_expired in steps:  # an expired review continues there
            for dests in successors.values():
                if "human_review" in dests:
                    dests.append(review.on_expired)
        reached = reachable(self.ids[0], lambda s: successors.get(s, []), steps)
        for step in self.flow.steps:
            if step.id not in reached:
                self.add(
                    (*step.path, "id"), f"step `{step.id}` is never reached: no route leads to it"
                )
        exits = can_exit(self.flow)
        reported: set[str] = set()
        for step in self.flow.steps:
            if step.id in exits or step.id not in reached:
                continue
            loop = loop_of(self.flow, step.id, exits)
            if reported & set(loop):
                continue
            reported |= set(loop)
            shown = " -> ".join(f"`{s}`" for s in [*loop, loop[0]])
            first = min((self.flow.step(s) for s in loop), key=lambda s: s.index)
            self.add(
                (*first.path, "id"),
                f"loop {shown} has no way out: none of its steps "
                "leads to an ending except by failing",
            )

    # -- schemas, tools, models ---------------------------------------------------------
    def schemas(self) -> None:
        found: list[tuple[Path_, Any]] = [(("input",), self.flow.input_schema)]
        for tool in self.flow.tools.values():
            found += [
                ((*tool.path, "input"), tool.input_schema),
                ((*tool.path, "output"), tool.output_schema),
            ]
        for step in self.flow.steps:
            found += step.author_schemas()
        for path, schema in found:
            for inner, message in schema_problems(schema):
                self.add((*path, *inner), message)

    def tools(self) -> None:
        for tool in self.flow.tools.values():
            TOOL_KINDS[tool.kind].check(self, tool)
            for key in ("idempotency_key", "idempotent"):
                if (*tool.path, key) in self.doc.values and not tool.effect:
                    self.add(
                        (*tool.path, key), f"`{key}` applies only to tools with `effect: true`"
                    )
            if tool.idempotency_key:
                self.template(
                    (*tool.path, "idempotency_key"),
                    tool.idempotency_key,
                    ("args", "input", "run", "env"),
                )

    def notify(self) -> None:
        notify = self.flow.notify
        if notify is None:
            return
        self.known(("notify", "tool"), "tool", notify.tool, self.flow.tools)
        for path, value in strings_in(notify.args, ("notify", "args")):
            self.template(path, value, NOTIFY_ROOTS)

    def models(self) -> None:
        for model in self.flow.models.values():
            written = (*model.path, "model")
            message = model_names.declared(model.model, self.folder)
            if message:
                self.add(written if written in self.doc.values else model.path, message)
            if model.api_base:
                self.template((*model.path, "api_base"), model.api_base, ("env",))
            for i, name in enumerate(model.fallbacks):
                if name not in self.flow.models and "/" not in name:
                    self.model_ref((*model.path, "fallbacks", i), name)
                elif name not in self.flow.models:
                    message = model_names.declared(name, self.folder)
                    if message:
                        self.add((*model.path, "fallbacks", i), message)

    def model_ref(self, path: Path_, name: str | None) -> None:
        models = self.flow.models
        if name is None and "default" not in models:
            self.add(path, "no model: name one here, or declare `models.default`")
        elif name is not None and name not in models and "/" not in name:
            self.add(
                path,
                f"unknown model `{name}`: not a name under `models` nor a "
                f"`provider/model` string{suggest(name, models)}",
            )
        else:
            self.model_use(path, name, embedding=False)

    def model_use(self, path: Path_, name: str | None, *, embedding: bool) -> None:
        """Check that the model `name` (a name under `models`, else a model string) can
        answer prompts, or embed texts."""
        chosen = self.flow.models.get(name or "default")
        if chosen is not None:  # its model string is checked where it is declared
            message = model_names.misused(chosen.model, embedding=embedding, name=chosen.name)
        elif name is not None:
            message = model_names.declared(name, self.folder)
            message = message or model_names.misused(name, embedding=embedding)
        else:
            return
        if message:
            self.add(path, message)

    def embedding_models(self, step: Step) -> None:
        """The embedding model of each similarity gate of `step`."""
        for gate in getattr(step, "gates", ()):
            if isinstance(gate, ConfidenceGate) and gate.method == "similarity":
                written = (*gate.path, "model")
                where = written if written in self.doc.values else gate.path
                self.model_use(where, gate.embedding, embedding=True)

    # -- templates ----------------------------------------------------------------------
    def template(
        self,
        path: Path_,
        text: str,
        roots: tuple[str, ...],
        *,
        step: Step | None = None,
        expression: bool = False,
    ) -> None:
        if not expression and not templates.is_template(text):
            return
        if expression and text.strip().startswith("{{"):
            self.add(path, "a condition is a bare jinja expression: write it without `{{ }}`")
            return
        try:
            tree = templates.parse_expression(text) if expression else templates.parse(text)
        except templates.TemplateSyntaxError as exc:
            what = "expression" if expression else "template"
            self.add(path, f"{what} does not parse: {exc}")
            return
        for kind, name, known in templates.unknown_filters(tree):
            hint = suggest(name, known, cutoff=0.75) or f": jinja has no {kind} of that name"
            self.add(path, f"unknown {kind} `{name}`{hint}")
        for ref in templates.references(tree):
            message = self.reference(ref, roots, step)
            if message:
                self.add(path, message)
            if ref.root == "steps" and len(ref.chain) > 1 and ref.chain[1] == "output":
                self.reads.append(Read(path, str(ref.chain[0]), ref.chain[2:]))
        for read in environment_reads(tree):
            message = _environment_read(read) if read.root in roots else None
            if message:
                self.add(path, message)

    def reference(
        self, ref: templates.Reference, roots: tuple[str, ...], step: Step | None
    ) -> str | None:
        if ref.root == "secret" and "secret" not in roots:
            return (
                "secrets cannot be read here: this value is stored or shown, and a secret never is"
            )
        if ref.root not in roots:
            listed = ", ".join(roots)
            return (
                f"unknown name `{ref.root}`: templates here read {listed}{suggest(ref.root, roots)}"
            )
        chain = ref.chain
        if ref.root == "input":
            return schema_field(self.sound(self.flow.input_schema), chain, "input")
        fields = ALERT_RUN_FIELDS if roots == NOTIFY_ROOTS else RUN_FIELDS
        if ref.root == "run" and chain and chain[0] not in fields:
            return f"`run.{chain[0]}` does not exist: run has {', '.join(fields)}"
        if ref.root == "output" and step is not None:
            schema = self.sound(step.output_schema_in(self.flow))
            return text_answer(step, chain, "output") or schema_field(schema, chain, "output")
        if ref.root == "steps" and chain and step is not None:
            return self.step_reference(step, chain)
        return None

    def step_reference(self, step: Step, chain: tuple[str | int, ...]) -> str | None:
        target = str(chain[0])
        if target not in self.ids:
            return f"`steps.{target}` is not a step{suggest(target, self.ids)}"
        if len(chain) > 1 and chain[1] not in STEP_FIELDS:
            return f"`steps.{target}.{chain[1]}` does not exist: a step has `output`"
        if target not in self.available.get(step.id, frozenset()):
            return (
                f"`steps.{target}` may not have run yet when `{step.id}` runs: "
                f"some path reaches `{step.id}` without completing `{target}`"
            )
        shadowed = self.shadowed(step, chain)
        if shadowed:
            return shadowed
        read, name = self.flow.step(target), f"steps.{target}.output"
        schema = self.sound(read.output_schema_in(self.flow))
        return text_answer(read, chain[2:], name) or schema_field(schema, chain[2:], name)

    def shadowed(self, step: Step, chain: tuple[str | int, ...]) -> str | None:
        """A message if `step` reads a value that a person may have changed at an
        approval that surely ran before it: what was approved must be what is used."""
        for other in self.flow.steps:
            if other.id not in self.available.get(step.id, frozenset()):
                continue
            for source, instead in other.shadows().items():
                if chain[: len(source)] == source:
                    spelled = ".".join(str(part) for part in source)
                    return (
                        f"`steps.{spelled}` is what `{other.id}` proposed to a person, "
                        f"who may have changed it: read `{instead}` instead"
                    )
        return None

    def sound(self, schema: Any) -> Any:
        """The schema if it is a valid JSON Schema, else None (its problems are reported
        on their own; reading fields through a broken schema proves nothing)."""
        if id(schema) not in self.valid:
            self.valid[id(schema)] = not schema_problems(schema)
        return schema if self.valid[id(schema)] else None


def _environment_read(read: EnvRead) -> str | None:
    """A message if a template reads the environment other than one variable by literal
    name, or changes a secret on its way out (runner.core.env_reads says why)."""
    what = "environment variables" if read.root == "env" else "secrets"
    if read.name is None:
        return f"read {what} by name: `{read.root}.NAME`"
    if read.name in MAPPING_NAMES:
        return (
            f"`{read.root}.{read.name}` cannot be read: `{read.name}` names a method of "
            "the environment, not a variable; rename the variable"
        )
    if read.root == "secret" and read.altered_by:
        return (
            f"`secret.{read.name}` goes through {read.altered_by} here: a secret may only "
            "be inserted as it is (alone, or joined with `~`), so that runner can "
            "recognise it and keep it out of what it stores"
        )
    return None


def meaning_problems(flow: Flow) -> list[Problem]:
    """Every meaning problem of a flow whose shape is valid, sorted."""
    return Checker(flow).run()
