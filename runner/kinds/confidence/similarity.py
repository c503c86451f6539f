"""`similarity` confidence, the novelty gate: is this input like the labelled examples
kept beside the flow, and do the nearest of them agree with the answer?

The gate's `text` is embedded and compared (cosine) with every example's text. Of the
`neighbours` nearest examples, `closeness` is their mean similarity (below 0 counts 0):
an input unlike anything seen scores low whatever the model said. `agreement` is the
similarity-weighted share of them whose `output` agrees with the answer. The score is
closeness times agreement.

An examples file holds one JSON object per line: `{"text": "...", "output": {"category":
"billing"}}`; `output` names the answer's fields (dotted for nested ones) and the values
a right answer has for such a text.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.core import templates
from runner.core.errors import LLMError
from runner.core.llm import Answer
from runner.core.vocabulary import ErrorKind
from runner.kinds.base import STEP_ROOTS, Checks, ModelSession, Scored
from runner.kinds.confidence.scores import value_at
from runner.lang.model import ConfidenceGate, ModelStep

MAX_EXAMPLES = 100_000


@dataclass(frozen=True)
class Example:
    line: int
    text: str
    output: Mapping[str, Any]


class ExamplesError(ValueError):
    """An examples file that cannot be used, with the line at fault."""


def read_examples(path: Path) -> tuple[str, list[Example]]:
    """(the file's sha256, its examples); ExamplesError says what is wrong and where."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ExamplesError(f"cannot read examples file {path}: {exc.strerror}") from exc
    examples = []
    for number, line in enumerate(raw.decode("utf-8", "replace").splitlines(), 1):
        if line.strip():
            examples.append(_example(path, number, line))
    if not examples:
        raise ExamplesError(f"examples file {path} has no examples")
    if len(examples) > MAX_EXAMPLES:
        raise ExamplesError(f"examples file {path} has more than {MAX_EXAMPLES:,} examples")
    return hashlib.sha256(raw).hexdigest(), examples


def _example(path: Path, number: int, line: str) -> Example:
    where = f"{path.name} line {number}"
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ExamplesError(f"{where}: not JSON ({exc.msg})") from exc
    if not isinstance(data, dict) or set(data) != {"text", "output"}:
        raise ExamplesError(f'{where}: expected {{"text": "...", "output": {{...}}}}')
    if not isinstance(data["text"], str) or not data["text"].strip():
        raise ExamplesError(f"{where}: `text` must be non-empty text")
    if not isinstance(data["output"], dict) or not data["output"]:
        raise ExamplesError(f"{where}: `output` must name at least one field of the answer")
    return Example(number, data["text"], data["output"])


class Similarity:
    """Scores the answer by the labelled examples nearest to the input."""

    name = "similarity"
    logprobs = False

    def __init__(self) -> None:
        self._vectors: dict[tuple[str, str], Any] = {}  # (model, file sha256) -> matrix
        self._files: dict[Path, tuple[Any, tuple[str, list[Example]]]] = {}  # read once
        self._lock = threading.Lock()

    def check(self, checks: Checks, step: ModelStep, gate: ConfidenceGate) -> None:
        missing = [key for key in ("examples", "text") if getattr(gate, key) is None]
        if missing:
            checks.add(gate.path, f"a similarity gate needs `{'` and `'.join(missing)}`")
            return
        checks.template((*gate.path, "text"), gate.text or "", STEP_ROOTS, step=step)
        name = gate.examples or ""
        if Path(name).is_absolute() or ".." in Path(name).parts:
            checks.add(
                (*gate.path, "examples"),
                "give the examples file's path from the flow's folder, inside it",
            )
            return
        try:
            _, examples = read_examples(Path(checks.flow.document.file).parent / name)
        except ExamplesError as exc:
            checks.add((*gate.path, "examples"), str(exc))
            return
        schema = step.output_schema if isinstance(step.output_schema, Mapping) else {}
        fields = set(schema.get("properties", {}))
        for example in examples:
            unknown = [k for k in example.output if k.split(".")[0] not in fields]
            if unknown:
                checks.add(
                    (*gate.path, "examples"),
                    f"{name} line {example.line}: the step's output has no field `{unknown[0]}`",
                )
                return

    def score(
        self,
        session: ModelSession,
        step: ModelStep,
        messages: Sequence[Mapping[str, Any]],
        answer: Answer,
        gate: ConfidenceGate,
        ctx: Mapping[str, Any],
    ) -> Scored:
        text = str(templates.render(gate.text or "", ctx))
        digest, examples = self._examples(session.folder / (gate.examples or ""))
        matrix = self._matrix(session, gate.embedding, digest, examples)
        # The input is embedded, never kept: the cache holds the examples kept in git.
        (vector,) = session.embed(gate.embedding, [text], keep=False)
        import numpy as np  # here, not at import: `runner validate` never needs it

        query = np.asarray(vector, dtype=np.float32)
        similarity = matrix @ query
        nearest = np.argsort(-similarity, kind="stable")[: gate.neighbours]
        weights = np.clip(similarity[nearest], 0.0, None)
        agrees = [_agrees(examples[i].output, answer.value) for i in nearest]
        closeness = float(weights.mean())
        total = float(weights.sum())
        agreement = float(weights @ np.asarray(agrees, dtype=np.float32)) / total if total else 0.0
        detail = {
            "closeness": round(closeness, 4),
            "agreement": round(agreement, 4),
            "nearest": [
                {
                    "line": examples[i].line,
                    "similarity": round(float(similarity[i]), 4),
                    "agrees": a,
                }
                for i, a in zip(nearest, agrees, strict=True)
            ],
        }
        return Scored(min(1.0, max(0.0, closeness * agreement)), (), detail)

    def _examples(self, path: Path) -> tuple[str, list[Example]]:
        """The examples file's sha256 and examples, read again only when it changed."""
        try:
            stat = path.stat()
            seen: Any = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            seen = None  # read_examples says why it cannot be read
        with self._lock:
            known = self._files.get(path)
        if seen is not None and known is not None and known[0] == seen:
            return known[1]
        try:
            read = read_examples(path)
        except ExamplesError as exc:
            raise LLMError(str(exc), ErrorKind.HTTP_4XX) from exc
        with self._lock:
            self._files[path] = (seen, read)
        return read

    def _matrix(
        self, session: ModelSession, model: str, digest: str, examples: list[Example]
    ) -> Any:
        """The examples' embeddings, one row each (kept per examples file content)."""
        key = (session.model(model).model, digest)
        with self._lock:
            found = self._vectors.get(key)
        if found is None:
            vectors = session.embed(model, [e.text for e in examples])
            import numpy as np

            found = np.asarray(vectors, dtype=np.float32)
            with self._lock:
                self._vectors[key] = found
        return found


def _agrees(output: Mapping[str, Any], answer: Any) -> bool:
    """Whether the answer has every value the example's output gives."""
    return all(value_at(answer, path) == (True, value) for path, value in output.items())


KIND = Similarity()
